"""Faults injected into the local stack for the soak (`bench/soak.py`, docs/soak.md).

Switched on only by `TASKAPI_FAULTS`, read by `python -m local` and nowhere else: nothing in
`chalicelib/` or `app.py` imports this module, so a deployed stage never has it.

    TASKAPI_FAULTS=ddb:0.05,sqs:0.05,crash:0.02

- `ddb`, `sqs`: that share of the application's DynamoDB / SQS request attempts fails
  transiently. Half never reach the emulator: the SDK gets a 500 `InternalServerError`. The
  other half reach it and their response is lost: the request was applied, the SDK sees a
  dropped connection and sends it again (a conditional write then meets its own first attempt,
  a message is sent twice). The SDK's own retries absorb most of them; what they do not
  surfaces to the application as it would in AWS.
- `crash`: that share of pipeline attempts is interrupted as a Lambda killed mid-run would be,
  half of them inside the steps (before the HTTP step sends, or between steps), half after the
  last step ended and before the attempt is recorded: nothing after that point runs in the
  attempt and the invocation fails, so its batch is not acknowledged
  and SQS redelivers it after the queue's visibility timeout, by which time the run's lease has
  expired. One difference from a real crash: Python still runs the `finally` blocks on the way
  out (a concurrency slot is released early rather than by its expiry).

Faults are armed only once the stack is ready (starting it is never faulted), and never touch the
SQS pollers' own client, which stands for Lambda's event source mapping (AWS's side, not ours).
Each crash is logged (`fault_injected`, with the run id and attempt, then `crash_batch` with the
run ids of the invocation's batch, which fails whole) and the counts of every kind are logged
when the stack stops (`faults_injected`).
"""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from local.log import logger

ENV = "TASKAPI_FAULTS"
# In the user agent of the clients that are never faulted (the pollers').
EXEMPT_AGENT = "taskapi-local-nofaults"
_KINDS = ("ddb", "sqs", "crash")
_SERVICES = {"ddb": "dynamodb", "sqs": "sqs"}


class WorkerCrash(BaseException):
    """An injected crash. A BaseException so that no `except Exception` of the application
    handles it: it unwinds the attempt to the invocation, which then fails."""


@dataclass(frozen=True)
class Faults:
    ddb: float = 0.0
    sqs: float = 0.0
    crash: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.ddb or self.sqs or self.crash)

    @classmethod
    def parse(cls, raw: str) -> Faults:
        """`kind:share,…` with shares in [0, 1); a typo is an error, never silently no fault."""
        shares: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            kind, sep, value = part.partition(":")
            kind = kind.strip()
            if not sep or kind not in _KINDS:
                raise ValueError(f"{ENV}: {part!r} is not one of {', '.join(k + ':<share>' for k in _KINDS)}")
            try:
                share = float(value)
            except ValueError:
                raise ValueError(f"{ENV}: {part!r}: the share must be a number") from None
            if not 0.0 <= share < 1.0:
                raise ValueError(f"{ENV}: {part!r}: the share must be in [0, 1)")
            shares[kind] = share
        return cls(**shares)


class _Injector:
    def __init__(self, faults: Faults, seed: int | None = None) -> None:
        self.faults = faults
        self.armed = threading.Event()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def _draw(self, share: float) -> float | None:
        """A uniform draw in [0, 1) when this call is faulted, else None."""
        if not share or not self.armed.is_set():
            return None
        with self._lock:
            x = self._random.random()
        return x / share if x < share else None

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    # ---- DynamoDB / SQS: botocore event handlers ------------------------------------------

    def before_send(self, kind: str) -> Callable[..., Any]:
        def handler(request: Any, **_: Any) -> Any:
            if EXEMPT_AGENT in str(request.headers.get("User-Agent", b"")) or not self.armed.is_set():
                return None
            self._count(f"{kind}_attempts")  # so a soak can tell "no fault drawn" from "not hooked"
            x = self._draw(getattr(self.faults, kind))
            if x is None or x >= 0.5:
                return None
            self._count(f"{kind}_500")
            return _server_error(request.url)

        return handler

    def needs_retry(self, kind: str) -> Callable[..., Any]:
        def handler(
            response: Any = None,
            caught_exception: Any = None,
            request_dict: Any = None,
            operation: Any = None,
            **_: Any,
        ) -> Any:
            if caught_exception is not None or response is None or response[0].status_code >= 300:
                return None  # only a success can have its response lost
            config = ((request_dict or {}).get("context") or {}).get("client_config")
            if EXEMPT_AGENT in str(getattr(config, "user_agent_extra", "") or ""):
                return None
            x = self._draw(getattr(self.faults, kind))
            if x is None or x < 0.5:
                return None
            self._count(f"{kind}_lost_response")
            # Which call, so a soak can tie a stuck or doubled run to it (names only, no values).
            logger.info(
                "fault_injected",
                extra={
                    "kind": f"{kind}_lost_response",
                    "operation": getattr(operation, "name", None),
                    "resource": _resource(request_dict),
                },
            )
            return 0  # "retry now": the SDK sends the request it already sent once

        return handler

    # ---- crashes: around the pipeline executor ------------------------------------------------

    def crashing(self, run_pipeline: Callable[..., Any]) -> Callable[..., Any]:
        """`run_pipeline` interrupted for a share of attempts: half of them inside the steps (its
        clock raises at one of its first 2×steps reads: the executor reads it as each step starts
        and ends, and the HTTP step in between, before it sends), half after the last step ended
        and before the worker records the attempt (every effect done, none recorded)."""

        def wrapper(payload: Any, ctx: Any, **kwargs: Any) -> Any:
            if self.armed.is_set():
                self._count("pipeline_attempts")
            x = self._draw(self.faults.crash)
            if x is None:
                return run_pipeline(payload, ctx, **kwargs)
            if x >= 0.5:
                run_pipeline(payload, ctx, **kwargs)
                self._crash(ctx, "after_steps")
            steps = payload.get("steps") if isinstance(payload, dict) else None
            at = 1 + int(2 * x * 2 * max(1, len(steps) if isinstance(steps, list) else 1))
            clock = kwargs.get("clock")
            inner: Callable[[], float] = clock if callable(clock) else _time
            reads = [0]

            def crash_clock() -> float:
                reads[0] += 1
                if reads[0] == at:
                    self._crash(ctx, f"clock_read_{at}")
                return inner()

            return run_pipeline(payload, ctx, **{**kwargs, "clock": crash_clock})

        return wrapper

    def _crash(self, ctx: Any, where: str) -> NoReturn:
        self._count("crash")
        self._count(f"crash_{'after_steps' if where == 'after_steps' else 'in_steps'}")
        run_id = getattr(ctx, "run_id", None)
        logger.warning(
            "fault_injected",
            extra={"kind": "crash", "run_id": run_id, "at": where, "attempt": getattr(ctx, "attempt", None)},
        )
        raise WorkerCrash(f"injected crash in run {run_id}")


def _resource(request_dict: Any) -> str | None:
    """The table or queue a DynamoDB / SQS request names (JSON protocols)."""
    try:
        body = json.loads((request_dict or {}).get("body") or b"{}")
    except (TypeError, ValueError):
        return None
    name = body.get("TableName") or body.get("QueueUrl") if isinstance(body, dict) else None
    return str(name).rsplit("/", 1)[-1] if name else None


def _time() -> float:
    import time

    return time.time()


def _server_error(url: str) -> Any:
    from botocore.awsrequest import AWSResponse

    class _Raw:
        def stream(self, **_: Any) -> Any:
            yield b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected"}'

    return AWSResponse(url, 500, {"Content-Type": "application/x-amz-json-1.0"}, _Raw())


_injector: _Injector | None = None


def from_env(environ: dict[str, str] | Any) -> Faults:
    return Faults.parse(environ.get(ENV, "") or "")


def install(faults: Faults) -> None:
    """Before any botocore session exists (they copy `BUILTIN_HANDLERS` when created, PynamoDB's
    per-thread ones included): DynamoDB and SQS hooks in every session of this process. Does
    nothing when no fault is asked for."""
    global _injector
    if not faults.any or _injector is not None:
        return
    from botocore import handlers

    _injector = _Injector(faults)
    for kind, service in _SERVICES.items():
        if getattr(faults, kind):
            handlers.BUILTIN_HANDLERS.append((f"before-send.{service}", _injector.before_send(kind)))
            handlers.BUILTIN_HANDLERS.append((f"needs-retry.{service}", _injector.needs_retry(kind)))
    logger.info("faults_configured", extra={"ddb": faults.ddb, "sqs": faults.sqs, "crash": faults.crash})


def wrap_pipeline(module: Any) -> None:
    """Interrupt a share of pipeline attempts (the worker calls `module.run_pipeline`)."""
    if _injector is not None and _injector.faults.crash:
        module.run_pipeline = _injector.crashing(module.run_pipeline)


def crash_fails_invocation(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A worker handler whose injected crash reaches the poller as an invocation error (the whole
    batch fails, as a crashed Lambda's does), not as a BaseException that would end the poller."""
    if _injector is None or not _injector.faults.crash:
        return handler

    def invoke(event: Any, context: Any) -> Any:
        try:
            return handler(event, context)
        except WorkerCrash as e:
            # The whole batch fails: runs of it not yet claimed come back only after the queue's
            # visibility timeout, so a soak must not count their delay as the system's own.
            logger.warning("fault_injected", extra={"kind": "crash_batch", "run_ids": _run_ids(event)})
            raise RuntimeError(f"invocation crashed: {e}") from None

    return invoke


def _run_ids(event: Any) -> list[str]:
    """The run ids of an SQS event's run messages (ids only: no payload, no header value)."""
    out = []
    for record in (event or {}).get("Records") or []:
        try:
            body = json.loads(record.get("body") or "{}")
        except (TypeError, ValueError):
            continue
        if isinstance(body, dict) and isinstance(body.get("run_id"), str):
            out.append(body["run_id"])
    return out


def arm() -> None:
    if _injector is not None:
        _injector.armed.set()


def report() -> None:
    if _injector is not None:
        logger.info("faults_injected", extra={"counts": dict(sorted(_injector.counts.items()))})
