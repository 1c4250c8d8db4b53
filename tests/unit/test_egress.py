"""The egress guard: only public addresses, checked after resolution."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from chalicelib.execution.egress import EgressBlocked, ResolutionFailed, blocked_reason, check_url

BLOCKED = [
    "http://127.0.0.1/",
    "http://127.1.2.3:9001/2018-06-01/runtime/invocation/next",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[::1]/",
    "http://[fc00::1]/",
    "http://[fd12::1]/",
    "http://[fe80::1]/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://localhost/",
    "http://LOCALHOST.:8080/",
    "http://127.1/",  # inet_aton shorthand, resolved to 127.0.0.1
    "http://2130706433/",  # decimal 127.0.0.1
    "http://0x7f000001/",  # hex 127.0.0.1
    "https://127.0.0.1:443/",
]


@pytest.mark.parametrize("url", BLOCKED)
def test_blocked(url):
    with pytest.raises(EgressBlocked):
        check_url(url, ())


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://127.0.0.1/", "//example.com/", "example.com"]
)
def test_only_http_and_https(url):
    with pytest.raises(EgressBlocked, match="scheme"):
        check_url(url, ())


def test_credentials_in_url_refused():
    with pytest.raises(EgressBlocked, match="credentials"):
        check_url("http://user:pw@93.184.216.34/", ())


def test_public_literal_allowed_without_dns(monkeypatch):
    def no_dns(*a, **k):
        raise AssertionError("an IP literal needs no DNS")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    t = check_url("https://93.184.216.34:8443/a/b?c=1", ())
    assert (t.ip, t.port, t.hostname, t.scheme, t.request_target) == (
        "93.184.216.34",
        8443,
        "93.184.216.34",
        "https",
        "/a/b?c=1",
    )
    assert t.host_header == "93.184.216.34:8443"
    v6 = check_url("http://[2606:4700:4700::1111]/", ())
    assert v6.ip == "2606:4700:4700::1111" and v6.port == 80 and v6.host_header == "[2606:4700:4700::1111]"


def _fake_dns(monkeypatch, answers):
    def getaddrinfo(host, port, *a, **k):
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for ip in answers[host]:
            fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
            sa = (ip, port, 0, 0) if fam == socket.AF_INET6 else (ip, port)
            out.append((fam, socket.SOCK_STREAM, 6, "", sa))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_hostname_resolving_to_public_returns_the_checked_ip(monkeypatch):
    _fake_dns(monkeypatch, {"api.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    t = check_url("https://API.Example.com./v1", ())
    assert t.hostname == "api.example.com" and t.ip == "93.184.216.34"
    assert t.addresses == ("93.184.216.34", "2606:2800:220:1::1")
    assert t.host_header == "api.example.com" and t.request_target == "/v1"


def test_any_private_answer_blocks(monkeypatch):
    # A name answering with a public and a private address (a rebinding setup) is refused.
    _fake_dns(monkeypatch, {"rebind.example": ["93.184.216.34", "169.254.169.254"]})
    with pytest.raises(EgressBlocked, match="169.254.169.254"):
        check_url("http://rebind.example/", ())


def test_scoped_link_local_answer_blocks(monkeypatch):
    _fake_dns(monkeypatch, {"ll.example": ["fe80::1%eth0"]})
    with pytest.raises(EgressBlocked):
        check_url("http://ll.example/", ())


def test_unresolvable_host(monkeypatch):
    _fake_dns(monkeypatch, {})
    with pytest.raises(ResolutionFailed):
        check_url("http://nowhere.invalid/", (), timeout=2)


def test_allow_by_cidr():
    assert check_url("http://127.0.0.1:9/", ("127.0.0.0/8",)).ip == "127.0.0.1"
    assert check_url("http://127.1.2.3/", ("127.0.0.0/8",)).ip == "127.1.2.3"
    assert check_url("http://[::ffff:127.0.0.1]/", ("127.0.0.0/8",)).port == 80
    with pytest.raises(EgressBlocked):
        check_url("http://10.0.0.1/", ("127.0.0.0/8",))


def test_allow_by_single_ip():
    assert check_url("http://10.1.2.3/", ("10.1.2.3",)).ip == "10.1.2.3"
    with pytest.raises(EgressBlocked):
        check_url("http://10.1.2.4/", ("10.1.2.3",))


def test_allow_by_hostname():
    t = check_url("http://localhost:8080/x", ("localhost",))
    assert t.hostname == "localhost" and blocked_reason(ipaddress.ip_address(t.ip)) == "loopback"
    with pytest.raises(EgressBlocked):
        check_url("http://127.0.0.1:8080/x", ("localhost",))  # the name is allowed, not its address


def test_allow_by_wildcard(monkeypatch):
    _fake_dns(monkeypatch, {"svc.internal.example": ["10.0.0.5"], "internal.example": ["10.0.0.6"]})
    assert check_url("http://svc.internal.example/", ("*.internal.example",)).ip == "10.0.0.5"
    with pytest.raises(EgressBlocked):
        check_url("http://internal.example/", ("*.internal.example",))


def test_invalid_url_parts():
    for url in ["http:///nohost", "http://exa mple.com/", "http://93.184.216.34:99999/", "http://93.184.216.34:0/"]:
        with pytest.raises(EgressBlocked):
            check_url(url, ())


def test_request_target_is_percent_encoded():
    t = check_url("http://93.184.216.34/a b/ü?x=1 2&y=%41", ())
    assert t.request_target == "/a%20b/%C3%BC?x=1%202&y=%41"


# ---- allow entries with ports, denied ports, AWS target globs


def test_parse_entry_forms():
    from chalicelib.domain.allowlist import AllowEntry, parse_entry

    assert parse_entry("Example.COM.") == AllowEntry(host="example.com")
    assert parse_entry("api.example.com:8443") == AllowEntry(host="api.example.com", port=8443)
    assert parse_entry("*.svc.example:443") == AllowEntry(suffix=".svc.example", port=443)
    assert parse_entry("127.0.0.1") == AllowEntry(net=ipaddress.ip_network("127.0.0.1/32"))
    assert parse_entry("10.0.0.0/8:443") == AllowEntry(net=ipaddress.ip_network("10.0.0.0/8"), port=443)
    assert parse_entry("fd00::/8") == AllowEntry(net=ipaddress.ip_network("fd00::/8"))
    assert parse_entry("[::1]:8080") == AllowEntry(net=ipaddress.ip_network("::1/128"), port=8080)
    assert parse_entry("[fd00::/8]") == AllowEntry(net=ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    "entry",
    [
        "",
        " ",
        "host:0",
        "host:65536",
        "host:http",
        "a b",
        "ex*ample.com",
        "[::1",
        "[::1]8080",
        "[nothost]:80",
        "fd00::1:2:3:zz",
        "10.0.0.0/33:80",
        "host:80:90",
        "x" * 301,
        "http://example.com",
        "*",
    ],
)
def test_parse_entry_refuses(entry):
    from chalicelib.domain.allowlist import parse_entry

    with pytest.raises(ValueError):
        parse_entry(entry)


def test_port_bound_entries_match_only_their_port(monkeypatch):
    _fake_dns(monkeypatch, {"svc.internal.example": ["10.0.0.5"], "db.internal.example": ["10.0.0.6"]})
    assert check_url("http://10.0.0.5:8080/", ("10.0.0.0/8:8080",)).port == 8080
    assert check_url("http://svc.internal.example:8080/", ("svc.internal.example:8080",)).ip == "10.0.0.5"
    assert check_url("https://db.internal.example/", ("*.internal.example:443",)).port == 443
    assert check_url("http://[::1]:9000/", ("[::1]:9000",)).port == 9000
    for url, allow in (
        ("http://10.0.0.5:8081/", ("10.0.0.0/8:8080",)),
        ("http://10.0.0.5/", ("10.0.0.0/8:8080",)),  # port 80
        ("http://svc.internal.example:9/", ("svc.internal.example:8080",)),
        ("http://db.internal.example/", ("*.internal.example:443",)),
        ("http://[::1]:9001/", ("[::1]:9000",)),
        ("http://[::ffff:127.0.0.1]:9001/", ("127.0.0.1:9000",)),
    ):
        with pytest.raises(EgressBlocked, match="not allow-listed"):
            check_url(url, allow)


def test_malformed_operator_entries_open_nothing():
    with pytest.raises(EgressBlocked):
        check_url("http://127.0.0.1:80/", ("127.0.0.1:http", "127.0.0.1:0"))


def test_denied_ports_beat_the_allow_list_on_non_public_addresses():
    deny = frozenset({5000, 8080})
    for url in ("http://127.0.0.1:5000/moto-api/reset", "http://127.9.9.9:8080/", "http://[::ffff:127.0.0.1]:5000/"):
        with pytest.raises(EgressBlocked, match="belongs to the service itself"):
            check_url(url, ("127.0.0.0/8", "127.0.0.1:5000"), deny=deny)
    assert check_url("http://127.0.0.1:5001/", ("127.0.0.0/8",), deny=deny).port == 5001
    # The stack listens on loopback: a public address on the same port is not it.
    assert check_url("http://93.184.216.34:8080/", (), deny=deny).port == 8080


def test_deny_ports_from_the_environment(monkeypatch):
    from chalicelib.execution.egress import deny_ports

    monkeypatch.setenv("TASKAPI_EGRESS_DENY_PORTS", " 8080, 5000,junk,0,70000")
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    assert deny_ports() == frozenset({8080, 5000, 9001})
    monkeypatch.delenv("TASKAPI_EGRESS_DENY_PORTS")
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API")
    assert deny_ports() == frozenset()


def test_aws_target_globs():
    from chalicelib.domain.allowlist import aws_target_allowed

    arn = "arn:aws:lambda:us-east-1:123456789012:function:agent-a-report"
    assert aws_target_allowed(arn, (arn,))
    assert aws_target_allowed(arn, ("arn:aws:lambda:us-east-1:123456789012:function:agent-a-*",))
    assert aws_target_allowed(arn, ("*",))
    assert not aws_target_allowed(arn, ())
    assert not aws_target_allowed(arn + ":prod", (arn,))  # exact, not a prefix
    assert not aws_target_allowed("agent-a-report", (arn,))  # as the step names it
    assert not aws_target_allowed(arn, ("arn:aws:lambda:*:function:agent-b-*",))
    assert not aws_target_allowed("a", ("a*a",))


def test_glob_agrees_with_a_regex():
    import re

    from hypothesis import given
    from hypothesis import strategies as st

    from chalicelib.domain.allowlist import _glob

    text = st.text(alphabet="ab*:", max_size=12)

    @given(text, st.text(alphabet="ab:", max_size=12))
    def check(pattern, value):
        regex = ".*".join(re.escape(p) for p in pattern.split("*"))
        assert _glob(pattern, value) == (re.fullmatch(regex, value, re.DOTALL) is not None)

    check()
