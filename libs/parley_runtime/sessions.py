"""Provider sessions: short-lived HMAC tokens a provider gets for one assertion and then presents on every call.

A session token stands for "provider P, holding signing key K, until time T, and only over the TLS client
certificate C" (C empty when the session was made without a client certificate). It is
``ps1.<key id>.<claims>.<tag>``: the claims are ``<provider>:<expiry unix s>:<K's fingerprint>:<C's SHA-256 hex>``
in base64url, the tag is HMAC-SHA256 over everything
before it, keyed with the session key the key id names. Every service holds the same keys
(``PARLEY_SESSION_KEY``, and ``PARLEY_SESSION_PREVIOUS_KEY`` while rotating), so a token minted by identity is
checked anywhere with one HMAC and no Redis: that is the point of sessions (docs/auth.md weighs the trade-off).

Pure and free of I/O: what a token means for a call (provider status, registration, access) is
:class:`parley_runtime.auth.Authenticator`'s business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.errors import ParleyError, unauthenticated

PREFIX = "ps1."
"""Starts every session token (version 1), so a bearer token is told from assertions and static tokens at once."""
MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Session:
    """What a verified session token says."""

    provider_id: str
    expires_at: int
    """Unix seconds."""
    provider_key: str
    """:func:`provider_key_fingerprint` of the provider's signing key when the session was made: a credential
    rotation ends the provider's sessions at once, as it ends assertions signed with the old key."""
    client_cert_sha256: bytes
    """The TLS client certificate the session is bound to; empty when it was made without one."""


def provider_key_fingerprint(raw_public_key: bytes) -> str:
    """A short name of a provider's raw Ed25519 public key (16 hex digits of its SHA-256)."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def key_id(key: bytes) -> str:
    """A session key's public name: 8 hex digits of a hash that reveals nothing usable about the key."""
    return hashlib.sha256(b"parley session key id\x00" + key).hexdigest()[:8]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise _invalid("session token is malformed") from None


def _invalid(message: str) -> ParleyError:
    return unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, message)


class SessionKeys:
    """Mints session tokens with the current key and verifies them with the current or the previous one.

    Rotation: set the new key as current and the old as previous on every service, wait one session lifetime (tokens
    minted with the old key have expired by then), then drop the previous key. A token naming a key no longer held
    is refused with SESSION_KEY_UNKNOWN, so a provider's SDK knows to make a new session rather than give up.

    Args:
        current: the key new tokens are minted with (at least 32 bytes).
        previous: a key still accepted for verification, while rotating.

    Raises:
        ValueError: a key shorter than 32 bytes, or the same key twice.
    """

    def __init__(self, current: bytes, previous: bytes | None = None) -> None:
        for key in (current, previous):
            if key is not None and len(key) < MIN_KEY_BYTES:
                raise ValueError(f"a session key needs at least {MIN_KEY_BYTES} bytes")
        self._current_id = key_id(current)
        self._keys = {self._current_id: current}
        if previous is not None:
            if key_id(previous) == self._current_id:
                raise ValueError("the previous session key is the current one")
            self._keys[key_id(previous)] = previous

    @property
    def current_key_id(self) -> str:
        """The id of the key new tokens are minted with."""
        return self._current_id

    def mint(self, provider_id: str, expires_at: int, provider_key: str, client_cert_sha256: bytes = b"") -> str:
        """A session token for ``provider_id`` holding the key ``provider_key`` (:func:`provider_key_fingerprint`)
        until ``expires_at`` (Unix seconds), bound to a client certificate if given."""
        claims = _b64url(f"{provider_id}:{expires_at}:{provider_key}:{client_cert_sha256.hex()}".encode())
        signed = f"{PREFIX}{self._current_id}.{claims}"
        return f"{signed}.{_b64url(self._tag(self._keys[self._current_id], signed))}"

    def verify(self, token: str, now: float) -> Session:
        """The session a token stands for.

        Args:
            token: the bearer token, starting with :data:`PREFIX`.
            now: the current Unix time.

        Raises:
            ParleyError: UNAUTHENTICATED / SESSION_KEY_UNKNOWN (a key id not held: rotated out or another
                deployment's), TOKEN_INVALID (malformed, or a tag that does not verify: forged or altered) or
                TOKEN_EXPIRED.
        """
        parts = token.split(".")
        if len(parts) != 4 or f"{parts[0]}." != PREFIX:
            raise _invalid("session token is malformed")
        _, kid, claims, tag = parts
        key = self._keys.get(kid)
        if key is None:
            raise unauthenticated(
                ErrorReason.ERROR_REASON_SESSION_KEY_UNKNOWN, "session key is not held here; make a new session"
            )
        expected = self._tag(key, token[: -len(tag) - 1])
        if not hmac.compare_digest(_unb64url(tag), expected):
            raise _invalid("session token does not verify")
        # Past the tag the claims are ours, so a malformed one is a bug in this module, still refused, never trusted.
        try:
            provider_id, expires, provider_key, certificate = _unb64url(claims).decode().rsplit(":", 3)
            session = Session(provider_id, int(expires), provider_key, bytes.fromhex(certificate))
        except ValueError:
            raise _invalid("session token is malformed") from None
        if session.expires_at <= now:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_EXPIRED, "session expired; make a new one")
        return session

    @staticmethod
    def _tag(key: bytes, signed: str) -> bytes:
        return hmac.new(key, signed.encode(), hashlib.sha256).digest()
