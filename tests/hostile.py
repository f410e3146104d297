"""Small hostile servers on 127.0.0.1 (port 0) for the hardening tests and the chaos harness.

Each server runs one function per accepted connection in a daemon thread; ``stop()`` closes the
listening socket and every accepted one, so a test that stops it never leaves a thread blocked.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType


def read_head(conn: socket.socket, limit: int = 65536) -> bytes:
    """Read a request's head (up to the blank line); returns b'' when the client went away."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        try:
            chunk = conn.recv(4096)
        except OSError:
            return b""
        if not chunk:
            return data
        data += chunk
    return data


class RawServer:
    """Accepts connections and hands each to ``handler(conn, server)`` in its own thread."""

    def __init__(self, handler: Callable[[socket.socket, RawServer], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopping = threading.Event()
        self.heads: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(conn, self)
        with contextlib.suppress(OSError):
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def drip(interval_event: threading.Event, step: float = 0.2) -> Callable[[socket.socket, RawServer], None]:
    """Answer 200 with a long body sent one byte per ``step`` seconds until the server stops.

    Waits on the server's stop event (not a bare sleep), so stopping the server ends it at once.
    """

    def handler(conn: socket.socket, server: RawServer) -> None:
        server.heads.append(read_head(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        interval_event.set()
        while not server.stopping.wait(step):
            conn.sendall(b" ")

    return handler


def cut_chunked(body: bytes = b'{"items": [1, 2, 3') -> Callable[[socket.socket, RawServer], None]:
    """Answer 200 with a chunked body whose connection closes mid-chunk (ChunkedEncodingError)."""

    def handler(conn: socket.socket, server: RawServer) -> None:
        server.heads.append(read_head(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + f"{len(body) + 50:x}\r\n".encode() + body)
        conn.shutdown(socket.SHUT_RDWR)

    return handler


def huge(size: int) -> Callable[[socket.socket, RawServer], None]:
    """Answer 200 with ``size`` bytes of body, chunked (no Content-Length to warn the client)."""

    def handler(conn: socket.socket, server: RawServer) -> None:
        server.heads.append(read_head(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        block = b"x" * 65536
        sent = 0
        while sent < size and not server.stopping.is_set():
            conn.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            sent += len(block)
        conn.sendall(b"0\r\n\r\n")

    return handler


def recorder(status: bytes = b"200 OK", body: bytes = b"<ok/>") -> Callable[[socket.socket, RawServer], None]:
    """Record each request head and answer with a small body (keeps the connection open)."""

    def handler(conn: socket.socket, server: RawServer) -> None:
        while True:
            head = read_head(conn)
            if not head:
                return
            server.heads.append(head)
            conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/xml\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)

    return handler
