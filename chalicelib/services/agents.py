"""Agents and authentication.

A token is `tapi_<agent id hex>_<43 chars of 256-bit randomness>`: the prefix makes it
recognisable to secret scanners and lets us find the agent with one consistent
GetItem (so revocation takes effect on the very next request); only its SHA-256
is stored.

A signing secret is shown once, in the answer to `POST /agents`, and stored only as a KMS
ciphertext (`kms1:<base64>`, the key of `infra/resources.json`'s `SigningKeyAlias`) whose
encryption context names the agent, so a ciphertext copied to another agent's item does not
decrypt. The API may only encrypt; the workers, which sign HTTP steps, may only decrypt and
keep what they decrypted for a few minutes per container. An item written before secrets
were encrypted holds the plaintext: the worker reads it as it is, and the API encrypts it in
place the next time that agent's token is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from chalicelib.dispatch import budgets
from chalicelib.domain.allowlist import AgentEgress
from chalicelib.domain.budgets import FIELDS
from chalicelib.domain.errors import AgentNotFound, Forbidden, Unauthenticated
from chalicelib.domain.records import Agent, AgentStatus
from chalicelib.domain.timefmt import iso
from chalicelib.platform import wiring
from chalicelib.platform.config import settings
from chalicelib.platform.log import logger
from chalicelib.store import stores

TOKEN_PREFIX = "tapi_"
SECRET_PREFIX = "whsec_"
SEALED_PREFIX = "kms1:"  # the stored form of a signing secret: KMS ciphertext, base64
SECRET_CACHE_SECONDS = 300  # a worker container decrypts an agent's secret at most this often
SECRET_CACHE_SIZE = 1024


@dataclass(frozen=True)
class Caller:
    agent_id: str | None  # None for the admin
    is_admin: bool = False

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this route needs the admin token")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_admin_cache: dict[str, Any] = {}


def _admin_token_hash() -> str | None:
    s = settings()
    if s.admin_token:
        return hash_token(s.admin_token)
    if not s.admin_token_param:
        return None
    cached = _admin_cache.get("hash")
    if cached and _admin_cache.get("until", 0) > time.monotonic():
        return str(cached)
    value = wiring.client("ssm").get_parameter(Name=s.admin_token_param, WithDecryption=True)["Parameter"]["Value"]
    _admin_cache.update(hash=hash_token(value), until=time.monotonic() + 300)
    return hash_token(value)


def authenticate(authorization: str | None) -> Caller:
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("send Authorization: Bearer <token>")
    token = authorization[len("Bearer ") :].strip()
    if token.startswith(TOKEN_PREFIX):
        return Caller(agent_id=_agent_for(token))
    admin = _admin_token_hash()
    if admin and hmac.compare_digest(admin, hash_token(token)):
        return Caller(agent_id=None, is_admin=True)
    raise Unauthenticated("unknown token", invalid_token=True)


def _agent_for(token: str) -> str:
    parts = token.split("_")
    bad = Unauthenticated("unknown or revoked token", invalid_token=True)
    if len(parts) < 3:
        raise bad
    try:
        agent_id = str(uuid.UUID(hex=parts[1]))
    except ValueError:
        raise bad from None
    agent = stores().agents.get(agent_id)
    if agent is None:
        raise bad
    if agent.status is not AgentStatus.ACTIVE or not hmac.compare_digest(agent.token_hash, hash_token(token)):
        raise bad
    if not agent.signing_secret.startswith(SEALED_PREFIX):
        _seal_legacy(agent)
    return agent_id


def _seal_legacy(agent: Agent) -> None:
    """Encrypt a secret stored before secrets were encrypted, unless it changed meanwhile (then
    another request sealed it first)."""
    plaintext = agent.signing_secret
    try:
        stores().agents.replace_secret(agent.agent_id, plaintext, seal_secret(agent.agent_id, plaintext))
    except Exception:  # noqa: BLE001 - KMS or storage unavailable: authentication does not depend on it
        # The next request tries again.
        logger.warning("signing_secret_not_sealed", extra={"agent_id": agent.agent_id})


# ---- signing secrets at rest --------------------------------------------------------------


def _key_alias() -> str:
    return f"alias/{settings().prefix}signing-secrets"


def _context(agent_id: str) -> dict[str, str]:
    return {"agent_id": agent_id}


def seal_secret(agent_id: str, secret: str) -> str:
    """The stored form of `secret`: KMS ciphertext bound to `agent_id` (the API's kms:Encrypt)."""
    blob = wiring.client("kms").encrypt(
        KeyId=_key_alias(), Plaintext=secret.encode("utf-8"), EncryptionContext=_context(agent_id)
    )["CiphertextBlob"]
    return SEALED_PREFIX + base64.b64encode(blob).decode("ascii")


def open_secret(agent_id: str, stored: str) -> str:
    """The plaintext of a stored secret (the workers' kms:Decrypt); a legacy plaintext as it is."""
    if not stored.startswith(SEALED_PREFIX):
        return stored
    blob = base64.b64decode(stored[len(SEALED_PREFIX) :])
    kms = wiring.client("kms")
    answer = kms.decrypt(KeyId=_key_alias(), CiphertextBlob=blob, EncryptionContext=_context(agent_id))
    return bytes(answer["Plaintext"]).decode("utf-8")


_secrets: dict[str, tuple[float, str]] = {}  # agent id → (valid until, monotonic; plaintext)
_secrets_lock = threading.Lock()


def signing_secret(agent_id: str) -> str:
    """The agent's signing secret for a worker: one GetItem and one kms:Decrypt per agent and
    container every SECRET_CACHE_SECONDS, not per run (a secret never changes once created)."""
    now = time.monotonic()
    with _secrets_lock:
        hit = _secrets.get(agent_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    agent = stores().agents.get(agent_id)
    if agent is None:
        raise AgentNotFound(f"agent {agent_id} not found")
    plain = open_secret(agent_id, agent.signing_secret)
    with _secrets_lock:
        if len(_secrets) >= SECRET_CACHE_SIZE:
            for stale in [k for k, (until, _) in _secrets.items() if until <= now] or list(_secrets)[:1]:
                _secrets.pop(stale, None)
        _secrets[agent_id] = (now + SECRET_CACHE_SECONDS, plain)
    return plain


def forget_secrets() -> None:
    """Drop the decrypted secrets this container holds (tests, after a moto reset)."""
    with _secrets_lock:
        _secrets.clear()


def represent(agent: Agent) -> dict[str, Any]:
    return {
        "agent_id": agent.agent_id,
        "name": agent.name,
        "status": str(agent.status),
        "created_at": agent.created_at,
    }


def create_agent(name: str) -> dict[str, Any]:
    agent_id = str(uuid.uuid4())
    token = f"{TOKEN_PREFIX}{uuid.UUID(agent_id).hex}_{secrets.token_urlsafe(32)}"
    signing_secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    agent = Agent(
        agent_id=agent_id,
        name=name,
        created_at=iso(wiring.now()),
        status=AgentStatus.ACTIVE,
        token_hash=hash_token(token),
        signing_secret=seal_secret(agent_id, signing_secret),
    )
    if not stores().agents.put_if_absent(agent):  # a UUID4 collision: vanishingly rare, never overwrite
        raise RuntimeError("agent id collision")
    return {**represent(agent), "token": token, "signing_secret": signing_secret}


def list_agents() -> list[dict[str, Any]]:
    agents = [represent(a) for a in stores().agents.all()]
    return sorted(agents, key=lambda a: (a["created_at"], a["agent_id"]), reverse=True)


def revoke_agent(agent_id: str) -> dict[str, Any]:
    agent = stores().agents.revoke(agent_id)
    if agent is None:
        raise AgentNotFound(f"agent {agent_id} not found")
    return represent(agent)


# ---- egress (the admin's per-agent allow-lists) --------------------------------------------


def _agent_key(agent_id: str) -> str:
    """The canonical UUID, or 404: anything else names no agent (and never reaches DynamoDB)."""
    try:
        return str(uuid.UUID(agent_id))
    except ValueError:
        raise AgentNotFound(f"agent {agent_id[:64]} not found") from None


def _strings(values: Any) -> list[str]:
    return [str(v) for v in values or ()]


def _egress_doc(agent_id: str, aws_targets: Any, http_allow: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "aws_targets": _strings(aws_targets), "http_allow": _strings(http_allow)}


def _readable(caller: Caller, agent_id: str) -> Agent:
    """An agent's record for a settings read: the admin reads any agent's, an agent only its own."""
    if not caller.is_admin and caller.agent_id != agent_id:
        caller.require_admin()
    key = _agent_key(agent_id)
    agent = stores().agents.get(key)
    if agent is None:
        raise AgentNotFound(f"agent {key} not found")
    return agent


def get_egress(caller: Caller, agent_id: str) -> dict[str, Any]:
    """The agent's lists (its own, so it knows what it may use; any, for the admin)."""
    agent = _readable(caller, agent_id)
    return _egress_doc(agent.agent_id, agent.egress_aws_targets, agent.egress_http_allow)


def set_egress(agent_id: str, aws_targets: list[str], http_allow: list[str]) -> dict[str, Any]:
    """Replace both lists (admin only, checked by the route). Takes effect on the agent's next run
    that uses them: the worker reads them fresh for every such run."""
    key = _agent_key(agent_id)
    aws, http = list(dict.fromkeys(aws_targets)), list(dict.fromkeys(http_allow))
    if not stores().agents.set_egress(key, aws, http):
        raise AgentNotFound(f"agent {key} not found")
    return _egress_doc(key, aws, http)


def egress_for_run(agent_id: str) -> AgentEgress:
    """What a worker's run of this agent may reach beyond the operator's base: read consistently for
    each run that has an HTTP or AWS step, so a narrowed list holds from the next run on. An agent
    that is gone opens nothing."""
    return egress_of(stores().agents.get(agent_id))


def egress_of(agent: Agent | None) -> AgentEgress:
    """The agent's own egress entries, from a record already read (None: an agent that is gone
    opens nothing)."""
    if agent is None:
        return AgentEgress()
    return AgentEgress(tuple(_strings(agent.egress_aws_targets)), tuple(_strings(agent.egress_http_allow)))


# ---- run budgets (the admin's per-agent limits, dispatch/budgets.py) -----------------------


def _budget_doc(agent: Agent) -> dict[str, Any]:
    defaults = budgets.defaults()
    return {
        "agent_id": agent.agent_id,
        "effective": asdict(budgets.limits_of(agent)),
        "agent": {name: getattr(agent, name) for name in FIELDS},
        "defaults": asdict(defaults),
    }


def get_budget(caller: Caller, agent_id: str) -> dict[str, Any]:
    """The agent's budget (its own, so it can pace itself; any, for the admin)."""
    return _budget_doc(_readable(caller, agent_id))


def set_budget(agent_id: str, values: dict[str, int | None]) -> dict[str, Any]:
    """Replace the agent's budget (admin only, checked by the route). Runs a minute apply from
    the next charge; runs in flight to runs dispatched from now on (the ceiling travels with the
    run message); the minimum interval to schedules created or changed from now on."""
    key = _agent_key(agent_id)
    agent = stores().agents.set_budget(key, {name: values.get(name) for name in FIELDS})
    if agent is None:
        raise AgentNotFound(f"agent {key} not found")
    return _budget_doc(agent)
