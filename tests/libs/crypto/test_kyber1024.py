"""Round-3 Kyber1024: the reference's known answers, round trips, tampering and malformed keys."""

from __future__ import annotations

import hashlib

import pytest
from support.kat import CtrDrbg, KemVector, read_kem_vectors

from parley_crypto import InvalidKeyError
from parley_crypto import _kyber1024 as kyber

VECTORS = read_kem_vectors("kyber1024_round3_kat.rsp")


def test_the_vector_file_holds_ten_entries() -> None:
    assert [vector.count for vector in VECTORS] == list(range(10))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"count{v.count}")
def test_known_answers_of_the_round3_reference(vector: KemVector) -> None:
    drbg = CtrDrbg(vector.seed)
    # The reference draws d, then z, then the encapsulation randomness, each with its own randombytes call.
    d = drbg.random_bytes(32)
    z = drbg.random_bytes(32)
    secret_key = kyber.SecretKey.generate(d + z)
    assert secret_key.public_key.raw == vector.pk
    assert secret_key.raw == vector.sk
    randomness = drbg.random_bytes(32)
    ciphertext, shared = secret_key.public_key.encapsulate(randomness)
    assert ciphertext == vector.ct
    assert shared == vector.ss
    assert kyber.SecretKey(vector.sk).decapsulate(vector.ct) == vector.ss
    # The same answers from the other path of each key: a generated key keeps the matrix its generation sampled
    # (for the re-encryption of its decapsulations), a parsed one samples it on first use.
    assert secret_key.decapsulate(vector.ct) == vector.ss
    assert kyber.PublicKey(vector.pk).encapsulate(randomness) == (vector.ct, vector.ss)


def test_round_trip_with_fresh_randomness() -> None:
    secret_key = kyber.SecretKey.generate()
    ciphertext, shared = secret_key.public_key.encapsulate()
    assert (len(secret_key.public_key.raw), len(secret_key.raw), len(ciphertext)) == (1568, 3168, 1568)
    assert secret_key.decapsulate(ciphertext) == shared
    assert secret_key.public_key.encapsulate()[1] != shared


@pytest.mark.parametrize("parsed", [False, True], ids=["generated-key", "parsed-key"])
@pytest.mark.parametrize("position", [0, 1407, 1408, 1567])
def test_tampered_ciphertext_gives_the_round3_implicit_rejection_secret(position: int, parsed: bool) -> None:
    secret_key = kyber.SecretKey.generate()
    if parsed:
        secret_key = kyber.SecretKey(secret_key.raw)
    ciphertext, shared = secret_key.public_key.encapsulate()
    tampered = bytearray(ciphertext)
    tampered[position] ^= 0x04
    rejected = secret_key.decapsulate(bytes(tampered))
    assert rejected != shared
    z = secret_key.raw[-32:]
    assert rejected == hashlib.shake_256(z + hashlib.sha3_256(bytes(tampered)).digest()).digest(32)


def test_public_key_with_coefficient_not_below_q_is_refused() -> None:
    raw = kyber.SecretKey.generate().public_key.raw
    with pytest.raises(InvalidKeyError):
        kyber.PublicKey(b"\xff\xff" + raw[2:])


@pytest.mark.parametrize("size", [0, 1567, 1569])
def test_public_key_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(InvalidKeyError):
        kyber.PublicKey(bytes(size))


def test_secret_key_whose_stored_hash_does_not_match_is_refused() -> None:
    raw = bytearray(kyber.SecretKey.generate().raw)
    raw[-40] ^= 1
    with pytest.raises(InvalidKeyError):
        kyber.SecretKey(bytes(raw))


def test_wrong_sizes_are_refused() -> None:
    secret_key = kyber.SecretKey.generate()
    with pytest.raises(InvalidKeyError):
        kyber.SecretKey(secret_key.raw[:-1])
    with pytest.raises(InvalidKeyError):
        kyber.SecretKey.generate(bytes(32))
    with pytest.raises(InvalidKeyError):
        secret_key.public_key.encapsulate(bytes(31))
    with pytest.raises(InvalidKeyError):
        secret_key.decapsulate(bytes(1567))


def test_keys_compare_by_bytes() -> None:
    secret_key = kyber.SecretKey.generate()
    assert kyber.PublicKey(secret_key.public_key.raw) == secret_key.public_key
    assert len({secret_key.public_key, kyber.PublicKey(secret_key.public_key.raw)}) == 1
