"""Curve25519 and KEM keys in libsignal's serialized forms, XEdDSA signatures and prekey generation.

Serialized forms (libsignal's):
- Curve25519 public key: type byte ``0x05`` followed by the 32-byte Montgomery u-coordinate.
- KEM public key and ciphertext: a type byte followed by 1568 bytes: ``0x08`` round-3 Kyber1024 (libsignal's
  default and, since 0.75, the only type it accepts) or ``0x0A`` ML-KEM-1024 (FIPS 203, from ``cryptography``).
- XEdDSA signature: 64 bytes, Ed25519 form. Ours follow the XEdDSA spec (signing key's Edwards sign bit forced
  to 0); older libsignal code puts that sign bit in the top bit of the last byte instead, which
  :func:`verify_signature` honours so signatures from either verify.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import xeddsa
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM1024PrivateKey, MLKEM1024PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from nacl import bindings as nacl_bindings

from parley_crypto import _kyber1024 as kyber1024
from parley_crypto import _protobuf as pb
from parley_crypto._errors import InvalidKeyError, InvalidStateError

DJB_KEY_TYPE = 0x05
# libsignal's KEM key types: 0x08 is round-3 Kyber1024 (what it generates and requires), 0x0A ML-KEM-1024.
KYBER_1024_KEY_TYPE = 0x08
MLKEM_1024_KEY_TYPE = 0x0A
KEM_KEY_TYPES = (KYBER_1024_KEY_TYPE, MLKEM_1024_KEY_TYPE)
CURVE25519_KEY_SIZE = 32
SIGNATURE_SIZE = 64
MLKEM1024_PUBLIC_KEY_SIZE = 1568
MLKEM1024_CIPHERTEXT_SIZE = 1568
MLKEM1024_SEED_SIZE = 64
# libsignal's prekey ids are 24-bit ("Medium") values; ids wrap within 1..MAX_PREKEY_ID - 1.
MAX_PREKEY_ID = 0xFFFFFF
# libsignal's registration ids are 14-bit, 1..16380.
MAX_REGISTRATION_ID = 16380


def _clamp(scalar: bytes) -> bytes:
    # Curve25519 clamping, done at generation as libsignal does so stored private keys match its form.
    clamped = bytearray(scalar)
    clamped[0] &= 248
    clamped[31] &= 127
    clamped[31] |= 64
    return bytes(clamped)


class PublicKey:
    """A Curve25519 public key (identity key, prekey or ratchet key).

    Equality and hashing are by the raw 32 bytes.
    """

    __slots__ = ("_edwards", "_x25519", "raw")

    def __init__(self, raw: bytes) -> None:
        """Wraps a raw 32-byte Montgomery u-coordinate.

        Raises:
            InvalidKeyError: ``raw`` is not 32 bytes.
        """
        if len(raw) != CURVE25519_KEY_SIZE:
            raise InvalidKeyError(f"Curve25519 public key must be 32 bytes, got {len(raw)}")
        self.raw = bytes(raw)
        self._x25519: X25519PublicKey | None = None
        self._edwards: list[bytes | None] = [None, None]

    @classmethod
    def deserialize(cls, data: bytes) -> PublicKey:
        """Parses libsignal's serialized form (``0x05`` + 32 bytes).

        Raises:
            InvalidKeyError: wrong length or type byte.
        """
        if len(data) != CURVE25519_KEY_SIZE + 1:
            raise InvalidKeyError(f"serialized public key must be 33 bytes, got {len(data)}")
        if data[0] != DJB_KEY_TYPE:
            raise InvalidKeyError(f"unknown public key type 0x{data[0]:02x}")
        return cls(data[1:])

    def serialize(self) -> bytes:
        """libsignal's serialized form: ``0x05`` + 32 bytes."""
        return b"\x05" + self.raw

    def x25519(self) -> X25519PublicKey:
        """The key as a ``cryptography`` object, built once and cached for repeated agreements."""
        key = self._x25519
        if key is None:
            key = self._x25519 = X25519PublicKey.from_public_bytes(self.raw)
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Verifies an XEdDSA signature by this key's owner over ``message``.

        Returns:
            True if the signature is valid; False for any invalid or malformed signature.
        """
        if len(signature) != SIGNATURE_SIZE:
            return False
        sign_bit = signature[63] >> 7
        # Sender-key receivers verify every group message against the same key: convert it once.
        edwards = self._edwards[sign_bit]
        if edwards is None:
            edwards = self._edwards[sign_bit] = xeddsa.curve25519_pub_to_ed25519_pub(self.raw, bool(sign_bit))
        # libxeddsa's Ed25519 verification measured 2.5x faster here than cryptography's (40 us vs 100 us).
        return bool(xeddsa.ed25519_verify(signature[:63] + bytes((signature[63] & 0x7F,)), edwards, message))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and secrets.compare_digest(self.raw, other.raw)

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()[:16]}...)"


class KeyPair:
    """A Curve25519 key pair: Diffie-Hellman agreement and XEdDSA signing."""

    __slots__ = ("_signing_scalar", "_x25519", "private_key", "public_key")

    def __init__(self, private_key: bytes, public_key: PublicKey | None = None) -> None:
        """Builds a pair from a 32-byte private scalar (clamped as libsignal stores it).

        Args:
            private_key: the private scalar.
            public_key: its public key when already known (saves a scalar multiplication).

        Raises:
            InvalidKeyError: ``private_key`` is not 32 bytes.
        """
        if len(private_key) != CURVE25519_KEY_SIZE:
            raise InvalidKeyError(f"Curve25519 private key must be 32 bytes, got {len(private_key)}")
        self.private_key = bytes(private_key)
        self._x25519 = X25519PrivateKey.from_private_bytes(self.private_key)
        if public_key is None:
            public_key = PublicKey(self._x25519.public_key().public_bytes_raw())
        self.public_key = public_key
        self._signing_scalar: tuple[int, bytes] | None = None

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh random key pair."""
        return cls(_clamp(secrets.token_bytes(CURVE25519_KEY_SIZE)))

    def agree(self, their_public: PublicKey) -> bytes:
        """X25519 with the other party's public key.

        Raises:
            InvalidKeyError: the other key is a low-order point (the shared secret would be all zeros).
        """
        try:
            return self._x25519.exchange(their_public.x25519())
        except ValueError as exc:
            raise InvalidKeyError("public key is a low-order point") from exc

    def sign(self, message: bytes) -> bytes:
        """An XEdDSA signature over ``message`` (64 bytes, libsignal-compatible)."""
        signing = self._signing_scalar
        if signing is None:
            # Sender keys sign every message: derive the Edwards key pair once per key pair.
            signing = self._signing_scalar = _xeddsa_key_pair(self.private_key)
        return _xeddsa_sign(signing, message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(public={self.public_key!r})"


class IdentityKeyPair(KeyPair):
    """A device's long-term identity key pair."""

    __slots__ = ()

    @classmethod
    def generate(cls) -> IdentityKeyPair:
        """A fresh random identity key pair."""
        return cls(_clamp(secrets.token_bytes(CURVE25519_KEY_SIZE)))

    def serialize(self) -> bytes:
        """libsignal's ``IdentityKeyPairStructure`` (1: public key, 2: private key)."""
        return pb.field_bytes(1, self.public_key.serialize()) + pb.field_bytes(2, self.private_key)

    @classmethod
    def deserialize(cls, data: bytes) -> IdentityKeyPair:
        """Parses :meth:`serialize`'s output.

        Raises:
            InvalidKeyError: malformed structure or keys, or a public key that does not match the private key.
        """
        try:
            fields = pb.decode(data)
            public = PublicKey.deserialize(pb.get_bytes(fields, 1))
            pair = cls(pb.get_bytes(fields, 2))
        except pb.DecodeError as exc:
            raise InvalidKeyError(f"malformed identity key pair: {exc}") from exc
        if pair.public_key != public:
            raise InvalidKeyError("identity public key does not match its private key")
        return pair


def sign(private_key: bytes, message: bytes) -> bytes:
    """XEdDSA-signs ``message`` with a Curve25519 private key, as libsignal does.

    Args:
        private_key: a 32-byte Curve25519 private scalar.
        message: the bytes to sign (for a signed prekey: its serialized public key).

    Returns:
        The 64-byte signature.

    Raises:
        InvalidKeyError: ``private_key`` is not 32 bytes.
    """
    if len(private_key) != CURVE25519_KEY_SIZE:
        raise InvalidKeyError(f"Curve25519 private key must be 32 bytes, got {len(private_key)}")
    return _xeddsa_sign(_xeddsa_key_pair(private_key), message)


# XEdDSA (Signal's specification) over libsodium's Ed25519 group operations: libxeddsa's signing measured
# 154 us per signature here, this about 20 us, which matters for sender keys (one signature per group message).
_GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493
# hash_1 of the XEdDSA spec: SHA-512 prefixed by 2**256 - 2 in 32 little-endian bytes.
_HASH1_PREFIX = b"\xfe" + b"\xff" * 31


def _xeddsa_key_pair(private_key: bytes) -> tuple[int, bytes]:
    """The spec's calculate_key_pair: the scalar ``a`` whose Edwards public key ``A`` has sign bit 0, and A."""
    # Clamped as X25519 uses it, so the Edwards key matches the Montgomery public key even for a caller's
    # unclamped private bytes (clamping libsignal's already clamped keys changes nothing).
    k = int.from_bytes(_clamp(private_key), "little") % _GROUP_ORDER
    edwards = bytearray(nacl_bindings.crypto_scalarmult_ed25519_base_noclamp(k.to_bytes(32, "little")))
    if edwards[31] & 0x80:
        k = _GROUP_ORDER - k
        edwards[31] &= 0x7F
    return k, bytes(edwards)


def _xeddsa_sign(key_pair: tuple[int, bytes], message: bytes) -> bytes:
    a, public = key_pair
    scalar = a.to_bytes(32, "little")
    nonce = secrets.token_bytes(64)
    r = int.from_bytes(hashlib.sha512(_HASH1_PREFIX + scalar + message + nonce).digest(), "little") % _GROUP_ORDER
    big_r = nacl_bindings.crypto_scalarmult_ed25519_base_noclamp(r.to_bytes(32, "little"))
    h = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % _GROUP_ORDER
    return big_r + ((r + h * a) % _GROUP_ORDER).to_bytes(32, "little")


def verify_signature(public_key_bytes: bytes, message: bytes, signature: bytes) -> bool:
    """Verifies an XEdDSA signature made by libsignal or by :func:`sign`.

    Args:
        public_key_bytes: the signer's serialized Curve25519 public key (``0x05`` + 32 bytes).
        message: the signed bytes (for a signed or PQ prekey: its serialized public key).
        signature: the 64-byte signature.

    Returns:
        True if valid; False for a wrong or malformed signature.

    Raises:
        InvalidKeyError: ``public_key_bytes`` is not a serialized Curve25519 public key.
    """
    return PublicKey.deserialize(public_key_bytes).verify(message, signature)


def _kem_sizes(key_type: int) -> tuple[int, int]:
    """(public key, ciphertext) sizes of a KEM key type, or InvalidKeyError for a type libsignal does not know."""
    if key_type == KYBER_1024_KEY_TYPE:
        return kyber1024.PUBLIC_KEY_SIZE, kyber1024.CIPHERTEXT_SIZE
    if key_type == MLKEM_1024_KEY_TYPE:
        return MLKEM1024_PUBLIC_KEY_SIZE, MLKEM1024_CIPHERTEXT_SIZE
    raise InvalidKeyError(f"unknown KEM key type 0x{key_type:02x}")


class KemPublicKey:
    """A PQXDH prekey's public key: Kyber1024 (``0x08``, what libsignal generates) or ML-KEM-1024 (``0x0A``).

    Equality and hashing are by type and raw bytes.
    """

    __slots__ = ("_key", "key_type", "raw")

    def __init__(self, raw: bytes, *, key_type: int) -> None:
        """Wraps the raw key bytes (1568 for either type) of the given type.

        Raises:
            InvalidKeyError: unknown type, wrong length or not a valid key of its type.
        """
        size, _ = _kem_sizes(key_type)
        if len(raw) != size:
            raise InvalidKeyError(f"KEM public key of type 0x{key_type:02x} must be {size} bytes, got {len(raw)}")
        self._key: kyber1024.PublicKey | MLKEM1024PublicKey
        if key_type == KYBER_1024_KEY_TYPE:
            self._key = kyber1024.PublicKey(raw)
        else:
            try:
                self._key = MLKEM1024PublicKey.from_public_bytes(raw)
            except ValueError as exc:
                raise InvalidKeyError("invalid ML-KEM-1024 public key") from exc
        self.key_type = key_type
        self.raw = bytes(raw)

    @classmethod
    def _of_kyber(cls, key: kyber1024.PublicKey) -> KemPublicKey:
        """Wraps a Kyber1024 public key object as it is, keeping what it has cached (no parsing again)."""
        wrapped = cls.__new__(cls)
        wrapped._key, wrapped.key_type, wrapped.raw = key, KYBER_1024_KEY_TYPE, key.raw
        return wrapped

    @classmethod
    def deserialize(cls, data: bytes) -> KemPublicKey:
        """Parses the serialized form: ``0x08`` or ``0x0A`` followed by 1568 bytes.

        Raises:
            InvalidKeyError: empty, unknown type byte, wrong length or invalid key.
        """
        if not data:
            raise InvalidKeyError("empty KEM public key")
        return cls(data[1:], key_type=data[0])

    def serialize(self) -> bytes:
        """The serialized form: type byte + 1568 bytes (1569 in all, as libsignal's)."""
        return bytes((self.key_type,)) + self.raw

    def encapsulate(self) -> tuple[bytes, bytes]:
        """Encapsulates a fresh shared secret to this key.

        Returns:
            ``(shared_secret, serialized_ciphertext)``; the ciphertext carries this key's type byte.
        """
        if isinstance(self._key, kyber1024.PublicKey):
            ciphertext, shared = self._key.encapsulate()
        else:
            shared, ciphertext = self._key.encapsulate()
        return shared, bytes((self.key_type,)) + ciphertext

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KemPublicKey) and (self.key_type, self.raw) == (other.key_type, other.raw)

    def __hash__(self) -> int:
        return hash((self.key_type, self.raw))

    def __repr__(self) -> str:
        return f"KemPublicKey(0x{self.key_type:02x}, {self.raw.hex()[:16]}...)"


class KemKeyPair:
    """A PQXDH prekey's key pair, of either KEM type.

    The private key is kept in the form libsignal stores: for Kyber1024 the 3168-byte round-3 secret key; for
    ML-KEM-1024 the 64-byte seed (``d || z``) the library has always stored.
    """

    __slots__ = ("_private", "key_type", "private_key", "public_key")

    def __init__(self, private_key: bytes, *, key_type: int) -> None:
        """Rebuilds a pair from its private key.

        Raises:
            InvalidKeyError: unknown type, or a private key malformed for its type.
        """
        _kem_sizes(key_type)
        self._private: kyber1024.SecretKey | MLKEM1024PrivateKey
        if key_type == KYBER_1024_KEY_TYPE:
            self._private = kyber1024.SecretKey(private_key)
            public = self._private.public_key.raw
        else:
            if len(private_key) != MLKEM1024_SEED_SIZE:
                raise InvalidKeyError(f"ML-KEM-1024 seed must be 64 bytes, got {len(private_key)}")
            self._private = MLKEM1024PrivateKey.from_seed_bytes(private_key)
            public = self._private.public_key().public_bytes_raw()
        self.key_type = key_type
        self.private_key = bytes(private_key)
        self.public_key = KemPublicKey(public, key_type=key_type)

    @classmethod
    def generate(cls, key_type: int = KYBER_1024_KEY_TYPE) -> KemKeyPair:
        """A fresh random key pair; Kyber1024 by default, the type libsignal generates and accepts.

        Raises:
            InvalidKeyError: unknown key type.
        """
        if key_type == KYBER_1024_KEY_TYPE:
            # Built from the generated key object rather than parsed back from its bytes: every check of
            # __init__ holds by construction, and the key keeps the matrix its generation sampled, which the
            # re-encryption inside each decapsulation needs.
            secret = kyber1024.SecretKey.generate()
            pair = cls.__new__(cls)
            pair._private, pair.key_type, pair.private_key = secret, key_type, secret.raw
            pair.public_key = KemPublicKey._of_kyber(secret.public_key)
            return pair
        _kem_sizes(key_type)
        return cls(secrets.token_bytes(MLKEM1024_SEED_SIZE), key_type=key_type)

    def serialize_private(self) -> bytes:
        """The private key with its type byte, as a ``KyberPreKeyRecordStructure`` stores it."""
        return bytes((self.key_type,)) + self.private_key

    @classmethod
    def deserialize_private(cls, data: bytes) -> KemKeyPair:
        """Parses :meth:`serialize_private`'s output.

        Raises:
            InvalidKeyError: empty, unknown type byte or malformed key.
        """
        if not data:
            raise InvalidKeyError("empty KEM private key")
        return cls(data[1:], key_type=data[0])

    def decapsulate(self, serialized_ciphertext: bytes) -> bytes:
        """Recovers the shared secret from a serialized ciphertext (type byte + 1568 bytes).

        Raises:
            InvalidKeyError: a type byte other than this key's, or the wrong length.
        """
        _, size = _kem_sizes(self.key_type)
        if len(serialized_ciphertext) != size + 1 or serialized_ciphertext[0] != self.key_type:
            raise InvalidKeyError(f"malformed KEM ciphertext for key type 0x{self.key_type:02x}")
        return self._private.decapsulate(serialized_ciphertext[1:])


def generate_registration_id() -> int:
    """A random registration id in libsignal's range 1..16380."""
    return secrets.randbelow(MAX_REGISTRATION_ID) + 1


def _check_prekey_id(prekey_id: int) -> None:
    if not 0 <= prekey_id <= MAX_PREKEY_ID:
        raise InvalidKeyError(f"prekey id {prekey_id} is outside libsignal's 24-bit range")


@dataclass(frozen=True, slots=True)
class PreKeyRecord:
    """A one-time Curve25519 prekey with its id.

    Attributes:
        id: the prekey id (24-bit).
        key_pair: the prekey's key pair.
    """

    id: int
    key_pair: KeyPair

    def serialize(self) -> bytes:
        """libsignal's ``PreKeyRecordStructure`` (1: id, 2: public key, 3: private key)."""
        return (
            pb.field_varint(1, self.id)
            + pb.field_bytes(2, self.key_pair.public_key.serialize())
            + pb.field_bytes(3, self.key_pair.private_key)
        )

    @classmethod
    def deserialize(cls, data: bytes) -> PreKeyRecord:
        """Parses :meth:`serialize`'s output.

        Raises:
            InvalidStateError: malformed record.
        """
        try:
            fields = pb.decode(data)
            public = PublicKey.deserialize(pb.get_bytes(fields, 2))
            return cls(pb.get_int(fields, 1), KeyPair(pb.get_bytes(fields, 3), public))
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidStateError(f"malformed prekey record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SignedPreKeyRecord:
    """A medium-term Curve25519 prekey signed by the identity key.

    Attributes:
        id: the signed prekey id (24-bit).
        timestamp: creation time in milliseconds since the epoch (used by callers to rotate).
        key_pair: the prekey's key pair.
        signature: XEdDSA signature by the identity key over the serialized public key.
    """

    id: int
    timestamp: int
    key_pair: KeyPair
    signature: bytes

    def serialize(self) -> bytes:
        """libsignal's ``SignedPreKeyRecordStructure`` (1 id, 2 public, 3 private, 4 sig, 5 timestamp)."""
        return (
            pb.field_varint(1, self.id)
            + pb.field_bytes(2, self.key_pair.public_key.serialize())
            + pb.field_bytes(3, self.key_pair.private_key)
            + pb.field_bytes(4, self.signature)
            + pb.field_fixed64(5, self.timestamp)
        )

    @classmethod
    def deserialize(cls, data: bytes) -> SignedPreKeyRecord:
        """Parses :meth:`serialize`'s output.

        Raises:
            InvalidStateError: malformed record.
        """
        try:
            fields = pb.decode(data)
            public = PublicKey.deserialize(pb.get_bytes(fields, 2))
            return cls(
                pb.get_int(fields, 1),
                pb.get_int(fields, 5, 0),
                KeyPair(pb.get_bytes(fields, 3), public),
                pb.get_bytes(fields, 4),
            )
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidStateError(f"malformed signed prekey record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class KyberPreKeyRecord:
    """A KEM prekey (Kyber1024 or ML-KEM-1024) signed by the identity key (PQXDH).

    Attributes:
        id: the PQ prekey id (24-bit).
        timestamp: creation time in milliseconds since the epoch.
        key_pair: the KEM key pair.
        signature: XEdDSA signature by the identity key over the serialized KEM public key (type byte + key).
    """

    id: int
    timestamp: int
    key_pair: KemKeyPair
    signature: bytes

    def serialize(self) -> bytes:
        """libsignal's ``KyberPreKeyRecordStructure`` layout; the private key field holds type byte + private key."""
        return (
            pb.field_varint(1, self.id)
            + pb.field_bytes(2, self.key_pair.public_key.serialize())
            + pb.field_bytes(3, self.key_pair.serialize_private())
            + pb.field_bytes(4, self.signature)
            + pb.field_fixed64(5, self.timestamp)
        )

    @classmethod
    def deserialize(cls, data: bytes) -> KyberPreKeyRecord:
        """Parses :meth:`serialize`'s output.

        Raises:
            InvalidStateError: malformed record.
        """
        try:
            fields = pb.decode(data)
            pair = KemKeyPair.deserialize_private(pb.get_bytes(fields, 3))
            if pair.public_key != KemPublicKey.deserialize(pb.get_bytes(fields, 2)):
                raise InvalidKeyError("KEM public key does not match its seed")
            return cls(pb.get_int(fields, 1), pb.get_int(fields, 5, 0), pair, pb.get_bytes(fields, 4))
        except (pb.DecodeError, InvalidKeyError) as exc:
            raise InvalidStateError(f"malformed PQ prekey record: {exc}") from exc


def generate_signed_prekey(identity: IdentityKeyPair, prekey_id: int, *, timestamp: int) -> SignedPreKeyRecord:
    """A fresh signed prekey: the identity key signs the serialized public key.

    Args:
        identity: the device's identity key pair.
        prekey_id: the signed prekey id (0..0xFFFFFF).
        timestamp: creation time in ms since the epoch (the library reads no clock).

    Returns:
        The record to store locally; publish ``id``, ``key_pair.public_key.serialize()`` and ``signature``.

    Raises:
        InvalidKeyError: ``prekey_id`` is out of range.
    """
    _check_prekey_id(prekey_id)
    pair = KeyPair.generate()
    return SignedPreKeyRecord(prekey_id, timestamp, pair, identity.sign(pair.public_key.serialize()))


def generate_prekeys(start_id: int, count: int) -> list[PreKeyRecord]:
    """A batch of one-time prekeys with consecutive ids, wrapping as libsignal does (ids stay in 1..0xFFFFFE).

    Args:
        start_id: the id of the first prekey (before wrapping).
        count: how many to generate.

    Returns:
        The records, in id order.
    """
    return [PreKeyRecord(((start_id + i - 1) % (MAX_PREKEY_ID - 1)) + 1, KeyPair.generate()) for i in range(count)]


def generate_kyber_prekey(
    identity: IdentityKeyPair, prekey_id: int, *, timestamp: int, key_type: int = KYBER_1024_KEY_TYPE
) -> KyberPreKeyRecord:
    """A fresh KEM prekey signed by the identity key (over its serialized public key, type byte included).

    Args:
        identity: the device's identity key pair.
        prekey_id: the PQ prekey id (0..0xFFFFFF).
        timestamp: creation time in ms since the epoch.
        key_type: ``0x08`` Kyber1024 (the default, what libsignal generates) or ``0x0A`` ML-KEM-1024.

    Returns:
        The record to store locally; publish ``id``, ``key_pair.public_key.serialize()`` and ``signature``.

    Raises:
        InvalidKeyError: ``prekey_id`` is out of range or ``key_type`` unknown.
    """
    _check_prekey_id(prekey_id)
    pair = KemKeyPair.generate(key_type)
    return KyberPreKeyRecord(prekey_id, timestamp, pair, identity.sign(pair.public_key.serialize()))
