"""The process environment of the local stack, set before `app`/`chalicelib` are imported
(settings are read once and PynamoDB reads table names at class definition)."""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
DEFAULT_PREFIX = "tasksapi-local-"
DEFAULT_STATE_DIR = PROJECT_ROOT / ".data"
ADMIN_TOKEN_FILE = "admin-token"

# Anything that could point an SDK at real AWS: credentials other than the fake ones, named
# profiles, and per-service endpoint overrides that would win over AWS_ENDPOINT_URL.
_SCRUBBED = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


@dataclass(frozen=True)
class LocalEnv:
    host: str
    port: int
    moto_port: int
    prefix: str
    tick_seconds: int
    workers: int
    poll_interval: float
    state_dir: Path | None  # None: TASKAPI_STATE=memory
    generated_admin_token: str | None  # set only when we made one up or kept one in state_dir (printed)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_free(host: str, port: int) -> None:
    """Fail at start, not after seconds of set-up, when something already listens on `port`.
    (The server binds only when ready, so health checks are refused until then, not queued.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            s.bind((host, port))
        except OSError as e:
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _positive_int(environ: MutableMapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    value = int(raw)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {raw!r}")
    return value


def state_dir(environ: MutableMapping[str, str]) -> Path | None:
    """Where the stack keeps its state: `TASKAPI_STATE` = `memory` (nothing kept), a directory,
    or unset/empty for `.data/` in the project."""
    raw = environ.get("TASKAPI_STATE", "").strip()
    if raw.lower() == "memory":
        return None
    return Path(raw).expanduser().resolve() if raw else DEFAULT_STATE_DIR


def _kept_admin_token(directory: Path) -> str:
    """The admin token generated for this state directory, so agents and the admin token survive a
    restart together (made once, readable only by the owner)."""
    path = directory / ADMIN_TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def _deployed_defaults() -> dict[str, str]:
    """The app-wide environment of `.chalice/config.json` (not a stage's: stages name deployed
    resources and secret parameters, which the local stack replaces)."""
    try:
        config = json.loads((PROJECT_ROOT / ".chalice" / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in (config.get("environment_variables") or {}).items()}


def prepare(environ: MutableMapping[str, str] | None = None) -> LocalEnv:
    """Point every AWS SDK in this process (and children) at the moto server, with fake
    credentials always, so a developer's real AWS account can never be touched."""
    env = os.environ if environ is None else environ
    moto_port = _positive_int(env, "MOTO_PORT", 0) or free_port()
    for name in [*_SCRUBBED, *(k for k in env if k.startswith("AWS_ENDPOINT_URL_"))]:
        env.pop(name, None)
    env.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        # No shared config/credentials files: a profile there could carry an endpoint_url.
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    # EMF metrics are for CloudWatch; locally they would only be noise on stdout.
    env.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    for key, value in _deployed_defaults().items():
        env.setdefault(key, value)
    env.setdefault("TASKAPI_PREFIX", DEFAULT_PREFIX)
    env.pop("TASKAPI_ADMIN_TOKEN_PARAM", None)  # the admin token is local, never a parameter
    generated = None
    kept = state_dir(env)
    if not env.get("TASKAPI_ADMIN_TOKEN", "").strip():
        generated = _kept_admin_token(kept) if kept is not None else secrets.token_urlsafe(32)
        env["TASKAPI_ADMIN_TOKEN"] = generated
    tick_seconds = _positive_int(env, "TASKAPI_TICK_SECONDS", 60)
    env["TASKAPI_TICK_SECONDS"] = str(tick_seconds)
    port = _positive_int(env, "PORT", 8080)
    # The stack's own API and emulator are never reachable from an HTTP step, whatever
    # TASKAPI_EGRESS_ALLOW opens (the emulator holds every secret and can reset all state).
    own = [p for p in env.get("TASKAPI_EGRESS_DENY_PORTS", "").split(",") if p.strip()]
    env["TASKAPI_EGRESS_DENY_PORTS"] = ",".join(dict.fromkeys([*own, str(port), str(moto_port)]))
    return LocalEnv(
        host="127.0.0.1",
        port=port,
        moto_port=moto_port,
        prefix=env["TASKAPI_PREFIX"],
        tick_seconds=tick_seconds,
        workers=_positive_int(env, "TASKAPI_WORKERS", 4),
        poll_interval=_positive_int(env, "TASKAPI_POLL_MS", 100) / 1000,
        state_dir=kept,
        generated_admin_token=generated,
    )
