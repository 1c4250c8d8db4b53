"""`python -m local`: start the emulator, create the resources, serve the API, run the tick loop
and the SQS pollers; on SIGINT/SIGTERM stop them in reverse order and exit 0. The state is kept
in `.data/` (or `TASKAPI_STATE`) and restored on start, see `local.state`."""

from __future__ import annotations

import fcntl
import importlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from local import env as local_env
from local import faults as local_faults
from local.emulator import MotoProcess
from local.log import logger

STAGE = "local"
DEFAULT_FUNCTION_TIMEOUT = 60  # chalice's default lambda_timeout
# SIGTERM → exit within a few seconds, whatever is in flight: requests being handled and worker
# batches share this much time to finish (they still need the emulator, which stops after them);
# what has not finished by then is abandoned, as a Lambda killed mid-invocation would be (its run's
# lease expires and SQS redelivers the message).
STOP_GRACE_SECONDS = 4.0
# Abandoned work may still hold a thread that the interpreter joins at exit (a step waiting on its
# target inside Powertools' batch executor, a tick's shard pool): past this, exit without it.
EXIT_GRACE_SECONDS = 1.0


class _Interrupted(Exception):
    """A stop signal that arrived before the stack was ready: abandon the start-up."""


def _function_name(name: str) -> str:
    return f"tasks-api-{STAGE}-{name}"  # chalice's `<app>-<stage>-<function>`


def provision(prefix: str) -> None:
    """The resources of `infra/` through the emulator's CloudFormation, plus what it ignores."""
    import boto3

    from infra import stack

    session = boto3.session.Session(region_name=local_env.REGION)
    stack.deploy(session.client("cloudformation"), prefix)
    stack.complete_for_emulator(session.client("dynamodb"), session.client("cloudwatch"), prefix)


def lock_state(directory: Path) -> IO[str]:
    """One stack per state directory: a second one would journal over the first one's files.
    The lock goes with the process, however it ends."""
    directory.mkdir(parents=True, exist_ok=True)
    f = open(directory / "lock", "a+")  # held open for the life of the process
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(f"another local stack uses {directory} (stop it, or set TASKAPI_STATE)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _timeout(config: Any, name: str) -> int:
    return int(config.scope(STAGE, name).lambda_timeout or DEFAULT_FUNCTION_TIMEOUT)


def build_bands(app: Any, config: Any) -> list[Any]:
    """One band per `@app.on_sqs_message` worker, in priority order, with its queue's URL and ARN."""
    from chalice.app import SQSEventConfig

    from chalicelib.platform import wiring
    from chalicelib.platform.config import PRIORITY_BANDS, settings
    from local.pollers import Band

    sqs = wiring.client("sqs")
    by_queue = {settings().queue_name(b): b for b in PRIORITY_BANDS}
    sources = {by_queue[s.queue]: s for s in app.event_sources if isinstance(s, SQSEventConfig) and s.queue in by_queue}
    missing = [b for b in PRIORITY_BANDS if b not in sources]
    if missing:
        raise RuntimeError(f"no @app.on_sqs_message worker for band(s) {missing}")
    bands = []
    for name in PRIORITY_BANDS:
        src = sources[name]
        url = sqs.get_queue_url(QueueName=src.queue)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        bands.append(
            Band(
                name=name,
                queue_url=url,
                queue_arn=arn,
                handler=local_faults.crash_fails_invocation(app.handler_map[src.name]),
                function_name=_function_name(src.name),
                batch_size=src.batch_size,
                timeout_seconds=_timeout(config, src.name),
            )
        )
    return bands


def _pollers_sqs() -> Any:
    """The pollers' own client: they stand for Lambda's event source mapping, which injected
    faults (`local.faults`) leave alone."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 4, "mode": "standard"},
        max_pool_connections=32,
        user_agent_extra=local_faults.EXEMPT_AGENT,
    )
    return boto3.session.Session(region_name=local_env.REGION).client("sqs", config=config)


def tick_handler(app: Any) -> tuple[str, Any]:
    from chalice.app import ScheduledEventConfig

    names = [s.name for s in app.event_sources if isinstance(s, ScheduledEventConfig)]
    if len(names) != 1:
        raise RuntimeError(f"expected exactly one @app.schedule handler, found {names}")
    return names[0], app.handler_map[names[0]]


def main() -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # one JSON event per line, even into a pipe
    started = time.monotonic()
    stop = threading.Event()
    phase = {"starting": True}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            logger.info("stop_requested", extra={"signal": signal.Signals(signum).name})
        stop.set()
        if phase["starting"]:
            phase["starting"] = False
            raise _Interrupted

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    cfg = local_env.prepare()
    faults = local_faults.from_env(os.environ)  # a malformed TASKAPI_FAULTS fails the start
    moto = MotoProcess(cfg.moto_port, state_dir=cfg.state_dir)
    http: Any = None
    pollers: Any = None
    ticker: Any = None
    rc = 0
    try:
        logger.info(
            "start",
            extra={
                "url": cfg.url,
                "emulator": cfg.endpoint,
                "prefix": cfg.prefix,
                "tick_seconds": cfg.tick_seconds,
                "workers": cfg.workers,
                "poll_interval_ms": round(cfg.poll_interval * 1000),
                "state": str(cfg.state_dir) if cfg.state_dir else "memory",
            },
        )
        local_env.check_free(cfg.host, cfg.port)
        local_faults.install(faults)  # before the first botocore session, or it would not have them
        state_lock = lock_state(cfg.state_dir) if cfg.state_dir else None  # noqa: F841 - held until exit
        moto.spawn()
        # Import the app while the emulator boots (both take seconds; they overlap on two cores).
        # Only now: settings and the PynamoDB models read the environment at import.
        if str(local_env.PROJECT_ROOT) not in sys.path:
            sys.path.insert(0, str(local_env.PROJECT_ROOT))
        app = importlib.import_module("app").app
        local_faults.wrap_pipeline(importlib.import_module("chalicelib.execution.pipeline"))
        from local.pollers import Pollers
        from local.ticker import TickLoop
        from local.web import HttpServer, chalice_config

        config = chalice_config(local_env.PROJECT_ROOT, STAGE)
        moto.wait_ready()
        logger.info("emulator_ready", extra={"pid": moto.pid, "endpoint": moto.endpoint})
        provision(cfg.prefix)
        logger.info("resources_ready", extra={"prefix": cfg.prefix})
        if cfg.state_dir is not None:
            logger.info("state_restored", extra=moto.restore())
        if cfg.generated_admin_token:
            # The one place a secret is shown: TASKAPI_ADMIN_TOKEN was unset, so we made one up.
            print(f"admin token: {cfg.generated_admin_token}", flush=True)

        bands = build_bands(app, config)
        tick_name, tick = tick_handler(app)
        ticker = TickLoop(
            tick,
            cfg.tick_seconds,
            _function_name(tick_name),
            local_env.REGION,
            stop,
            timeout_seconds=_timeout(config, tick_name),
        )
        pollers = Pollers(
            _pollers_sqs(),
            bands,
            workers=cfg.workers,
            poll_interval=cfg.poll_interval,
            region=local_env.REGION,
            stop=stop,
        )
        ticker.start()
        ticker.first_tick_done.wait(max(cfg.tick_seconds, 10))
        pollers.start()
        from chalicelib.platform.config import settings

        http = HttpServer(app, config, cfg.host, cfg.port, settings().max_body_bytes)
        http.start()
        phase["starting"] = False
        local_faults.arm()
        logger.info("ready", extra={"url": cfg.url, "startup_ms": round((time.monotonic() - started) * 1000)})
        while not stop.wait(0.5):
            pass
    except _Interrupted:
        pass
    except Exception:  # noqa: BLE001 - logged, then the same clean stop, exit 1
        logger.exception("crashed")
        rc = 1
    finally:
        phase["starting"] = False
        stop.set()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        if pollers is not None:
            pollers.wake_all()  # idle workers leave now, while the server drains
        if http is not None:
            http.stop(drain_seconds=STOP_GRACE_SECONDS / 2)
        if pollers is not None and not pollers.join(_left(deadline)):
            logger.warning("stop_incomplete", extra={"what": "sqs pollers"})
        if ticker is not None and ticker.is_alive():
            ticker.join(_left(deadline))
            if ticker.is_alive():
                logger.warning("stop_incomplete", extra={"what": "tick"})
        local_faults.report()
        moto_rc = moto.stop()
        logger.info("stopped", extra={"exit_code": rc, "emulator_exit_code": moto_rc})
        _exit_anyway_after(EXIT_GRACE_SECONDS, rc)
    return rc


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _exit_anyway_after(seconds: float, rc: int) -> None:
    """The interpreter's exit joins every thread-pool worker, including one a step abandoned at
    the stop still occupies (until its own timeout, up to a minute): past `seconds`, exit with
    `rc` regardless. A daemon timer, so a clean exit does not wait for it."""

    def force() -> None:
        busy = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread() and t.is_alive())
        logger.warning("stop_forced", extra={"threads": busy[:20]})
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.start()
