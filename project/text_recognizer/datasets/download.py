"""Download, verify and unpack the raw files that a dataset's ``metadata.toml`` describes.

Raw datasets are large, live on servers we do not control and are fetched over flaky networks. So
downloads stream with a progress bar, hash while streaming, resume a partial ``.part`` file with an
HTTP ``Range`` request, retry with exponential backoff, fall back to mirrors, time out instead of
hanging, and rename into place only once the sha256 matches. Archives are checked member by member
before anything is written. Every failure a user can act on is a one-line
:class:`~text_recognizer.errors.DataError` that says what went wrong, where, and what to do.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import time
import tomllib
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from text_recognizer.errors import DataError
from text_recognizer.fileio import write_json_atomic

try:  # POSIX only; elsewhere concurrent downloads of one file are simply not serialized.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "ArchiveError",
    "ChecksumMismatchError",
    "DownloadError",
    "MetadataError",
    "NoNetworkError",
    "RemoteFile",
    "UncheckedDownloadWarning",
    "UnsafeArchiveError",
    "download_file",
    "ensure_downloaded",
    "extract_archive",
    "load_metadata",
    "sha256_file",
]

CHUNK_SIZE = 1 << 20
HTML_SNIFF_BYTES = 512
USER_AGENT = "text-recognizer/0.1 (python-requests)"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

# Looked up at call time so tests can replace it and run retries without waiting.
_sleep = time.sleep


def _one_line(text: str) -> str:
    """Collapse whitespace: errors are printed as exactly one line."""
    return " ".join(str(text).split())


class MetadataError(DataError):
    """A metadata.toml is missing, malformed, or lacks a required key."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class DownloadError(DataError):
    """A file could not be fetched from any of its URLs."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the sha256 (or size) the metadata promises."""


class NoNetworkError(DownloadError):
    """No URL could even be connected to: the user has to fetch the files by hand."""

    def __init__(
        self,
        message: str,
        *,
        filenames: Sequence[str] = (),
        folder: Path | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.filenames = list(filenames)
        self.folder = folder
        self.reason = reason


class ArchiveError(DataError):
    """An archive is corrupt or of an unsupported kind."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class UnsafeArchiveError(ArchiveError):
    """An archive member would land outside the target folder (or is a device file)."""


class UncheckedDownloadWarning(UserWarning):
    """A metadata entry has no sha256, so the file's content is not verified."""


# --------------------------------------------------------------------------------------------------
# metadata.toml


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs: where to get it and how to recognise the right bytes."""

    filename: str
    url: str
    sha256: str | None
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    extract: bool = False

    def __post_init__(self) -> None:
        # The name becomes a path under the raw folder: it must not be able to point elsewhere.
        name = self.filename
        if name in ("", ".", "..") or name.startswith(".") or any(c in name for c in "/\\\0"):
            raise MetadataError(f"invalid filename {name!r}: must be a plain, non-hidden file name")
        if self.sha256 is not None:
            object.__setattr__(self, "sha256", self.sha256.lower())

    @property
    def urls(self) -> tuple[str, ...]:
        """The primary URL followed by the mirrors, in the order they are tried."""
        return (self.url, *self.mirrors)


_REQUIRED_KEYS = ("url", "filename", "sha256")
_FILE_KEYS = frozenset({*_REQUIRED_KEYS, "size", "mirrors", "extract"})
# Other keys (license, notes, dataset-specific ones such as IAM's test_ids) are allowed and ignored,
# unless they are one edit away from a key we interpret: a silently ignored `extrct = true` or
# `sha265 = ...` would be worse than an error.
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def load_metadata(path: Path) -> list[RemoteFile]:
    """Read a dataset's metadata.toml, so that a broken one fails before any download starts.

    Single-file form: top-level ``url``, ``filename``, ``sha256`` (plus optional ``size``,
    ``mirrors``, ``extract``, ``license``, ``notes``). Multi-file form: ``[[files]]`` tables with
    the same keys. ``sha256 = ""`` explicitly turns verification off for that file.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetadataError(
            f"metadata file not found: {path}; it is tracked in the repository, restore it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MetadataError(f"cannot read metadata file {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MetadataError(f"{path}: malformed TOML ({exc}); fix the syntax") from None

    if "files" in data:
        files = data["files"]
        if not isinstance(files, list) or not files or not all(isinstance(t, dict) for t in files):
            raise MetadataError(f"{path}: 'files' must be one or more [[files]] tables")
        for key in ("url", "filename", "sha256", "size", "mirrors", "extract"):
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
    if (
        not isinstance(filename, str)
        or filename in ("", ".", "..")
        or filename.startswith(".")
        or any(sep in filename for sep in "/\\\0")
    ):
        raise bad("filename", "a plain file name (no folders, not hidden)")
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
    return RemoteFile(
        filename=filename,
        url=table["url"],
        sha256=sha256,
        size=size,
        mirrors=tuple(mirrors),
        extract=extract,
    )


# --------------------------------------------------------------------------------------------------
# hashing and the verification cache


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so memory stays flat for multi-GB archives."""
    hasher = hashlib.sha256()
    _hash_into(hasher, path)
    return hasher.hexdigest()


def _hash_into(hasher: Any, path: Path) -> None:
    """Feed a file's bytes into ``hasher`` (used once for a leftover .part before resuming)."""
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            hasher.update(chunk)


def _sidecar(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_quietly(path: Path, obj: dict[str, Any]) -> None:
    """Caches are an optimisation: a read-only data folder must not turn into an error."""
    with suppress(OSError):
        write_json_atomic(path, obj)


def _record_verified(path: Path, digest: str) -> None:
    st = path.stat()
    _write_json_quietly(
        _sidecar(path, "verified"),
        {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest},
    )


_warned_unchecked: set[tuple[str, str]] = set()


def _warn_unchecked(remote: RemoteFile) -> None:
    key = (remote.filename, remote.url)
    if key not in _warned_unchecked:
        _warned_unchecked.add(key)
        warnings.warn(
            f"'{remote.filename}' has no sha256 in its metadata.toml, so its content is not "
            "verified; add its sha256 there to make the download trustworthy",
            UncheckedDownloadWarning,
            stacklevel=3,
        )


def _check_present(remote: RemoteFile, path: Path) -> tuple[bool, str]:
    """Whether ``path`` already holds the right bytes; the second item explains a 'no'.

    The sidecar records size, mtime_ns and sha256 of the last verification, so an unchanged
    500 MB archive is not re-hashed on every run.
    """
    if not path.is_file():
        return False, ""
    st = path.stat()
    if remote.size is not None and st.st_size != remote.size:
        return False, f"has {st.st_size} bytes, expected {remote.size}"
    if remote.sha256 is None:
        _warn_unchecked(remote)
        return True, ""
    cached = _read_json(_sidecar(path, "verified"))
    if (
        cached is not None
        and cached.get("size") == st.st_size
        and cached.get("mtime_ns") == st.st_mtime_ns
        and cached.get("sha256") == remote.sha256
    ):
        return True, ""
    actual = sha256_file(path)
    if actual != remote.sha256:
        return False, f"has sha256 {actual}, expected {remote.sha256}"
    _record_verified(path, actual)
    return True, ""


# --------------------------------------------------------------------------------------------------
# downloading


class _Failure(Exception):
    """Why one attempt on one URL failed, and whether trying that URL again can help."""

    def __init__(self, kind: str, message: str, *, retry: bool, stale: bool = False) -> None:
        super().__init__(message)
        self.kind = kind  # unreachable | timeout | dropped | http | html | checksum | size | other
        self.message = _one_line(message)
        self.retry = retry
        self.stale = stale


class _Part:
    """A ``.part`` file plus the sha256 of exactly the bytes in it, so nothing is hashed twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.nbytes = 0
        self.synced = False
        # True when the bytes came from more than one response (or an earlier process): a
        # checksum mismatch then may be a stale .part rather than a wrong file on the server.
        self.spliced = False

    def sync(self) -> int:
        """Make the running hash cover the file on disk (a leftover is hashed once, here)."""
        size = self.path.stat().st_size if self.path.exists() else 0
        if not self.synced or size != self.nbytes:
            self.hasher = hashlib.sha256()
            if size:
                _hash_into(self.hasher, self.path)
            self.nbytes = size
            self.spliced = size > 0
            self.synced = True
        return self.nbytes

    def reset(self) -> None:
        """Throw the partial bytes away and start from zero."""
        self.path.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.nbytes = 0
        self.spliced = False
        self.synced = True

    def write(self, f: Any, chunk: bytes) -> None:
        try:
            f.write(chunk)
        except OSError as exc:
            self.synced = False
            raise DownloadError(
                f"cannot write {self.path}: {exc.strerror or exc}; "
                "free some disk space or fix the folder's permissions, then run again"
            ) from None
        self.hasher.update(chunk)
        self.nbytes += len(chunk)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests -> urllib3 -> socket)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
        stack.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))


def _connect_failure_reason(exc: BaseException) -> str | None:
    """A short reason if the connection could not be established at all, else None."""
    causes = list(_causes(exc))
    name_errors = tuple(
        cls for cls in (getattr(urllib3.exceptions, "NameResolutionError", None),) if cls
    )
    if any(isinstance(e, (socket.gaierror, *name_errors)) for e in causes):
        return "cannot resolve the host name (DNS lookup failed)"
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return "connection refused"
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2, so test it first.
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in causes):
        return "cannot connect (network unreachable?)"
    if any(isinstance(e, urllib3.exceptions.ConnectTimeoutError) for e in causes):
        return "timed out while connecting"
    if any(isinstance(e, requests.exceptions.ProxyError) for e in causes):
        return "cannot reach the proxy"
    return None


def _request_failure(
    exc: requests.RequestException, url: str, timeout: tuple[float, float]
) -> _Failure:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return _Failure(
            "unreachable", f"cannot connect to {url}: no answer within {timeout[0]:g} s", retry=True
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return _Failure(
            "timeout",
            f"timed out waiting for {url}: no response within {timeout[1]:g} s (stalled server)",
            retry=True,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return _Failure("other", f"TLS/SSL error talking to {url}: {exc}", retry=False)
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = _connect_failure_reason(exc)
        if reason:
            return _Failure("unreachable", f"cannot connect to {url}: {reason}", retry=True)
        return _Failure("dropped", f"connection to {url} failed: {exc}", retry=True)
    if isinstance(exc, requests.exceptions.TooManyRedirects | requests.exceptions.InvalidURL):
        return _Failure("other", f"cannot fetch {url}: {exc}", retry=False)
    return _Failure("other", f"request to {url} failed: {exc}", retry=True)


def _stream_failure(exc: BaseException, url: str, part: _Part, end: int | None) -> _Failure:
    got = f"after {part.nbytes}" + (f" of {end}" if end is not None else "") + " bytes"
    if any(isinstance(e, urllib3.exceptions.ReadTimeoutError | TimeoutError) for e in _causes(exc)):
        return _Failure(
            "timeout", f"timed out reading from {url} {got} (stalled server)", retry=True
        )
    reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc
    return _Failure("dropped", f"connection to {url} dropped {got} ({reason})", retry=True)


_HTTP_HINTS = {
    401: "access denied: the file needs a login",
    403: "access denied: the file needs a login or the link expired",
    404: "not found: the URL is wrong or the file moved",
    410: "gone: the file was removed from this server",
    429: "rate limited by the server",
}


def _http_failure(response: requests.Response, url: str, remote: RemoteFile) -> _Failure:
    status = response.status_code
    hint = _HTTP_HINTS.get(status, "server error" if status >= 500 else "request refused")
    return _Failure(
        "http",
        f"HTTP {status} {response.reason or ''} from {url} for '{remote.filename}' ({hint})",
        retry=status >= 500 or status in (408, 429),
    )


def _is_html_name(filename: str) -> bool:
    return filename.lower().endswith((".html", ".htm", ".xhtml"))


def _html_failure(url: str, response: requests.Response, remote: RemoteFile, why: str) -> _Failure:
    where = url if response.url in (None, "", url) else f"{url} (redirected to {response.url})"
    return _Failure(
        "html",
        f"{where} returned a web page ({why}) instead of '{remote.filename}': likely a login, "
        "consent or 'file moved' page; open the URL in a browser to see what it asks",
        retry=False,
    )


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html"))


_CONTENT_RANGE_RE = re.compile(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*")


def _body_range(response: requests.Response, url: str) -> tuple[int, int | None, int | None]:
    """(first byte offset, offset after this body's last byte, full size) as the server states."""
    if response.status_code == 206:
        m = _CONTENT_RANGE_RE.fullmatch(response.headers.get("Content-Range", ""))
        if not m:
            raise _Failure(
                "other", f"{url} answered 206 without a valid Content-Range", retry=False
            )
        total = None if m[3] == "*" else int(m[3])
        return int(m[1]), int(m[2]) + 1, total
    length = response.headers.get("Content-Length", "").strip()
    total = int(length) if length.isdigit() else None
    return 0, total, total


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> tqdm:
    """A byte progress bar; redrawn rarely when stderr is a log file so it never spams it."""
    tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        mininterval=0.5 if tty else 30.0,
        leave=tty,
        dynamic_ncols=True,
        file=sys.stderr,
    )


_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _attempt(
    session: requests.Session,
    url: str,
    remote: RemoteFile,
    part: _Part,
    timeout: tuple[float, float],
    progress: bool,
) -> None:
    """One request: append to the .part (resuming it) until the body ends; the caller verifies."""
    have = part.sync()
    if remote.size is not None and have > remote.size:
        part.reset()
        have = 0
    if remote.size is not None and 0 < have == remote.size:
        return  # a leftover .part that is already complete
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise _request_failure(exc, url, timeout) from None

    with response:
        status = response.status_code
        if status == 416 and have:
            return  # nothing left to send: the part may be complete, the caller verifies it
        if status >= 400:
            raise _http_failure(response, url, remote)
        if status not in (200, 206):
            raise _Failure("http", f"unexpected HTTP {status} from {url}", retry=False)
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if (
            status == 200
            and content_type in ("text/html", "application/xhtml+xml")
            and not _is_html_name(remote.filename)
        ):
            raise _html_failure(url, response, remote, f"Content-Type {content_type}")
        start, end, total = _body_range(response, url)
        if total is not None and remote.size is not None and total != remote.size:
            raise _Failure(
                "size",
                f"{url} serves {total} bytes but the metadata says size = {remote.size} for "
                f"'{remote.filename}' (a different file?)",
                retry=False,
            )
        if start == 0:
            if have:
                part.reset()  # the server ignored Range and sent everything: start over
        elif start != have:
            part.reset()
            raise _Failure(
                "dropped", f"{url} answered a resume at byte {have} from byte {start}", retry=True
            )
        else:
            part.spliced = True
        _stream_body(response, url, remote, part, end, total, progress)


def _stream_body(
    response: requests.Response,
    url: str,
    remote: RemoteFile,
    part: _Part,
    end: int | None,
    total: int | None,
    progress: bool,
) -> None:
    """Append the body to the .part as it arrives, hashing it on the way (no second pass)."""
    sniff = part.nbytes == 0 and not _is_html_name(remote.filename)
    head = b""
    chunks = response.raw.stream(CHUNK_SIZE, decode_content=False)  # the bytes as served
    bar = _progress_bar(total, part.nbytes, remote.filename, progress)
    try:
        with open(part.path, "ab") as f:
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except _NETWORK_ERRORS as exc:
                    raise _stream_failure(exc, url, part, end) from None
                if sniff:  # hold back the first bytes until we know it is not a web page
                    head += chunk
                    if len(head) < HTML_SNIFF_BYTES:
                        continue
                    chunk, head, sniff = head, b"", False
                    if _looks_like_html(chunk):
                        raise _html_failure(url, response, remote, "the body is HTML")
                part.write(f, chunk)
                bar.update(len(chunk))
            if head:
                if _looks_like_html(head):
                    raise _html_failure(url, response, remote, "the body is HTML")
                part.write(f, head)
                bar.update(len(head))
    except OSError as exc:  # opening the .part
        raise DownloadError(
            f"cannot write {part.path}: {exc.strerror or exc}; "
            "free some disk space or fix the folder's permissions, then run again"
        ) from None
    finally:
        bar.close()
    # Without a Content-Length a truncated body still shows up against the metadata size.
    expected = end if end is not None else remote.size
    if expected is not None and part.nbytes < expected:
        raise _Failure(
            "dropped",
            f"connection to {url} closed after {part.nbytes} of {expected} bytes",
            retry=True,
        )


def _verify(remote: RemoteFile, url: str, part: _Part) -> str:
    """Check the finished .part; on a mismatch delete it so a wrong file never lingers."""
    actual = part.hasher.hexdigest()
    problems = []
    if remote.sha256 is not None and actual != remote.sha256:
        problems.append(f"expected sha256 {remote.sha256}, got {actual}")
    if remote.size is not None and part.nbytes != remote.size:
        problems.append(f"expected {remote.size} bytes, got {part.nbytes}")
    if not problems:
        return actual
    stale = part.spliced
    part.reset()
    raise _Failure(
        "checksum",
        f"checksum mismatch for '{remote.filename}' from {url}: {'; '.join(problems)}",
        retry=False,
        stale=stale,
    )


def _download_from(
    session: requests.Session,
    url: str,
    remote: RemoteFile,
    part: _Part,
    *,
    progress: bool,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
) -> tuple[str | None, _Failure | None]:
    """Try one URL with retries; returns (sha256, None) on success or (None, last failure)."""
    attempt = 0
    high_water = part.sync()
    restarted = False
    while True:
        try:
            _attempt(session, url, remote, part, timeout, progress)
            return _verify(remote, url, part), None
        except _Failure as failure:
            if failure.stale and not restarted:
                restarted = True  # the resumed .part held old bytes: one clean try from zero
                continue
            if not failure.retry:
                return None, failure
            if part.nbytes > high_water:
                high_water = part.nbytes  # progress was made: the retry budget starts afresh
                attempt = 0
            if attempt >= retries:
                if retries:
                    failure.message += f" (gave up after {retries + 1} attempts)"
                return None, failure
            _sleep(backoff * 2**attempt)
            attempt += 1


def _no_network_message(
    remotes: Sequence[RemoteFile], dest_dir: Path, reason: str, notes: Mapping[str, str]
) -> str:
    folder = Path(os.path.abspath(dest_dir))
    items = []
    for remote in remotes:
        note = f" (the copy there {notes[remote.filename]})" if notes.get(remote.filename) else ""
        items.append(f"'{remote.filename}' from {' or '.join(remote.urls)}{note}")
    return (
        f"no network ({reason}): cannot download {len(remotes)} file(s); download by hand and "
        f"place in {folder}{os.sep}: {'; '.join(items)}; then run again"
    )


def _no_network_error(
    remotes: Sequence[RemoteFile], dest_dir: Path, reason: str, notes: Mapping[str, str]
) -> NoNetworkError:
    return NoNetworkError(
        _no_network_message(remotes, dest_dir, reason, notes),
        filenames=[r.filename for r in remotes],
        folder=Path(os.path.abspath(dest_dir)),
        reason=reason,
    )


def _download_unlocked(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    progress: bool,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    if remote.sha256 is None:
        _warn_unchecked(remote)
    final = dest_dir / remote.filename
    part = _Part(dest_dir / f"{remote.filename}.part")
    failures: list[_Failure] = []
    with requests.Session() as session:
        session.headers["User-Agent"] = USER_AGENT
        for url in remote.urls:
            digest, failure = _download_from(
                session,
                url,
                remote,
                part,
                progress=progress,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
            )
            if failure is None:
                assert digest is not None
                os.replace(part.path, final)
                _record_verified(final, digest)
                return final
            failures.append(failure)

    if part.path.exists() and part.path.stat().st_size == 0:
        part.path.unlink()  # an empty .part is just clutter; a non-empty one is kept to resume
    if all(f.kind == "unreachable" for f in failures):
        reason = failures[-1].message
        raise _no_network_error([remote], dest_dir, reason, {})
    where = Path(os.path.abspath(final))
    if len(failures) == 1:
        what = failures[0].message
    else:
        what = f"could not download '{remote.filename}' from any of its {len(failures)} URLs: "
        what += "; ".join(f.message for f in failures)
    if all(f.kind == "checksum" for f in failures):
        raise ChecksumMismatchError(
            f"{what}; nothing was kept. If the file changed upstream, update sha256 in the "
            f"metadata.toml; otherwise download it by hand, check it and place it at {where}"
        )
    raise DownloadError(
        f"{what}; fix the URL in the metadata.toml or download it by hand to {where}"
    )


@contextmanager
def _file_lock(dest_dir: Path, filename: str) -> Iterator[None]:
    """Serialize work on one file across processes: parallel sweep runs share data/raw."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        handle = open(dest_dir / f".{filename}.lock", "a")  # noqa: SIM115 (held across a yield)
    except OSError:  # a read-only folder: nobody else can be writing there either
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(
                f"waiting for another process to finish {dest_dir / filename} ...", file=sys.stderr
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def download_file(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    progress: bool = True,
    timeout: tuple[float, float] = (10.0, 60.0),
    retries: int = 4,
    backoff: float = 1.0,
) -> Path:
    """Fetch ``remote`` into ``dest_dir/remote.filename`` and return that path.

    Always downloads (see :func:`ensure_downloaded` to skip a verified file). The bytes go to
    ``<filename>.part`` and are hashed as they arrive; a dropped connection or a leftover .part is
    resumed with ``Range``; each URL gets ``retries`` more attempts after ``backoff * 2**attempt``
    seconds, then the mirrors are tried in order. ``timeout`` is (connect, read) in seconds.
    """
    dest_dir = Path(dest_dir)
    with _file_lock(dest_dir, remote.filename):
        return _download_unlocked(
            remote, dest_dir, progress=progress, timeout=timeout, retries=retries, backoff=backoff
        )


def ensure_downloaded(metadata_path: Path, dest_dir: Path, *, progress: bool = True) -> list[Path]:
    """Make every file of a metadata.toml present, verified and (if asked) extracted.

    Verified files are not downloaded again, unchanged ones not even re-hashed (see the
    ``.<filename>.verified`` sidecar), and archives are extracted once (``.<filename>.extracted``).
    Without a network the error lists every missing file, where it goes, and where to get it.
    Returns the local paths of the files, in metadata order.
    """
    remotes = load_metadata(Path(metadata_path))
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    offline: list[RemoteFile] = []
    notes: dict[str, str] = {}
    offline_reason: str | None = None
    for remote in remotes:
        path = dest_dir / remote.filename
        with _file_lock(dest_dir, remote.filename):
            ok, why = _check_present(remote, path)
            if ok:
                paths.append(path)
                continue
            if why:
                notes[remote.filename] = why
                print(f"{path} {why}; downloading it again", file=sys.stderr)
            # Once the network is known to be down, give other files one quick try each.
            retries = 4 if offline_reason is None else 0
            try:
                paths.append(
                    _download_unlocked(
                        remote,
                        dest_dir,
                        progress=progress,
                        timeout=(10.0, 60.0),
                        retries=retries,
                        backoff=1.0,
                    )
                )
            except NoNetworkError as exc:
                offline_reason = offline_reason or exc.reason
                offline.append(remote)
    if offline:
        raise _no_network_error(offline, dest_dir, offline_reason or "unreachable", notes)

    for remote, path in zip(remotes, paths, strict=True):
        if remote.extract:
            with _file_lock(dest_dir, remote.filename):
                _extract_once(remote, path, dest_dir)
    return paths


def _extract_once(remote: RemoteFile, archive: Path, dest_dir: Path) -> None:
    """Extract unless the marker says this very archive was extracted and its output is there."""
    marker = _sidecar(archive, "extracted")
    st = archive.stat()
    done = _read_json(marker)
    if (
        done is not None
        and done.get("size") == st.st_size
        and done.get("mtime_ns") == st.st_mtime_ns
        and done.get("sha256") == remote.sha256
        and isinstance(done.get("top_level"), list)
        and all((dest_dir / name).exists() for name in done["top_level"])
    ):
        return
    for stale in dest_dir.glob(f".{archive.name}.*.extracting"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run (we hold the lock)
    extracted = extract_archive(archive, dest_dir)
    top_level = sorted({p.relative_to(dest_dir).parts[0] for p in extracted})
    _write_json_quietly(
        marker,
        {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": remote.sha256,
            "top_level": top_level,
        },
    )


# --------------------------------------------------------------------------------------------------
# safe extraction


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
