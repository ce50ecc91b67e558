"""Download and verify the raw files that a dataset's ``metadata.toml`` describes, then unpack them.

Raw datasets are large, live on servers we do not control and are fetched over flaky networks. So
downloads stream with a progress bar, hash while streaming, resume a partial ``.part`` file with an
HTTP ``Range`` request, retry with exponential backoff, fall back to mirrors, time out instead of
hanging, and rename into place only once the sha256 matches. No wait is unbounded: each URL has an
overall deadline (scaled from the declared size) and a minimum rate, enforced even while a read is
blocked, and a body is never kept beyond the size the metadata declares. Reading the metadata.toml lives in
:mod:`~text_recognizer.datasets.metadata` and safe unpacking (every archive member checked before
anything is written) in :mod:`~text_recognizer.datasets.extract`; their public names are
re-exported here. Every failure a user can act on is a one-line
:class:`~text_recognizer.errors.DataError` that says what went wrong, where, and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import socket
import stat
import sys
import threading
import time
import warnings
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests
import urllib3
import urllib3.connection
from tqdm import tqdm

from text_recognizer.datasets.extract import (
    CHUNK_SIZE,
    MAX_MARKER_BYTES,
    ArchiveError,
    UnsafeArchiveError,
    extract_archive,
)
from text_recognizer.datasets.metadata import MetadataError, RemoteFile, load_metadata
from text_recognizer.errors import (
    ChecksumMismatchError,
    DataError,
    DownloadError,
    NoNetworkError,
    StorageError,
    UserError,
    one_line,
    storage_error,
)
from text_recognizer.fileio import read_small_text, write_json_atomic
from text_recognizer.progress import line as progress_line

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
    "merge_data_errors",
    "sha256_file",
]

HTML_SNIFF_BYTES = 512
USER_AGENT = "text-recognizer/0.1 (python-requests)"
# Per URL: give up after DEADLINE_BASE_S plus the declared size at DEADLINE_RATE bytes/s (or
# DEADLINE_UNSIZED_S without a size), or when fewer than MIN_RATE bytes/s arrive over RATE_WINDOW_S.
# The environment variables below override them (tests, slow links).
DEADLINE_BASE_S = 600.0
DEADLINE_RATE = 20 << 10
DEADLINE_UNSIZED_S = 4 * 3600.0
MIN_RATE = 1024.0
RATE_WINDOW_S = 60.0
ENV_DEADLINE = "TEXT_RECOGNIZER_DOWNLOAD_DEADLINE"
ENV_MIN_RATE = "TEXT_RECOGNIZER_DOWNLOAD_MIN_RATE"
ENV_RATE_WINDOW = "TEXT_RECOGNIZER_DOWNLOAD_RATE_WINDOW"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A process waiting for another's download of the same file waits that download's worst case
# plus this for extraction (see _lock_wait_s), polling every LOCK_POLL_S.
LOCK_EXTRACT_ALLOWANCE_S = 1800.0
LOCK_POLL_S = 0.5

# Looked up at call time so tests can replace it and run retries without waiting.
_sleep = time.sleep


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
    """A sidecar's JSON object, or None for a missing, damaged, huge or non-regular (FIFO) one:
    read bounded and without blocking, a bad sidecar only costs a re-hash or a re-extraction."""
    try:
        data = json.loads(read_small_text(path, MAX_MARKER_BYTES, "marker", DataError))
    except (OSError, UserError, ValueError, RecursionError):
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

    def __init__(
        self, kind: str, message: str, *, retry: bool, stale: bool = False, reason: str = ""
    ) -> None:
        super().__init__(message)
        # unreachable | timeout | slow | dropped | http | html | checksum | size | other
        self.kind = kind
        self.message = one_line(message)
        self.retry = retry
        self.stale = stale
        self.reason = reason or self.message  # short, without the URL (unreachable ones)


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
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise storage_error(exc, self.path, "read") from None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise StorageError(
                f"{self.path} is not a regular file (a link or folder?), so it is not written "
                "through; remove it and run again"
            )
        size = st.st_size if st is not None else 0
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

    def open(self) -> Any:
        """Unbuffered append, never through a link: the file holds exactly what was hashed."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_NOFOLLOW
        try:
            return open(os.open(self.path, flags, 0o666), "ab", buffering=0)
        except OSError as exc:
            raise storage_error(exc, self.path) from None

    def write(self, f: Any, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            try:
                n = f.write(view)
            except OSError as exc:
                kept = f"; the {self.nbytes:,} bytes received so far are kept there to resume"
                raise StorageError(
                    f"{storage_error(exc, self.path)}{kept if self.nbytes else ''}"
                ) from None
            self.hasher.update(view[:n])
            self.nbytes += n
            view = view[n:]


@dataclass(frozen=True)
class _Limits:
    """How long one URL may take in all, and the slowest rate accepted over a window."""

    deadline_s: float
    min_rate: float
    window_s: float


def _env_number(name: str, *, allow_zero: bool = False) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        valid = "a number >= 0 (0: no minimum)" if allow_zero else "a positive number"
        raise UserError(f"{name} must be {valid}, got {raw!r}")
    return value


def _limits_for(
    remote: RemoteFile, deadline: float | None = None, min_rate: float | None = None
) -> _Limits:
    """Arguments win over the environment, which wins over defaults scaled from the size."""
    if deadline is None:
        deadline = _env_number(ENV_DEADLINE)
    if deadline is None:
        known = remote.size is not None
        deadline = DEADLINE_BASE_S + remote.size / DEADLINE_RATE if known else DEADLINE_UNSIZED_S
    if min_rate is None:
        min_rate = _env_number(ENV_MIN_RATE, allow_zero=True)
    window = _env_number(ENV_RATE_WINDOW) or RATE_WINDOW_S
    return _Limits(deadline, MIN_RATE if min_rate is None else min_rate, window)


class _Clock:
    """The deadline and the minimum rate of one URL, checked whenever bytes arrive."""

    def __init__(self, limits: _Limits, url: str, remote: RemoteFile) -> None:
        self.limits = limits
        self.url = url
        self.remote = remote
        self.deadline_at = time.monotonic() + limits.deadline_s
        self.mark = (time.monotonic(), 0)

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    def start_body(self, nbytes: int) -> None:
        self.mark = (time.monotonic(), nbytes)

    def check(self, nbytes: int) -> None:
        """Fail past the deadline, or when the last window brought too few bytes."""
        now = time.monotonic()
        if now >= self.deadline_at:
            raise self.expired(nbytes)
        since, then = self.mark
        if now - since >= self.limits.window_s:
            rate = (nbytes - then) / (now - since)
            if rate < self.limits.min_rate:
                raise _Failure(
                    "slow",
                    f"{self.url} sent {nbytes - then:,} bytes in {now - since:.0f} s, slower than "
                    f"the minimum of {self.limits.min_rate:g} bytes/s (a stalled or throttled "
                    f"server; {ENV_MIN_RATE} changes the minimum)",
                    retry=True,
                )
            self.mark = (now, nbytes)

    def expired(self, nbytes: int) -> _Failure:
        return _Failure(
            "timeout",
            f"gave up on {self.url} after {self.limits.deadline_s:g} s, the deadline for "
            f"'{self.remote.filename}' ({nbytes:,} bytes received; set {ENV_DEADLINE} to a number "
            "of seconds to allow longer, then run again to resume)",
            retry=False,
        )


class _Watchdog:
    """Shuts a download's sockets at its deadline, so even a read blocked on a server that
    drips one byte at a time (the read timeout restarts with every byte) returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self.fired = False

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.fired:
                self._shut(sock)

    def arm(self, seconds: float) -> None:
        self.disarm()
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:  # sockets stay listed: a pooled connection may serve the next URL
            self.fired = False

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _tracked_session(watchdog: _Watchdog) -> requests.Session:
    """A session whose every new socket is registered with ``watchdog``."""

    def tracked(cls: type) -> type:
        def _new_conn(self: Any) -> socket.socket:
            sock = cls._new_conn(self)
            watchdog.register(sock)
            return sock

        return type(f"Tracked{cls.__name__}", (cls,), {"_new_conn": _new_conn})

    pools = {
        "http": type(
            "TrackedHTTPConnectionPool",
            (urllib3.HTTPConnectionPool,),
            {"ConnectionCls": tracked(urllib3.connection.HTTPConnection)},
        ),
        "https": type(
            "TrackedHTTPSConnectionPool",
            (urllib3.HTTPSConnectionPool,),
            {"ConnectionCls": tracked(urllib3.connection.HTTPSConnection)},
        ),
    }

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = pools
            return manager

    session = requests.Session()
    session.mount("http://", Adapter())
    session.mount("https://", Adapter())
    session.headers["User-Agent"] = USER_AGENT
    return session


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


# No route to the network or the host: like a name that does not resolve or a refused
# connection, retrying in a few seconds cannot help, so the next mirror is tried at once.
_NO_ROUTE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH})


def _connect_failure_reason(exc: BaseException) -> tuple[str, bool] | None:
    """(a short reason, whether retrying can help) if the connection could not be established at
    all, else None. A name that does not resolve, a refused connection and no route are final; a
    connect timeout is retried (a busy or distant server)."""
    causes = list(_causes(exc))
    name_errors = tuple(
        cls for cls in (getattr(urllib3.exceptions, "NameResolutionError", None),) if cls
    )
    if any(isinstance(e, (socket.gaierror, *name_errors)) for e in causes):
        return "cannot resolve the host name (DNS lookup failed)", False
    if any(
        isinstance(e, ConnectionRefusedError)
        or (isinstance(e, OSError) and e.errno == errno.ECONNREFUSED)
        for e in causes
    ):
        return "connection refused", False
    if any(isinstance(e, OSError) and e.errno in _NO_ROUTE_ERRNOS for e in causes):
        return "network unreachable (no route to the host)", False
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2, so test it first.
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in causes):
        return "cannot connect (network unreachable?)", True
    if any(isinstance(e, urllib3.exceptions.ConnectTimeoutError) for e in causes):
        return "timed out while connecting", True
    if any(isinstance(e, requests.exceptions.ProxyError) for e in causes):
        return "cannot reach the proxy", True
    return None


def _request_failure(
    exc: requests.RequestException, url: str, timeout: tuple[float, float]
) -> _Failure:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        reason = f"no answer within {timeout[0]:g} s"
        return _Failure(
            "unreachable", f"cannot connect to {url}: {reason}", retry=True, reason=reason
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
        found = _connect_failure_reason(exc)
        if found:
            reason, transient = found
            return _Failure(
                "unreachable", f"cannot connect to {url}: {reason}", retry=transient, reason=reason
            )
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
    clock: _Clock,
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
    read_timeout = max(min(timeout[1], clock.remaining()), 0.01)
    try:
        response = session.get(
            url, headers=headers, stream=True, timeout=(timeout[0], read_timeout)
        )
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
        _stream_body(response, url, remote, part, end, total, progress, clock)


def _stream_body(
    response: requests.Response,
    url: str,
    remote: RemoteFile,
    part: _Part,
    end: int | None,
    total: int | None,
    progress: bool,
    clock: _Clock,
) -> None:
    """Append the body to the .part as it arrives, hashing it on the way (no second pass).

    Reads return as soon as any bytes arrive, so the deadline and the minimum rate are checked
    even against a server that drips; nothing past the declared size is ever written.
    """
    sniff = part.nbytes == 0 and not _is_html_name(remote.filename)
    head = b""
    limit = end if end is not None else remote.byte_limit
    read = getattr(response.raw, "read1", response.raw.read)
    bar = _progress_bar(total, part.nbytes, remote.filename, progress)
    clock.start_body(part.nbytes)
    try:
        with part.open() as f:
            while True:
                try:
                    chunk = read(CHUNK_SIZE, decode_content=False)  # the bytes as served
                except _NETWORK_ERRORS as exc:
                    if clock.remaining() <= 0:
                        raise clock.expired(part.nbytes) from None
                    raise _stream_failure(exc, url, part, end) from None
                if not chunk:
                    break
                received = part.nbytes + len(head) + len(chunk)
                clock.check(received)
                if limit is not None and received > limit:
                    part.reset()
                    raise _oversize(url, remote, limit)
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
    finally:
        bar.close()
    if clock.remaining() <= 0:  # the watchdog cut the connection: not a genuine end of body
        raise clock.expired(part.nbytes)
    # Without a Content-Length a truncated body still shows up against the metadata size.
    expected = end if end is not None else remote.size
    if expected is not None and part.nbytes < expected:
        raise _Failure(
            "dropped",
            f"connection to {url} closed after {part.nbytes} of {expected} bytes",
            retry=True,
        )


def _oversize(url: str, remote: RemoteFile, limit: int) -> _Failure:
    return _Failure(
        "size",
        f"{url} sent more than the {limit:,} bytes declared for '{remote.filename}' (a different "
        "file or a broken server; a metadata.toml without size may raise max_size); stopped "
        "there and kept nothing",
        retry=False,
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
    clock: _Clock,
) -> tuple[str | None, _Failure | None]:
    """Try one URL with retries; returns (sha256, None) on success or (None, last failure).

    Everything, retries and backoff included, ends by the URL's deadline.
    """
    attempt = 0
    high_water = part.sync()
    restarted = False
    while True:
        try:
            _attempt(session, url, remote, part, timeout, progress, clock)
            return _verify(remote, url, part), None
        except _Failure as failure:
            if clock.remaining() <= 0:
                return None, clock.expired(part.sync())
            if failure.stale and not restarted:
                restarted = True  # the resumed .part held old bytes: one clean try from zero
                continue
            if not failure.retry:
                return None, failure
            if part.nbytes > high_water and failure.kind != "slow":
                high_water = part.nbytes  # progress was made: the retry budget starts afresh
                attempt = 0
            if attempt >= retries:
                if retries:
                    failure.message += f" (gave up after {retries + 1} attempts)"
                return None, failure
            _sleep(min(backoff * 2**attempt, max(clock.remaining(), 0.0)))
            attempt += 1


def _place(remote: RemoteFile, dest_dir: Path, note: str = "") -> tuple[Path, str, str]:
    """(folder, file name, "'name' from URL or URL"): one file to fetch by hand and where."""
    note = f" (the copy there {note})" if note else ""
    item = f"'{remote.filename}' from {' or '.join(remote.urls)}{note}"
    return Path(os.path.abspath(dest_dir)), remote.filename, item


def _no_network_error(
    places: Sequence[tuple[Path, str, str]], reasons: Sequence[str]
) -> NoNetworkError:
    """One error naming every file to place by hand, grouped by the folder it goes in."""
    reason = "; ".join(dict.fromkeys(r for r in reasons if r)) or "unreachable"
    by_folder: dict[Path, list[str]] = {}
    for folder, _, item in places:
        by_folder.setdefault(folder, []).append(item)
    where = "; and ".join(
        f"in {folder}{os.sep}: {'; '.join(items)}" for folder, items in by_folder.items()
    )
    readme = (
        "; README.md, Datasets, says where each dataset's files go" if len(by_folder) > 1 else ""
    )
    return NoNetworkError(
        f"no network ({reason}): cannot download {len(places)} file(s); download by hand and "
        f"place {where}; then run again{readme}",
        filenames=[name for _, name, _ in places],
        folder=next(iter(by_folder)) if len(by_folder) == 1 else None,
        reason=reason,
        places=places,
    )


def merge_data_errors(problems: Sequence[DataError]) -> DataError | None:
    """None, the one problem, or one error for them all: a dataset that needs several files (or
    several datasets) reports every file that is missing in one run, not one per run.

    Offline failures merge into one :class:`NoNetworkError` that lists every file and its folder;
    other problems follow it, numbered, in the same one line.
    """
    if len(problems) <= 1:
        return problems[0] if problems else None
    offline = [p for p in problems if isinstance(p, NoNetworkError)]
    merged: list[DataError] = [p for p in problems if not isinstance(p, NoNetworkError)]
    if offline:
        places = [place for p in offline for place in p.places]
        network = _no_network_error(places, [p.reason for p in offline]) if places else offline[0]
        if not merged:
            return network
        merged.insert(0, network)
    if len(merged) == 1:
        return merged[0]
    listed = "; ".join(f"({i}) {one_line(p)}" for i, p in enumerate(merged, 1))
    return DataError(f"{len(merged)} problems with the raw data: {listed}")


def _host(url: str) -> str:
    """scheme://host:port, the unit a failed DNS lookup or a refused connection condemns."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return url
    return f"{parts.scheme}://{parts.hostname}:{port}"


def _download_unlocked(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    progress: bool,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
    limits: _Limits,
    dead_hosts: dict[str, _Failure] | None = None,
    note: str = "",
) -> Path:
    """Fetch ``remote`` from its URLs in order. ``dead_hosts`` (shared by the downloads of one
    call) remembers the hosts that could not be connected to, so they are not tried again."""
    _make_folder(dest_dir)
    if remote.sha256 is None:
        _warn_unchecked(remote)
    final = dest_dir / remote.filename
    part = _Part(dest_dir / f"{remote.filename}.part")
    _check_free_space(remote, dest_dir, part.sync())
    failures: list[_Failure] = []
    dead = {} if dead_hosts is None else dead_hosts
    watchdog = _Watchdog()
    with _tracked_session(watchdog) as session:
        for index, url in enumerate(remote.urls):
            host = _host(url)
            if host in dead:  # seen a moment ago: no second DNS lookup or connection attempt
                reason = dead[host].reason
                failures.append(
                    _Failure(
                        "unreachable",
                        f"cannot connect to {url}: {reason}",
                        retry=False,
                        reason=reason,
                    )
                )
                continue
            clock = _Clock(limits, url, remote)
            watchdog.arm(clock.remaining())  # fires at, never before, the clock's deadline
            try:
                digest, failure = _download_from(
                    session,
                    url,
                    remote,
                    part,
                    progress=progress,
                    timeout=timeout,
                    retries=retries,
                    backoff=backoff,
                    clock=clock,
                )
            finally:
                watchdog.disarm()
            if failure is None:
                assert digest is not None
                try:
                    os.replace(part.path, final)
                except OSError as exc:
                    raise storage_error(exc, final) from None
                _record_verified(final, digest)
                return final
            failures.append(failure)
            if failure.kind == "unreachable":
                dead[host] = failure
            if index + 1 < len(remote.urls):
                progress_line(f"{failure.message}; trying the next URL")

    with suppress(OSError):
        if part.path.lstat().st_size == 0:
            part.path.unlink()  # an empty .part is just clutter; a non-empty one is kept to resume
    if all(f.kind == "unreachable" for f in failures):
        raise _no_network_error([_place(remote, dest_dir, note)], [f.reason for f in failures])
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


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, folder, "create the folder") from None


def _check_free_space(remote: RemoteFile, dest_dir: Path, have: int) -> None:
    """Refuse at once a download the disk cannot hold, rather than fill the disk first."""
    if remote.size is None:
        return
    try:
        st = os.statvfs(dest_dir)
    except (OSError, AttributeError):
        return
    need, free = remote.size - have, st.f_bavail * st.f_frsize
    if need > free:
        raise StorageError(
            f"cannot download '{remote.filename}' ({need:,} bytes) into {dest_dir}: only "
            f"{free:,} bytes are free; free some space and run again"
        )


def _lock_wait_s(remote: RemoteFile) -> float:
    """How long to wait for another process working on ``remote``: its own worst case, every URL
    to its deadline, plus time to extract. Past that the holder is stuck (stopped, or hung on a
    disk), and waiting on would be a hang."""
    return _limits_for(remote).deadline_s * len(remote.urls) + LOCK_EXTRACT_ALLOWANCE_S


@contextmanager
def _file_lock(dest_dir: Path, filename: str, wait_s: float) -> Iterator[None]:
    """Serialize work on one file across processes: parallel sweep runs share data/raw."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | _O_NOFOLLOW
        fd = os.open(dest_dir / f".{filename}.lock", flags, 0o666)
        handle = open(fd, "a")  # noqa: SIM115 (held across a yield)
    except OSError:  # a read-only folder: nobody else can be writing there either
        yield
        return
    with handle:
        _acquire(handle, dest_dir / filename, wait_s)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _acquire(handle: IO[str], path: Path, wait_s: float) -> None:
    """Take the lock, polling, and give up with a one-line error after ``wait_s`` seconds."""
    give_up_at = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= give_up_at:
            raise DataError(
                f"another process has been working on {path} for over {wait_s:g} s, longer than "
                "its own download deadline allows; if it is stuck (stopped or hung), end it and "
                "run again"
            )
        if not announced:
            progress_line(f"waiting for another process to finish {path} ...")
            announced = True
        time.sleep(LOCK_POLL_S)


def download_file(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    progress: bool = True,
    timeout: tuple[float, float] = (10.0, 60.0),
    retries: int = 4,
    backoff: float = 1.0,
    deadline: float | None = None,
    min_rate: float | None = None,
) -> Path:
    """Fetch ``remote`` into ``dest_dir/remote.filename`` and return that path.

    Always downloads (see :func:`ensure_downloaded` to skip a verified file). The bytes go to
    ``<filename>.part`` and are hashed as they arrive; a dropped connection or a leftover .part is
    resumed with ``Range``; each URL gets ``retries`` more attempts after ``backoff * 2**attempt``
    seconds, then the mirrors are tried in order. ``timeout`` is (connect, read) in seconds;
    ``deadline`` (seconds per URL, all attempts) and ``min_rate`` (bytes/s) default to the
    ``TEXT_RECOGNIZER_DOWNLOAD_*`` variables, else to values scaled from the declared size.
    """
    dest_dir = Path(dest_dir)
    limits = _limits_for(remote, deadline, min_rate)
    with _file_lock(dest_dir, remote.filename, _lock_wait_s(remote)):
        return _download_unlocked(
            remote,
            dest_dir,
            progress=progress,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            limits=limits,
        )


def ensure_downloaded(
    metadata_path: Path,
    dest_dir: Path,
    *,
    progress: bool = True,
    only: Collection[str] | None = None,
) -> list[Path]:
    """Make every file of a metadata.toml (or the ``only`` ones) present, verified and (if asked)
    extracted.

    Verified files are not downloaded again, unchanged ones not even re-hashed (see the
    ``.<filename>.verified`` sidecar), and archives are extracted once (``.<filename>.extracted``).
    A file that cannot be downloaded does not stop the others: the one error at the end names
    every file that failed (without a network: each file, where it goes, and where to get it).
    Returns the local paths of the files, in metadata order.
    """
    every = load_metadata(Path(metadata_path))
    remotes = every if only is None else [r for r in every if r.filename in only]
    dest_dir = Path(dest_dir)
    _make_folder(dest_dir)
    paths: list[Path] = []
    problems: list[DataError] = []
    dead_hosts: dict[str, _Failure] = {}
    offline = False
    for remote in remotes:
        path = dest_dir / remote.filename
        with _file_lock(dest_dir, remote.filename, _lock_wait_s(remote)):
            ok, why = _check_present(remote, path)
            if ok:
                paths.append(path)
                continue
            if why:
                progress_line(f"{path} {why}; downloading it again")
            try:
                paths.append(
                    _download_unlocked(
                        remote,
                        dest_dir,
                        progress=progress,
                        timeout=(10.0, 60.0),
                        # Once the network is known to be down, other files get one quick try.
                        retries=0 if offline else 4,
                        backoff=1.0,
                        limits=_limits_for(remote),
                        dead_hosts=dead_hosts,
                        note=why,
                    )
                )
            except DownloadError as exc:  # the next file may still come; all are named at the end
                offline = offline or isinstance(exc, NoNetworkError)
                problems.append(exc)
    failed = merge_data_errors(problems)
    if failed is not None:
        raise failed

    protected = [r.filename for r in every]
    for remote, path in zip(remotes, paths, strict=True):
        if remote.extract:
            with _file_lock(dest_dir, remote.filename, _lock_wait_s(remote)):
                _extract_once(remote, path, dest_dir, protected)
    return paths


def _extract_once(
    remote: RemoteFile, archive: Path, dest_dir: Path, protected: Sequence[str] = ()
) -> None:
    """Extract unless the marker says this very archive was extracted and its output is there."""
    for stale in dest_dir.glob(f".{archive.name}.*.extracting"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run (we hold the lock)
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
    extracted = extract_archive(
        archive,
        dest_dir,
        max_bytes=remote.max_extracted_size,
        max_files=remote.max_extracted_files,
        protected=protected,
    )
    # extract_archive recorded (in this marker) every top-level name it may replace next time
    recorded = (_read_json(marker) or {}).get("top_level")
    top_level = (
        recorded
        if isinstance(recorded, list)
        else sorted({p.relative_to(dest_dir).parts[0] for p in extracted})
    )
    _write_json_quietly(
        marker,
        {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "sha256": remote.sha256,
            "top_level": top_level,
        },
    )
