"""A small, configurable HTTP server on 127.0.0.1 for download tests (real sockets, no network).

Each path gets a :class:`Route` that says how to misbehave: honour or ignore ``Range``, cut the
connection part-way (once or every time, by closing or by a TCP reset), serve an error status or a
web page, stall, drip the headers or the body one byte at a time, or send a body that never
ends. Every request is recorded with its ``Range`` header so tests can check that a
resume really asked for ``bytes=N-``.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class Route:
    """How the server answers one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    honour_range: bool = True
    send_length: bool = True
    fail_first: int = 0  # answer the first N requests with `fail_status` instead
    fail_status: int = 500
    truncate_first: int | None = None  # first request: full Content-Length, close after k bytes
    drop_after: int | None = None  # every request: close after k bytes of the body
    reset: bool = False  # cut with a TCP RST ("connection reset") instead of a clean close
    stall: float = 0.0  # seconds to wait before answering at all
    stall_after: int | None = None  # send k bytes of the body, then wait `stall_body` seconds
    stall_body: float = 0.0
    drip: float = 0.0  # send the body one byte at a time, this many seconds apart
    drip_headers: float = 0.0  # send endless header lines one byte at a time, this far apart
    endless: bool = False  # no Content-Length; repeat the body until the client hangs up
    endless_cap: int = 64 << 20  # ... or until this much is sent, so a test can never hang
    headers: dict[str, str] = field(default_factory=dict)
    calls: int = 0


@dataclass(frozen=True)
class Request:
    """One request the server received."""

    path: str
    range: str | None
    headers: dict[str, str]


class HttpTestServer:
    """ThreadingHTTPServer on an ephemeral port; use as a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, body: bytes = b"", **options: object) -> str:
        """Register a route and return its URL."""
        self.routes[path] = Route(body=body, **options)  # type: ignore[arg-type]
        return self.url(path)

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait(self, seconds: float) -> bool:
        """Sleep in a handler, but wake at once when the server shuts down (then True)."""
        return self._stop.wait(seconds)

    def __enter__(self) -> HttpTestServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _make_handler(server: HttpTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            # The client may give up first (timeouts): expected, not worth a traceback.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._answer()

        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            with server._lock:
                server.requests.append(
                    Request(path, self.headers.get("Range"), dict(self.headers.items()))
                )
                route = server.routes.get(path)
                if route is not None:
                    route.calls += 1
            self.close_connection = True
            if route is None:
                self._simple(404, b"not found")
                return
            if route.stall and server.wait(route.stall):
                return
            if route.drip_headers:
                self._drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: y\r\n" * 100_000, route.drip_headers)
                return
            if route.endless:
                self._endless(route)
                return
            if route.calls <= route.fail_first:
                self._simple(route.fail_status, b"<html><body>error</body></html>", "text/html")
                return
            if route.status != 200:
                self._simple(route.status, b"<html><body>error</body></html>", "text/html")
                return

            body = route.body
            status, start = 200, 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and route.honour_range:
                start = int(match[1])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                status = 206
            payload = body[start:]
            self.send_response(status)
            self.send_header("Content-Type", route.content_type)
            if route.send_length:
                self.send_header("Content-Length", str(len(payload)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            for key, value in route.headers.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()

            cut = route.drop_after
            if route.truncate_first is not None and route.calls == 1:
                cut = route.truncate_first
            if route.stall_after is not None:
                self.wfile.write(payload[: route.stall_after])
                self.wfile.flush()
                if server.wait(route.stall_body):
                    return
                payload = payload[route.stall_after :]
            if route.drip:
                self._drip(payload, route.drip)
                return
            if cut is not None and cut < len(payload):
                self.wfile.write(payload[:cut])
                self.wfile.flush()
                if route.reset:  # SO_LINGER 0 and no FIN first: close() sends RST
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.wfile.close()
                    self.rfile.close()
                    self.connection.close()
                    self.wfile = io.BytesIO()  # the base class still flushes it afterwards
                return
            self.wfile.write(payload)

        def _drip(self, data: bytes, interval: float) -> None:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if server.wait(interval):
                    return

        def _endless(self, route: Route) -> None:
            self.send_response(200)
            self.send_header("Content-Type", route.content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = (route.body or b"\0") * max(1, 65536 // max(len(route.body), 1))
            sent = 0
            while sent < route.endless_cap and not server._stop.is_set():
                self.wfile.write(chunk)
                sent += len(chunk)

        def _simple(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def closed_port_url(path: str = "/file.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}{path}"


PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def bypass_proxies(monkeypatch) -> None:
    """Requests to the 127.0.0.1 test server must not go through a proxy the machine sets."""
    for var in PROXY_VARIABLES:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
