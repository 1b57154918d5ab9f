"""Incremental ML-KEM-768: known answers, agreement with cryptography's one-shot ML-KEM-768, tampering."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from support.kat import CtrDrbg, KemVector, read_kem_vectors

from parley_crypto import InvalidKeyError, InvalidStateError
from parley_crypto import _mlkem768_incremental as mlkem

VECTORS = read_kem_vectors("mlkem768_kat.rsp")


def full_ek(keys: mlkem.Keys) -> bytes:
    return keys.encapsulation_key + keys.header[:32]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"count{v.count}")
def test_known_answers_of_the_reference_implementation(vector: KemVector) -> None:
    drbg = CtrDrbg(vector.seed)
    keys = mlkem.generate(drbg.random_bytes(64))
    assert full_ek(keys) == vector.pk
    assert keys.decapsulation_key == vector.sk
    ct1, state, secret = mlkem.encaps1(keys.header, drbg.random_bytes(32))
    ct2 = mlkem.encaps2(keys.encapsulation_key, state)
    assert ct1 + ct2 == vector.ct
    assert secret == vector.ss
    assert mlkem.decaps(vector.sk, vector.ct[:960], vector.ct[960:]) == vector.ss


def test_sizes_are_libcrux_sizes() -> None:
    keys = mlkem.generate()
    ct1, state, secret = mlkem.encaps1(keys.header)
    ct2 = mlkem.encaps2(keys.encapsulation_key, state)
    sizes = (len(keys.header), len(keys.encapsulation_key), len(keys.decapsulation_key))
    assert sizes == (mlkem.HEADER_SIZE, mlkem.ENCAPSULATION_KEY_SIZE, mlkem.DECAPSULATION_KEY_SIZE)
    assert sizes == (64, 1152, 2400)
    assert (len(ct1), len(state), len(secret), len(ct2)) == (960, 2080, 32, 128)
    assert (mlkem.CIPHERTEXT1_SIZE, mlkem.ENCAPSULATION_STATE_SIZE, mlkem.CIPHERTEXT2_SIZE) == (960, 2080, 128)


def test_same_seed_gives_cryptographys_encapsulation_key_and_header_hash() -> None:
    seed = os.urandom(64)
    keys = mlkem.generate(seed)
    ek = MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
    assert full_ek(keys) == ek
    assert keys.header == ek[1152:] + hashlib.sha3_256(ek).digest()


def test_cryptography_decapsulates_our_split_ciphertext() -> None:
    seed = os.urandom(64)
    keys = mlkem.generate(seed)
    ct1, state, secret = mlkem.encaps1(keys.header)
    ct2 = mlkem.encaps2(keys.encapsulation_key, state)
    assert MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(ct1 + ct2) == secret
    assert mlkem.decaps(keys.decapsulation_key, ct1, ct2) == secret


def test_we_decapsulate_cryptographys_ciphertext() -> None:
    keys = mlkem.generate()
    secret, ciphertext = MLKEM768PublicKey.from_public_bytes(full_ek(keys)).encapsulate()
    assert mlkem.decaps(keys.decapsulation_key, ciphertext[:960], ciphertext[960:]) == secret


def test_encapsulation_state_is_libcrux_layout() -> None:
    keys = mlkem.generate()
    message = os.urandom(32)
    _, state, _ = mlkem.encaps1(keys.header, message)
    values = np.frombuffer(state[:-32], dtype="<i2")
    assert int(np.abs(values[:768]).max()) <= 1664
    assert int(np.abs(values[768:]).max()) <= 2
    assert state[-32:] == message


def test_fresh_encapsulations_differ() -> None:
    keys = mlkem.generate()
    assert mlkem.encaps1(keys.header)[2] != mlkem.encaps1(keys.header)[2]


def test_header_and_key_match() -> None:
    keys = mlkem.generate()
    assert mlkem.ek_matches_header(keys.encapsulation_key, keys.header)
    other = mlkem.generate()
    assert not mlkem.ek_matches_header(other.encapsulation_key, keys.header)


@pytest.mark.parametrize("position", [0, 575, 1151])
def test_flipped_key_bit_does_not_match_header(position: int) -> None:
    keys = mlkem.generate()
    tampered = bytearray(keys.encapsulation_key)
    tampered[position] ^= 0x01
    assert not mlkem.ek_matches_header(bytes(tampered), keys.header)


@pytest.mark.parametrize("position", [0, 31, 32, 63])
def test_flipped_header_bit_does_not_match_key(position: int) -> None:
    keys = mlkem.generate()
    tampered = bytearray(keys.header)
    tampered[position] ^= 0x80
    assert not mlkem.ek_matches_header(keys.encapsulation_key, bytes(tampered))


def test_key_with_coefficient_not_below_q_is_refused() -> None:
    keys = mlkem.generate()
    # The first coefficient is the low 12 bits of the first two bytes: 0xFFF is above q.
    bad = b"\xff" + bytes((keys.encapsulation_key[1] | 0x0F,)) + keys.encapsulation_key[2:]
    forged_header = keys.header[:32] + hashlib.sha3_256(bad + keys.header[:32]).digest()
    assert not mlkem.ek_matches_header(bad, forged_header)
    _, state, _ = mlkem.encaps1(forged_header)
    with pytest.raises(InvalidKeyError):
        mlkem.encaps2(bad, state)


@pytest.mark.parametrize(("half", "position"), [(1, 0), (1, 959), (2, 0), (2, 127)])
def test_tampered_ciphertext_gives_the_implicit_rejection_secret(half: int, position: int) -> None:
    seed = os.urandom(64)
    keys = mlkem.generate(seed)
    ct1, state, secret = mlkem.encaps1(keys.header)
    ct2 = mlkem.encaps2(keys.encapsulation_key, state)
    parts = [bytearray(ct1), bytearray(ct2)]
    parts[half - 1][position] ^= 0x01
    tampered1, tampered2 = bytes(parts[0]), bytes(parts[1])
    rejected = mlkem.decaps(keys.decapsulation_key, tampered1, tampered2)
    assert rejected != secret
    assert rejected == hashlib.shake_256(seed[32:] + tampered1 + tampered2).digest(32)
    assert rejected == MLKEM768PrivateKey.from_seed_bytes(seed).decapsulate(tampered1 + tampered2)


def test_tampered_state_changes_the_ciphertext_so_the_secrets_disagree() -> None:
    keys = mlkem.generate()
    ct1, state, secret = mlkem.encaps1(keys.header)
    tampered = state[:-1] + bytes((state[-1] ^ 1,))
    ct2 = mlkem.encaps2(keys.encapsulation_key, tampered)
    assert mlkem.decaps(keys.decapsulation_key, ct1, ct2) != secret


@pytest.mark.parametrize("bad", [b"", bytes(2079), bytes(2081)])
def test_state_of_wrong_size_is_refused(bad: bytes) -> None:
    with pytest.raises(InvalidStateError):
        mlkem.encaps2(mlkem.generate().encapsulation_key, bad)


def test_state_with_values_out_of_range_is_refused() -> None:
    keys = mlkem.generate()
    _, state, _ = mlkem.encaps1(keys.header)
    # The first e2 coefficient becomes 3, outside CBD_2's range (libcrux issue 1275's byte-swapped 2 looks alike).
    bad = state[:1536] + (3).to_bytes(2, "little") + state[1538:]
    with pytest.raises(InvalidStateError):
        mlkem.encaps2(keys.encapsulation_key, bad)


def test_wrong_sizes_are_refused() -> None:
    keys = mlkem.generate()
    ct1, state, _ = mlkem.encaps1(keys.header)
    ct2 = mlkem.encaps2(keys.encapsulation_key, state)
    with pytest.raises(InvalidKeyError):
        mlkem.generate(bytes(63))
    with pytest.raises(InvalidKeyError):
        mlkem.encaps1(keys.header[:63])
    with pytest.raises(InvalidKeyError):
        mlkem.encaps1(keys.header, bytes(31))
    with pytest.raises(InvalidKeyError):
        mlkem.encaps2(keys.encapsulation_key[:-1], state)
    with pytest.raises(InvalidKeyError):
        mlkem.decaps(keys.decapsulation_key, ct1[:-1], ct2)
    with pytest.raises(InvalidKeyError):
        mlkem.decaps(keys.decapsulation_key, ct1, ct2 + b"\x00")
    with pytest.raises(InvalidKeyError):
        mlkem.decaps(keys.decapsulation_key[:-1], ct1, ct2)
    assert not mlkem.ek_matches_header(keys.encapsulation_key[:-1], keys.header)


def test_decapsulation_key_with_wrong_stored_hash_is_refused() -> None:
    keys = mlkem.generate()
    ct1, state, _ = mlkem.encaps1(keys.header)
    ct2 = mlkem.encaps2(keys.encapsulation_key, state)
    dk = bytearray(keys.decapsulation_key)
    dk[-40] ^= 1
    with pytest.raises(InvalidKeyError):
        mlkem.decaps(bytes(dk), ct1, ct2)
