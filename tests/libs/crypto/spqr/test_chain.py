"""SPQR's symmetric chain and authenticator: keys re-derived from the reference's labels, out-of-order and
replay bounds as the reference's own chain tests, and byte-exact serialization."""

from __future__ import annotations

import hmac
import random

import pytest
from support.spqr import rfc5869

from parley_crypto._spqr._authenticator import Authenticator
from parley_crypto._spqr._chain import Chain, ChainParams, Direction
from parley_crypto._spqr._errors import (
    SpqrEpochOutOfRangeError,
    SpqrKeyAlreadyRequestedError,
    SpqrKeyJumpError,
    SpqrKeyTrimmedError,
    SpqrMacError,
    SpqrSendKeyEpochDecreasedError,
    SpqrStateError,
)

pytestmark = pytest.mark.timeout(120)


def test_first_send_key_from_the_labels() -> None:
    # Chain start: HKDF(salt 0^32, ikm, "Signal PQ Ratchet V1 Chain  Start" - two spaces), 96 bytes:
    # next_root || A2B chain || B2A chain. A key: HKDF(0^32, next, BE32(ctr) || "... Chain Next") second half.
    start = rfc5869(b"1", b"", b"Signal PQ Ratchet V1 Chain  Start", 96)
    step = rfc5869(start[32:64], b"", (1).to_bytes(4, "big") + b"Signal PQ Ratchet V1 Chain Next", 64)
    chain = Chain.new(b"1", Direction.A2B, ChainParams())
    assert chain.send_key(0) == (1, step[32:])
    assert chain.links[0].send.next == step[:32]
    assert chain.next_root == start[:32]
    b_side = Chain.new(b"1", Direction.B2A, ChainParams())
    assert b_side.links[0].send.next == start[64:96]


def test_add_epoch_from_the_labels() -> None:
    chain = Chain.new(b"1", Direction.B2A, ChainParams())
    root = chain.next_root
    chain.add_epoch(1, b"\x02")
    derived = rfc5869(b"\x02", root, b"Signal PQ Ratchet V1 Chain Add Epoch", 96)
    assert chain.next_root == derived[:32]
    assert chain.links[1].send.next == derived[64:96]
    assert chain.links[1].recv.next == derived[32:64]
    with pytest.raises(SpqrStateError):
        chain.add_epoch(3, b"\x03")


def test_directions_match() -> None:
    # The reference's directions_match.
    a2b = Chain.new(b"1", Direction.A2B, ChainParams())
    b2a = Chain.new(b"1", Direction.B2A, ChainParams())
    index, key = a2b.send_key(0)
    assert index == 1
    assert b2a.recv_key(0, 1) == key
    a2b.add_epoch(1, b"\x02")
    b2a.add_epoch(1, b"\x02")
    assert a2b.send_key(1)[0] == 1
    for _ in range(2, 10):
        a2b.send_key(1)
    index, key = a2b.send_key(1)
    assert index == 10
    assert b2a.recv_key(1, 10) == key
    assert b2a.recv_key(1, 1) == a2b_key_at(b"1", 1, 1)


def a2b_key_at(initial: bytes, epoch_secret_count: int, index: int) -> bytes:
    chain = Chain.new(initial, Direction.A2B, ChainParams())
    for epoch in range(1, epoch_secret_count + 1):
        chain.add_epoch(epoch, bytes([epoch + 1]))
    key = b""
    for _ in range(index):
        _, key = chain.send_key(epoch_secret_count)
    return key


def test_a_key_is_handed_out_once() -> None:
    chain = Chain.new(b"1", Direction.A2B, ChainParams())
    chain.recv_key(0, 2)
    with pytest.raises(SpqrKeyAlreadyRequestedError):
        chain.recv_key(0, 2)
    chain.recv_key(0, 1)  # the skipped one is still there, once
    with pytest.raises(SpqrKeyAlreadyRequestedError):
        chain.recv_key(0, 1)


def test_very_old_keys_are_trimmed_and_long_jumps_refused() -> None:
    # The reference's very_old_keys_are_trimmed, plus its max_jump bound.
    chain = Chain.new(b"1", Direction.A2B, ChainParams(max_jump=10, max_ooo_keys=10))
    chain.recv_key(0, 10)
    chain.recv_key(0, 12)
    with pytest.raises(SpqrKeyTrimmedError):
        chain.recv_key(0, 1)
    with pytest.raises(SpqrKeyJumpError):
        chain.recv_key(0, 23)
    chain.recv_key(0, 22)


def test_out_of_order_keys_within_the_window() -> None:
    a2b = Chain.new(b"1", Direction.A2B, ChainParams())
    b2a = Chain.new(b"1", Direction.B2A, ChainParams())
    keys = [a2b.send_key(0) for _ in range(2000)]
    random.Random(7).shuffle(keys)
    for index, key in keys:
        assert b2a.recv_key(0, index) == key


def test_old_send_epochs_are_dropped() -> None:
    # The reference's clear_old_send_keys: sending in epoch 1 forbids epoch 0 from then on.
    chain = Chain.new(b"1", Direction.A2B, ChainParams())
    chain.send_key(0)
    chain.add_epoch(1, b"\x02")
    chain.send_key(1)
    with pytest.raises(SpqrSendKeyEpochDecreasedError):
        chain.send_key(0)
    chain.add_epoch(2, b"\x03")
    chain.add_epoch(3, b"\x04")
    chain.send_key(3)
    # One epoch before the send epoch stays for late receives; older ones are gone.
    assert len(chain.links) == 2
    with pytest.raises(SpqrEpochOutOfRangeError):
        chain.recv_key(1, 1)
    with pytest.raises(SpqrEpochOutOfRangeError):
        chain.recv_key(4, 1)
    assert chain.links[0].send.next == b""


def test_chain_serialization_is_stable_and_lossless() -> None:
    chain = Chain.new(b"1", Direction.B2A, ChainParams(max_jump=0xFFFFFFFF))
    chain.recv_key(0, 5)
    chain.add_epoch(1, b"\x02")
    chain.send_key(1)
    raw = chain.to_proto()
    again = Chain.from_proto(raw)
    assert again.to_proto() == raw
    assert again.recv_key(0, 3) == Chain.from_proto(raw).recv_key(0, 3)
    # direction (B2A = 1), current_epoch 1, then the links.
    assert raw.startswith(b"\x08\x01\x10\x01\x1a")
    # Default parameters are written as zeros, i.e. an empty ChainParams message at the end.
    assert Chain.new(b"1", Direction.A2B, ChainParams()).to_proto().endswith(b"\x32\x00")


@pytest.mark.parametrize(
    "raw",
    [b"\x08\x02\x32\x00", b"\x1a\x02\x0a\x00\x32\x00", b"\x1a\x06\x0a\x02\x12\x01\x00\x12\x00\x32\x00", b"\x08"],
)
def test_malformed_chain_state_is_refused(raw: bytes) -> None:
    # Unknown direction, a link missing its recv half, a chain key of one byte, truncated bytes.
    with pytest.raises(SpqrStateError):
        Chain.from_proto(raw)


def test_authenticator_from_the_labels() -> None:
    update = rfc5869(
        bytes(32) + b"k" * 32, b"", b"Signal_PQCKA_V1_MLKEM768:Authenticator Update" + (1).to_bytes(8, "big"), 64
    )
    auth = Authenticator.new(b"k" * 32, 1)
    assert auth.root_key == update[:32]
    assert auth.mac_key == update[32:]
    label = b"Signal_PQCKA_V1_MLKEM768:ekheader" + (1).to_bytes(8, "big")
    assert auth.mac_hdr(1, b"hdr") == hmac.digest(update[32:], label + b"hdr", "sha256")
    label = b"Signal_PQCKA_V1_MLKEM768:ciphertext" + (1).to_bytes(8, "big")
    assert auth.mac_ct(1, b"ct") == hmac.digest(update[32:], label + b"ct", "sha256")
    later = auth.update(2, b"s" * 32)
    expected = rfc5869(
        update[:32] + b"s" * 32, b"", b"Signal_PQCKA_V1_MLKEM768:Authenticator Update" + (2).to_bytes(8, "big"), 64
    )
    assert (later.root_key, later.mac_key) == (expected[:32], expected[32:])


def test_authenticator_refuses_any_wrong_mac() -> None:
    auth = Authenticator.new(bytes(32), 1)
    mac = auth.mac_ct(1, b"123")
    auth.verify_ct(1, b"123", mac)
    for bit in range(256):
        flipped = bytearray(mac)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(SpqrMacError):
            auth.verify_ct(1, b"123", bytes(flipped))
    with pytest.raises(SpqrMacError):
        auth.verify_ct(2, b"123", mac)  # another epoch
    with pytest.raises(SpqrMacError):
        auth.verify_hdr(1, b"123", mac)  # a header MAC is not a ciphertext MAC
    assert Authenticator.from_proto(auth.to_proto()) == auth
