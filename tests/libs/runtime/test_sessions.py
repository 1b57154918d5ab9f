"""Session tokens on their own: what verifies, and the exact reason for what does not."""

from __future__ import annotations

import base64
import secrets

import pytest

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.errors import Code, ParleyError
from parley_runtime.sessions import Session, SessionKeys

NOW = 1_800_000_000
OLD, NEW, STRANGER = (secrets.token_bytes(32) for _ in range(3))


def _refusal(keys: SessionKeys, token: str, now: float = NOW) -> tuple[Code, ErrorReason.ValueType]:
    with pytest.raises(ParleyError) as caught:
        keys.verify(token, now)
    return caught.value.code, caught.value.reason


def test_a_token_says_who_until_when_and_over_which_certificate() -> None:
    keys = SessionKeys(NEW)
    token = keys.mint("birdy", NOW + 600, "00ff", b"\x01" * 32)
    assert keys.verify(token, NOW) == Session("birdy", NOW + 600, "00ff", b"\x01" * 32)
    assert keys.verify(keys.mint("birdy", NOW + 600, "00ff"), NOW).client_cert_sha256 == b""


def test_expired_forged_and_foreign_tokens_are_refused_with_their_reasons() -> None:
    keys = SessionKeys(NEW)
    token = keys.mint("birdy", NOW + 600, "00ff")
    expired = (Code.UNAUTHENTICATED, ErrorReason.ERROR_REASON_TOKEN_EXPIRED)
    invalid = (Code.UNAUTHENTICATED, ErrorReason.ERROR_REASON_TOKEN_INVALID)
    assert _refusal(keys, token, now=NOW + 600) == expired
    prefix, kid, claims, tag = token.split(".")
    # Another provider's name (or a later expiry) under the same tag.
    other = base64.urlsafe_b64encode(f"gatekeeper:{NOW + 600}:00ff:".encode()).rstrip(b"=").decode()
    assert _refusal(keys, f"{prefix}.{kid}.{other}.{tag}") == invalid
    flipped = tag[:-2] + ("A" if tag[-2] != "A" else "B") + tag[-1]
    assert _refusal(keys, f"{prefix}.{kid}.{claims}.{flipped}") == invalid
    assert _refusal(keys, f"{prefix}.{kid}.{claims}") == invalid
    assert _refusal(keys, f"{prefix}.{kid}.{claims}.!!!") == invalid
    # Minted by another deployment (or with a key rotated out): the key id is unknown here.
    foreign = SessionKeys(STRANGER).mint("birdy", NOW + 600, "00ff")
    assert _refusal(keys, foreign) == (Code.UNAUTHENTICATED, ErrorReason.ERROR_REASON_SESSION_KEY_UNKNOWN)
    # A forger who guesses the format but not the key, naming our key id.
    forged = foreign.replace(SessionKeys(STRANGER).current_key_id, keys.current_key_id)
    assert _refusal(keys, forged) == invalid


def test_rotation_accepts_the_previous_key_until_it_is_dropped() -> None:
    before = SessionKeys(OLD)
    during = SessionKeys(NEW, previous=OLD)
    after = SessionKeys(NEW)
    old_token = before.mint("birdy", NOW + 600, "00ff")
    new_token = during.mint("birdy", NOW + 600, "00ff")
    assert during.verify(old_token, NOW).provider_id == "birdy"
    assert after.verify(new_token, NOW).provider_id == "birdy"
    assert _refusal(after, old_token) == (Code.UNAUTHENTICATED, ErrorReason.ERROR_REASON_SESSION_KEY_UNKNOWN)


def test_keys_must_be_long_and_distinct() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SessionKeys(b"short")
    with pytest.raises(ValueError, match="is the current one"):
        SessionKeys(NEW, previous=NEW)
