"""parley_crypto: the Signal Protocol (X3DH, PQXDH, Double Ratchet, sender keys), libsignal wire format.

Pure and free of I/O: keys, sessions and trust decisions live in stores the caller implements (see
:mod:`parley_crypto` ``*Store`` protocols); in-memory stores are provided for tests and simple users.
docs/crypto.md describes the formats, state versions, exceptions and the franking scheme.
"""

from parley_crypto._cipher import SessionCipher, process_prekey_bundle
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
from parley_crypto._fingerprint import Fingerprint
from parley_crypto._franking import (
    FrankingTag,
    frank,
    franking_context,
    stamp_commitment,
    verify_commitment,
    verify_report,
)
from parley_crypto._kdf import hkdf_sha256
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
from parley_crypto._media import (
    AttachmentEncryptor,
    EncryptedAttachment,
    decrypt_attachment,
    decrypt_attachment_stream,
    encrypt_attachment,
)
from parley_crypto._record import SessionRecord
from parley_crypto._sender_keys import (
    SenderKeyRecord,
    create_sender_key_distribution_message,
    group_decrypt,
    group_encrypt,
    process_sender_key_distribution_message,
)
from parley_crypto._spqr import SpqrError, SpqrMinimumVersionError, SpqrVersionMismatchError
from parley_crypto._stores import (
    Direction,
    IdentityKeyStore,
    InMemoryProtocolStore,
    KyberPreKeyStore,
    PreKeyStore,
    ProtocolAddress,
    ProtocolStore,
    SenderKeyStore,
    SessionStore,
    SignedPreKeyStore,
)
from parley_crypto._wire import CiphertextMessage, MessageType
from parley_crypto._x3dh import PreKeyBundle

__all__ = [
    "AttachmentEncryptor",
    "BadMacError",
    "CiphertextMessage",
    "CounterTooFarError",
    "CryptoError",
    "Direction",
    "DuplicateMessageError",
    "EncryptedAttachment",
    "Fingerprint",
    "FrankingError",
    "FrankingTag",
    "IdentityKeyPair",
    "IdentityKeyStore",
    "InMemoryProtocolStore",
    "InvalidKeyError",
    "InvalidMessageError",
    "InvalidSignatureError",
    "InvalidStateError",
    "InvalidVersionError",
    "KemKeyPair",
    "KemPublicKey",
    "KeyPair",
    "KyberPreKeyRecord",
    "KyberPreKeyStore",
    "MediaIntegrityError",
    "MessageType",
    "NoSessionError",
    "PreKeyBundle",
    "PreKeyRecord",
    "PreKeyStore",
    "ProtocolAddress",
    "ProtocolStore",
    "PublicKey",
    "SenderKeyRecord",
    "SenderKeyStore",
    "SessionCipher",
    "SessionRecord",
    "SessionStore",
    "SignedPreKeyRecord",
    "SignedPreKeyStore",
    "SpqrError",
    "SpqrMinimumVersionError",
    "SpqrVersionMismatchError",
    "UnknownPreKeyError",
    "UntrustedIdentityError",
    "create_sender_key_distribution_message",
    "decrypt_attachment",
    "decrypt_attachment_stream",
    "encrypt_attachment",
    "frank",
    "franking_context",
    "generate_kyber_prekey",
    "generate_prekeys",
    "generate_registration_id",
    "generate_signed_prekey",
    "group_decrypt",
    "group_encrypt",
    "hkdf_sha256",
    "process_prekey_bundle",
    "process_sender_key_distribution_message",
    "sign",
    "stamp_commitment",
    "verify_commitment",
    "verify_report",
    "verify_signature",
]
