"""Unpack a downloaded zip or tar archive without letting it write outside its folder.

Archives come from servers we do not control, and a crafted or careless one can hold absolute
paths, ``..`` components, symlinks that lead out of the folder or device files. So every member is
checked before anything is written, the archive is unpacked into a staging folder that is moved
into place only at the end, and a refused or broken archive leaves nothing behind. Every failure
is a one-line :class:`ArchiveError`.
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text_recognizer.errors import DataError, one_line

__all__ = ["ArchiveError", "UnsafeArchiveError", "extract_archive"]

CHUNK_SIZE = 1 << 20
# What extract_archive unpacks: a metadata.toml may ask to extract only files named like these.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


class ArchiveError(DataError):
    """An archive is corrupt or of an unsupported kind."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the target folder (or is a device file)."""


@dataclass(frozen=True)
class _Member:
    name: str
    parts: tuple[str, ...]
    kind: str  # file | dir | symlink | hardlink
    target: str | None = None


_PROTECTED_NAMES = frozenset({"metadata.toml"})


def _split(archive: Path, name: str, seps: str) -> tuple[str, ...]:
    """Path components of a member name; refuses absolute names and '..' anywhere."""
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{archive}: member '{name}' has an absolute path; refused")
    parts = tuple(p for p in re.split(f"[{re.escape(seps)}]", name) if p not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{archive}: member '{name}' would escape the target folder with '..'; refused"
        )
    return parts


def _stays_inside(
    start: Sequence[str], target: str, links: Mapping[tuple[str, ...], str], seps: str
) -> bool:
    """Follow ``target`` from folder ``start`` through the archive's own symlinks.

    A plain ``normpath`` is not enough: with ``b -> .`` the target ``b/b/..`` looks inside yet
    resolves to the parent of the folder.
    """
    if target.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", target):
        return False
    splitter = f"[{re.escape(seps)}]"
    stack: list[str] = []
    pending = [*start, *re.split(splitter, target)]
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        link = links.get(tuple(stack))
        if link is not None:
            hops += 1
            if hops > 40 or link.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", link):
                return False
            stack.pop()
            pending = [*re.split(splitter, link), *pending]
    return True


def _validate(archive: Path, members: Sequence[_Member], seps: str) -> None:
    """Refuse the whole archive if any member could write or point outside the folder."""
    links = {m.parts: m.target or "" for m in members if m.kind == "symlink"}
    kinds: dict[tuple[str, ...], set[str]] = {}
    counts: dict[tuple[str, ...], int] = {}
    for m in members:
        kinds.setdefault(m.parts, set()).add(m.kind)
        counts[m.parts] = counts.get(m.parts, 0) + 1
    files = {m.parts for m in members if m.kind == "file"}
    for m in members:
        if not m.parts:
            if m.kind == "dir":
                continue  # "./" itself
            raise UnsafeArchiveError(f"{archive}: member '{m.name}' has no name; refused")
        if m.parts[0] == archive.name or m.parts[0] in _PROTECTED_NAMES:
            raise UnsafeArchiveError(
                f"{archive}: member '{m.name}' would overwrite '{m.parts[0]}' in the target folder"
            )
        for i in range(1, len(m.parts)):
            if m.parts[:i] in links:
                raise UnsafeArchiveError(
                    f"{archive}: member '{m.name}' would be written through the symlink "
                    f"'{'/'.join(m.parts[:i])}'; refused"
                )
        if m.kind == "symlink":
            if counts[m.parts] > 1:
                raise UnsafeArchiveError(
                    f"{archive}: symlink '{m.name}' appears more than once (as "
                    f"{', '.join(sorted(kinds[m.parts]))}); refused"
                )
            if not _stays_inside(m.parts[:-1], m.target or "", links, seps):
                raise UnsafeArchiveError(
                    f"{archive}: symlink '{m.name}' -> '{m.target}' points outside the target "
                    "folder; refused"
                )
        elif m.kind == "hardlink":
            target = _split(archive, m.target or "", "/")
            if target not in files:
                raise UnsafeArchiveError(
                    f"{archive}: hard link '{m.name}' -> '{m.target}' does not point to a file "
                    "inside the archive; refused"
                )


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[tuple[_Member, zipfile.ZipInfo]]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16 if info.create_system == 3 else 0
        ftype = stat.S_IFMT(mode)
        target = None
        if ftype == stat.S_IFLNK:
            kind = "symlink"
            target = zf.read(info).decode("utf-8", errors="replace")
        elif info.is_dir() or ftype == stat.S_IFDIR:
            kind = "dir"
        elif ftype in (0, stat.S_IFREG):
            kind = "file"
        else:
            raise UnsafeArchiveError(
                f"{archive}: member '{info.filename}' is a device or special file; refused"
            )
        member = _Member(info.filename, _split(archive, info.filename, "/\\"), kind, target)
        out.append((member, info))
    return out


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tuple[_Member, tarfile.TarInfo]]:
    out = []
    for info in tf.getmembers():
        if info.isfile():
            kind, target = "file", None
        elif info.isdir():
            kind, target = "dir", None
        elif info.issym():
            kind, target = "symlink", info.linkname
        elif info.islnk():
            kind, target = "hardlink", info.linkname
        else:
            raise UnsafeArchiveError(
                f"{archive}: member '{info.name}' is a device file or fifo; refused"
            )
        out.append((_Member(info.name, _split(archive, info.name, "/"), kind, target), info))
    return out


def _check_extracted_links(archive: Path, root: Path) -> None:
    """Defence in depth: after unpacking, no symlink may resolve outside the temp folder."""
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                real = os.path.realpath(path)
                if os.path.commonpath([real_root, real]) != real_root:
                    raise UnsafeArchiveError(
                        f"{archive}: '{os.path.relpath(path, root)}' resolves outside the target "
                        "folder; refused"
                    )


def _merge_into(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging folders so archives sharing a folder do not clobber it."""
    if src.is_dir() and not src.is_symlink() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _merge_into(child, dst / child.name)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    elif dst.is_symlink() or (dst.exists() and src.is_dir()):
        dst.unlink()
    os.replace(src, dst)


_FILTER_ERRORS: tuple[type[Exception], ...] = tuple(
    cls for cls in (getattr(tarfile, "FilterError", None),) if cls is not None
)
_CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    lzma.LZMAError,
    RuntimeError,  # zipfile: encrypted member
    NotImplementedError,  # zipfile: unsupported compression method
)


def extract_archive(archive: Path, dest_dir: Path) -> list[Path]:
    """Unpack a zip or tar (gz/bz2/xz) archive into ``dest_dir``; return the unpacked file paths.

    Every member is validated before anything is written (no absolute paths, no '..', no links
    leaving the folder, no device files), and the archive is unpacked into a temporary folder
    inside ``dest_dir`` that is moved into place only at the end, so a refused or broken archive
    leaves nothing behind.
    """
    archive = Path(archive)
    dest_dir = Path(dest_dir)
    if not archive.is_file():
        raise ArchiveError(f"archive not found: {archive}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest_dir)
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, dest_dir)
    except _FILTER_ERRORS as exc:
        raise UnsafeArchiveError(f"{archive}: refused by tarfile's data filter: {exc}") from None
    except _CORRUPT_ERRORS as exc:
        raise ArchiveError(
            f"{archive} is corrupt or unsupported ({exc}); delete it and download it again"
        ) from None
    except OSError as exc:
        raise ArchiveError(
            f"cannot extract {archive} into {dest_dir}: {exc}; free some disk space or fix the "
            "folder's permissions, then run again"
        ) from None
    raise ArchiveError(
        f"{archive} is not a zip or tar archive (a wrong or corrupt file?); delete it and "
        "download it again"
    )


@contextmanager
def _staging(archive: Path, dest_dir: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=dest_dir))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish_extraction(
    archive: Path, tmp: Path, dest_dir: Path, members: Sequence[_Member]
) -> list[Path]:
    _check_extracted_links(archive, tmp)
    for child in sorted(tmp.iterdir()):
        _merge_into(child, dest_dir / child.name)
    out = dict.fromkeys(dest_dir.joinpath(*m.parts) for m in members if m.kind != "dir")
    return list(out)


def _extract_zip(archive: Path, dest_dir: Path) -> list[Path]:
    with zipfile.ZipFile(archive) as zf:
        entries = _zip_members(archive, zf)
        members = [m for m, _ in entries]
        _validate(archive, members, "/\\")
        with _staging(archive, dest_dir) as tmp:
            # Written by hand (not ZipFile.extract) so names are split exactly as validated.
            for member, info in entries:
                target = tmp.joinpath(*member.parts)
                if member.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                elif member.kind == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_SIZE)
            for member in members:  # links last, so nothing is ever written through one
                if member.kind == "symlink":
                    target = tmp.joinpath(*member.parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(member.target or "", target)
            return _finish_extraction(archive, tmp, dest_dir, members)


def _extract_tar(archive: Path, dest_dir: Path) -> list[Path]:
    with tarfile.open(archive, "r:*") as tf:
        entries = _tar_members(archive, tf)
        members = [m for m, _ in entries]
        _validate(archive, members, "/")
        with _staging(archive, dest_dir) as tmp:
            kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(tmp, members=[info for _, info in entries], **kwargs)
            return _finish_extraction(archive, tmp, dest_dir, members)
