"""Atomic writes: a reader never sees a half-written file, a crash never leaves one behind.

Temporary files are named ``.<name>.<host>-<pid>.<random>.tmp`` so that a later writer can tell a
leftover of a killed process (same host, pid gone) from one still being written, and remove it
(`clean_stale_temps`). They get the mode an ordinary ``open()`` would (0666 less the umask), not
mkstemp's 0600, so a shared runs folder stays readable by the group that shares it. Small files a
user gives are read through `read_small_text` (bounded, regular files only, UTF-8). The rules and
every limit: docs/untrusted-input.md.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from text_recognizer.errors import StorageError, UserError, storage_error

_TEMP_RE = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")
# A temp file from another host (a shared filesystem) cannot be checked for a live writer; one this
# old is a leftover whatever wrote it.
STALE_TEMP_AGE_S = 24 * 3600


def walk_files(top: Path | str) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(posix path under ``top``, its entry) for every file below ``top``, in the order of
    ``sorted(Path(top).rglob("*"))`` (a folder's subtree sits at its name's place), without
    holding more than one folder's names at a time: a folder of millions of images is listed in
    memory of its depth, not its size. Like ``rglob``, symbolic links to folders are not followed;
    links to files are files."""

    def walk(folder: str, prefix: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            with os.scandir(folder) as found:
                entries = sorted(found, key=lambda e: e.name)
        except OSError:  # unreadable or vanished: rglob skips it too
            return
        for entry in entries:
            rel = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from walk(entry.path, rel + "/")
                elif entry.is_file():
                    yield rel, entry
            except OSError:
                continue

    yield from walk(str(top), "")


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask has no getter)."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"


def temp_prefix(name: str) -> str:
    """The start of a temp file's name for ``name`` (``tempfile.mkstemp(prefix=..., suffix=".tmp")``):
    host and pid in it, so `clean_stale_temps` knows a dead writer's leftover."""
    return f".{name}.{_host_tag()}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def clean_stale_temps(folder: Path | str) -> list[Path]:
    """Remove the temp files in ``folder`` left by dead writers (killed mid-write); return them."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if not match:
            continue
        try:
            info = entry.lstat()
        except OSError:
            continue
        old = now - info.st_mtime > STALE_TEMP_AGE_S
        if old or (match["host"] == host and not _pid_alive(int(match["pid"]))):
            with suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path | str, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: Path | str, obj: Any) -> None:
    """Append one JSON line; a single write() of a short line is atomic enough for a log."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, default=str) + "\n")
        f.flush()


def check_output_file(path: object, option: str) -> None:
    """Refuse now (StorageError, exit 2) an output file that could not be written at the end.

    Catches a folder given as the file, a missing or unwritable parent, a read-only filesystem
    and a full disk before the work, rather than as a traceback after it.
    """
    target = Path(str(path)).expanduser()
    if target.is_dir():
        raise StorageError(f"cannot write {option} {target}: it is a folder; give a file name")
    if target.exists() and not target.is_file():  # the rename would replace the device itself
        raise StorageError(
            f"cannot write {option} {target}: it is a device, pipe or socket, not a file; give a "
            "file name"
        )
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the writer creates the missing folders below this one
    if not parent.is_dir():
        raise StorageError(f"cannot write {option} {target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        reason = "the filesystem is read-only" if _read_only(parent) else "permission denied"
        raise StorageError(f"cannot write {option} {target}: {reason}")
    stat = os.statvfs(parent)
    if stat.f_bavail * stat.f_frsize < 4096:
        raise StorageError(
            f"cannot write {option} {target}: the disk is full; free some space and run again"
        )


def _read_only(folder: object) -> bool:
    return bool(os.statvfs(str(folder)).f_flag & os.ST_RDONLY)


def read_small_bytes(
    path: Path | str, max_bytes: int, what: str, error: type[Exception] = UserError
) -> bytes:
    """The bytes of a small file a user gave (a config, sweep YAML, record, metadata.toml).

    Such a file is untrusted input, so it is read without blocking (a FIFO would hang the
    reader), only if it is a regular file, and no further than ``max_bytes``. Each refusal is one
    ``error`` line naming ``what`` and the path; an OSError is a StorageError.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as e:
        raise storage_error(e, path, f"read {what}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise error(f"{what} {path} is not a regular file (a folder, device or pipe)")
    with open(fd, "rb") as f:
        try:  # a file already too large is refused unread; one still growing is cut at the limit
            # sized by the file, not the limit: read(max_bytes + 1) would allocate the limit
            data = f.read(info.st_size + 1) if info.st_size <= max_bytes else b""
            if len(data) > info.st_size:  # grown since fstat: read on, up to the limit
                data += f.read(max_bytes + 1 - len(data))
        except OSError as e:
            raise storage_error(e, path, f"read {what}") from None
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise error(f"{what} {path} is over the size limit of {_size(max_bytes)}")
    return data


def read_small_text(
    path: Path | str,
    max_bytes: int,
    what: str,
    error: type[Exception] = UserError,
    encoding: str = "utf-8",
) -> str:
    """`read_small_bytes`, as UTF-8 text (a decoding error is one ``error`` line too)."""
    data = read_small_bytes(path, max_bytes, what, error)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise error(
            f"{what} {Path(path)} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
            f"{e.start}); save it as UTF-8"
        ) from None


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n:,} bytes"
