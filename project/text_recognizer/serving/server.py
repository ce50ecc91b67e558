"""A listening socket and uvicorn serving the app on it: in the foreground, or in a thread.

The socket is bound before the model loads, so a port in use is a one-line error at once, and
``--port 0`` (a free port the system picks) still prints the real URL. Tests and benchmarks run
the same server in a thread (:class:`ServerThread`).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from typing import Any

from text_recognizer.errors import UserError
from text_recognizer.serving.settings import HEADER_TIMEOUT_S, MAX_CONNECTIONS

LOG_LEVEL = "warning"  # uvicorn's own lines: startup errors and tracebacks, no line per request
KEEP_ALIVE_S = 5


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; a one-line UserError if it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host}: not an address of this machine ({e})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(
                f"port {port} on {host} is in use (another server?); choose another --port"
            ) from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UserError(
                f"no permission to listen on {host}:{port} (ports below 1024 need root)"
            ) from None
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: Any, log_level: str = LOG_LEVEL) -> Any:
    """A uvicorn Server for ``app`` (sockets are given to its ``run``): at most
    MAX_CONNECTIONS connections and requests (more get uvicorn's 503), and a connection that has
    not sent a whole request head within HEADER_TIMEOUT_S is closed (`header_timeout_protocol`)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        http=header_timeout_protocol(),
    )
    return uvicorn.Server(config)


def header_timeout_protocol() -> type:
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's head: a client that opens
    connections and sends nothing, or a header a byte at a time (slowloris), would otherwise hold
    a file descriptor each until the process has none left. The deadline runs from the
    connection's start and again from each response (uvicorn's keep-alive timeout only covers a
    connection that sends nothing more)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            self._waiting_after = self.cycle  # a new cycle means a whole head has arrived
            self._head_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._head_too_slow)

        def _head_too_slow(self) -> None:
            if self.cycle is self._waiting_after and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._waiting_after:
                self._head_deadline.cancel()

        def on_response_complete(self) -> None:
            done = self.cycle
            super().on_response_complete()  # may already start a pipelined request's cycle
            if not self.transport.is_closing():
                self._head_deadline.cancel()
                if self.cycle is done:  # no next head parsed yet: it has the deadline
                    self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_deadline.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one: each connection is a file descriptor."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ServerThread:
    """``with ServerThread(app) as url:`` serves ``app`` on a free 127.0.0.1 port in a thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind_socket(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn_server(app)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server thread did not start")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
