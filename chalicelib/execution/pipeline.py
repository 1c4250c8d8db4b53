"""The pipeline executor: runs one attempt of a task's steps and reports what happened.

It owns no state: the worker hands in the payload and a RunContext, gets back a
PipelineResult (one outcome per step, the attempt's error and whether a retry could
help) and records it. Everything a step talks to is reached through `wiring` (AWS),
the egress guard (HTTP) or the injected `emit`, so tests can point it at moto and
local servers without patching this module.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ReadTimeoutError,
)
from pydantic import BaseModel, ValidationError

from chalicelib.domain.allowlist import AgentEgress, aws_target_allowed
from chalicelib.domain.contracts import (
    EmitStep,
    EventBridgeStep,
    HttpStep,
    LambdaStep,
    LogStep,
    Pipeline,
    SnsStep,
    SqsStep,
)
from chalicelib.domain.errors import StepFailed
from chalicelib.domain.signing import signature_header
from chalicelib.domain.templates import TemplateError, render
from chalicelib.domain.validation import scrub
from chalicelib.execution.egress import EgressBlocked, ResolutionFailed, ResolvedTarget, check_url, deny_ports
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger

T = TypeVar("T")

# Error types recorded on steps and runs.
EGRESS_BLOCKED = "egress_blocked"
TEMPLATE_ERROR = "template_error"
# What templates can see of the steps before them: each output up to CONTEXT_OUTPUT_BYTES, all of
# them together up to CONTEXT_BYTES (past that, the clipped copy that is stored, ≤ 8 KiB each).
CONTEXT_OUTPUT_BYTES = 64 * 1024
CONTEXT_BYTES = 256 * 1024
INVALID_STEP = "invalid_step"
HTTP_STATUS = "http_status"
TIMEOUT = "timeout"
NETWORK = "network"
AWS_ERROR = "aws_error"
FUNCTION_ERROR = "function_error"
INTERNAL = "internal"

MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 1024 * 1024
USER_AGENT = "tasks-api/1"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_RETRYABLE_STATUS = frozenset({408, 429})
# Headers we compute; a user-supplied copy is dropped so it cannot forge or confuse them.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "user-agent",
        "idempotency-key",
        "x-task-id",
        "x-run-id",
        "x-attempt",
        "x-tasks-signature",
        "x-tasks-event-depth",
        "x-tasks-event-chain",
    }
)
# Sent on every HTTP step: a POST /events made by the step continues its run's event chain
# (the API counts it one deeper), so a loop through our own API meets the chain limit too.
EVENT_DEPTH_HEADER = "X-Tasks-Event-Depth"
EVENT_CHAIN_HEADER = "X-Tasks-Event-Chain"  # and its chain, whose runs in total are bounded
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_AWS_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalException",
        "InternalServerError",
        "ServiceException",
        "RequestTimeout",
        "RequestTimeoutException",
        "ResourceConflictException",  # Lambda: the function is being updated
        "ResourceNotReadyException",
        "EC2ThrottledException",
        "KMSThrottlingException",
    }
)
_STEP_FIELDS_NOT_RENDERED = ("id", "type", "timeout_seconds", "continue_on_error")


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StepOutcome:
    """What one step did; `output` is what is stored (≤ max_step_output_bytes serialised)."""

    id: str
    type: str
    status: str  # "succeeded" | "failed" | "skipped"
    started_at: str | None
    duration_ms: int | None
    output: Any
    output_truncated: bool
    error: dict[str, Any] | None  # {"type", "message"}

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "started_at": self.started_at,
            "duration_ms": self.duration_ms,
            "output": self.output,
            "output_truncated": self.output_truncated,
            "error": self.error,
        }


@dataclass(frozen=True)
class PipelineResult:
    """One attempt. `error` is None when it succeeded (steps with continue_on_error may
    still have failed); `retryable` says whether another attempt could succeed."""

    steps: tuple[StepOutcome, ...]
    error: dict[str, Any] | None  # {"type", "message", "step"}
    retryable: bool

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RunContext:
    task: dict[str, Any]
    run: dict[str, Any]
    input: Any
    event: Any
    task_id: str
    run_id: str
    attempt: int  # 1-based
    signing_secret: str
    depth: int = 0  # how deep in an event chain this run is (0: not started by an event)
    chain: str | None = None  # the root event of that chain (None: not started by an event)
    # What the admin opened for the task's agent (AWS targets, extra HTTP allow entries); the
    # default opens no AWS target, so a caller that forgets it fails closed.
    egress: AgentEgress = AgentEgress()


# ---------------------------------------------------------------------------- driver


def run_pipeline(
    payload: dict[str, Any],
    ctx: RunContext,
    *,
    emit: Callable[[str, Any, str], str],
    clock: Callable[[], float] = time.time,
    deadline: float | None = None,
) -> PipelineResult:
    """Run the steps in order. The first failing step without `continue_on_error` fails
    the attempt and the steps after it are recorded as "skipped". `deadline` (in `clock`
    time, e.g. when the Lambda must stop) caps every step's timeout."""
    payload = _plain(payload)
    try:
        pipeline = Pipeline.model_validate(payload)
    except ValidationError as e:
        return _invalid_payload(payload, e)

    context: dict[str, Any] = {
        "task": _plain(ctx.task),
        "run": _plain(ctx.run),
        "input": _plain(ctx.input),
        "event": _plain(ctx.event),
        "steps": {},
    }
    limit = settings().max_step_output_bytes
    context_bytes = 0
    outcomes: list[StepOutcome] = []
    fatal: dict[str, Any] | None = None
    retryable = False

    for step in pipeline.steps:
        if fatal is not None:
            outcomes.append(StepOutcome(step.id, step.type, "skipped", None, None, None, False, None))
            continue
        started = clock()
        output: Any = None
        error: dict[str, Any] | None = None
        failed_retryable = False
        try:
            timeout = float(step.timeout_seconds)
            if deadline is not None:
                left = deadline - started
                if left <= 0:
                    raise StepFailed(TIMEOUT, "the attempt ran out of time before this step started", True)
                timeout = min(timeout, left)
            output = _execute(step, context, ctx, emit, clock, timeout)
        except StepFailed as f:
            output, error, failed_retryable = f.output, {"type": f.type, "message": f.message}, f.retryable
        except TemplateError as e:
            error = {"type": TEMPLATE_ERROR, "message": str(e)}
        except Exception as e:  # noqa: BLE001 - a bug of ours: record it (logged) and let a retry try again
            # Where it crashed, not what it said: the text may quote header values or a secret.
            logger.error(
                "pipeline_step_crashed",
                extra={"run_id": ctx.run_id, "step_id": step.id, "error_type": type(e).__name__, "at": _where(e)},
            )
            error, failed_retryable = {"type": INTERNAL, "message": f"{type(e).__name__}: {e}"}, True
        duration_ms = max(0, int(round((clock() - started) * 1000)))
        stored, truncated = clip_output(output, limit)
        status = "failed" if error else "succeeded"
        outcomes.append(StepOutcome(step.id, step.type, status, _iso(started), duration_ms, stored, truncated, error))
        # Later templates see the full output (not the clipped copy that is stored) while the
        # outputs they can see stay within the context's budget; past it, the stored copy.
        seen, _ = clip_output(output, CONTEXT_OUTPUT_BYTES) if output is not stored else (stored, truncated)
        size = len(_json(seen).encode("utf-8"))
        if context_bytes + size > CONTEXT_BYTES:
            seen, size = stored, len(_json(stored).encode("utf-8"))
        context_bytes += size
        context["steps"][step.id] = {"output": seen, "status": status, "error": error}
        if error is not None and not step.continue_on_error:
            fatal = {**error, "step": step.id}
            retryable = failed_retryable

    return PipelineResult(steps=tuple(outcomes), error=fatal, retryable=retryable if fatal else False)


def _invalid_payload(payload: Any, exc: ValidationError) -> PipelineResult:
    """A malformed payload runs nothing: report which steps are wrong, skip the rest."""
    per_step: dict[int, str] = {}
    general: list[str] = []
    for err in exc.errors():
        loc = err.get("loc", ())
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            field = ".".join(str(p) for p in loc[3:])
            per_step.setdefault(loc[1], f"{field}: {err['msg']}" if field else str(err["msg"]))
        else:
            general.append(f"{'.'.join(str(p) for p in loc) or 'payload'}: {err['msg']}")
    raw_steps = payload.get("steps") if isinstance(payload, dict) else None
    outcomes: list[StepOutcome] = []
    first: str | None = None
    if isinstance(raw_steps, list):
        for i, raw in enumerate(raw_steps[:50]):
            d = raw if isinstance(raw, dict) else {}
            sid = d.get("id") if isinstance(d.get("id"), str) else f"#{i + 1}"
            stype = d.get("type") if isinstance(d.get("type"), str) else "unknown"
            if i in per_step:
                first = first or str(sid)
                problem = {"type": INVALID_STEP, "message": per_step[i]}
                outcomes.append(StepOutcome(str(sid), str(stype), "failed", None, None, None, False, problem))
            else:
                outcomes.append(StepOutcome(str(sid), str(stype), "skipped", None, None, None, False, None))
    messages = [f"step {outcomes[i].id if i < len(outcomes) else i}: {m}" for i, m in sorted(per_step.items())]
    message = "; ".join((general + messages)[:5]) or "invalid payload"
    return PipelineResult(
        steps=tuple(outcomes),
        error={"type": INVALID_STEP, "message": message, "step": first},
        retryable=False,
    )


def _execute(
    step: BaseModel,
    context: dict[str, Any],
    ctx: RunContext,
    emit: Callable[[str, Any, str], str],
    clock: Callable[[], float],
    timeout: float,
) -> Any:
    step = _rendered(step, context)
    _guard_aws_target(step, ctx)
    if isinstance(step, HttpStep):
        return _http(step, ctx, clock, timeout)
    if isinstance(step, LambdaStep):
        return _lambda(step, timeout)
    if isinstance(step, SqsStep):
        return _sqs(step, ctx, timeout)
    if isinstance(step, SnsStep):
        return _sns(step, ctx, timeout)
    if isinstance(step, EventBridgeStep):
        return _eventbridge(step, timeout)
    if isinstance(step, EmitStep):
        return _emit(step, emit)
    if isinstance(step, LogStep):
        return _log(step, ctx)
    raise StepFailed(INVALID_STEP, f"unknown step type {type(step).__name__}", False)


def _rendered(step: BaseModel, context: dict[str, Any]) -> BaseModel:
    """Render every field but the structural ones, then validate again, so a template
    cannot smuggle in a value the schema would have refused (a non-http URL, ...)."""
    raw = step.model_dump()
    fields = {k: v for k, v in raw.items() if k not in _STEP_FIELDS_NOT_RENDERED}
    out = render(fields, context)
    # Text-only maps: a whole-value template may yield a number or object; send it as text.
    for name in ("headers", "query", "message_attributes"):
        if isinstance(out.get(name), dict):
            out[name] = {k: _text(v) for k, v in out[name].items() if v is not None}
    try:
        return type(step).model_validate({**out, **{k: raw[k] for k in _STEP_FIELDS_NOT_RENDERED}})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
        raise StepFailed(INVALID_STEP, f"after rendering templates: {problems}", False) from None


# ---------------------------------------------------------------------------- helpers


def clip_output(output: Any, limit: int) -> tuple[Any, bool]:
    """`output` if its JSON form fits in `limit` bytes, else a string prefix that does."""
    text = _json(output)
    if len(text.encode("utf-8")) <= limit:
        return output, False
    source = output if isinstance(output, str) else text
    prefix = source.encode("utf-8")[: max(0, limit - 2)].decode("utf-8", "ignore")
    # Escaping can grow the prefix: find the longest one whose JSON form fits.
    lo, hi = 0, len(prefix)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_json(prefix[:mid]).encode("utf-8")) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return prefix[:lo], True


def _plain(value: Any) -> Any:
    """Plain JSON types: DynamoDB hands numbers back as Decimal, which the strict step
    schema (and JSON encoding) would refuse."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else _json(value)


def _where(exc: BaseException) -> list[str]:
    """The innermost frames of `exc`'s traceback as `file:line function`, without its message."""
    return [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)[-8:]]


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


# ---------------------------------------------------------------------------- http


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the addresses the egress guard checked, never re-resolving the host
    name; the Host header still carries the name (http.client builds it from `host`)."""

    def __init__(self, target: ResolvedTarget, timeout: float) -> None:
        super().__init__(target.hostname, target.port, timeout=timeout)
        self._target = target
        self._raw: socket.socket | None = None

    def _open(self) -> socket.socket:
        last: OSError | None = None
        for ip in self._target.addresses:  # every one of them was checked
            try:
                sock = socket.create_connection((ip, self._target.port), self.timeout)
            except OSError as e:
                last = e
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._raw = sock
            return sock
        raise last or OSError(f"no address to connect to for {self._target.hostname}")

    def connect(self) -> None:
        self.sock = self._open()

    def abort(self) -> None:
        """Called by the watchdog: unblock whatever read or write is in progress."""
        raw = self._raw
        if raw is not None:
            try:
                raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """TLS to the checked address, with SNI and certificate verification for the URL's
    host name (not the IP): `server_hostname` drives both."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        raw = self._open()
        self.sock = _tls_context().wrap_socket(raw, server_hostname=self._target.hostname)


def _tls_context() -> ssl.SSLContext:
    # Keyed by the trust store the environment names (OpenSSL reads SSL_CERT_FILE/SSL_CERT_DIR
    # when the context is made): a changed trust store is never served an older context.
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@lru_cache(maxsize=4)
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()  # CERT_REQUIRED + check_hostname; loads the default paths
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _exchange(target: ResolvedTarget, method: str, headers: dict[str, str], body: bytes, deadline: float) -> _Response:
    """One request/response, bounded in total by `deadline` (monotonic): a watchdog
    shuts the socket down, so a server trickling bytes cannot hold the step open."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StepFailed(TIMEOUT, "timed out before the request was sent", True)
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = cls(target, remaining)
    fired = threading.Event()

    def abort() -> None:
        fired.set()
        conn.abort()

    watchdog = threading.Timer(remaining, abort)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request(method, target.request_target, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = b"" if method == "HEAD" else resp.read(MAX_RESPONSE_BYTES + 1)
        if fired.is_set():
            raise TimeoutError
        hdrs: dict[str, str] = {}
        for name, value in resp.getheaders():
            key = name.lower()
            hdrs[key] = f"{hdrs[key]}, {value}" if key in hdrs else value
        truncated = len(data) > MAX_RESPONSE_BYTES
        return _Response(resp.status, hdrs, data[:MAX_RESPONSE_BYTES], truncated)
    except ssl.SSLCertVerificationError as e:
        raise StepFailed(NETWORK, f"TLS verification failed for {target.hostname}: {e.verify_message}", True) from None
    except (OSError, http.client.HTTPException) as e:
        if fired.is_set() or isinstance(e, TimeoutError):
            raise StepFailed(TIMEOUT, f"{target.hostname} did not answer in time", True) from None
        raise StepFailed(NETWORK, f"{target.hostname}: {type(e).__name__}: {e}", True) from None
    finally:
        watchdog.cancel()
        conn.close()


def _with_query(url: str, query: dict[str, Any]) -> str:
    if not query:
        return url
    parts = urlsplit(url)
    extra = urlencode([(k, _text(v)) for k, v in query.items()])
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _user_headers(headers: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise StepFailed(INVALID_STEP, f"invalid header name {name!r}", False)
        if any(c in value for c in "\r\n\0"):
            raise StepFailed(INVALID_STEP, f"header {name!r} contains a line break", False)
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise StepFailed(INVALID_STEP, f"header {name!r} has characters HTTP headers cannot carry", False) from None
        if name.lower() not in _RESERVED_HEADERS:
            out[name] = value
    return out


def _encode_body(body: Any) -> tuple[bytes, str | None]:
    """A string is sent as is; any other JSON value is JSON-encoded."""
    if body is None:
        return b"", None
    if isinstance(body, str):
        return body.encode("utf-8"), None
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), "application/json"


def _decode_body(resp: _Response) -> Any:
    ctype = resp.headers.get("content-type", "").lower()
    charset = "utf-8"
    m = re.search(r"charset=\"?([\w.:-]+)", ctype)
    if m:
        charset = m.group(1)
    try:
        text = resp.body.decode(charset, "replace")
    except LookupError:
        text = resp.body.decode("utf-8", "replace")
    mime = ctype.split(";", 1)[0].strip()
    if not resp.truncated and resp.body and (mime == "application/json" or mime.endswith("+json")):
        try:
            return scrub(json.loads(text))
        except (ValueError, RecursionError):
            pass
    return text


def _check(url: str, deadline: float, ctx: RunContext) -> ResolvedTarget:
    """The operator's allow-list plus the agent's; the stack's own ports are refused whatever they say."""
    allow = settings().egress_allow + ctx.egress.http_allow
    try:
        return check_url(url, allow, timeout=max(0.1, deadline - time.monotonic()), deny=deny_ports())
    except EgressBlocked as e:
        raise StepFailed(EGRESS_BLOCKED, str(e), False) from None
    except ResolutionFailed as e:
        raise StepFailed(NETWORK, str(e), True) from None


def _http(step: HttpStep, ctx: RunContext, clock: Callable[[], float], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    url = _with_query(step.url, step.query)
    body, json_type = _encode_body(step.body)
    user = _user_headers(step.headers)
    if json_type and not any(k.lower() == "content-type" for k in user):
        user["Content-Type"] = json_type
    method = step.method
    expect = step.expect_status or None  # an empty list means the default, like no list
    origin: tuple[str, str, int] | None = None

    for hop in range(MAX_REDIRECTS + 1):
        target = _check(url, deadline, ctx)
        if origin is not None and target.origin != origin:
            # The step's headers and body were written for the origin it named: none of them
            # goes to another one. A redirect that must keep the body (307/308) is refused.
            if body:
                raise StepFailed(
                    HTTP_STATUS, f"refused a cross-origin redirect to {target.origin[1]} that keeps the body", False
                )
            user = {}
        origin = target.origin
        headers = {
            **user,
            "User-Agent": USER_AGENT,
            "Idempotency-Key": ctx.run_id,
            "X-Task-Id": ctx.task_id,
            "X-Run-Id": ctx.run_id,
            "X-Attempt": str(ctx.attempt),
            EVENT_DEPTH_HEADER: str(ctx.depth),
            **({EVENT_CHAIN_HEADER: ctx.chain} if ctx.chain else {}),
            # Signed per request: the body (and so the signature) changes if a redirect drops it.
            "X-Tasks-Signature": signature_header(ctx.signing_secret, body, int(clock())),
        }
        resp = _exchange(target, method, headers, body, deadline)
        location = resp.headers.get("location")
        wanted = expect is not None and resp.status in expect
        if resp.status in _REDIRECTS and location and not wanted:
            if hop == MAX_REDIRECTS:
                raise StepFailed(HTTP_STATUS, f"more than {MAX_REDIRECTS} redirects", False, _http_output(resp))
            url = urljoin(target.url, location.strip())
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else method
                body = b""
                user = {k: v for k, v in user.items() if k.lower() != "content-type"}
            continue
        output = _http_output(resp)
        ok = wanted if expect is not None else 200 <= resp.status < 300
        if not ok:
            expected = ", ".join(map(str, expect)) if expect else "2xx"
            retryable = resp.status >= 500 or resp.status in _RETRYABLE_STATUS
            raise StepFailed(HTTP_STATUS, f"status {resp.status}, expected {expected}", retryable, output)
        return output
    raise AssertionError("unreachable")  # pragma: no cover


def _http_output(resp: _Response) -> dict[str, Any]:
    return {"status": resp.status, "headers": resp.headers, "body": _decode_body(resp)}


# ---------------------------------------------------------------------------- aws

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _aws_call(call: Callable[[], T], timeout: float, what: str) -> T:
    """Run an AWS call bounded by the step timeout. On timeout the call may still
    complete in the background (as with any at-least-once delivery)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pipeline-aws")
    future = _pool.submit(call)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        raise StepFailed(TIMEOUT, f"{what} did not answer within {timeout:g}s", True) from None
    except ClientError as e:
        raise _client_error(e, what) from None
    except ParamValidationError as e:
        raise StepFailed(INVALID_STEP, f"{what}: {' '.join(str(e).split())}", False) from None
    except (ConnectTimeoutError, ReadTimeoutError) as e:
        raise StepFailed(TIMEOUT, f"{what}: {e}", True) from None
    except (EndpointConnectionError, ConnectionClosedError) as e:
        raise StepFailed(NETWORK, f"{what}: {e}", True) from None
    except (NoCredentialsError, NoRegionError) as e:
        raise StepFailed(AWS_ERROR, f"{what}: {e}", False) from None
    except BotoCoreError as e:
        raise StepFailed(AWS_ERROR, f"{what}: {e}", True) from None


def _client_error(e: ClientError, what: str) -> StepFailed:
    err = e.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    retryable = code in _AWS_RETRYABLE_CODES or status >= 500 or status == 429
    return StepFailed(AWS_ERROR, f"{what}: {code or status}: {err.get('Message', '')}".rstrip(": "), retryable)


def _guard_own(kind: str, name: str) -> None:
    """Refuse the service's own queues, topics, buses and functions: an agent must not be
    able to inject run messages or invoke our Lambdas. (IAM is the real boundary; this
    catches it early with a clear error.)"""
    prefix = settings().prefix
    own_function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    if (prefix and name.startswith(prefix)) or name.startswith("tasks-api-") or (own_function and name == own_function):
        raise StepFailed(EGRESS_BLOCKED, f"{kind} {name!r} belongs to the Tasks API itself", False)


def _aws_target(step: BaseModel) -> tuple[str, str] | None:
    """(kind, target as the step names it) for the AWS step types."""
    if isinstance(step, LambdaStep):
        return "function", step.function_name
    if isinstance(step, SqsStep):
        return "queue", step.queue_url
    if isinstance(step, SnsStep):
        return "topic", step.topic_arn
    if isinstance(step, EventBridgeStep):
        return "event bus", step.event_bus_name
    return None


def _guard_aws_target(step: BaseModel, ctx: RunContext) -> None:
    """AWS targets are allow-listed per agent by the admin (`PUT /agents/{id}/egress`), checked
    after templates: IAM is the operator-wide ceiling, this decides which agent may use what."""
    found = _aws_target(step)
    if found is not None and not aws_target_allowed(found[1], ctx.egress.aws_targets):
        kind, target = found
        raise StepFailed(EGRESS_BLOCKED, f"{kind} {target!r} is not in this agent's aws_targets", False)


def _dedupe_id(ctx: RunContext, step_id: str) -> str:
    return hashlib.sha256(f"{ctx.run_id}/{step_id}".encode()).hexdigest()


def _function_name(ref: str) -> str:
    parts = ref.split(":")
    if ref.startswith("arn:") and len(parts) >= 7:
        return parts[6]
    if len(parts) >= 3 and parts[1] == "function":  # "123456789012:function:name"
        return parts[2]
    return parts[0]


@lru_cache(maxsize=4)
def _lambda_client(region: str, endpoint: str) -> Any:
    """A Lambda client without SDK retries: a retried Invoke would run the user's
    function again; failures go back to the run's own retry policy instead."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=70, retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client("lambda", region_name=region, config=config)


def _lambda(step: LambdaStep, timeout: float) -> Any:
    _guard_own("function", _function_name(step.function_name))
    kwargs: dict[str, Any] = {"FunctionName": step.function_name, "InvocationType": step.invocation_type}
    if step.payload is not None:
        kwargs["Payload"] = _json(step.payload).encode("utf-8")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_LAMBDA") or os.environ.get("AWS_ENDPOINT_URL") or ""
    client = _lambda_client(settings().region, endpoint)

    def call() -> tuple[dict[str, Any], bytes]:
        resp = client.invoke(**kwargs)
        stream = resp.get("Payload")
        return resp, stream.read() if stream is not None else b""

    resp, raw = _aws_call(call, timeout, "lambda")
    if step.invocation_type == "Event":
        return {"status_code": resp.get("StatusCode")}
    try:
        output: Any = scrub(json.loads(raw)) if raw else None
    except (ValueError, RecursionError):
        output = raw.decode("utf-8", "replace")
    if resp.get("FunctionError"):
        detail = output.get("errorMessage") if isinstance(output, dict) else None
        message = f"{resp['FunctionError']} function error" + (f": {detail}" if detail else "")
        raise StepFailed(FUNCTION_ERROR, message, True, output)
    return output


def _sqs(step: SqsStep, ctx: RunContext, timeout: float) -> Any:
    _guard_own("queue", step.queue_url.rstrip("/").rsplit("/", 1)[-1])
    kwargs: dict[str, Any] = {"QueueUrl": step.queue_url, "MessageBody": _text(step.message_body)}
    if step.message_attributes:
        kwargs["MessageAttributes"] = {
            k: {"DataType": "String", "StringValue": v} for k, v in step.message_attributes.items()
        }
    if step.queue_url.endswith(".fifo"):
        # Same id on every attempt of this run: SQS drops the duplicate within 5 minutes.
        kwargs["MessageGroupId"] = ctx.task_id
        kwargs["MessageDeduplicationId"] = _dedupe_id(ctx, step.id)
    resp = _aws_call(lambda: wiring.client("sqs").send_message(**kwargs), timeout, "sqs")
    return {"message_id": resp.get("MessageId")}


def _sns(step: SnsStep, ctx: RunContext, timeout: float) -> Any:
    _guard_own("topic", step.topic_arn.rsplit(":", 1)[-1])
    kwargs: dict[str, Any] = {"TopicArn": step.topic_arn, "Message": _text(step.message)}
    if step.subject:
        kwargs["Subject"] = step.subject
    if step.topic_arn.endswith(".fifo"):
        kwargs["MessageGroupId"] = ctx.task_id
        kwargs["MessageDeduplicationId"] = _dedupe_id(ctx, step.id)
    resp = _aws_call(lambda: wiring.client("sns").publish(**kwargs), timeout, "sns")
    return {"message_id": resp.get("MessageId")}


def _eventbridge(step: EventBridgeStep, timeout: float) -> Any:
    _guard_own("event bus", step.event_bus_name.rsplit("/", 1)[-1])
    entry = {
        "EventBusName": step.event_bus_name,
        "Source": step.source,
        "DetailType": step.detail_type,
        "Detail": _text(step.detail),
    }
    resp = _aws_call(lambda: wiring.client("events").put_events(Entries=[entry]), timeout, "eventbridge")
    entries = resp.get("Entries") or [{}]
    if resp.get("FailedEntryCount", 0) or not entries[0].get("EventId"):
        code = str(entries[0].get("ErrorCode", ""))
        retryable = code in _AWS_RETRYABLE_CODES
        raise StepFailed(
            AWS_ERROR, f"eventbridge: {code}: {entries[0].get('ErrorMessage', 'entry not accepted')}", retryable
        )
    return {"event_id": entries[0]["EventId"]}


# ---------------------------------------------------------------------------- emit, log


def _emit(step: EmitStep, emit: Callable[[str, Any, str], str]) -> Any:
    try:
        event_id = emit(step.name, step.data, step.id)
    except StepFailed:
        raise
    except ClientError as e:
        raise _client_error(e, "emit") from None
    except ValueError as e:
        raise StepFailed(INVALID_STEP, f"emit: {e}", False) from None
    return {"event_id": event_id}


def _log(step: LogStep, ctx: RunContext) -> Any:
    """The message is the step's output, kept in the run record the agent reads; it never goes
    to the operator log, where response bodies or header values it quotes would be exposed to
    whoever reads the service's logs."""
    return step.message
