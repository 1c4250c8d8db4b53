"""X-Tasks-Signature: known answer computed here with hmac, and verify()'s refusals."""

from __future__ import annotations

import hashlib
import hmac

from chalicelib.domain.signing import signature_header, verify

SECRET = "whsec_test-secret"
BODY = b'{"hello":"world","n":1}'
T = 1_800_000_000


def test_known_answer():
    expected = hmac.new(SECRET.encode(), b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert signature_header(SECRET, BODY, T) == f"t=1800000000,v1={expected}"


def test_known_answer_literal_vector():
    # Computed outside Python (`printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_abc`),
    # so a change of scheme (separator, encoding, hash) cannot pass silently.
    expected = "3b843bacfb18cc5554542fdcc84d815b399c52758e508a6fcecf0a2af4efea2b"
    assert signature_header("whsec_abc", b'{"a":1}', 1_700_000_000) == f"t=1700000000,v1={expected}"


def test_empty_body_signs_empty_bytes():
    expected = hmac.new(SECRET.encode(), f"{T}.".encode(), hashlib.sha256).hexdigest()
    assert signature_header(SECRET, b"", T) == f"t={T},v1={expected}"


def test_verify_accepts_a_fresh_signature():
    header = signature_header(SECRET, BODY, T)
    assert verify(SECRET, header, BODY, now=T)
    assert verify(SECRET, header, BODY, now=T + 300)
    assert verify(SECRET, header, BODY, now=T - 300)


def test_verify_rejects_tampered_body():
    header = signature_header(SECRET, BODY, T)
    assert not verify(SECRET, header, BODY.replace(b"1", b"2"), now=T)
    assert not verify(SECRET, header, BODY + b" ", now=T)


def test_verify_rejects_wrong_secret():
    header = signature_header(SECRET, BODY, T)
    assert not verify("whsec_other", header, BODY, now=T)


def test_verify_rejects_stale_and_future_timestamps():
    header = signature_header(SECRET, BODY, T)
    assert not verify(SECRET, header, BODY, now=T + 301)
    assert not verify(SECRET, header, BODY, now=T - 301)
    assert verify(SECRET, header, BODY, now=T + 1000, tolerance=1000)


def test_verify_rejects_a_moved_timestamp():
    sig = signature_header(SECRET, BODY, T).split(",")[1]
    assert not verify(SECRET, f"t={T + 10},{sig}", BODY, now=T + 10)


def test_verify_rejects_malformed_headers():
    for header in ["", "garbage", f"t={T}", "v1=abc", "t=x,v1=abc", f"t={T},v1="]:
        assert not verify(SECRET, header, BODY, now=T), header


def test_verify_accepts_any_of_several_v1():
    good = signature_header(SECRET, BODY, T).split(",")[1]
    assert verify(SECRET, f"t={T},v1={'0' * 64},{good}", BODY, now=T)
