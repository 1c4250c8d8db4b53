"""The egress guard: HTTP steps may only reach public addresses.

Agents choose the URLs, and the worker runs inside our account: in Lambda the
runtime API listens on 127.0.0.1:9001, credentials sit in the environment, and a VPC
puts internal services on private addresses. So every URL is resolved here, every
address it resolves to is checked, and the caller connects to the address that was
checked (never resolving the name a second time, so DNS rebinding cannot switch it).
The operator may open exceptions with `TASKAPI_EGRESS_ALLOW`, and the admin per agent (its
`http_allow`): `host[:port]`, `*.suffix[:port]`, an address or CIDR with an optional port
(`10.0.0.0/8:443`, `[fd00::/8]:443`). Ports in `TASKAPI_EGRESS_DENY_PORTS` (the local stack's
own API and emulator) and the Lambda runtime API's port are refused on every non-public
address whatever the allow-lists say. AWS step targets are allow-listed per agent
(`aws_targets`, matched by `aws_target_allowed`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlsplit

from chalicelib.domain.allowlist import AllowEntry, IPNetwork, parse_entry

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"

# Ranges blocked on top of what `ipaddress` already calls non-global/reserved.
_EXTRA_BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # carrier-grade NAT (shared address space)
        "169.254.0.0/16",  # link-local, incl. the instance metadata service
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
        "64:ff9b::/96",  # NAT64 well-known prefix (could embed any IPv4)
        "64:ff9b:1::/48",  # NAT64 local-use prefix
        "2002::/16",  # 6to4 (embeds an IPv4; the embedded one is checked too)
        "2001::/32",  # Teredo
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # deprecated site-local
        "ff00::/8",  # multicast
        "::/96",  # IPv4-compatible (deprecated) and ::, ::1
    )
)


class EgressBlocked(Exception):
    """The URL is not one an HTTP step may reach; no retry can change that."""


class ResolutionFailed(OSError):
    """The host name did not resolve (possibly transient, so retryable)."""


@dataclass(frozen=True)
class ResolvedTarget:
    """A checked URL: connect to `ip`:`port`, send `host_header`, verify TLS for `hostname`."""

    url: str
    scheme: str
    hostname: str
    port: int
    ip: str
    addresses: tuple[str, ...]
    request_target: str  # path + query, what goes on the request line

    @property
    def host_header(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.hostname, self.port)


def blocked_reason(addr: IPAddress) -> str | None:
    """Why `addr` is not public, or None if it is."""
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is not None:
            inner = blocked_reason(embedded)
            if inner:
                return f"embeds {embedded} ({inner})"
    if addr.is_loopback:
        return "loopback"
    if addr.is_unspecified:
        return "unspecified"
    if addr.is_link_local:
        return "link-local"
    if addr.is_multicast:
        return "multicast"
    if addr.is_private:
        return "private"
    if addr.is_reserved or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local):
        return "reserved"
    if not addr.is_global:
        return "not globally routable"
    for net in _EXTRA_BLOCKED:
        if addr.version == net.version and addr in net:
            return f"special-purpose range {net}"
    return None


@lru_cache(maxsize=256)
def _parse_allow(allow: tuple[str, ...]) -> tuple[AllowEntry, ...]:
    """The entries that parse; an operator's malformed entry opens nothing (the API refuses
    malformed per-agent entries up front)."""
    out: list[AllowEntry] = []
    for raw in allow:
        try:
            out.append(parse_entry(raw))
        except ValueError:
            continue
    return tuple(out)


def _allowed(hostname: str, literal: bool, addr: IPAddress, port: int, allow: tuple[str, ...]) -> bool:
    """Is `addr`:`port` (an address `hostname` resolved to, or the literal itself) allow-listed?
    A name entry opens the addresses of that name only, an address entry those addresses only."""
    h = hostname.lower().rstrip(".")
    candidates: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        candidates.append(addr.ipv4_mapped)
    for e in _parse_allow(allow):
        if e.port is not None and e.port != port:
            continue
        if e.net is not None:
            if any(a.version == e.net.version and a in e.net for a in candidates):
                return True
        elif not literal and (h == e.host or (e.suffix is not None and h.endswith(e.suffix))):
            return True
    return False


@lru_cache(maxsize=16)
def _ports(deny: str, runtime_api: str) -> frozenset[int]:
    out = {int(p) for p in deny.replace(" ", "").split(",") if p.isascii() and p.isdigit() and 0 < int(p) < 65536}
    tail = runtime_api.rpartition(":")[2]
    if runtime_api and tail.isascii() and tail.isdigit():
        out.add(int(tail))  # Lambda's runtime API (127.0.0.1:9001): an invocation's own control plane
    return frozenset(out)


def deny_ports() -> frozenset[int]:
    """Ports refused on every non-public address, whatever the allow-lists: the local stack's own
    API and emulator (`TASKAPI_EGRESS_DENY_PORTS`, set by `local.env.prepare`) and, in Lambda,
    the runtime API. Read per call (cached on the values), so a test can change them."""
    return _ports(os.environ.get("TASKAPI_EGRESS_DENY_PORTS", ""), os.environ.get("AWS_LAMBDA_RUNTIME_API", ""))


_resolver: ThreadPoolExecutor | None = None
_HOST_CHARS = re.compile(r"^[a-z0-9_.:%-]+$")


def _normalise_host(raw: str, url: str) -> str:
    """Lower-case ASCII (IDNA) host without a trailing dot; anything odd is refused, so the
    name we check is the name that goes into Host, SNI and certificate verification."""
    host = raw.rstrip(".")
    try:
        host = host.encode("idna").decode("ascii").lower() if host else ""
    except UnicodeError:
        raise EgressBlocked(f"invalid host in URL {url!r}") from None
    if not host or not _HOST_CHARS.match(host):
        raise EgressBlocked(f"invalid host in URL {url!r}")
    return host


def _resolve(hostname: str, port: int, timeout: float | None) -> list[str]:
    """All addresses of `hostname`, bounded by `timeout` (getaddrinfo has none of its own)."""
    global _resolver

    def lookup() -> list[str]:
        infos = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
        # IPv6 link-local results may carry a scope ("fe80::1%eth0"); it is not part of the address.
        return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))

    try:
        if timeout is None:
            return lookup()
        if _resolver is None:
            _resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="egress-dns")
        return _resolver.submit(lookup).result(timeout=timeout)
    except FutureTimeout:
        raise ResolutionFailed(f"resolving {hostname!r} timed out") from None
    except (socket.gaierror, UnicodeError) as e:
        raise ResolutionFailed(f"cannot resolve {hostname!r}: {e}") from None


def check_url(
    url: str, allow: tuple[str, ...], *, timeout: float | None = None, deny: frozenset[int] = frozenset()
) -> ResolvedTarget:
    """Resolve `url`'s host and check every address; return the one to connect to.

    Raises EgressBlocked for a non-http(s) URL, credentials in the URL, any resolved address
    that is not public (unless the host name or that address is allow-listed for the port
    connected to) or that is not public and on a port in `deny` (allowed or not), and
    ResolutionFailed when the name does not resolve.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise EgressBlocked(f"invalid URL {url!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise EgressBlocked(f"scheme {scheme or '(none)'!r} is not allowed; use http or https")
    if parts.username is not None or parts.password is not None:
        raise EgressBlocked("credentials in the URL are not allowed; send them in a header")
    hostname = _normalise_host(parts.hostname or "", url)
    port = port if port is not None else _DEFAULT_PORTS[scheme]
    if port == 0:
        raise EgressBlocked("port 0 is not allowed")

    try:
        literal: IPAddress | None = ipaddress.ip_address(hostname)
    except ValueError:
        literal = None
    addresses = [str(literal)] if literal is not None else _resolve(hostname, port, timeout)
    if not addresses:
        raise ResolutionFailed(f"{hostname!r} resolved to no address")

    for a in addresses:
        addr = ipaddress.ip_address(a)
        reason = blocked_reason(addr)
        if not reason:
            continue
        shown = hostname if literal is not None else f"{hostname} ({a})"
        if port in deny:
            # Deny beats allow: the local stack's own emulator and API (or Lambda's runtime API).
            raise EgressBlocked(f"{shown} port {port} belongs to the service itself; no allow-list opens it")
        if not _allowed(hostname, literal is not None, addr, port, allow):
            raise EgressBlocked(
                f"{shown} port {port} is not a public address ({reason}) and not allow-listed; "
                "HTTP steps may only reach public addresses"
            )

    # Percent-encode what may not appear on a request line (spaces, non-ASCII), keeping
    # existing escapes, as browsers do.
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
    return ResolvedTarget(
        url=url,
        scheme=scheme,
        hostname=hostname,
        port=port,
        ip=addresses[0],
        addresses=tuple(addresses),
        request_target=target,
    )
