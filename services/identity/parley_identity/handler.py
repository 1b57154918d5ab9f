"""Identity rules: provider lifecycle, users and devices, consent, discovery. No gRPC here.

Every method validates its input completely before writing anything, so a refused call changes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from parley.common.v1.common_pb2 import ErrorReason, Feature, IdentifierKind, ProviderStatus
from parley.events.v1.events_pb2 import ConsentChanged, DeviceRemoved, Event, ProviderAvailable, ProviderStatusChanged
from parley.identity.v1.identity_pb2 import ConsentState, InboxMode, Provider, Reachability
from parley_identity.directory import IdentityProviderDirectory
from parley_identity.model import ConsentRecord, DeviceRecord, StoredProvider
from parley_identity.store import (
    REGISTER_TOO_MANY,
    REGISTER_USER_EXISTS,
    ConsentConflictError,
    IdentityStore,
)
from parley_runtime.auth import ProviderRecord
from parley_runtime.errors import Code, ParleyError, invalid_field, missing_field, not_found, parse_address
from parley_runtime.events import EventPublisher
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_stanza import Address, AddressKind

_PROVIDER_ID = re.compile(r"[a-z][a-z0-9-]{1,31}")
_MAX_REGISTRATION_ID = 16380
_MAX_PAGE = 500
_DEFAULT_PAGE = 50

_KIND_BY_PROTO = {
    IdentifierKind.IDENTIFIER_KIND_PHONE: AddressKind.PHONE,
    IdentifierKind.IDENTIFIER_KIND_USERNAME: AddressKind.USERNAME,
    IdentifierKind.IDENTIFIER_KIND_EMAIL: AddressKind.EMAIL,
}
_PROTO_BY_KIND = {kind: proto for proto, kind in _KIND_BY_PROTO.items()}

# Allowed status changes: target -> statuses it may be reached from. Same-status requests are no-ops.
_TRANSITIONS: dict[ProviderStatus.ValueType, frozenset[ProviderStatus.ValueType]] = {
    ProviderStatus.PROVIDER_STATUS_APPROVED: frozenset(
        {ProviderStatus.PROVIDER_STATUS_PENDING, ProviderStatus.PROVIDER_STATUS_SUSPENDED}
    ),
    ProviderStatus.PROVIDER_STATUS_SUSPENDED: frozenset(
        {ProviderStatus.PROVIDER_STATUS_PENDING, ProviderStatus.PROVIDER_STATUS_APPROVED}
    ),
    ProviderStatus.PROVIDER_STATUS_REVOKED: frozenset(
        {
            ProviderStatus.PROVIDER_STATUS_PENDING,
            ProviderStatus.PROVIDER_STATUS_APPROVED,
            ProviderStatus.PROVIDER_STATUS_SUSPENDED,
        }
    ),
}

_USER_NOT_FOUND = "this user cannot be found"

DEFAULT_EDIT_WINDOW_S = 15 * 60
"""How long a provider's clients honour edits when it enlisted without saying (as the large messengers do)."""
DEFAULT_DELETE_WINDOW_S = 2 * 24 * 3600
"""How long a provider's clients honour deletes for everyone when it enlisted without saying."""
MAX_MESSAGE_WINDOW_S = 30 * 24 * 3600
"""No window outlives the relay's default retention: an edit could otherwise target a message no one can have."""


@dataclass(frozen=True, slots=True)
class Resolution:
    """Whether a sender may reach a recipient, and what it needs to send."""

    reachability: Reachability.ValueType
    recipient: Address
    devices: tuple[DeviceRecord, ...] = ()
    features: frozenset[Feature.ValueType] = frozenset()
    inbox_mode: InboxMode.ValueType = InboxMode.INBOX_MODE_UNSPECIFIED


@dataclass(frozen=True, slots=True)
class IdentityLimits:
    """Configurable bounds of the identity rules."""

    max_devices_per_user: int = 6
    lookup: Limit = field(default_factory=lambda: Limit("lookup", capacity=60, per_second=1.0))


class IdentityHandler:
    """The identity service's domain logic.

    Args:
        store: identity storage.
        providers: this replica's provider directory.
        events: publisher for the ``identity`` event stream.
        limiter: rate limiter for lookups.
        limits: configurable bounds.
        clock: seconds since the epoch (tests inject their own).
    """

    def __init__(
        self,
        store: IdentityStore,
        providers: IdentityProviderDirectory,
        events: EventPublisher,
        limiter: RateLimiter,
        limits: IdentityLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._providers = providers
        self._events = events
        self._limiter = limiter
        self._limits = limits
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- providers --------------------------------------------------------------------------------------------

    async def enlist_provider(
        self,
        provider_id: str,
        display_name: str,
        signing_public_key: bytes,
        mtls_client_cert_pem: str,
        identifier_kinds: Iterable[IdentifierKind.ValueType],
        features: Iterable[Feature.ValueType],
        edit_window_s: int = 0,
        delete_window_s: int = 0,
    ) -> Provider:
        """Enlists a provider in PENDING state; a window of 0 takes its default (``DEFAULT_EDIT_WINDOW_S``,
        ``DEFAULT_DELETE_WINDOW_S``).

        Raises:
            ParleyError: INVALID_ARGUMENT for any bad field; ALREADY_EXISTS when the id is taken.
        """
        if not provider_id:
            raise missing_field("provider_id")
        if not _PROVIDER_ID.fullmatch(provider_id):
            raise invalid_field("provider_id", "must match [a-z][a-z0-9-]{1,31}")
        if not display_name:
            raise missing_field("display_name")
        if len(display_name) > 64 or not display_name.isprintable():
            raise invalid_field("display_name", "must be 1..64 printable characters")
        _check_signing_key(signing_public_key, "signing_public_key")
        _check_certificate(mtls_client_cert_pem)
        kinds = sorted(set(identifier_kinds))
        if not kinds:
            raise missing_field("identifier_kinds")
        if any(kind not in _KIND_BY_PROTO for kind in kinds):
            raise invalid_field("identifier_kinds", "unknown identifier kind")
        feature_set = sorted(set(features))
        if not feature_set:
            raise missing_field("features")
        if Feature.FEATURE_UNSPECIFIED in feature_set or any(f not in Feature.values() for f in feature_set):
            raise invalid_field("features", "unknown feature")
        if Feature.FEATURE_TEXT not in feature_set:
            raise invalid_field("features", "every provider must support FEATURE_TEXT")
        for name, window in (("edit_window_s", edit_window_s), ("delete_window_s", delete_window_s)):
            if window > MAX_MESSAGE_WINDOW_S:
                raise invalid_field(name, f"at most {MAX_MESSAGE_WINDOW_S} seconds")
        now = self._now_ms()
        provider = Provider(
            provider_id=provider_id,
            display_name=display_name,
            status=ProviderStatus.PROVIDER_STATUS_PENDING,
            signing_public_key=signing_public_key,
            mtls_client_cert_pem=mtls_client_cert_pem,
            identifier_kinds=kinds,
            features=feature_set,
            edit_window_s=edit_window_s or DEFAULT_EDIT_WINDOW_S,
            delete_window_s=delete_window_s or DEFAULT_DELETE_WINDOW_S,
            created_at_ms=now,
            updated_at_ms=now,
        )
        if not await self._store.save_provider(provider, expected_version=0):
            raise ParleyError(
                Code.ALREADY_EXISTS, ErrorReason.ERROR_REASON_ALREADY_EXISTS, f"provider {provider_id} exists"
            )
        self._providers.put(provider)
        return provider

    async def change_provider_status(self, provider_id: str, target: ProviderStatus.ValueType, reason: str) -> Provider:
        """Approves, suspends or revokes a provider; effective on this replica at once, everywhere within 1 s.

        Raises:
            ParleyError: NOT_FOUND / UNKNOWN_PROVIDER; FAILED_PRECONDITION / INVALID_TRANSITION.
        """
        if len(reason) > 500:
            raise invalid_field("reason", "at most 500 characters")
        while True:
            stored = await self._get_stored_provider(provider_id)
            previous = stored.provider.status
            if previous == target:
                return stored.provider
            if previous not in _TRANSITIONS[target]:
                raise ParleyError(
                    Code.FAILED_PRECONDITION,
                    ErrorReason.ERROR_REASON_INVALID_TRANSITION,
                    f"cannot go from {ProviderStatus.Name(previous)} to {ProviderStatus.Name(target)}",
                )
            updated = Provider()
            updated.CopyFrom(stored.provider)
            updated.status = target
            updated.status_reason = reason
            updated.updated_at_ms = self._now_ms()
            if await self._store.save_provider(updated, expected_version=stored.version):
                break
        self._providers.put(updated)
        await self._events.publish(
            Event(
                provider_status_changed=ProviderStatusChanged(
                    provider_id=provider_id, previous_status=previous, status=target
                )
            )
        )
        if target == ProviderStatus.PROVIDER_STATUS_APPROVED and previous == ProviderStatus.PROVIDER_STATUS_PENDING:
            await self._events.publish(
                Event(
                    provider_available=ProviderAvailable(
                        provider_id=provider_id, display_name=updated.display_name, features=updated.features
                    )
                )
            )
        return updated

    async def update_provider_credentials(
        self, provider_id: str, signing_public_key: bytes, mtls_client_cert_pem: str
    ) -> Provider:
        """Replaces a provider's credentials.

        Raises:
            ParleyError: INVALID_ARGUMENT for a bad key or certificate; NOT_FOUND / UNKNOWN_PROVIDER.
        """
        _check_signing_key(signing_public_key, "signing_public_key")
        _check_certificate(mtls_client_cert_pem)
        while True:
            stored = await self._get_stored_provider(provider_id)
            updated = Provider()
            updated.CopyFrom(stored.provider)
            updated.signing_public_key = signing_public_key
            updated.mtls_client_cert_pem = mtls_client_cert_pem
            updated.updated_at_ms = self._now_ms()
            if await self._store.save_provider(updated, expected_version=stored.version):
                self._providers.put(updated)
                return updated

    async def get_provider(self, provider_id: str) -> Provider:
        """One provider.

        Raises:
            ParleyError: NOT_FOUND / UNKNOWN_PROVIDER.
        """
        return (await self._get_stored_provider(provider_id)).provider

    async def list_providers(self, page_size: int, page_token: str) -> tuple[list[Provider], str]:
        """A page of providers ordered by id, and the next page's token ("" at the end)."""
        size = min(page_size or _DEFAULT_PAGE, _MAX_PAGE)
        ids = [pid for pid in await self._store.list_provider_ids() if pid > page_token]
        page = ids[:size]
        return await self._store.get_providers(page), (page[-1] if len(ids) > size else "")

    def available_providers(self) -> list[ProviderRecord]:
        """Approved providers, ordered by id."""
        return [p for p in self._providers.all() if p.status == ProviderStatus.PROVIDER_STATUS_APPROVED]

    async def _get_stored_provider(self, provider_id: str) -> StoredProvider:
        if not provider_id:
            raise missing_field("provider_id")
        stored = await self._store.get_provider(provider_id)
        if stored is None:
            raise not_found(ErrorReason.ERROR_REASON_UNKNOWN_PROVIDER, f"no provider {provider_id!r}")
        return stored

    # --- users and devices ------------------------------------------------------------------------------------

    async def register_user(self, user: Address) -> ConsentRecord:
        """Registers ``user`` (consent OFF).

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_IDENTIFIER when the provider does not use that identifier
                kind; ALREADY_EXISTS.
        """
        provider = self._providers.get(user.provider)
        if provider is None or _PROTO_BY_KIND[user.kind] not in provider.identifier_kinds:
            raise ParleyError(
                Code.INVALID_ARGUMENT,
                ErrorReason.ERROR_REASON_INVALID_IDENTIFIER,
                f"provider {user.provider} does not use {user.kind.value} identifiers",
            )
        now = self._now_ms()
        if not await self._store.create_user(str(user), now):
            raise ParleyError(Code.ALREADY_EXISTS, ErrorReason.ERROR_REASON_ALREADY_EXISTS, "user already exists")
        return ConsentRecord(ConsentState.CONSENT_STATE_OFF, InboxMode.INBOX_MODE_SEPARATE, frozenset(), now)

    async def register_device(self, user: Address, registration_id: int) -> DeviceRecord:
        """Registers a new device and assigns its id.

        Raises:
            ParleyError: INVALID_ARGUMENT for a bad registration id; NOT_FOUND / USER_NOT_FOUND for an
                unregistered user; RESOURCE_EXHAUSTED / TOO_MANY_DEVICES.
        """
        if not 1 <= registration_id <= _MAX_REGISTRATION_ID:
            raise invalid_field("registration_id", f"must be in 1..{_MAX_REGISTRATION_ID}")
        now = self._now_ms()
        limit = self._limits.max_devices_per_user
        device_id = await self._store.register_device(str(user), registration_id, now, limit)
        if device_id == REGISTER_USER_EXISTS:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "register the user first")
        if device_id == REGISTER_TOO_MANY:
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_TOO_MANY_DEVICES,
                f"a user may have at most {limit} devices",
                limit=limit,
            )
        return DeviceRecord(device_id, registration_id, now)

    async def remove_device(self, user: Address, device_id: int) -> None:
        """Removes a device.

        Raises:
            ParleyError: NOT_FOUND / DEVICE_NOT_FOUND.
        """
        if not await self._store.remove_device(str(user), device_id):
            raise not_found(ErrorReason.ERROR_REASON_DEVICE_NOT_FOUND, f"no device {device_id}")
        # Notification drops its push token on this event; its relay mailbox expires with the retention.
        await self._events.publish(Event(device_removed=DeviceRemoved(address=str(user.with_device(device_id)))))

    async def list_devices(self, user: Address) -> list[DeviceRecord]:
        """The user's devices."""
        return await self._store.list_devices(str(user))

    # --- consent ----------------------------------------------------------------------------------------------

    async def get_consent(self, user: Address) -> ConsentRecord:
        """The user's consent.

        Raises:
            ParleyError: NOT_FOUND / USER_NOT_FOUND for an unregistered user.
        """
        consent = await self._store.get_consent(str(user))
        if consent is None:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "register the user first")
        return consent

    async def enable_third_party_chats(
        self, user: Address, allowed_providers: Sequence[str], inbox_mode: InboxMode.ValueType
    ) -> ConsentRecord:
        """Turns consent on with the given providers.

        Raises:
            ParleyError: INVALID_ARGUMENT for unknown or unapproved providers or a bad inbox mode;
                NOT_FOUND / USER_NOT_FOUND.
        """
        return await self._set_consent(user, "enable", self._check_allowed(allowed_providers), inbox_mode)

    async def update_consent(
        self,
        user: Address,
        allowed_providers: Sequence[str] | None,
        inbox_mode: InboxMode.ValueType,
    ) -> ConsentRecord:
        """Changes allowed providers (when given) or inbox mode while enabled.

        Raises:
            ParleyError: as :meth:`enable_third_party_chats`, and FAILED_PRECONDITION / INVALID_TRANSITION
                when consent is not enabled.
        """
        allowed = None if allowed_providers is None else self._check_allowed(allowed_providers)
        return await self._set_consent(user, "update", allowed, inbox_mode)

    async def disable_third_party_chats(self, user: Address) -> ConsentRecord:
        """Turns consent off; existing third-party chats become read-only.

        Raises:
            ParleyError: FAILED_PRECONDITION / INVALID_TRANSITION when not enabled; NOT_FOUND / USER_NOT_FOUND.
        """
        return await self._set_consent(user, "disable", None, InboxMode.INBOX_MODE_UNSPECIFIED)

    def _check_allowed(self, allowed_providers: Sequence[str]) -> list[str]:
        checked = sorted(set(allowed_providers))
        for provider_id in checked:
            record = self._providers.get(provider_id)
            if record is None or record.status != ProviderStatus.PROVIDER_STATUS_APPROVED:
                raise invalid_field("allowed_providers", f"{provider_id!r} is not an approved provider")
        return checked

    async def _set_consent(
        self,
        user: Address,
        operation: str,
        allowed: list[str] | None,
        inbox_mode: InboxMode.ValueType,
    ) -> ConsentRecord:
        if inbox_mode not in InboxMode.values():
            raise invalid_field("inbox_mode", "unknown inbox mode")
        try:
            consent = await self._store.set_consent(
                str(user), operation, inbox_mode=inbox_mode, allowed_providers=allowed, now_ms=self._now_ms()
            )
        except ConsentConflictError as exc:
            raise ParleyError(
                Code.FAILED_PRECONDITION,
                ErrorReason.ERROR_REASON_INVALID_TRANSITION,
                f"third-party chats are {ConsentState.Name(exc.state).removeprefix('CONSENT_STATE_').lower()}",
            ) from None
        if consent is None:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "register the user first")
        await self._events.publish(
            Event(
                consent_changed=ConsentChanged(
                    address=str(user),
                    state=ConsentState.Name(consent.state),
                    allowed_providers=sorted(consent.allowed_providers),
                    inbox_mode=InboxMode.Name(consent.inbox_mode),
                )
            )
        )
        return consent

    # --- discovery --------------------------------------------------------------------------------------------

    async def lookup(self, asker: Address, address: str) -> Resolution:
        """Looks an address up for ``asker``.

        Every unreachable case raises the same NOT_FOUND after the same storage work, so lookups cannot tell
        absent users from users who did not opt in or do not allow the asking provider.

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_ADDRESS; RESOURCE_EXHAUSTED / RATE_LIMITED;
                NOT_FOUND / USER_NOT_FOUND.
        """
        target = parse_address(address, "address")
        await self._limiter.take(str(asker), self._limits.lookup)
        resolution = await self._resolve(asker.provider, asker.user, target.user)
        if resolution.reachability != Reachability.REACHABILITY_REACHABLE:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, _USER_NOT_FOUND)
        return resolution

    async def resolve_recipient(self, sender: str, recipient: str) -> Resolution:
        """Whether ``sender`` may reach ``recipient`` (for the relay and the key directory).

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_ADDRESS.
        """
        sender_address = parse_address(sender, "sender")
        recipient_address = parse_address(recipient, "recipient")
        return await self._resolve(sender_address.provider, sender_address.user, recipient_address.user)

    async def _resolve(self, asking_provider: str, sender: Address, recipient: Address) -> Resolution:
        view = await self._store.resolve_user(str(recipient), asking_provider)
        provider = self._providers.get(recipient.provider)
        if provider is None or provider.status != ProviderStatus.PROVIDER_STATUS_APPROVED:
            return Resolution(Reachability.REACHABILITY_PROVIDER_UNAVAILABLE, recipient)
        if not view.exists:
            return Resolution(Reachability.REACHABILITY_NOT_FOUND, recipient)
        same_provider = asking_provider == recipient.provider
        if same_provider or (view.consent == ConsentState.CONSENT_STATE_ENABLED and view.asking_provider_allowed):
            return Resolution(
                Reachability.REACHABILITY_REACHABLE, recipient, view.devices, provider.features, view.inbox_mode
            )
        if view.consent == ConsentState.CONSENT_STATE_DISABLED and view.asking_provider_allowed:
            # Only a provider that was allowed can have chats to make read-only; anyone else must not learn
            # that the user exists.
            return Resolution(Reachability.REACHABILITY_READ_ONLY, recipient)
        return Resolution(Reachability.REACHABILITY_NOT_FOUND, recipient)


def _check_signing_key(key: bytes, field: str) -> None:
    if not key:
        raise missing_field(field)
    if len(key) != 32:
        raise invalid_field(field, "must be a raw 32-byte Ed25519 public key")


def _check_certificate(pem: str) -> None:
    if not pem:
        return
    try:
        x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise invalid_field("mtls_client_cert_pem", "not a PEM X.509 certificate") from None
