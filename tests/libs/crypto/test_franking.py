"""Message franking: commitment by the sender, stamp by the relay, verification by the moderator."""

from __future__ import annotations

import os

import pytest

from parley_crypto import FrankingError, frank, franking_context, stamp_commitment, verify_commitment, verify_report

RELAY_KEY = os.urandom(32)
CONTEXT = b"sender=alice@birdy;recipient=bob@gk;ts=1700000000"


def test_report_verifies_end_to_end() -> None:
    plaintext = b"serialized content message"
    tag = frank(plaintext)
    verify_commitment(plaintext, tag.franking_key, tag.commitment)
    stamp = stamp_commitment(RELAY_KEY, tag.commitment, CONTEXT)
    verify_report(
        relay_key=RELAY_KEY,
        plaintext=plaintext,
        franking_key=tag.franking_key,
        commitment=tag.commitment,
        context=CONTEXT,
        stamp=stamp,
    )


def test_fresh_key_per_message() -> None:
    assert frank(b"same").franking_key != frank(b"same").franking_key


@pytest.mark.parametrize("what", ["plaintext", "franking_key", "commitment", "context", "stamp", "relay_key"])
def test_any_altered_part_of_a_report_fails(what: str) -> None:
    plaintext = b"what was said"
    tag = frank(plaintext)
    report = {
        "relay_key": RELAY_KEY,
        "plaintext": plaintext,
        "franking_key": tag.franking_key,
        "commitment": tag.commitment,
        "context": CONTEXT,
        "stamp": stamp_commitment(RELAY_KEY, tag.commitment, CONTEXT),
    }
    value = bytearray(report[what])
    value[0] ^= 1
    report[what] = bytes(value)
    with pytest.raises(FrankingError):
        verify_report(**report)


def test_wrong_lengths_are_rejected() -> None:
    with pytest.raises(FrankingError):
        verify_commitment(b"x", b"short", bytes(32))
    with pytest.raises(FrankingError):
        stamp_commitment(b"short relay key", bytes(32), CONTEXT)


def test_franking_context_separates_fields_unambiguously() -> None:
    assert franking_context("a/1", "bc", 5) != franking_context("a/1b", "c", 5)
    assert franking_context("a/1", "b", 5) != franking_context("a/1", "b", 6)
    assert franking_context("a/1", "b", 5)[-8:] == (5).to_bytes(8, "big")
