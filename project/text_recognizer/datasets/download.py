"""Download and verify the raw files that a dataset's ``metadata.toml`` describes, then unpack them.

Raw datasets are large, live on servers we do not control and are fetched over flaky networks. So
downloads stream with a progress bar, hash while streaming, resume a partial ``.part`` file with an
HTTP ``Range`` request, retry with exponential backoff, fall back to mirrors, time out instead of
hanging, and rename into place only once the sha256 matches. Reading the metadata.toml lives in
:mod:`~text_recognizer.datasets.metadata` and safe unpacking (every archive member checked before
anything is written) in :mod:`~text_recognizer.datasets.extract`; their public names are
re-exported here. Every failure a user can act on is a one-line
:class:`~text_recognizer.errors.DataError` that says what went wrong, where, and what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from text_recognizer.datasets.extract import (
    CHUNK_SIZE,
    ArchiveError,
    UnsafeArchiveError,
    extract_archive,
)
from text_recognizer.datasets.metadata import MetadataError, RemoteFile, load_metadata
from text_recognizer.errors import DataError, one_line
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

HTML_SNIFF_BYTES = 512
USER_AGENT = "text-recognizer/0.1 (python-requests)"

# Looked up at call time so tests can replace it and run retries without waiting.
_sleep = time.sleep


class DownloadError(DataError):
    """A file could not be fetched from any of its URLs."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


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


class UncheckedDownloadWarning(UserWarning):
    """A metadata entry has no sha256, so the file's content is not verified."""


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
        self.message = one_line(message)
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
