"""Safety numbers against libsignal's published version-1 vectors."""

from __future__ import annotations

import pytest

from parley_crypto import Fingerprint, IdentityKeyPair, InvalidKeyError, InvalidStateError, PublicKey

ALICE_IDENTITY = PublicKey.deserialize(
    bytes.fromhex("0506863bc66d02b40d27b8d49ca7c09e9239236f9d7d25d6fcca5ce13c7064d868")
)
BOB_IDENTITY = PublicKey.deserialize(
    bytes.fromhex("05f781b6fb32fed9ba1cf2de978d4d5da28dc34046ae814402b5c0dbd96fda907b")
)
ALICE_ID = b"+14152222222"
BOB_ID = b"+14153333333"
DISPLAYABLE_V1 = "300354477692869396892869876765458257569162576843440918079131"
ALICE_SCANNABLE_V1 = (
    "080112220a201e301a0353dce3dbe7684cb8336e85136cdc0ee96219494ada305d62a7bd61df"
    "1a220a20d62cbf73a11592015b6b9f1682ac306fea3aaf3885b84d12bca631e9d4fb3a4d"
)


def test_libsignal_version_1_vectors() -> None:
    alice = Fingerprint.create(ALICE_ID, ALICE_IDENTITY, BOB_ID, BOB_IDENTITY)
    bob = Fingerprint.create(BOB_ID, BOB_IDENTITY, ALICE_ID, ALICE_IDENTITY)
    assert alice.display == bob.display == DISPLAYABLE_V1
    assert len(alice.display) == 60
    assert alice.scannable.hex() == ALICE_SCANNABLE_V1
    assert alice.matches_scanned(bob.scannable)
    assert bob.matches_scanned(alice.scannable)
    assert not alice.matches_scanned(alice.scannable)


def test_key_change_changes_the_number() -> None:
    mitm = IdentityKeyPair.generate().public_key
    alice = Fingerprint.create(ALICE_ID, ALICE_IDENTITY, BOB_ID, mitm, iterations=1024)
    bob = Fingerprint.create(BOB_ID, BOB_IDENTITY, ALICE_ID, ALICE_IDENTITY, iterations=1024)
    assert alice.display != bob.display
    assert not alice.matches_scanned(bob.scannable)


def test_version_mismatch_and_garbage_raise() -> None:
    v1 = Fingerprint.create(ALICE_ID, ALICE_IDENTITY, BOB_ID, BOB_IDENTITY, iterations=2)
    v2 = Fingerprint.create(BOB_ID, BOB_IDENTITY, ALICE_ID, ALICE_IDENTITY, version=2, iterations=2)
    with pytest.raises(InvalidStateError):
        v1.matches_scanned(v2.scannable)
    with pytest.raises(InvalidStateError):
        v1.matches_scanned(b"\x0a\xff")
    with pytest.raises(InvalidKeyError):
        Fingerprint.create(ALICE_ID, ALICE_IDENTITY, BOB_ID, BOB_IDENTITY, iterations=1)
