"""The moto server, run as a child process (its own interpreter, so it never competes with the
API and the workers for our GIL).

`python -m local.emulator -H HOST -p PORT` is the child: moto's server app with werkzeug's
per-request access log silenced (moto's own warnings and errors still reach stderr), and bound
to die with its parent (PR_SET_PDEATHSIG) so a crashed or killed runtime leaves no orphan. With
`TASKAPI_STATE_DIR` set it journals its state there and restores it on request (`local.state`).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from local.env import PROJECT_ROOT

_PR_SET_PDEATHSIG = 1
_PARENT_ENV = "TASKAPI_LOCAL_PARENT_PID"
STATE_ENV = "TASKAPI_STATE_DIR"


class EmulatorError(RuntimeError):
    pass


class MotoProcess:
    """Start, await and stop the moto server child."""

    def __init__(self, port: int, host: str = "127.0.0.1", state_dir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.state_dir = state_dir  # None: memory only
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the child without waiting for it (it takes a couple of seconds to import moto)."""
        env = {**os.environ, _PARENT_ENV: str(os.getpid())}
        env.pop(STATE_ENV, None)
        if self.state_dir is not None:
            env[STATE_ENV] = str(self.state_dir)
        pythonpath = [str(PROJECT_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "local.emulator", "-H", self.host, "-p", str(self.port)],
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own session: a terminal's Ctrl-C reaches only us, and we stop moto last,
            # after the in-flight batches that still talk to it.
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.endpoint}/moto-api/"
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise EmulatorError(f"moto server exited with {self._proc.returncode} (is port {self.port} free?)")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status < 500:
                        return
            except urllib.error.HTTPError as e:
                if e.code < 500:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise EmulatorError(f"moto server did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.05)

    def restore(self, timeout: float = 300.0) -> dict[str, Any]:
        """Load the stored state into the emulator (after the resources exist) and start
        journaling; the figures of what was restored."""
        from local.state import RESTORE_PATH

        req = urllib.request.Request(f"{self.endpoint}{RESTORE_PATH}", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as e:
            raise EmulatorError(
                f"restoring the state from {self.state_dir} failed: {e.read().decode()} "
                "(`make reset` forgets it; TASKAPI_STATE=memory starts without it)"
            ) from None

    def stop(self, timeout: float = 5.0) -> int | None:
        """Terminate the child and reap it (it flushes its journal first); SIGKILL after `timeout`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout)


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when the parent dies; then close the race where it already has."""
    expected = int(os.environ.get(_PARENT_ENV, "0") or 0)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if expected and os.getppid() != expected:
        os._exit(0)


def child_main(argv: list[str]) -> None:
    _die_with_parent()
    # werkzeug sets INFO only on a logger whose level is unset: this keeps request lines out.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # moto's CloudFormation notes the resource types it skips (the alarms, which
    # `infra.stack.complete_for_emulator` creates directly): expected, so not shown.
    logging.getLogger("moto").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"moto\.")
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    from local import atomic

    host, port = _host_port(argv)
    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds queue URLs from it
    atomic.serialise_dynamodb()
    # CloudFormation imports every service backend (~3 s): do it before answering, while the
    # parent imports the app, rather than inside the first CreateStack request.
    importlib.import_module("moto.cloudformation.models")
    app: Any = DomainDispatcherApplication(create_backend_app)
    journal = None
    if os.environ.get(STATE_ENV):
        from local.state import Journal, middleware

        journal = Journal(Path(os.environ[STATE_ENV]), os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
        atomic.after_write(journal.after_write)
        app = middleware(app, journal)

    def on_stop(signum: int, frame: Any) -> None:
        # We are stopped last, after every client: flush the journal, then exit at once rather
        # than spend a second finalizing thousands of modules.
        if journal is not None:
            journal.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    run_simple(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def _host_port(argv: list[str]) -> tuple[str, int]:
    host, port = "127.0.0.1", 5000
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-H":
            host = value
        elif flag == "-p":
            port = int(value)
    return host, port


if __name__ == "__main__":
    child_main(sys.argv[1:])
