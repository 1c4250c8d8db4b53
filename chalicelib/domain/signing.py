"""`X-Tasks-Signature`: lets an HTTP target check that a request came from its agent's
task (HMAC with the agent's signing secret) and is fresh (signed timestamp).

The scheme is Stripe's: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>`.
Signing the timestamp together with the body stops a captured request being replayed
later with a new timestamp.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Tasks-Signature"
DEFAULT_TOLERANCE = 300


def _digest(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, t: int) -> str:
    """The header value for `body` (the exact bytes sent) signed at unix time `t`."""
    return f"t={t},v1={_digest(secret, body, t)}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True if `header` signs `body` with `secret` and its timestamp is within `tolerance`
    seconds of `now`. Several `v1=` entries are accepted (any may match), as during a
    secret rotation."""
    t: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                t = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates or abs(now - t) > tolerance:
        return False
    expected = _digest(secret, body, t)
    ok = False
    for c in candidates:
        # Compare every candidate (no early exit), each in constant time.
        ok |= hmac.compare_digest(expected.encode(), c.encode("utf-8", "replace"))
    return ok
