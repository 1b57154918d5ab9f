"""The exceptions parley_crypto raises.

Every failure on untrusted input raises a subclass of :class:`CryptoError`, and every operation that raises
one leaves the caller's stores exactly as they were (state is written only after a message authenticated).
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error parley_crypto raises on bad input or missing state."""


class InvalidKeyError(CryptoError):
    """Key bytes are malformed: wrong length, unknown type byte, or not a valid key of their kind."""


class PqPrekeyRequiredError(InvalidKeyError):
    """A prekey bundle has no PQ prekey: PQXDH (version 4) cannot start, and falling back to X3DH is refused.

    libsignal (since 0.75) neither builds nor accepts version-3 sessions, so a silent downgrade would produce
    a session its peers refuse, and would drop post-quantum protection without anyone deciding to.
    """


class InvalidSignatureError(CryptoError):
    """A signature over a prekey (or a sender-key message) does not verify."""


class InvalidMessageError(CryptoError):
    """A ciphertext is malformed, truncated or fails authentication."""


class InvalidVersionError(InvalidMessageError):
    """A ciphertext carries a message version this library does not speak (libsignal v3 or v4 only)."""


class BadMacError(InvalidMessageError):
    """A ciphertext's MAC does not verify against any session state: tampered, or for another session."""


class DuplicateMessageError(InvalidMessageError):
    """A message whose key was already used (a replay or a duplicate delivery)."""


class CounterTooFarError(InvalidMessageError):
    """A message counter jumps further ahead than the bounded skipped-key store allows."""


class NoSessionError(CryptoError):
    """No session with the remote address, or none that can decrypt this message (a stale session)."""


class UnknownPreKeyError(CryptoError):
    """A prekey message names a one-time, signed or PQ prekey id the local store does not hold."""


class UntrustedIdentityError(CryptoError):
    """The remote identity key differs from the one trusted for that address (possible key change)."""


class InvalidStateError(CryptoError):
    """Serialized state (session, prekey or sender-key record) is malformed or of an unknown version."""


class MediaIntegrityError(CryptoError):
    """An encrypted attachment failed its MAC or digest check; no plaintext was released."""


class FrankingError(CryptoError):
    """A franking tag or reported plaintext does not match its commitment."""
