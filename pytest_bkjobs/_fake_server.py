"""The fake's loopback front door: a real HTTP/1.1 server (stdlib) in a background thread."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._errors import ConfigurationError
from ._fake_backend import Backend
from ._fake_http import FakeRequest, Reply, chunked, json_reply

logger = logging.getLogger("pytest_bkjobs.fake")

# An idle keep-alive connection is closed after this many seconds.
IDLE_TIMEOUT = 30.0


class _Server(ThreadingHTTPServer):
    """Tracks its connections and threads so that ``stop`` leaves nothing behind."""

    daemon_threads = True  # a stuck handler never blocks interpreter exit
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: Backend) -> None:
        self.backend = backend
        self._live_lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._workers: set[threading.Thread] = set()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._work, args=(request, client_address), name="bkjobs-fake-conn"
        )
        thread.daemon = True
        with self._live_lock:
            self._sockets.add(request)
            self._workers.add(thread)
        thread.start()

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._sockets.discard(request)
                self._workers.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("fake server: connection error from %s", client_address, exc_info=True)

    def close_connections(self, timeout: float = 5.0) -> None:
        """Wake every connection thread (idle keep-alive ones too) and wait for it to end."""
        with self._live_lock:
            sockets, workers = list(self._sockets), list(self._workers)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a length or is chunked
    server: _Server
    timeout = IDLE_TIMEOUT
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # peer's delayed ACK add ~40 ms to every answer.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake server: " + format, *args)

    def _serve(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self.rfile.read(int(length)) if length and length.isdigit() else b""
        host = self.headers.get("Host") or ":".join(map(str, self.server.server_address[:2]))
        request = FakeRequest(
            method=self.command,
            origin=f"http://{host}",
            target=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            reply = self.server.backend.dispatch(request)
        except Exception as exc:  # a bug, or a user's outcome callable that raised
            logger.exception("fake server: error while answering %s %s", self.command, self.path)
            reply = json_reply(500, {"message": f"fake Buildkite error: {type(exc).__name__}"})
        if reply.drop:
            self.close_connection = True
            return  # the socket closes with no answer: the client sees a disconnect
        try:
            self._write(reply)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _write(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        head = self.command == "HEAD"
        if reply.stream is None:
            if reply.status != 204:  # a 204 has no body and must not announce one
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if not head and reply.body:
                self.wfile.write(reply.body)
            return
        if reply.length is not None:
            self.send_header("Content-Length", str(reply.length))
            self.end_headers()
            if not head:
                for chunk in reply.stream:
                    self.wfile.write(chunk)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            return
        for chunk in chunked(reply.stream):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _serve


@contextmanager
def serve(backend: Backend, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run the server in a thread; yields ``http://HOST:PORT/v2``; stops and joins on exit."""
    try:
        server = _Server((host, port), backend)
    except OSError as exc:
        raise ConfigurationError(
            f"the fake Buildkite cannot listen on {host}:{port}: {exc.strerror or exc};"
            " pick another port, or port 0 for any free one"
        ) from exc
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="bkjobs-fake-server"
    )
    thread.daemon = True
    thread.start()
    bound_host, bound_port = (str(part) for part in server.server_address[:2])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    try:
        yield f"http://{shown}:{bound_port}/v2"
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join(5.0)
