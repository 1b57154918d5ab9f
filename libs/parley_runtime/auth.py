"""Who is calling: admin, one of Parley's services, a provider, or a provider acting for one of its users.

Every RPC declares the :class:`Access` it accepts; :class:`Authenticator` turns the call's ``authorization``
metadata into a :class:`Principal` or refuses it. User assertions are short-lived, one-time EdDSA JWTs signed by
the provider's enlisted key (verified with PyJWT), naming the provider (``iss``), the subject (``sub``: the
provider id itself, or a user address of that provider), optionally the device (``dev``), the audience
(``aud``), ``iat``/``exp`` and a unique ``jti``. A provider may trade one assertion for a session token
(:mod:`parley_runtime.sessions`) and present that instead, naming the acting user and device in metadata
(``x-parley-user``, ``x-parley-device``). docs/auth.md is the integrator-facing description.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hmac
import json
import secrets
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from parley.common.v1.common_pb2 import ErrorReason, Feature, IdentifierKind, ProviderStatus
from parley_runtime.config import ServiceSettings
from parley_runtime.credentials import credential_hash, parse_peers
from parley_runtime.errors import ParleyError, permission_denied, unauthenticated
from parley_runtime.interop_policy import UNLIMITED, Policy
from parley_runtime.sessions import PREFIX as SESSION_PREFIX
from parley_runtime.sessions import Session, SessionKeys, provider_key_fingerprint
from parley_stanza import Address, InvalidAddressError

_ALGORITHM = "EdDSA"
_MAX_CACHED_HEADERS = 64
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti")
_MAX_CACHED_SESSIONS = 4096
_MAX_CACHED_CERTIFICATES = 256
USER_METADATA = "x-parley-user"
"""With a session token: the acting user's address (absent: the provider acts for itself)."""
DEVICE_METADATA = "x-parley-device"
"""With a session token: the acting device id (as ``dev`` in an assertion)."""
_UNCLAIMED = object()
"""No device named apart from the address (which may carry one as its ``/device`` suffix)."""


class Access(enum.Flag):
    """Principals an RPC accepts; combine with ``|``."""

    PUBLIC = 0
    ADMIN = enum.auto()
    INTERNAL = enum.auto()
    PROVIDER = enum.auto()
    USER = enum.auto()
    DEVICE = enum.auto()
    """A user assertion that names a registered device (``dev`` claim)."""


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """The gatekeeper's operator."""


@dataclass(frozen=True, slots=True)
class ServicePrincipal:
    """Another Parley service, by the name its credential carries (``relay``, ``keydir``, ...)."""

    name: str


@dataclass(frozen=True, slots=True)
class ProviderPrincipal:
    """A provider acting for itself (e.g. registering its webhook)."""

    provider_id: str
    session: bool = field(default=False, compare=False)
    """Authenticated by a session token rather than an assertion (a session cannot make another session)."""


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    """A provider acting for one of its users, and possibly one device of that user."""

    provider_id: str
    user: Address
    device_id: int | None

    @property
    def device(self) -> Address:
        """The device's address.

        Raises:
            ParleyError: PERMISSION_DENIED when the assertion named no device.
        """
        if self.device_id is None:
            raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a `dev` claim")
        return self.user.with_device(self.device_id)


Principal = AdminPrincipal | ServicePrincipal | ProviderPrincipal | UserPrincipal


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """What authentication and routing need to know about a provider."""

    provider_id: str
    status: ProviderStatus.ValueType
    signing_key: Ed25519PublicKey
    features: frozenset[Feature.ValueType]
    display_name: str = ""
    identifier_kinds: frozenset[IdentifierKind.ValueType] = frozenset()
    client_cert_sha256: bytes = b""
    """SHA-256 of the DER client certificate the provider enlisted for mTLS; empty when it enlisted none."""
    edit_window_s: int = 0
    """How long after acceptance its clients honour an edit, seconds."""
    delete_window_s: int = 0
    """How long after acceptance its clients honour a delete for everyone, seconds."""
    interop_policy: Policy = UNLIMITED
    """Which of the provider's users and devices may take part in third-party chats."""


class ProviderDirectory(Protocol):
    """A local, push-updated view of the enlisted providers (see :mod:`parley_runtime.providers`)."""

    def get(self, provider_id: str) -> ProviderRecord | None:
        """The provider, or None when not enlisted."""


class ReplayGuard(Protocol):
    """Remembers assertion ids until they expire, across all replicas."""

    async def first_use(self, provider_id: str, jti: str, expires_at: float) -> bool:
        """Records ``jti``; True the first time it is seen, False on any later use."""


class RegistrationCheck(Protocol):
    """Identity's word on whether a user, and one of its devices, is registered (``parley_runtime.recipients``)."""

    async def check_registered(self, user: Address, device_id: int | None) -> None:
        """Returns when registered.

        Raises:
            ParleyError: NOT_FOUND / USER_NOT_FOUND or DEVICE_NOT_FOUND.
        """


_REFUSAL_BY_STATUS = {
    ProviderStatus.PROVIDER_STATUS_SUSPENDED: (ErrorReason.ERROR_REASON_PROVIDER_SUSPENDED, "suspended"),
    ProviderStatus.PROVIDER_STATUS_REVOKED: (ErrorReason.ERROR_REASON_PROVIDER_REVOKED, "revoked"),
}


def provider_refusal(record: ProviderRecord) -> ErrorReason.ValueType | None:
    """Why a provider's traffic is refused (suspended, revoked, not approved), or None when it is approved."""
    if record.status == ProviderStatus.PROVIDER_STATUS_APPROVED:
        return None
    return _REFUSAL_BY_STATUS.get(record.status, (ErrorReason.ERROR_REASON_PROVIDER_NOT_APPROVED, ""))[0]


def check_provider_status(record: ProviderRecord) -> None:
    """Raises PERMISSION_DENIED unless the provider is approved."""
    reason = provider_refusal(record)
    if reason is None:
        return
    what = _REFUSAL_BY_STATUS.get(record.status, (reason, "not approved"))[1]
    raise permission_denied(reason, f"provider {record.provider_id} is {what}", provider_id=record.provider_id)


def _assertion_not_accepted(access: Access) -> ParleyError:
    """The refusal of a valid assertion by an RPC that needs another credential.

    Admin and internal RPCs say what they need (ADMIN_REQUIRED, INTERNAL_ONLY), as they do for an unknown bearer
    token; TOKEN_INVALID is kept for calls that need another kind of assertion.
    """
    if Access.ADMIN in access:
        return permission_denied(ErrorReason.ERROR_REASON_ADMIN_REQUIRED, "this call needs the admin token")
    if Access.INTERNAL in access and not access & (Access.USER | Access.DEVICE | Access.PROVIDER):
        return permission_denied(ErrorReason.ERROR_REASON_INTERNAL_ONLY, "this call is internal")
    needed = "an assertion naming a device" if Access.DEVICE in access else "another credential"
    return permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, f"this call needs {needed}")


class Authenticator:
    """Verifies bearer credentials against an RPC's :class:`Access`.

    Args:
        providers: the provider directory.
        replay_guard: one-time use of assertion ids.
        audience: the ``aud`` assertions must name.
        admin_token: the admin bearer token; empty disables admin access.
        internal_peers: the services that may call internal RPCs, each with the SHA-256 hex digests of the
            credentials it may present (:mod:`parley_runtime.credentials`); empty disables internal access.
        max_lifetime_s: the longest ``exp - iat`` accepted.
        clock_skew_s: leeway for ``iat``/``exp``.
        registration: when given, a user assertion is accepted only for a registered user (and device), so a
            provider cannot act for identities it minted (and walk around limits kept per user or device).
        sessions: the keys session tokens are checked with; None refuses session tokens (SESSION_KEY_UNKNOWN).
    """

    def __init__(
        self,
        providers: ProviderDirectory,
        replay_guard: ReplayGuard,
        *,
        audience: str,
        admin_token: str,
        internal_peers: Mapping[str, frozenset[str]],
        max_lifetime_s: int = 300,
        clock_skew_s: int = 30,
        registration: RegistrationCheck | None = None,
        trust_domain: str = "parley",
        sessions: SessionKeys | None = None,
    ) -> None:
        self._providers = providers
        self._trust_domain = trust_domain
        self._replay_guard = replay_guard
        self._audience = audience
        self._admin_token = admin_token.encode()
        self._internal_peers = dict(internal_peers)
        self._max_lifetime_s = max_lifetime_s
        self._clock_skew_s = clock_skew_s
        self._registration = registration
        self._plain_headers: set[str] = set()
        self._verify_keys: dict[str, tuple[Ed25519PublicKey, nacl.signing.VerifyKey]] = {}
        self._sessions = sessions
        # A provider presents the same token for minutes, over a few connections: verified tokens and certificate
        # hashes are kept, so a call costs two dictionary lookups. Expiry and the provider are checked every call.
        self._verified_sessions: dict[str, Session] = {}
        self._certificate_hashes: dict[bytes, bytes] = {}
        self._key_fingerprints: dict[str, tuple[Ed25519PublicKey, str]] = {}

    @classmethod
    def from_settings(
        cls,
        settings: ServiceSettings,
        providers: ProviderDirectory,
        replay_guard: ReplayGuard,
        *,
        registration: RegistrationCheck | None = None,
    ) -> Authenticator:
        """An authenticator configured from the service's settings (``registration`` as in the constructor)."""
        return cls(
            providers,
            replay_guard,
            audience=settings.audience,
            admin_token=settings.admin_token.get_secret_value(),
            internal_peers=parse_peers(settings.internal_peers),
            max_lifetime_s=settings.assertion_max_lifetime_s,
            clock_skew_s=settings.clock_skew_s,
            registration=registration,
            trust_domain=settings.trust_domain,
            sessions=settings.session_keys(),
        )

    async def authenticate(
        self,
        metadata: Mapping[str, str],
        access: Access,
        *,
        peer_cert_pem: bytes | None = None,
        callers: Collection[str] | None = None,
    ) -> Principal | None:
        """Returns the caller's principal, or None for a PUBLIC call.

        Args:
            metadata: the call's invocation metadata (lower-case keys).
            access: what the RPC accepts.
            callers: for an RPC open to INTERNAL callers, the services it serves (None: every peer).
            peer_cert_pem: the TLS client certificate the caller presented (servers requiring one); a provider
                that enlisted a certificate must present exactly that one, and a service credential is accepted
                only with a certificate naming the same service (``spiffe://<trust domain>/<service>``).

        Raises:
            ParleyError: UNAUTHENTICATED for missing, malformed, expired or replayed credentials;
                PERMISSION_DENIED for a valid credential of the wrong kind or a provider not approved;
                NOT_FOUND / USER_NOT_FOUND or DEVICE_NOT_FOUND for an identity not registered (with a
                registration check).
        """
        if access == Access.PUBLIC:
            return None
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_MISSING, "missing `authorization: Bearer ...`")
        if token.startswith(SESSION_PREFIX):
            principal = self._verify_session(token, metadata, peer_cert_pem)
        elif token.count(".") != 2:
            return self._static_principal(token, access, callers, peer_cert_pem)
        else:
            principal = await self._verify_assertion(token, peer_cert_pem)
        if isinstance(principal, ProviderPrincipal):
            allowed = Access.PROVIDER in access
        else:
            allowed = Access.USER in access or (Access.DEVICE in access and principal.device_id is not None)
        if not allowed:
            raise _assertion_not_accepted(access)
        if self._registration is not None and isinstance(principal, UserPrincipal):
            await self._registration.check_registered(principal.user, principal.device_id)
        return principal

    def _static_principal(
        self, token: str, access: Access, callers: Collection[str] | None, peer_cert_pem: bytes | None
    ) -> Principal:
        # Constant-time comparisons: the tokens are secrets.
        if self._admin_token and hmac.compare_digest(token.encode(), self._admin_token):
            if Access.ADMIN in access:
                return AdminPrincipal()
            raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "admin token not accepted here")
        service = self._peer(token)
        if service is not None:
            if Access.INTERNAL not in access:
                raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "service credentials not accepted here")
            if peer_cert_pem is not None:
                # Under mTLS a credential alone is not the service: a leaked secret is useless without the
                # service's certificate key, and a certificate without the secret is no credential either.
                _check_service_certificate(service, peer_cert_pem, self._trust_domain)
            if callers is not None and service not in callers:
                raise permission_denied(
                    ErrorReason.ERROR_REASON_INTERNAL_ONLY,
                    f"this internal call serves {', '.join(sorted(callers))}, not the {service} service",
                    service=service,
                )
            return ServicePrincipal(service)
        if Access.ADMIN in access:
            raise permission_denied(ErrorReason.ERROR_REASON_ADMIN_REQUIRED, "this call needs the admin token")
        if Access.INTERNAL in access and not access & (Access.USER | Access.DEVICE | Access.PROVIDER):
            raise permission_denied(ErrorReason.ERROR_REASON_INTERNAL_ONLY, "this call is internal")
        raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "bearer token is not a valid assertion")

    def _peer(self, token: str) -> str | None:
        """The service whose credential ``token`` is, or None."""
        name = token.partition(":")[0]
        digests = self._internal_peers.get(name)
        if not digests:
            return None
        presented = credential_hash(token)
        # Every digest compared, in constant time: which one matched (or how many) must not show in the timing.
        matched = False
        for digest in digests:
            matched |= hmac.compare_digest(presented, digest)
        return name if matched else None

    def _verify_session(
        self, token: str, metadata: Mapping[str, str], peer_cert_pem: bytes | None
    ) -> ProviderPrincipal | UserPrincipal:
        """The principal a session token and the call's acting user and device stand for.

        Everything an assertion's checks decide about the provider holds here too, every call: the provider is
        looked up and must be approved (so a suspension ends its sessions within the directory's second), and a
        certificate it enlisted is required. What a session does not have is one-time use: it is a bearer
        credential for its lifetime, bound to the TLS client certificate it was made over, if any.
        """
        if self._sessions is None:
            raise unauthenticated(ErrorReason.ERROR_REASON_SESSION_KEY_UNKNOWN, "sessions are not enabled here")
        now = time.time()
        session = self._verified_sessions.get(token)
        if session is None:
            session = self._sessions.verify(token, now)
            if len(self._verified_sessions) >= _MAX_CACHED_SESSIONS:
                self._verified_sessions.clear()
            self._verified_sessions[token] = session
        elif session.expires_at <= now:
            del self._verified_sessions[token]
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_EXPIRED, "session expired; make a new one")
        record = self._providers.get(session.provider_id)
        if record is None:
            raise unauthenticated(ErrorReason.ERROR_REASON_UNKNOWN_PROVIDER, "session's provider is not enlisted")
        check_provider_status(record)
        if not hmac.compare_digest(session.provider_key, self._key_fingerprint(record)):
            raise unauthenticated(
                ErrorReason.ERROR_REASON_TOKEN_INVALID, "the provider's credentials changed since the session was made"
            )
        if session.client_cert_sha256 and not hmac.compare_digest(
            self._certificate_hash(peer_cert_pem), session.client_cert_sha256
        ):
            raise permission_denied(
                ErrorReason.ERROR_REASON_CLIENT_CERT_MISMATCH,
                "the session belongs to another TLS client certificate",
            )
        if record.client_cert_sha256 and peer_cert_pem is not None:
            _check_pinned_certificate(record, peer_cert_pem)
        user = metadata.get(USER_METADATA, "")
        device = metadata.get(DEVICE_METADATA, "")
        if not user:
            if device:
                raise unauthenticated(
                    ErrorReason.ERROR_REASON_TOKEN_INVALID, f"{DEVICE_METADATA} needs {USER_METADATA}"
                )
            return ProviderPrincipal(record.provider_id, session=True)
        if device and not (device.isascii() and device.isdigit()):
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "dev must be a positive integer")
        return self._acting_user(record, user, int(device) if device else _UNCLAIMED)

    def _key_fingerprint(self, record: ProviderRecord) -> str:
        cached = self._key_fingerprints.get(record.provider_id)
        if cached is None or cached[0] is not record.signing_key:
            cached = (record.signing_key, provider_key_fingerprint(record.signing_key.public_bytes_raw()))
            self._key_fingerprints[record.provider_id] = cached
        return cached[1]

    def _certificate_hash(self, peer_cert_pem: bytes | None) -> bytes:
        """SHA-256 of the presented certificate (empty without one, or for one that does not parse)."""
        if peer_cert_pem is None:
            return b""
        digest = self._certificate_hashes.get(peer_cert_pem)
        if digest is None:
            try:
                digest = certificate_sha256(peer_cert_pem)
            except ValueError:
                digest = b""
            if len(self._certificate_hashes) >= _MAX_CACHED_CERTIFICATES:
                self._certificate_hashes.clear()
            self._certificate_hashes[peer_cert_pem] = digest
        return digest

    async def _verify_assertion(self, token: str, peer_cert_pem: bytes | None) -> ProviderPrincipal | UserPrincipal:
        verified = self._verify_plain_assertion(token)
        record, claims = verified if verified is not None else self._verify_assertion_in_full(token)
        principal = self._principal_from_claims(record, claims)
        if claims["exp"] - claims["iat"] > self._max_lifetime_s:
            raise unauthenticated(
                ErrorReason.ERROR_REASON_TOKEN_EXPIRED,
                f"assertion lifetime exceeds {self._max_lifetime_s} s",
            )
        # Status after the signature: an unauthenticated caller learns nothing about a provider's status.
        check_provider_status(record)
        if record.client_cert_sha256 and peer_cert_pem is not None:
            _check_pinned_certificate(record, peer_cert_pem)
        jti = claims["jti"]
        if not isinstance(jti, str) or not 8 <= len(jti) <= 128:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "jti must be 8..128 characters")
        if not await self._replay_guard.first_use(record.provider_id, jti, float(claims["exp"])):
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_REPLAYED, "assertion already used")
        return principal

    def _verify_plain_assertion(self, token: str) -> tuple[ProviderRecord, dict[str, Any]] | None:
        """The issuer and claims of an assertion that passes every check of :meth:`_verify_assertion_in_full`
        with nothing out of the ordinary about it, or None to leave the assertion to that method.

        Every call carries a new assertion, so nothing about one can be cached but its header (providers' libraries
        send the same few) and the provider's verifying key. This path parses the JWS itself and verifies with
        libsodium (twice as fast as OpenSSL for Ed25519); it accepts only what PyJWT would accept, and anything it
        does not accept (a bad signature, an expired or unusual token) goes to PyJWT, whose verdict and error
        message stand. So it can make a call cheaper but never change its outcome.
        """
        header, payload, signature = token.split(".")
        if header not in self._plain_headers:
            if not _plain_header(header):
                return None
            if len(self._plain_headers) < _MAX_CACHED_HEADERS:
                self._plain_headers.add(header)
        try:
            claims = json.loads(_b64url(payload))
            raw_signature = _b64url(signature)
        except ValueError:
            return None
        if not isinstance(claims, dict):
            return None
        issuer = claims.get("iss")
        record = self._providers.get(issuer) if isinstance(issuer, str) else None
        if record is None or not _plain_claims(claims, self._audience, time.time(), self._clock_skew_s):
            return None
        try:
            self._verify_key(record).verify(f"{header}.{payload}".encode(), raw_signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            return None
        return record, claims

    def _verify_key(self, record: ProviderRecord) -> nacl.signing.VerifyKey:
        cached = self._verify_keys.get(record.provider_id)
        if cached is None or cached[0] is not record.signing_key:
            cached = (record.signing_key, nacl.signing.VerifyKey(record.signing_key.public_bytes_raw()))
            self._verify_keys[record.provider_id] = cached
        return cached[1]

    def _verify_assertion_in_full(self, token: str) -> tuple[ProviderRecord, dict[str, Any]]:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "malformed assertion") from None
        issuer = unverified.get("iss")
        record = self._providers.get(issuer) if isinstance(issuer, str) else None
        if record is None:
            raise unauthenticated(ErrorReason.ERROR_REASON_UNKNOWN_PROVIDER, "assertion issuer is not enlisted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                record.signing_key,
                algorithms=[_ALGORITHM],
                audience=self._audience,
                issuer=record.provider_id,
                leeway=self._clock_skew_s,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_EXPIRED, "assertion expired") from None
        except jwt.PyJWTError as exc:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, f"assertion rejected: {exc}") from None
        return record, claims

    @classmethod
    def _principal_from_claims(
        cls, record: ProviderRecord, claims: Mapping[str, object]
    ) -> ProviderPrincipal | UserPrincipal:
        subject = claims["sub"]
        if subject == record.provider_id:
            return ProviderPrincipal(record.provider_id)
        return cls._acting_user(record, str(subject), claims.get("dev", _UNCLAIMED))

    @staticmethod
    def _acting_user(record: ProviderRecord, subject: str, claimed_device: object) -> UserPrincipal:
        """The user (and device) a provider acts for: an address of that provider, the device a positive integer
        (given apart, or as the address's ``/device`` suffix, or both when they agree)."""
        try:
            address = Address.parse(subject)
        except InvalidAddressError:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "sub is not an address") from None
        if address.provider != record.provider_id:
            raise permission_denied(ErrorReason.ERROR_REASON_WRONG_PROVIDER, "sub names a user of another provider")
        device = address.device if claimed_device is _UNCLAIMED else claimed_device
        if address.device is not None and device != address.device:
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "dev and the device in sub disagree")
        if device is not None and (type(device) is not int or device < 1):
            raise unauthenticated(ErrorReason.ERROR_REASON_TOKEN_INVALID, "dev must be a positive integer")
        return UserPrincipal(record.provider_id, address.user, device)


def _b64url(segment: str) -> bytes:
    """A JWS segment's bytes (base64url without padding).

    Raises:
        ValueError: not base64url.
    """
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _plain_header(segment: str) -> bool:
    """Whether a JWS header is an ordinary EdDSA one: ``alg`` EdDSA and at most ``typ`` JWT and a ``kid`` besides
    (no ``crit``, ``b64`` or other extension that would need PyJWT's judgement)."""
    try:
        header = json.loads(_b64url(segment))
    except ValueError:
        return False
    return (
        isinstance(header, dict)
        and header.get("alg") == _ALGORITHM
        and header.get("typ", "JWT") == "JWT"
        and isinstance(header.get("kid", ""), str)
        and set(header) <= {"alg", "typ", "kid"}
    )


def _plain_claims(claims: dict[str, Any], audience: str, now: float, leeway: float) -> bool:
    """Whether claims pass PyJWT's checks as :class:`Authenticator` configures them, with nothing PyJWT would
    judge differently: every required claim present, string ``sub``/``jti``, the audience, integer times with
    ``iat`` not in the future and ``exp`` not past (both with ``leeway``), and no ``nbf``."""
    if any(name not in claims for name in _REQUIRED_CLAIMS) or "nbf" in claims:
        return False
    aud, exp, iat = claims["aud"], claims["exp"], claims["iat"]
    return (
        isinstance(claims["sub"], str)
        and isinstance(claims["jti"], str)
        and (aud == audience or (isinstance(aud, list) and audience in aud and all(isinstance(a, str) for a in aud)))
        and type(exp) is int
        and type(iat) is int
        and exp > now - leeway
        and iat <= now + leeway
    )


def mint_assertion(
    signing_key: Ed25519PrivateKey,
    *,
    provider_id: str,
    subject: str,
    device_id: int | None = None,
    audience: str = "parley",
    lifetime_s: int = 60,
    now: float | None = None,
) -> str:
    """Creates a one-time user (or provider) assertion, as a provider's backend does for each call.

    Args:
        signing_key: the provider's Ed25519 private key (its public half is enlisted).
        provider_id: the provider (``iss``).
        subject: a user address of that provider, or the provider id for provider-level calls (``sub``).
        device_id: the device acting (``dev``), once registered.
        audience: the gatekeeper's audience (``aud``).
        lifetime_s: seconds until ``exp``.
        now: issue time (tests); defaults to the current time.

    Returns:
        The compact JWT.
    """
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": provider_id,
        "sub": subject,
        "aud": audience,
        "iat": issued,
        "exp": issued + lifetime_s,
        "jti": secrets.token_hex(16),
    }
    if device_id is not None:
        claims["dev"] = device_id
    return jwt.encode(claims, signing_key, algorithm=_ALGORITHM)


def certificate_sha256(pem: bytes) -> bytes:
    """SHA-256 of a PEM certificate's DER encoding (what pinning compares).

    Raises:
        ValueError: not a PEM certificate.
    """
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256())


def _check_pinned_certificate(record: ProviderRecord, peer_cert_pem: bytes) -> None:
    try:
        presented = certificate_sha256(peer_cert_pem)
    except ValueError:
        presented = b""
    if not hmac.compare_digest(presented, record.client_cert_sha256):
        raise permission_denied(
            ErrorReason.ERROR_REASON_CLIENT_CERT_MISMATCH,
            f"the TLS client certificate is not the one provider {record.provider_id} enlisted",
        )


def service_identity(cert_pem: bytes, trust_domain: str) -> frozenset[str]:
    """The Parley services a certificate names: its URI SANs ``spiffe://<trust_domain>/<service>``.

    Raises:
        ValueError: not a PEM certificate.
    """
    certificate = x509.load_pem_x509_certificate(cert_pem)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    prefix = f"spiffe://{trust_domain}/"
    return frozenset(
        uri.removeprefix(prefix)
        for uri in names.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(prefix)
    )


def _check_service_certificate(service: str, peer_cert_pem: bytes, trust_domain: str) -> None:
    try:
        named = service_identity(peer_cert_pem, trust_domain)
    except ValueError:
        named = frozenset()
    if service not in named:
        raise permission_denied(
            ErrorReason.ERROR_REASON_CLIENT_CERT_MISMATCH,
            f"the {service} service's credential needs its TLS client certificate (spiffe://{trust_domain}/{service})",
            service=service,
        )
