"""Read a dataset's ``metadata.toml``: which files it needs, where to get them, what they hash to.

The metadata files are edited by hand, so a broken one must fail before any download starts, not
after a large archive has been fetched, and a typo must never be silently ignored. Every key is
type-checked, a file name that could point outside the raw folder is refused, and an unknown key
one edit away from a known one (``sha265``, ``extrct``) is an error. Every problem is a one-line
:class:`MetadataError` that names the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text_recognizer.datasets.extract import ARCHIVE_SUFFIXES
from text_recognizer.errors import MetadataError

__all__ = ["RemoteFile", "load_metadata"]


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs: where to get it and how to recognise the right bytes."""

    filename: str
    url: str
    sha256: str | None
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    extract: bool = False
    max_extracted_size: int | None = None  # bytes; None: the default of extract_archive
    max_extracted_files: int | None = None
    max_size: int | None = None  # bytes, for a file whose exact size is not known

    @property
    def byte_limit(self) -> int:
        """No download of this file may write more: its size, else its max_size, else a default."""
        if self.size is not None:
            return self.size
        return self.max_size if self.max_size is not None else DEFAULT_MAX_UNSIZED

    def __post_init__(self) -> None:
        # The name becomes a path under the raw folder: it must not be able to point elsewhere.
        if not _plain_name(self.filename):
            raise MetadataError(f"invalid filename {self.filename!r}: must be {_PLAIN_NAME}")
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())

    @property
    def urls(self) -> tuple[str, ...]:
        """The primary URL followed by the mirrors, in the order they are tried."""
        return (self.url, *self.mirrors)


# A file whose metadata declares no size stops here unless it sets max_size: a broken or hostile
# server cannot fill the disk.
DEFAULT_MAX_UNSIZED = 8 << 30
_REQUIRED_KEYS = ("url", "filename", "sha256")
_LIMIT_KEYS = ("max_extracted_size", "max_extracted_files")
_FILE_KEYS = frozenset({*_REQUIRED_KEYS, "size", "max_size", "mirrors", "extract", *_LIMIT_KEYS})
# Other keys (license, notes, dataset-specific ones such as IAM's test_ids) are allowed and ignored,
# unless they are one edit away from a key we interpret: a silently ignored `extrct = true` or
# `sha265 = ...` would be worse than an error.
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# A metadata.toml is a few KB written by hand; anything this large is not one (and is not read).
MAX_METADATA_BYTES = 1 << 20
_PLAIN_NAME = "a plain file name (no folders, not hidden, no control characters, <= 200 bytes)"


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not name.startswith(".")
        and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name)
        and len(name.encode("utf-8", "surrogatepass")) <= 200
    )


def _read_text(path: Path) -> str:
    """The file's text, refusing what is not a small regular UTF-8 file (a fifo would hang)."""
    from text_recognizer.fileio import read_small_text

    if not path.exists():
        raise MetadataError(
            f"metadata file not found: {path}; it is tracked in the repository, restore it"
        )
    return read_small_text(path, MAX_METADATA_BYTES, "metadata file", MetadataError)


def load_metadata(path: Path) -> list[RemoteFile]:
    """Read a dataset's metadata.toml, so that a broken one fails before any download starts.

    Single-file form: top-level ``url``, ``filename``, ``sha256`` (plus optional ``size``,
    ``mirrors``, ``extract``, ``license``, ``notes``). Multi-file form: ``[[files]]`` tables with
    the same keys. ``sha256 = ""`` explicitly turns verification off for that file.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MetadataError(f"{path}: malformed TOML ({exc}); fix the syntax") from None
    except RecursionError:
        raise MetadataError(
            f"{path}: arrays or tables nested too deeply to read; a metadata.toml needs no nesting "
            "beyond [[files]] tables and lists of URLs"
        ) from None

    if "files" in data:
        files = data["files"]
        if not isinstance(files, list) or not files or not all(isinstance(t, dict) for t in files):
            raise MetadataError(f"{path}: 'files' must be one or more [[files]] tables")
        for key in sorted(_FILE_KEYS):
            if key in data:
                raise MetadataError(
                    f"{path}: top-level key '{key}' cannot be combined with [[files]]; "
                    "move it into a [[files]] table"
                )
        _check_typos(path, "the top level", data)
        tables = [(f"[[files]] table #{i + 1}", table) for i, table in enumerate(files)]
    else:
        tables = [("the top level", data)]

    remotes = [_parse_remote(path, where, table) for where, table in tables]
    seen: set[str] = set()
    for remote in remotes:
        if remote.filename in seen:
            raise MetadataError(f"{path}: filename '{remote.filename}' is listed twice")
        seen.add(remote.filename)
    return remotes


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance counting a swap of neighbours as one edit (sha265 -> sha256)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            cur.append(cost)
        prev2, prev = prev, cur
    return prev[-1]


def _check_typos(path: Path, where: str, table: Mapping[str, Any]) -> None:
    interpreted = sorted(_FILE_KEYS | {"files"})
    for key in table:
        if key in interpreted:
            continue
        close = [k for k in interpreted if _edit_distance(key.lower(), k) <= 1]
        if close:
            raise MetadataError(
                f"{path}: unknown key '{key}' in {where} (did you mean '{close[0]}'?)"
            )


def _parse_remote(path: Path, where: str, table: Mapping[str, Any]) -> RemoteFile:
    _check_typos(path, where, table)
    for key in _REQUIRED_KEYS:
        if key not in table:
            raise MetadataError(
                f"{path}: missing key '{key}' in {where} (required: url, filename, sha256)"
            )

    def bad(key: str, expected: str) -> MetadataError:
        shown = repr(table[key])
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return MetadataError(f"{path}: key '{key}' in {where} must be {expected}, got {shown}")

    def url_ok(value: object) -> bool:
        return isinstance(value, str) and value.startswith(("http://", "https://"))

    filename = table["filename"]
    if not _plain_name(filename):
        raise bad("filename", _PLAIN_NAME)
    if not url_ok(table["url"]):
        raise bad("url", "an http:// or https:// URL")
    sha256 = table["sha256"]
    if not isinstance(sha256, str):
        raise bad("sha256", 'a 64-digit hex string (or "" to skip verification)')
    sha256 = sha256.strip().lower() or None
    if sha256 is not None and not _SHA256_RE.fullmatch(sha256):
        raise bad("sha256", 'a 64-digit hex string (or "" to skip verification)')
    size = table.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise bad("size", "a non-negative integer (bytes)")
    max_size = table.get("max_size")
    if max_size is not None and (
        not isinstance(max_size, int) or isinstance(max_size, bool) or max_size <= 0
    ):
        raise bad("max_size", "a positive integer (bytes)")
    if max_size is not None and size is not None:
        raise bad("max_size", "left out when size is given (size is the exact limit)")
    mirrors = table.get("mirrors", [])
    if not isinstance(mirrors, list) or not all(url_ok(m) for m in mirrors):
        raise bad("mirrors", "a list of http:// or https:// URLs")
    extract = table.get("extract", False)
    if not isinstance(extract, bool):
        raise bad("extract", "true or false")
    if extract and not filename.lower().endswith(ARCHIVE_SUFFIXES):
        raise bad(
            "extract", f"false for a file that is not an archive ({', '.join(ARCHIVE_SUFFIXES)})"
        )
    limits = {}
    for key in _LIMIT_KEYS:
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise bad(key, "a positive integer" + (" (bytes)" if key.endswith("size") else ""))
        if not extract:
            raise bad(key, "left out: it only applies with extract = true")
        limits[key] = value
    return RemoteFile(
        filename=filename,
        url=table["url"],
        sha256=sha256,
        size=size,
        mirrors=tuple(mirrors),
        extract=extract,
        max_size=max_size,
        **limits,
    )
