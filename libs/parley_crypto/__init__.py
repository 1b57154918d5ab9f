"""parley_crypto: the Signal Protocol (X3DH, PQXDH, Double Ratchet, sender keys), libsignal wire format.

Pure and free of I/O: keys, sessions and trust decisions live in stores the caller implements (see
:mod:`parley_crypto` ``*Store`` protocols); in-memory stores are provided for tests and simple users.
docs/crypto.md describes the formats, state versions, exceptions and the franking scheme.
"""

from parley_crypto._errors import (
    BadMacError,
    CounterTooFarError,
    CryptoError,
    DuplicateMessageError,
    FrankingError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidSignatureError,
    InvalidStateError,
    InvalidVersionError,
    MediaIntegrityError,
    NoSessionError,
    UnknownPreKeyError,
    UntrustedIdentityError,
)
from parley_crypto._keys import (
    IdentityKeyPair,
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

__all__ = [
    "BadMacError",
    "CounterTooFarError",
    "CryptoError",
    "DuplicateMessageError",
    "FrankingError",
    "IdentityKeyPair",
    "InvalidKeyError",
    "InvalidMessageError",
    "InvalidSignatureError",
    "InvalidStateError",
    "InvalidVersionError",
    "KemKeyPair",
    "KemPublicKey",
    "KeyPair",
    "KyberPreKeyRecord",
    "MediaIntegrityError",
    "NoSessionError",
    "PreKeyRecord",
    "PublicKey",
    "SignedPreKeyRecord",
    "UnknownPreKeyError",
    "UntrustedIdentityError",
    "generate_kyber_prekey",
    "generate_prekeys",
    "generate_registration_id",
    "generate_signed_prekey",
    "sign",
    "verify_signature",
]
