"""Keys: serialized forms, XEdDSA sign/verify, prekey generation and records."""

from __future__ import annotations

import pytest
import xeddsa

from parley_crypto import (
    IdentityKeyPair,
    InvalidKeyError,
    InvalidStateError,
    KemKeyPair,
    KemPublicKey,
    KeyPair,
    KyberPreKeyRecord,
    PreKeyRecord,
    PublicKey,
    SignedPreKeyRecord,
    generate_kyber_prekey,
    generate_prekeys,
    generate_registration_id,
    generate_signed_prekey,
    sign,
    verify_signature,
)


def test_public_key_serialized_form_is_type_byte_and_32_bytes() -> None:
    pair = KeyPair.generate()
    serialized = pair.public_key.serialize()
    assert len(serialized) == 33
    assert serialized[0] == 0x05
    assert PublicKey.deserialize(serialized) == pair.public_key


@pytest.mark.parametrize("data", [b"", b"\x05" + bytes(31), b"\x05" + bytes(33), b"\x06" + bytes(32)])
def test_malformed_public_key_raises_invalid_key(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey.deserialize(data)


def test_private_keys_are_clamped_like_libsignal() -> None:
    private = KeyPair.generate().private_key
    assert private[0] & 7 == 0
    assert private[31] & 0x80 == 0
    assert private[31] & 0x40


def test_agreement_is_symmetric() -> None:
    alice, bob = KeyPair.generate(), KeyPair.generate()
    assert alice.agree(bob.public_key) == bob.agree(alice.public_key)


def test_agreement_with_low_order_point_raises_invalid_key() -> None:
    with pytest.raises(InvalidKeyError):
        KeyPair.generate().agree(PublicKey(bytes(32)))


def test_sign_and_verify_signed_prekey() -> None:
    identity = IdentityKeyPair.generate()
    record = generate_signed_prekey(identity, 7, timestamp=1_700_000_000_000)
    message = record.key_pair.public_key.serialize()
    assert verify_signature(identity.public_key.serialize(), message, record.signature)
    other = IdentityKeyPair.generate()
    assert not verify_signature(other.public_key.serialize(), message, record.signature)


def test_every_flipped_signature_bit_fails() -> None:
    pair = KeyPair.generate()
    signature = sign(pair.private_key, b"message")
    public = pair.public_key.serialize()
    for index in range(len(signature)):
        for bit in range(8):
            tampered = bytearray(signature)
            tampered[index] ^= 1 << bit
            assert not verify_signature(public, b"message", bytes(tampered)), (index, bit)


def test_flipped_message_byte_fails() -> None:
    pair = KeyPair.generate()
    message = b"a signed prekey"
    signature = pair.sign(message)
    for index in range(len(message)):
        tampered = bytearray(message)
        tampered[index] ^= 0x01
        assert not pair.public_key.verify(bytes(tampered), signature)


@pytest.mark.parametrize("signature", [b"", bytes(63), bytes(65), bytes(64)])
def test_malformed_signature_is_false_not_an_error(signature: bytes) -> None:
    assert not KeyPair.generate().public_key.verify(b"m", signature)


def test_verify_signature_rejects_malformed_key() -> None:
    with pytest.raises(InvalidKeyError):
        verify_signature(b"\x05" + bytes(10), b"m", bytes(64))


def test_sign_bit_in_signature_is_honoured() -> None:
    # libsignal puts the Edwards sign bit of the signer in the signature's top bit; a signature whose bit does
    # not match the key must fail, which shows verification reads it rather than ignoring it.
    pair = KeyPair.generate()
    signature = bytearray(pair.sign(b"m"))
    assert signature[63] & 0x80 == 0
    signature[63] |= 0x80
    assert not pair.public_key.verify(b"m", bytes(signature))


def test_registration_id_range() -> None:
    ids = {generate_registration_id() for _ in range(200)}
    assert min(ids) >= 1
    assert max(ids) <= 16380


def test_prekey_batch_ids_are_consecutive_and_wrap() -> None:
    batch = generate_prekeys(1, 3)
    assert [record.id for record in batch] == [1, 2, 3]
    wrapped = generate_prekeys(0xFFFFFD, 3)
    assert [record.id for record in wrapped] == [0xFFFFFD, 0xFFFFFE, 1]
    assert len({record.key_pair.public_key for record in batch}) == 3


def test_prekey_id_out_of_range_raises() -> None:
    with pytest.raises(InvalidKeyError):
        generate_signed_prekey(IdentityKeyPair.generate(), 0x1000000, timestamp=0)


@pytest.mark.parametrize("key_type", [0x08, 0x0A])
def test_kyber_prekey_serialized_form_and_signature(key_type: int) -> None:
    identity = IdentityKeyPair.generate()
    record = generate_kyber_prekey(identity, 3, timestamp=5, key_type=key_type)
    serialized = record.key_pair.public_key.serialize()
    assert serialized[0] == key_type
    assert len(serialized) == 1 + 1568
    assert verify_signature(identity.public_key.serialize(), serialized, record.signature)
    shared, ciphertext = KemPublicKey.deserialize(serialized).encapsulate()
    assert ciphertext[0] == key_type
    assert len(ciphertext) == 1 + 1568
    assert record.key_pair.decapsulate(ciphertext) == shared


def test_new_kyber_prekeys_are_kyber1024_as_libsignal_generates() -> None:
    record = generate_kyber_prekey(IdentityKeyPair.generate(), 1, timestamp=0)
    assert record.key_pair.key_type == 0x08
    assert len(record.key_pair.public_key.serialize()) == 1569
    assert len(record.key_pair.private_key) == 3168


@pytest.mark.parametrize(
    "data", [b"", b"\x05" + bytes(1568), b"\x09" + bytes(1568), b"\x08" + bytes(1567), b"\x0a" + bytes(100)]
)
def test_malformed_kem_public_key_raises(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        KemPublicKey.deserialize(data)


def test_kyber1024_public_key_with_coefficient_not_below_q_raises() -> None:
    with pytest.raises(InvalidKeyError):
        KemPublicKey.deserialize(b"\x08" + b"\xff" * 1568)


@pytest.mark.parametrize("key_type", [0x08, 0x0A])
def test_malformed_kem_ciphertext_raises(key_type: int) -> None:
    pair = KemKeyPair.generate(key_type)
    other = 0x0A if key_type == 0x08 else 0x08
    for bad in (bytes((key_type,)) + bytes(10), bytes((other,)) + bytes(1568), bytes((key_type,)) + bytes(1569)):
        with pytest.raises(InvalidKeyError):
            pair.decapsulate(bad)


def test_ciphertext_for_one_kem_type_does_not_open_with_the_other() -> None:
    kyber, mlkem = KemKeyPair.generate(0x08), KemKeyPair.generate(0x0A)
    _, ciphertext = kyber.public_key.encapsulate()
    with pytest.raises(InvalidKeyError):
        mlkem.decapsulate(ciphertext)


def test_kem_keys_of_different_types_differ() -> None:
    pair = KemKeyPair.generate(0x08)
    assert pair.public_key == KemPublicKey.deserialize(pair.public_key.serialize())
    # The raw layouts coincide (t̂ || rho), so only the type tells them apart.
    as_mlkem = KemPublicKey(pair.public_key.raw, key_type=0x0A)
    assert pair.public_key != as_mlkem
    assert len({pair.public_key, as_mlkem}) == 2


@pytest.mark.parametrize("key_type", [0x08, 0x0A])
def test_kem_private_key_round_trips_with_its_type_byte(key_type: int) -> None:
    pair = KemKeyPair.generate(key_type)
    serialized = pair.serialize_private()
    assert serialized[0] == key_type
    again = KemKeyPair.deserialize_private(serialized)
    assert again.public_key == pair.public_key
    with pytest.raises(InvalidKeyError):
        KemKeyPair.deserialize_private(b"\x07" + serialized[1:])
    with pytest.raises(InvalidKeyError):
        KemKeyPair.deserialize_private(b"")
    with pytest.raises(InvalidKeyError):
        KemKeyPair.generate(0x07)


def test_records_round_trip() -> None:
    identity = IdentityKeyPair.generate()
    assert IdentityKeyPair.deserialize(identity.serialize()).private_key == identity.private_key
    prekey = generate_prekeys(5, 1)[0]
    again = PreKeyRecord.deserialize(prekey.serialize())
    assert (again.id, again.key_pair.private_key) == (5, prekey.key_pair.private_key)
    signed = generate_signed_prekey(identity, 9, timestamp=123)
    signed_again = SignedPreKeyRecord.deserialize(signed.serialize())
    assert (signed_again.id, signed_again.timestamp, signed_again.signature) == (9, 123, signed.signature)
    for key_type in (0x08, 0x0A):
        kyber = generate_kyber_prekey(identity, 4, timestamp=77, key_type=key_type)
        kyber_again = KyberPreKeyRecord.deserialize(kyber.serialize())
        assert kyber_again.key_pair.public_key == kyber.key_pair.public_key
        assert kyber_again.key_pair.key_type == key_type
        assert (kyber_again.id, kyber_again.timestamp) == (4, 77)


@pytest.mark.parametrize("cls", [PreKeyRecord, SignedPreKeyRecord, KyberPreKeyRecord])
def test_malformed_records_raise_invalid_state(cls: type[PreKeyRecord]) -> None:
    with pytest.raises(InvalidStateError):
        cls.deserialize(b"\x0a\xff")


def test_identity_pair_with_mismatched_public_key_raises() -> None:
    identity = IdentityKeyPair.generate()
    other = KeyPair.generate()
    data = b"\x0a\x21" + other.public_key.serialize() + b"\x12\x20" + identity.private_key
    with pytest.raises(InvalidKeyError):
        IdentityKeyPair.deserialize(data)


# Known answers from libsignal's own test suite (Curve25519Test), as python-axolotl carries them.
LIBSIGNAL_ALICE_PRIVATE = "c806439dc9d2c476ffed8f2580c0888d58ab406bf7ae3698879021b96bb4bf59"
LIBSIGNAL_ALICE_PUBLIC = "051bb75966f2e93a3691dfff942bb2a466a1c08b8d78ca3f4d6df8b8bfa2e4ee28"
LIBSIGNAL_BOB_PRIVATE = "b03b34c33a1c44f225b662d2bf4859b8135411fa7b0386d45fb75dc5b91b4466"
LIBSIGNAL_BOB_PUBLIC = "05653614993d2b15ee9e5fd3d86ce719ef4ec1daae1886a87b3f5fa9565a27a22f"
LIBSIGNAL_SHARED = "325f239328941ced6e673b86ba41017448e99b649a9c3806c1dd7ca4c477e629"
LIBSIGNAL_IDENTITY_PUBLIC = "05ab7e717d4a163b7d9a1d8071dfe9dcf8cdcd1cea3339b6356be84d887e322c64"
LIBSIGNAL_EPHEMERAL_PUBLIC = "05edce9d9c415ca78cb7252e72c2c4a554d3eb29485a0e1d503118d1a82d99fb4a"
LIBSIGNAL_SIGNATURE = (
    "5de88ca9a89b4a115da79109c67c9c7464a3e4180274f1cb8c63c2984e286dfbede82deb9dcd9fae0bfbb821569b3d90"
    "01bd8130cd11d486cef047bd60b86e88"
)


def test_libsignal_agreement_vector() -> None:
    alice = KeyPair(bytes.fromhex(LIBSIGNAL_ALICE_PRIVATE))
    bob = KeyPair(bytes.fromhex(LIBSIGNAL_BOB_PRIVATE))
    assert alice.public_key.serialize().hex() == LIBSIGNAL_ALICE_PUBLIC
    assert bob.public_key.serialize().hex() == LIBSIGNAL_BOB_PUBLIC
    assert alice.agree(bob.public_key).hex() == LIBSIGNAL_SHARED
    assert bob.agree(alice.public_key).hex() == LIBSIGNAL_SHARED


def test_libsignal_xeddsa_signature_vector() -> None:
    # This signature carries the signer's Edwards sign bit in its top bit (last byte 0x88).
    identity = bytes.fromhex(LIBSIGNAL_IDENTITY_PUBLIC)
    signed = bytes.fromhex(LIBSIGNAL_EPHEMERAL_PUBLIC)
    signature = bytes.fromhex(LIBSIGNAL_SIGNATURE)
    assert verify_signature(identity, signed, signature)
    for index in range(len(signature)):
        tampered = bytearray(signature)
        tampered[index] ^= 0xFF
        assert not verify_signature(identity, signed, bytes(tampered))


def test_our_signatures_verify_under_libxeddsa() -> None:
    # An independent XEdDSA verifier (libxeddsa's Ed25519 check on the sign-0 Edwards key).
    for _ in range(32):
        pair = KeyPair.generate()
        signature = pair.sign(b"message")
        edwards = xeddsa.curve25519_pub_to_ed25519_pub(pair.public_key.raw, False)
        assert xeddsa.ed25519_verify(signature, edwards, b"message")


def test_unclamped_private_bytes_sign_for_their_public_key() -> None:
    raw = bytes(range(200, 232))  # low bits set and top bit set: not clamped
    pair = KeyPair(raw)
    assert pair.public_key.verify(b"m", pair.sign(b"m"))
    assert verify_signature(pair.public_key.serialize(), b"m", sign(raw, b"m"))
