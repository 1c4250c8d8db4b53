"""Check `X-Tasks-Signature` on a request an HTTP step sent to your endpoint.

The header is `t=<unix seconds>,v1=<hex HMAC-SHA256(signing_secret, "<t>." + raw body)>` (the
agent's `signing_secret` is shown once, when the admin creates the agent). Verify the raw bytes
you received, before parsing them: re-serialised JSON would not match.

    from tasksapi import webhooks
    webhooks.verify(SECRET, request.headers, request.body)   # raises SignatureError if not
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from tasksapi.errors import Error

HEADER = "X-Tasks-Signature"
DEFAULT_TOLERANCE = 300


class SignatureError(Error):
    """The request is not signed with this secret, or its timestamp is too old or too new."""


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    """The header value the service would send for `body` at unix time `t` (default now):
    for testing your endpoint."""
    t = int(time.time()) if t is None else t
    digest = hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _header(headers: Mapping[str, str] | str) -> str:
    if isinstance(headers, str):
        return headers
    for key, value in headers.items():  # header names are case-insensitive
        if key.lower() == HEADER.lower():
            return value
    raise SignatureError(f"no {HEADER} header")


def verify(
    secret: str,
    headers: Mapping[str, str] | str,
    body: bytes | str,
    tolerance: int = DEFAULT_TOLERANCE,
    *,
    now: int | None = None,
) -> int:
    """Raise `SignatureError` unless `body` carries a valid signature made with `secret` within
    `tolerance` seconds of now; return the signed timestamp. `headers` is the request's header
    mapping (any case) or the header value itself. Several `v1=` entries are accepted (during a
    secret rotation any may match)."""
    header = _header(headers)
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
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
                raise SignatureError("the signature's timestamp is not an integer") from None
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        raise SignatureError(f"malformed {HEADER}: expected t=<unix seconds>,v1=<hex>")
    now = int(time.time()) if now is None else now
    if abs(now - t) > tolerance:
        raise SignatureError(f"the signature is {abs(now - t)} s from now; the tolerance is {tolerance} s")
    expected = sign(secret, raw, t).partition(",v1=")[2].encode()
    ok = False
    for c in candidates:  # compare all of them, each in constant time
        ok |= hmac.compare_digest(expected, c.encode("utf-8", "replace"))
    if not ok:
        raise SignatureError("the signature does not match this secret and body")
    return t
