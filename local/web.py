"""The Chalice app over HTTP, through chalice's own local server (`chalice local`'s API Gateway
emulation: routing, path parameters, headers, status codes, binary bodies), threaded."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chalice import Chalice
from chalice.config import Config
from chalice.local import ChaliceRequestHandler, CustomLocalChalice, LocalChalice, LocalDevServer, ThreadedHTTPServer

from local.log import logger


class _Server(ThreadedHTTPServer):
    request_queue_size = 128  # a burst of agents connecting at once is not refused

    def __init__(self, server_address: tuple[str, int], handler: Any) -> None:
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self.in_flight = 0
        self.stopping = False
        super().__init__(server_address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        with self.lock:
            self.connections.add(conn)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def end_kept_alive(self) -> None:
        """`shutdown()` only stops accepting: a kept-alive connection would go on being served.
        Closing each connection's reading side ends it after the request being handled, whose
        response still goes out."""
        with self.lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up is not our error; anything else is logged as one event
        (socketserver would print a bare traceback to stderr)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        logger.exception("http_error", extra={"client": client_address[0]})


# What API Gateway accepts in front of the deployed functions; anything else is refused here,
# before a byte of the body is read, as it would be there.
_METHODS = frozenset({"GET", "PUT", "POST", "HEAD", "DELETE", "PATCH", "OPTIONS"})
# A client that stops sending mid-request (or never sends the body it announced) holds a thread:
# after this many seconds without a byte it gets a 408 and the connection is closed.
READ_TIMEOUT_SECONDS = 10.0


def _problem(status: int, title: str, detail: str) -> bytes:
    slug = title.lower().replace(" ", "-")
    body = {"type": f"https://tasks-api.dev/problems/{slug}", "title": title, "status": status, "detail": detail}
    return json.dumps(body, separators=(",", ":")).encode()


class _Handler(ChaliceRequestHandler):
    """Counts requests in flight (for a graceful stop) and keeps the access log out of stdout/stderr.
    Everything the server itself refuses (unknown method, oversized or missing body, a malformed
    request line or header) is answered with problem+json, never http.server's HTML."""

    server: _Server
    # http.server writes the headers and the body in separate sends: with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms a response on a kept-alive connection).
    disable_nagle_algorithm = True
    timeout = READ_TIMEOUT_SECONDS  # StreamRequestHandler applies it to every read of the socket
    max_body_bytes = 256 * 1024  # set from the app's settings by HttpServer

    def _refuse(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        self.close_connection = True
        body = _problem(status, title, detail)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client is gone

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, headers too long or too many, an
        unsupported method): problem+json instead of an HTML page."""
        if code == 501:  # http.server's answer to a method it has no do_ for
            self._refuse(
                405, "Method Not Allowed", f"{self.command} is not supported", {"Allow": ", ".join(sorted(_METHODS))}
            )
            return
        title = self.responses.get(code, ("Error",))[0]
        self._refuse(code, title, message or title)

    def _body_refusal(self) -> tuple[int, str, str] | None:
        if self.headers.get("transfer-encoding"):
            return 411, "Length Required", "send the body with a Content-Length, not a Transfer-Encoding"
        raw = self.headers.get("content-length", "0").strip()
        if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
            return 400, "Bad Request", "Content-Length must be a non-negative integer"
        if int(raw) > self.max_body_bytes:
            return 413, "Payload Too Large", f"request body is {raw} bytes; the limit is {self.max_body_bytes}"
        return None

    def _generic_handle(self) -> None:
        refusal = self._body_refusal()
        if refusal is not None:
            self._refuse(*refusal)
            return
        with self.server.lock:
            self.server.in_flight += 1
        try:
            super()._generic_handle()
        except TimeoutError:
            # The headers arrived, the body they announced did not (an idle kept-alive connection
            # times out earlier, in http.server, and is closed without a word).
            self._refuse(408, "Request Timeout", f"no byte of the body for {READ_TIMEOUT_SECONDS:.0f} s")
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
            if self.server.stopping:
                self.close_connection = True

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _generic_handle

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http_request", extra={"client": self.client_address[0], "line": format % args})


def chalice_config(project_dir: Path, stage: str = "local") -> Config:
    """The config `chalice local` builds from `.chalice/config.json` (function timeouts and
    memory), minus loading the app: we import it ourselves after setting the environment, where
    `chalice local` would overwrite that with a deployed stage's variables."""
    try:
        from_disk = json.loads((project_dir / ".chalice" / "config.json").read_text())
    except (OSError, ValueError):
        from_disk = {}
    return Config(chalice_stage=stage, config_from_disk=from_disk, default_params={"project_dir": str(project_dir)})


def make_thread_local(app: Chalice) -> None:
    """What `chalice local` does to the app object: `app.current_request` per thread, so
    concurrent requests on the threaded server never see each other's request."""
    if not isinstance(app, LocalChalice):
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice


class HttpServer:
    def __init__(self, app: Chalice, config: Config, host: str, port: int, max_body_bytes: int) -> None:
        make_thread_local(app)
        handler = type("Handler", (_Handler,), {"max_body_bytes": max_body_bytes})
        self._dev = LocalDevServer(app, config, host, port, handler_cls=handler, server_cls=_Server)
        assert isinstance(self._dev.server, _Server)
        self._server: _Server = self._dev.server
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_seconds: float = 2.0) -> None:
        """Stop accepting and end kept-alive connections; give requests being handled a moment
        to finish (they still need the emulator, which stops after us). A request still being
        handled after that is abandoned: its thread is a daemon, which never holds up the exit."""
        server = self._server
        server.stopping = True
        if self._thread.is_alive():
            self._dev.shutdown()  # blocks until serve_forever returns: only if it ever ran
        server.end_kept_alive()
        deadline = time.monotonic() + drain_seconds
        while server.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.in_flight:
            logger.warning("stop_incomplete", extra={"what": "http requests", "in_flight": server.in_flight})
        server.server_close()
