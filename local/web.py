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


class _Handler(ChaliceRequestHandler):
    """Counts requests in flight (for a graceful stop) and keeps the access log out of stdout/stderr."""

    server: _Server
    # http.server writes the headers and the body in separate sends: with Nagle on, the body waits
    # for the client's delayed ACK (~40 ms a response on a kept-alive connection).
    disable_nagle_algorithm = True

    def _generic_handle(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
        try:
            super()._generic_handle()
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
    def __init__(self, app: Chalice, config: Config, host: str, port: int) -> None:
        make_thread_local(app)
        self._dev = LocalDevServer(app, config, host, port, handler_cls=_Handler, server_cls=_Server)
        assert isinstance(self._dev.server, _Server)
        self._server: _Server = self._dev.server
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Stop accepting and end kept-alive connections; give requests being handled a moment
        to finish (they still need the emulator, which stops after us)."""
        server = self._server
        server.stopping = True
        if self._thread.is_alive():
            self._dev.shutdown()  # blocks until serve_forever returns: only if it ever ran
        server.end_kept_alive()
        deadline = time.monotonic() + drain_seconds
        while server.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)
        server.server_close()
