"""The fake's loopback front door: a real HTTP/1.1 server (stdlib) in a background thread."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from ._errors import ConfigurationError
from ._fake_backend import Backend
from ._fake_http import FakeRequest, Reply, chunked, json_reply

logger = logging.getLogger("pytest_bkjobs.fake")

# An idle keep-alive connection is closed after this many seconds.
IDLE_TIMEOUT = 30.0
# Request bodies are small JSON documents; anything bigger is refused (413).
MAX_BODY = 10 * 1024 * 1024
_DIGITS = re.compile(r"[0-9]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _BadRequest(Exception):
    """A request the server cannot read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the backend (BaseHTTPRequestHandler looks up do_<METHOD>), so
        # OPTIONS, BREW or "get" get the same JSON 404 as in-process, not a 501 HTML page.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol errors (bad request line, 414, 431, 505...) as JSON, then close."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsed request line: answer in HTTP/1.1
            self.request_version = "HTTP/1.1"
        text = message or self.responses.get(code, ("Bad Request",))[0]
        self._fail(_BadRequest(code, text))

    def _fail(self, error: _BadRequest) -> None:
        self.close_connection = True
        reply = self.server.backend.protocol_error(error.status, error.message)
        reply.headers.append(("Connection", "close"))
        with contextlib.suppress(OSError):
            self._write(reply)

    def _serve(self) -> None:
        if self.request_version == "HTTP/0.9":  # "GET /" alone: no status line, no headers
            self.send_error(400, "HTTP/0.9 requests are not supported; send HTTP/1.1")
            return
        try:
            body = self._read_body()
            target, host = self._target()
        except _BadRequest as exc:
            self._fail(exc)
            return
        request = FakeRequest(
            method=self.command,
            origin=f"http://{host}",
            target=target,
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

    def _target(self) -> tuple[str, str]:
        """The path and query, and the host the request names (RFC 9112 section 3.2)."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            raise _BadRequest(400, "More than one Host header")
        target = self.path
        if target[:8].lower().startswith(("http://", "https://")):  # absolute-form
            parts = urlsplit(target)
            return (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), parts.netloc
        if hosts:
            return target, hosts[0].strip()
        return target, ":".join(map(str, self.server.server_address[:2]))

    def _read_body(self) -> bytes:
        codings = [
            c.strip().lower()
            for value in self.headers.get_all("Transfer-Encoding") or []
            for c in value.split(",")
        ]
        lengths = self.headers.get_all("Content-Length") or []
        if codings:
            if codings != ["chunked"]:
                raise _BadRequest(400, f"Unsupported Transfer-Encoding: {', '.join(codings)}")
            if lengths:  # both framings: a smuggling attempt or a broken proxy
                self.close_connection = True
            return self._read_chunked()
        if len(lengths) > 1:
            raise _BadRequest(400, "More than one Content-Length header")
        if not lengths:
            return b""
        value = lengths[0].strip()
        if not _DIGITS.fullmatch(value):
            raise _BadRequest(400, f"Invalid Content-Length: {value[:40]!r}")
        length = int(value)
        if length > MAX_BODY:
            raise _BadRequest(413, f"Request body too large (at most {MAX_BODY} bytes)")
        body = self.rfile.read(length)
        if len(body) < length:
            raise _BadRequest(400, "Request body shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";")[0].strip()
            if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
                raise _BadRequest(400, "Invalid chunk size in a chunked request body")
            size = int(size_text, 16)
            total += size
            if total > MAX_BODY:
                raise _BadRequest(413, f"Request body too large (at most {MAX_BODY} bytes)")
            if size == 0:
                for _ in range(100):  # the trailer section ends with an empty line
                    if self.rfile.readline(8192).strip() == b"":
                        return b"".join(parts)
                raise _BadRequest(400, "Too many trailer fields in a chunked request body")
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise _BadRequest(400, "Truncated chunk in a chunked request body")
            parts.append(data)

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
        if self.request_version == "HTTP/1.0":
            # HTTP/1.0 has no chunked coding: the end of the body is the end of the connection.
            self.close_connection = True
            self.send_header("Connection", "close")
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
