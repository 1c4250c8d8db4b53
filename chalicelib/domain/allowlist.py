"""Allow-list entries and per-agent egress, without the network code: the API validates and
stores them (so it loads this, not the egress guard), the worker's guard applies them.

HTTP entries: `host[:port]`, `*.suffix[:port]`, an address or CIDR with an optional port
(`10.0.0.0/8:443`), and IPv6 in brackets when a port follows (`[fd00::/8]:443`). AWS targets:
the exact string a step names (function name or ARN, queue URL, topic ARN, bus name or ARN),
where `*` matches any run of characters.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AgentEgress:
    """What the admin opened for one agent (see `agents.set_egress`): AWS step targets (exact
    strings or `*` globs) and HTTP allow entries added to the operator's `TASKAPI_EGRESS_ALLOW`."""

    aws_targets: tuple[str, ...] = ()
    http_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class AllowEntry:
    """One parsed allow entry: exactly one of `host`, `suffix`, `net`; `port` None = any port."""

    host: str | None = None
    suffix: str | None = None  # ".example.com" for "*.example.com"
    net: IPNetwork | None = None
    port: int | None = None


_NAME = re.compile(r"^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
MAX_ENTRY_CHARS = 300


def _port(raw: str, entry: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise ValueError(f"{entry!r}: the port must be 1–65535")
    return int(raw)


def parse_entry(raw: str) -> AllowEntry:
    """Parse `host[:port]`, `*.suffix[:port]`, `ip-or-cidr[:port]` or `[ipv6-or-cidr][:port]`
    (a bare IPv6 address or CIDR takes no port: brackets say where the port starts).
    Raises ValueError naming what is wrong."""
    entry = raw.strip().lower()
    if not entry or len(entry) > MAX_ENTRY_CHARS:
        raise ValueError(f"an entry must be 1–{MAX_ENTRY_CHARS} characters")
    port: int | None = None
    if entry.startswith("["):
        inside, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{raw!r}: write an IPv6 entry as [address] or [address/prefix], then :port")
        head = inside
        if rest:
            port = _port(rest[1:], raw)
    elif entry.count(":") == 1:
        head, _, port_raw = entry.partition(":")
        port = _port(port_raw, raw)
    else:
        head = entry  # no colon, or a bare IPv6 address or CIDR (no port)
    try:
        return AllowEntry(net=ipaddress.ip_network(head, strict=False), port=port)
    except ValueError:
        if entry.startswith("[") or ":" in head:
            raise ValueError(f"{raw!r}: not an IP address or CIDR") from None
    name = head.rstrip(".")
    if not _NAME.match(name):
        raise ValueError(f"{raw!r}: not a host name, *.suffix, address or CIDR")
    if name.startswith("*."):
        return AllowEntry(suffix=name[1:], port=port)
    return AllowEntry(host=name, port=port)


def _glob(pattern: str, value: str) -> bool:
    """`*` matches any run of characters (nothing else is special): linear-time, no regex."""
    if "*" not in pattern:
        return pattern == value
    parts = pattern.split("*")
    first, last = parts[0], parts[-1]
    if len(value) < len(first) + len(last) or not value.startswith(first) or not value.endswith(last):
        return False
    pos, end = len(first), len(value) - len(last)
    for mid in parts[1:-1]:
        found = value.find(mid, pos, end)
        if found < 0:
            return False
        pos = found + len(mid)
    return True


def aws_target_allowed(target: str, allowed: tuple[str, ...]) -> bool:
    """Is an AWS step's target (a function name or ARN, a queue URL, a topic ARN, a bus name or
    ARN, exactly as the step names it after templates) in the agent's `aws_targets`?"""
    return any(_glob(p, target) for p in allowed)
