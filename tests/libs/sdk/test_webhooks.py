"""The webhook signature scheme: what Parley signs and what a provider's endpoint accepts."""

from __future__ import annotations

import hashlib
import hmac

from parley_sdk import webhooks

SECRET = bytes(range(32))
BODY = b'{"id":"k","type":"message_waiting"}'


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, 1_700_000_000, BODY) == f"v1={expected}"


def test_verify_accepts_the_genuine_delivery_only() -> None:
    header = webhooks.sign(SECRET, 1_700_000_000, BODY)
    assert webhooks.verify(SECRET, "1700000000", BODY, header, now=1_700_000_010)
    assert not webhooks.verify(SECRET, "1700000000", BODY + b" ", header, now=1_700_000_010)
    assert not webhooks.verify(SECRET, "1700000001", BODY, header, now=1_700_000_010)
    assert not webhooks.verify(bytes(32), "1700000000", BODY, header, now=1_700_000_010)
    flipped = header[:-1] + ("0" if header[-1] != "0" else "1")
    assert not webhooks.verify(SECRET, "1700000000", BODY, flipped, now=1_700_000_010)
    # A replay long after the fact is refused even with a valid signature.
    assert not webhooks.verify(SECRET, "1700000000", BODY, header, now=1_700_000_000 + 301)
    assert not webhooks.verify(SECRET, "-1700000000", BODY, header, now=1_700_000_000)
