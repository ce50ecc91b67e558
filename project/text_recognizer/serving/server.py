"""A listening socket and uvicorn serving the app on it: in the foreground, or in a thread.

The socket is bound before the model loads, so a port in use is a one-line error at once, and
``--port 0`` (a free port the system picks) still prints the real URL. Tests and benchmarks run
the same server in a thread (:class:`ServerThread`).
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any

from text_recognizer.errors import UserError

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
    """A uvicorn Server for ``app`` (sockets are given to its ``run``)."""
    import uvicorn

    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, timeout_keep_alive=KEEP_ALIVE_S
    )
    return uvicorn.Server(config)


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
