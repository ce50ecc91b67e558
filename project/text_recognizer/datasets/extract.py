"""Unpack a downloaded zip or tar archive without letting it write outside its folder.

Archives come from servers we do not control, and a crafted or careless one can hold absolute
paths, ``..`` components, links, device files, or a few KB that unpack to gigabytes. Dataset
archives need none of that, so an archive may hold only plain files and folders (tar hard links to
an earlier file of the same archive are kept; symbolic links are refused), within a size and a
member-count limit. Every member is checked before anything is written, the archive is unpacked
into a staging folder, the bytes actually written are counted (headers can lie), and the result is
moved into place only at the end, through folder handles that never follow a link and never replace
a folder, a link or a special file already there. A regular file already there is replaced only if
an earlier extraction put it there, that is if its top-level name is recorded in a
``.<archive>.extracted`` marker of this folder; any other may be the user's own, so the archive is
refused: nothing of the user's is ever deleted or changed. A refused or broken archive leaves
nothing behind. Every failure is a one-line :class:`ArchiveError`.
"""

from __future__ import annotations

import errno
import gzip
import json
import lzma
import os
import re
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from text_recognizer.errors import (
    ArchiveError,
    DataError,
    StorageError,
    UnsafeArchiveError,
    storage_error,
)
from text_recognizer.fileio import read_small_text, write_json_atomic

__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_RATIO",
    "ArchiveError",
    "UnsafeArchiveError",
    "extract_archive",
]

CHUNK_SIZE = 1 << 20
# What extract_archive unpacks: a metadata.toml may ask to extract only files named like these.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Default limits (a metadata.toml can raise them with max_extracted_size / max_extracted_files):
# an archive may unpack to 20 times its own size, and even a tiny one to 16 MiB.
DEFAULT_MAX_RATIO = 20
DEFAULT_MIN_ALLOWANCE = 16 << 20
DEFAULT_MAX_FILES = 100_000
MAX_NAME_BYTES = 255  # one path component, as most filesystems allow
MAX_PATH_BYTES = 1024  # a whole member name
MAX_EXT_HEADER_BYTES = 64 << 10  # one tar pax / GNU long-name header (real ones are < 4 KiB)
MAX_EXT_HEADERS_TOTAL = 16 << 20  # all of them together
MAX_OPEN_DIRS = 16  # folder handles the merge holds at once, however deep the tree
MAX_MARKER_BYTES = 64 << 20  # a .<archive>.extracted marker (top-level names only)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


@dataclass(frozen=True)
class _Member:
    name: str
    parts: tuple[str, ...]
    kind: str  # file | dir | hardlink
    size: int = 0  # as declared in the archive's header
    target: tuple[str, ...] = ()  # hardlink: the earlier member it repeats


_ALLOWED = (
    "dataset archives may hold only plain files and folders, with relative names free of '..' "
    "and control characters"
)


def _mib(n: int) -> str:
    return f"{n:,} bytes" if n < 1 << 20 else f"{n / (1 << 20):,.1f} MiB"


def _split(archive: Path, name: str, seps: str) -> tuple[str, ...]:
    """Path components of a member name; refuses names that could point anywhere unexpected."""

    def refuse(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{archive}: member {name!r} {why}; refused: {_ALLOWED}")

    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise refuse("has an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise refuse("has control characters in its name")
    parts = tuple(p for p in re.split(f"[{re.escape(seps)}]", name) if p not in ("", "."))
    if ".." in parts:
        raise refuse("would escape the target folder with '..'")
    sizes = [len(p.encode("utf-8", "surrogateescape")) for p in parts]
    if sum(sizes) + len(sizes) > MAX_PATH_BYTES or any(s > MAX_NAME_BYTES for s in sizes):
        raise refuse(f"has a name over {MAX_PATH_BYTES} bytes or a part over {MAX_NAME_BYTES}")
    return parts


def _is_protected(name: str, protected: Collection[str]) -> bool:
    """The metadata's own files, their .part and hidden sidecars (.x.verified, .x.lock, ...).

    Any extraction marker too: one unpacked from an archive could claim the user's files as ours.
    """
    if _is_marker(name):
        return True
    return any(name in (p, f"{p}.part") or name.startswith(f".{p}.") for p in protected)


def _is_marker(name: str) -> bool:
    return name.startswith(".") and name.endswith(".extracted")


def _marker_path(archive: Path) -> Path:
    """Where the names an archive unpacked are recorded: ``.<archive>.extracted`` beside it."""
    return archive.with_name(f".{archive.name}.extracted")


def _validate(
    archive: Path,
    members: Sequence[_Member],
    protected: Collection[str],
    max_bytes: int,
    max_files: int,
) -> None:
    """Refuse the whole archive before anything is written if any member is not allowed."""
    if len(members) > max_files:
        raise UnsafeArchiveError(
            f"{archive}: holds more than {max_files:,} members, the limit for this archive; "
            "if it is genuine, raise max_extracted_files in its metadata.toml"
        )
    _check_total(archive, sum(m.size for m in members if m.kind == "file"), max_bytes, "")
    files: set[tuple[str, ...]] = set()
    dirs: set[tuple[str, ...]] = set()
    for m in members:
        if not m.parts:
            if m.kind == "dir":
                continue  # "./" itself
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} has no name; refused")
        if _is_protected(m.parts[0], protected):
            raise UnsafeArchiveError(
                f"{archive}: member {m.name!r} would overwrite '{m.parts[0]}', a file of the "
                "dataset itself (its metadata, a download or a sidecar); refused"
            )
        for i in range(1, len(m.parts)):
            dirs.add(m.parts[:i])
        if m.kind == "dir":
            dirs.add(m.parts)
        elif m.kind == "hardlink" and m.target not in files:
            raise UnsafeArchiveError(
                f"{archive}: hard link {m.name!r} -> '{'/'.join(m.target)}' does not repeat an "
                "earlier file of the same archive; refused"
            )
        else:
            files.add(m.parts)
    both = sorted(files & dirs)
    if both:
        raise UnsafeArchiveError(
            f"{archive}: '{'/'.join(both[0])}' is both a file and a folder in the archive; refused"
        )


def _check_total(archive: Path, total: int, max_bytes: int, member: str) -> None:
    if total > max_bytes:
        where = f" (reached at member {member!r})" if member else ""
        raise UnsafeArchiveError(
            f"{archive}: unpacks to more than {_mib(max_bytes)}{where}, the limit for this archive "
            f"({DEFAULT_MAX_RATIO} x its size, at least {_mib(DEFAULT_MIN_ALLOWANCE)}, unless its "
            "metadata.toml sets max_extracted_size); refused as a likely archive bomb. If it is "
            "genuine, set max_extracted_size = <bytes> in its metadata.toml"
        )


def _kind_refused(archive: Path, name: str, what: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive}: member {name!r} is {what}; refused: {_ALLOWED}")


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[tuple[_Member, zipfile.ZipInfo]]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        ftype = stat.S_IFMT(mode)
        if ftype == stat.S_IFLNK:
            raise _kind_refused(archive, info.filename, "a symbolic link")
        if info.is_dir() or ftype == stat.S_IFDIR:
            kind = "dir"
        elif ftype in (0, stat.S_IFREG):
            kind = "file"
        else:
            raise _kind_refused(archive, info.filename, "a device or special file")
        parts = _split(archive, info.filename, "/\\")
        out.append((_Member(info.filename, parts, kind, info.file_size), info))
    return out


def _tar_members(
    archive: Path, tf: tarfile.TarFile, max_bytes: int, max_files: int
) -> list[tuple[_Member, tarfile.TarInfo]]:
    """Read the headers one by one, stopping at the limits before reading (or unpacking) more."""
    out: list[tuple[_Member, tarfile.TarInfo]] = []
    declared = 0
    while (info := tf.next()) is not None:
        if info.isfile():
            member = _Member(info.name, _split(archive, info.name, "/"), "file", info.size)
            declared += info.size
        elif info.isdir():
            member = _Member(info.name, _split(archive, info.name, "/"), "dir")
        elif info.issym():
            raise _kind_refused(archive, info.name, f"a symbolic link (-> {info.linkname!r})")
        elif info.islnk():
            target = _split(archive, info.linkname, "/")
            member = _Member(info.name, _split(archive, info.name, "/"), "hardlink", 0, target)
        else:
            raise _kind_refused(archive, info.name, "a device file or fifo")
        out.append((member, info))
        if len(out) > max_files:
            break  # _validate words the refusal
        _check_total(archive, declared, max_bytes, info.name)
    return out


# Header types whose body tarfile reads whole into memory: pax and GNU long names.
_EXT_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses huge or endless pax / GNU long-name headers before tarfile reads them."""

    def _proc_member(self, tf: tarfile.TarFile) -> Any:  # type: ignore[override]
        if self.type in _EXT_TYPES:
            seen = getattr(tf, "_ext_header_bytes", 0) + self.size
            tf._ext_header_bytes = seen  # type: ignore[attr-defined]
            if self.size > MAX_EXT_HEADER_BYTES or seen > MAX_EXT_HEADERS_TOTAL:
                raise UnsafeArchiveError(
                    f"{tf.name}: an extended tar header of {self.size:,} bytes at offset "
                    f"{self.offset:,} (at most {MAX_EXT_HEADER_BYTES:,} each and "
                    f"{MAX_EXT_HEADERS_TOTAL:,} in all are allowed); refused"
                )
        return super()._proc_member(tf)  # type: ignore[misc]


class _Budget:
    """Counts the bytes really written, since a header's declared size can lie."""

    def __init__(self, archive: Path, max_bytes: int) -> None:
        self.archive = archive
        self.max_bytes = max_bytes
        self.used = 0

    def copy(self, src: IO[bytes], target: Path, member: str) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_NOFOLLOW, 0o666)
        with open(fd, "wb") as dst:
            while chunk := src.read(CHUNK_SIZE):
                self.used += len(chunk)
                _check_total(self.archive, self.used, self.max_bytes, member)
                dst.write(chunk)


def _zip_entry_count(archive: Path) -> int | None:
    """The member count the zip's end record declares, read before zipfile parses them all."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:  # pragma: no cover (a future Python)
        return None
    with open(archive, "rb") as f:
        record = end_record(f)
    return None if not record else int(record[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)])


_CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    RuntimeError,  # zipfile: encrypted member; RecursionError: endlessly chained tar headers
    NotImplementedError,  # zipfile: unsupported compression method
    UnicodeError,
)


def extract_archive(
    archive: Path,
    dest_dir: Path,
    *,
    max_bytes: int | None = None,
    max_files: int | None = None,
    protected: Collection[str] = (),
) -> list[Path]:
    """Unpack a zip or tar (gz/bz2/xz) archive into ``dest_dir``; return the unpacked file paths.

    Only plain files and folders are allowed (plus tar hard links to an earlier member), at most
    ``max_files`` members (default 100,000) and ``max_bytes`` unpacked (default 20 x the archive's
    size, at least 16 MiB). ``protected`` names files beside the archive (a dataset's other
    downloads) that no member may overwrite. Everything is checked before anything is written, and
    unpacked into a staging folder merged in only at the end, without following links or deleting
    anything already there. A file already there is replaced only if its top-level name is recorded
    in a ``.<archive>.extracted`` marker in ``dest_dir``; the names this archive unpacks are
    recorded there when the archive lies in ``dest_dir`` (as downloads do).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if not archive.is_file():
        raise ArchiveError(f"archive not found: {archive}")
    size = archive.stat().st_size
    limit = (
        max_bytes if max_bytes is not None else max(DEFAULT_MAX_RATIO * size, DEFAULT_MIN_ALLOWANCE)
    )
    count = max_files if max_files is not None else DEFAULT_MAX_FILES
    protected = {archive.name, "metadata.toml", *protected}
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest_dir, limit, count, protected)
        return _extract_tar(archive, dest_dir, limit, count, protected)
    except _CORRUPT_ERRORS as exc:
        raise ArchiveError(
            f"{archive} is corrupt or unsupported ({exc}); delete it and download it again"
        ) from None
    except OSError as exc:
        raise storage_error(exc, f"{archive} into {dest_dir}", "extract") from None


def _check_free_space(archive: Path, dest_dir: Path, need: int) -> None:
    try:
        st = os.statvfs(dest_dir)
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise StorageError(
            f"cannot extract {archive} into {dest_dir}: it unpacks to {_mib(need)} but only "
            f"{_mib(free)} is free; free some space and run again"
        )


@contextmanager
def _staging(archive: Path, dest_dir: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=dest_dir))
    try:
        yield tmp
    finally:
        _remove_tree(tmp)


def _extract_zip(
    archive: Path, dest_dir: Path, limit: int, count: int, protected: Collection[str]
) -> list[Path]:
    declared = _zip_entry_count(archive)
    if declared is not None and declared > count:
        raise UnsafeArchiveError(
            f"{archive}: holds {declared:,} members, more than the {count:,} allowed for this "
            "archive; if it is genuine, raise max_extracted_files in its metadata.toml"
        )
    with zipfile.ZipFile(archive) as zf:
        entries = _zip_members(archive, zf)
        return _unpack(
            archive, dest_dir, entries, lambda _m, info: zf.open(info), protected, limit, count
        )


def _extract_tar(
    archive: Path, dest_dir: Path, limit: int, count: int, protected: Collection[str]
) -> list[Path]:
    try:  # not tarfile.is_tarfile: it would read a huge first header whole
        tf = tarfile.open(archive, "r:*", tarinfo=_BoundedTarInfo)  # noqa: SIM115 (with below)
    except tarfile.ReadError:
        raise ArchiveError(
            f"{archive} is not a zip or tar archive (a wrong or corrupt file?); delete it and "
            "download it again"
        ) from None

    def open_member(member: _Member, info: tarfile.TarInfo) -> IO[bytes]:
        src = tf.extractfile(info)
        if src is None:  # pragma: no cover (isfile() members always have data)
            raise ArchiveError(f"{archive}: cannot read member {member.name!r}")
        return src

    with tf:
        entries = _tar_members(archive, tf, limit, count)
        return _unpack(archive, dest_dir, entries, open_member, protected, limit, count)


def _unpack(
    archive: Path,
    dest_dir: Path,
    entries: Sequence[tuple[_Member, Any]],
    open_member: Callable[[_Member, Any], IO[bytes]],
    protected: Collection[str],
    limit: int,
    count: int,
) -> list[Path]:
    """Check every member, write them into a staging folder, then merge: one path for zip and tar.

    Members are written by hand (not ``extractall``) so names are split exactly as validated and
    the bytes actually written are counted against the limit.
    """
    members = [m for m, _ in entries]
    _validate(archive, members, protected, limit, count)
    _check_free_space(archive, dest_dir, sum(m.size for m in members if m.kind == "file"))
    budget = _Budget(archive, limit)
    with _staging(archive, dest_dir) as tmp:
        for member, info in entries:
            target = tmp.joinpath(*member.parts)
            if member.kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.kind == "hardlink":  # tar only: a repeat of an earlier member
                if os.path.lexists(target):
                    os.unlink(target)  # a repeated name, inside the staging folder
                os.link(tmp.joinpath(*member.target), target)
                continue
            with open_member(member, info) as src:
                budget.copy(src, target, member.name)
        return _finish_extraction(archive, tmp, dest_dir, members)


def _finish_extraction(
    archive: Path, tmp: Path, dest_dir: Path, members: Sequence[_Member]
) -> list[Path]:
    root = os.open(dest_dir, os.O_RDONLY | _O_DIRECTORY)
    handles = _Handles(root)
    try:
        _check_merge(archive, tmp, handles, dest_dir, _claimed(dest_dir))  # before moving anything
        _record(archive, dest_dir, {m.parts[0] for m in members if m.parts})
        _merge(tmp, handles)
    finally:
        handles.close()
        os.close(root)
    out = dict.fromkeys(dest_dir.joinpath(*m.parts) for m in members if m.kind != "dir")
    return list(out)


def _read_marker(marker: Path) -> list[str]:
    """The top-level names a marker records; nothing from a link, a FIFO, a huge or a damaged one
    (read bounded and without blocking: a bad marker counts as absent)."""
    try:
        if not stat.S_ISREG(marker.lstat().st_mode):
            return []
        text = read_small_text(marker, MAX_MARKER_BYTES, "extraction marker", DataError)
        names = json.loads(text).get("top_level")
    except (OSError, DataError, StorageError, ValueError, AttributeError, RecursionError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _claimed(dest_dir: Path) -> set[str]:
    """Top-level names that earlier extractions into ``dest_dir`` recorded in their markers.

    Only files under these may be replaced: a marker records top-level names, not every file, so
    it stays small for archives of 400k files, and what lies under them counts as unpacked by us.
    """
    return {n for m in dest_dir.glob(".*.extracted") if _is_marker(m.name) for n in _read_marker(m)}


def _record(archive: Path, dest_dir: Path, names: set[str]) -> None:
    """Claim ``names`` in the archive's marker before merging, so a re-extraction (even after a
    crash mid-merge) may replace them; earlier names of the marker stay claimed while they exist.

    Recorded only when the archive lies in ``dest_dir``, as downloads do (elsewhere the marker
    would not be found). Writes only ``top_level``: the caller adds what marks it complete.
    """
    marker = _marker_path(archive)
    if not dest_dir.samefile(archive.parent):
        return
    kept = {n for n in _read_marker(marker) if os.path.lexists(dest_dir / n)}
    write_json_atomic(marker, {"top_level": sorted(kept | names)})


class _Handles:
    """Handles on the target folders along one path, each opened from its parent handle without
    following a link.

    At most MAX_OPEN_DIRS stay open (the deepest); climbing above them reopens from the root, so
    a tree of any depth merges with a bounded number of descriptors (one per level ran out at
    ``ulimit -n 1024`` on a legitimate 511-level tree).
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.path: tuple[str, ...] = ()  # the folder of the deepest handle
        self.fds: dict[int, int] = {}  # depth -> handle on path[:depth]

    def get(self, parts: tuple[str, ...]) -> int:
        """A handle on the folder ``parts`` (relative to the root); OSError if not a real folder."""
        same = 0
        while same < min(len(parts), len(self.path)) and parts[same] == self.path[same]:
            same += 1
        for depth in [d for d in self.fds if d > same]:
            os.close(self.fds.pop(depth))
        depth = max(self.fds, default=0)
        self.path = parts[:depth]
        while depth < len(parts):
            fd = _open_subdir(parts[depth], self.fds.get(depth, self.root))
            depth += 1
            self.fds[depth], self.path = fd, parts[:depth]
            if len(self.fds) > MAX_OPEN_DIRS:
                os.close(self.fds.pop(min(self.fds)))
        return self.fds.get(len(parts), self.root)

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.popitem()[1])
        self.path = ()


def _open_subdir(name: str, dir_fd: int) -> int:
    """A handle on a real folder ``name`` inside ``dir_fd``; fails (ELOOP) if it is a link."""
    return os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW, dir_fd=dir_fd)


def _walk_staged(tmp: Path, visit: Callable[[tuple[str, ...], bool], bool]) -> None:
    """Call ``visit(parts, is_dir)`` on the staged entries, a folder's before what it holds, in name
    order; descend into a folder only where ``visit`` returns True.

    Iterative and listing one folder at a time, so depth costs neither recursion nor descriptors.
    """
    pending: list[tuple[str, ...]] = [()]
    while pending:
        folder = pending.pop()
        with os.scandir(tmp.joinpath(*folder)) as it:
            entries = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        descend = [(*folder, n) for n, is_dir in entries if visit((*folder, n), is_dir)]
        pending.extend(reversed(descend))


def _check_merge(
    archive: Path, tmp: Path, handles: _Handles, where: Path, claimed: Collection[str]
) -> None:
    """Refuse if a staged entry would pass through a link, replace a folder, link or special file,
    or replace a file that no earlier extraction claimed (it may be the user's own)."""

    def visit(parts: tuple[str, ...], is_dir: bool) -> bool:
        try:
            st = os.stat(parts[-1], dir_fd=handles.get(parts[:-1]), follow_symlinks=False)
        except FileNotFoundError:
            return False  # new here: moved in whole
        _check_entry(archive, where.joinpath(*parts), parts, st.st_mode, is_dir)
        if not is_dir and parts[0] not in claimed:
            raise UnsafeArchiveError(
                f"{archive}: its file '{'/'.join(parts)}' would replace {where.joinpath(*parts)}, "
                "which no extraction put there (it may be yours); refused, nothing of yours was "
                "changed; move it away and run again"
            )
        return is_dir

    _walk_staged(tmp, visit)


def _check_entry(
    archive: Path, path: Path, parts: tuple[str, ...], mode: int, is_dir: bool
) -> None:
    """Refuse a staged entry over a link, a folder over a file, a file over a folder or device."""
    name = "/".join(parts)
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(
            f"{archive}: cannot unpack '{name}' into {path}: it is a symbolic link there, and "
            "extraction never writes through or replaces links; move it away and run again"
        )
    if is_dir and not stat.S_ISDIR(mode):
        raise UnsafeArchiveError(
            f"{archive}: its folder '{name}' would replace the file {path}; refused so nothing "
            "of yours is deleted; move that file away and run again"
        )
    if not is_dir and not stat.S_ISREG(mode):
        what = "folder" if stat.S_ISDIR(mode) else "special file"
        raise UnsafeArchiveError(
            f"{archive}: its file '{name}' would replace the {what} {path}; refused so nothing "
            f"of yours is deleted; move that {what} away and run again"
        )


def _merge(tmp: Path, handles: _Handles) -> None:
    """Move staged entries into place; folders merge, files replace files, nothing is deleted.

    Works through folder handles opened without following links, and ``rename`` never follows
    a link in its last component, so a link swapped in meanwhile is never written through.
    """

    def visit(parts: tuple[str, ...], is_dir: bool) -> bool:
        dst_fd = handles.get(parts[:-1])
        if is_dir and _is_real_dir(parts[-1], dst_fd):
            return True  # merge into it
        try:
            os.rename(tmp.joinpath(*parts), parts[-1], dst_dir_fd=dst_fd)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise _appeared(parts[-1]) from None
            raise
        return False

    _walk_staged(tmp, visit)


def _is_real_dir(name: str, dir_fd: int) -> bool:
    """Whether a real folder ``name`` is there (False: nothing is); refuses any other kind."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(mode):  # a file or link put there after _check_merge
        raise _appeared(name)
    return True


def _appeared(name: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"'{name}' appeared in the target folder during extraction as another kind of file; "
        "refused so nothing is replaced; run again"
    )


def _remove_tree(folder: Path) -> None:
    """Remove our staging folder holding one descriptor at a time (``shutil.rmtree`` holds one per
    level). Best effort, like ``rmtree(ignore_errors=True)``; links are removed, never followed."""
    pending, failed = [str(folder)], set()
    while pending:
        try:
            with os.scandir(pending[-1]) as it:
                entries = [(e.path, e.is_dir(follow_symlinks=False)) for e in it]
            for path, is_dir in entries:
                if not is_dir:
                    os.unlink(path)
            subdirs = [path for path, is_dir in entries if is_dir and path not in failed]
            if subdirs:
                pending.extend(subdirs)
            else:
                os.rmdir(pending.pop())
        except OSError:
            failed.add(pending.pop())
