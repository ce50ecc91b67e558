"""Files under a folder or inside a zip archive, read in place, and images decoded from bytes.

Shared by the datasets whose raw data users may place either unpacked or as the original archive
(IAM, Kaggle names, the Brown corpus): an archive is never extracted just to be read.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

from text_recognizer.errors import DataError


def resolve_dir(value: str | Path | None) -> Path | None:
    """An absolute folder path, or None when not given."""
    return Path(value).expanduser().resolve() if value else None


class FileTree:
    """Files under a folder or inside a zip archive, by '/'-separated path relative to a root.

    Archives are read in place, never extracted: the Kaggle names zip is 1.3 GB and a copy would
    double the disk used. ``where()`` names a file for error messages (``archive.zip!member``).
    """

    def __init__(self, path: Path, prefix: str = "", zf: zipfile.ZipFile | None = None) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self._zip = zf
        if zf is None and self.path.is_file():
            self._zip = open_zip(self.path, "archive")
        self._dirs: dict[str, set[str]] | None = None

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    def sub(self, prefix: str) -> FileTree:
        """The same tree rooted at ``prefix`` (a folder inside it)."""
        prefix = prefix.strip("/")
        if not prefix:
            return self
        if self._zip is None:
            return FileTree(self.path / prefix)
        tree = FileTree(self.path, f"{self.prefix}{prefix}/", self._zip)
        tree._dirs = self._dirs
        return tree

    def _index(self) -> dict[str, set[str]]:
        if self._dirs is None:
            dirs: dict[str, set[str]] = {}
            for name in self._zip.namelist():  # type: ignore[union-attr]
                if not name.endswith("/"):
                    folder, _, base = name.rpartition("/")
                    dirs.setdefault(folder, set()).add(base)
            self._dirs = dirs
        return self._dirs

    def all_files(self) -> list[str]:
        """Every file's path relative to the root (zip: from the index; folder: a walk)."""
        if self._zip is None:
            return [
                p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()
            ]
        out = []
        for folder, names in self._index().items():
            full = f"{folder}/" if folder else ""
            if full.startswith(self.prefix):
                out.extend(full[len(self.prefix) :] + n for n in names)
        return out

    def list_dir(self, rel: str) -> set[str]:
        """Names of the files directly in folder ``rel`` (empty if it does not exist)."""
        rel = rel.strip("/")
        if self._zip is None:
            folder = self.path / rel
            if not folder.is_dir():
                return set()
            return {e.name for e in os.scandir(folder) if e.is_file()}
        return set(self._index().get(f"{self.prefix}{rel}".strip("/"), set()))

    def exists(self, rel: str) -> bool:
        if self._zip is None:
            return (self.path / rel).is_file()
        folder, _, base = rel.rpartition("/")
        return base in self.list_dir(folder)

    def read_bytes(self, rel: str, max_size: int | None = None) -> bytes:
        """The file's bytes; OSError if it is larger than ``max_size`` (a zip bomb member)."""
        if max_size is not None:
            size = (
                (self.path / rel).stat().st_size
                if self._zip is None
                else self._zip.getinfo(self.prefix + rel).file_size
            )
            if size > max_size:
                raise OSError(f"{self.where(rel)} is {size:,} bytes, over {max_size:,}")
        if self._zip is None:
            return (self.path / rel).read_bytes()
        try:
            return self._zip.read(self.prefix + rel)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise OSError(f"damaged archive member ({e})") from None

    def where(self, rel: str = "") -> str:
        if self._zip is None:
            return str(self.path / rel) if rel else str(self.path)
        return f"{self.path}!{self.prefix}{rel}"

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def open_zip(path: Path, what: str) -> zipfile.ZipFile:
    """Open a zip archive or raise a one-line DataError naming the file and what it is instead."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(64)
        page = ", an HTML page" if head.lstrip()[:1] == b"<" else ""
        raise DataError(
            f"{what} {path} is not a zip archive (it starts with {head[:8]!r}{page}); "
            "delete it and place the original file"
        ) from None
    except OSError as e:
        raise DataError(f"cannot read {what} {path}: {e}") from None


def read_image_bytes(data: bytes) -> Any:
    """A PIL image from bytes, fully decoded now (so a truncated file fails here, not later)."""
    import warnings

    from PIL import Image

    from text_recognizer.preprocessing import check_image_size

    with warnings.catch_warnings():  # PIL's bomb warning: refused below in any case
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
    check_image_size(img.width, img.height)  # a few bytes can claim gigapixels: before decoding
    img.load()
    return img
