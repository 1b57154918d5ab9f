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
from parley.events.v1.events_pb2 import (
    ConsentChanged,
    DeviceRemoved,
    Event,
    InteropPolicyChanged,
    MuteChanged,
    ProviderAvailable,
    ProviderStatusChanged,
)
from parley.identity.v1.identity_pb2 import ConsentState, InboxMode, InteropPolicy, Provider, Reachability
from parley_identity.directory import IdentityProviderDirectory
from parley_identity.model import ConsentRecord, DeviceRecord, MuteRecord, MuteTarget, StoredProvider
from parley_identity.store import (
    MUTE_NO_USER,
    MUTE_TOO_MANY,
    REGISTER_TOO_MANY,
    REGISTER_USER_EXISTS,
    ConsentConflictError,
    IdentityStore,
)
from parley_runtime.auth import ProviderRecord
from parley_runtime.errors import (
    Code,
    ParleyError,
    invalid_field,
    missing_field,
    not_found,
    parse_address,
    permission_denied,
)
from parley_runtime.events import EventPublisher
from parley_runtime.interop_policy import (
    PRIMARY_DEVICE_ID,
    RULE_PRIMARY_DEVICE,
    InvalidRegionError,
    normalize_regions,
)
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
_MAX_MUTE_S = 10 * 365 * 86_400

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
    muted: bool = False
    """REACHABLE only: the recipient muted the sender's user or provider."""
    sender_consent: ConsentState.ValueType = ConsentState.CONSENT_STATE_UNSPECIFIED
    """SENDER_CONSENT_MISSING only: the sender's own consent state."""
    policy_rule: str = ""
    """SENDER_POLICY only: the interop policy rule that keeps the sender out."""


@dataclass(frozen=True, slots=True)
class IdentityLimits:
    """Configurable bounds of the identity rules."""

    max_devices_per_user: int = 6
    max_mutes_per_user: int = 1000
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

    async def set_interop_policy(self, provider_id: str, policy: InteropPolicy) -> Provider:
        """Replaces a provider's interop policy; effective on this replica at once, everywhere within 1 s.

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_FIELD for an unknown region; NOT_FOUND / UNKNOWN_PROVIDER.
        """
        try:
            regions = normalize_regions(policy.allowed_regions)
        except InvalidRegionError as exc:
            raise invalid_field(
                "policy.allowed_regions", f"{exc} is neither an ISO 3166-1 alpha-2 code nor EU"
            ) from None
        while True:
            stored = await self._get_stored_provider(provider_id)
            updated = Provider()
            updated.CopyFrom(stored.provider)
            updated.interop_policy.CopyFrom(
                InteropPolicy(allowed_regions=regions, primary_device_only=policy.primary_device_only)
            )
            updated.updated_at_ms = self._now_ms()
            if await self._store.save_provider(updated, expected_version=stored.version):
                break
        self._providers.put(updated)
        await self._events.publish(Event(interop_policy_changed=InteropPolicyChanged(provider_id=provider_id)))
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
        self,
        user: Address,
        allowed_providers: Sequence[str],
        inbox_mode: InboxMode.ValueType,
        device_id: int | None = None,
    ) -> ConsentRecord:
        """Turns consent on with the given providers, if the user's provider's interop policy lets it.

        Args:
            user: the user opting in.
            allowed_providers: the providers that may reach the user.
            inbox_mode: inbox presentation; UNSPECIFIED keeps the current one.
            device_id: the device asking, when the assertion named one (the primary-device rule checks it).

        Raises:
            ParleyError: INVALID_ARGUMENT for unknown or unapproved providers or a bad inbox mode;
                PERMISSION_DENIED / INTEROP_POLICY; NOT_FOUND / USER_NOT_FOUND.
        """
        provider = self._providers.get(user.provider)
        rule = provider.interop_policy.refusal(user, device_id) if provider is not None else None
        if rule is not None:
            raise _policy_refusal(user.provider, rule)
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

    # --- mutes ------------------------------------------------------------------------------------------------

    async def set_mute(self, user: Address, target: MuteTarget, subject: str, duration_s: int) -> MuteRecord:
        """Mutes a peer user or a provider for ``duration_s`` seconds (0: for ever), replacing an earlier mute.

        Args:
            user: the muting user.
            target: what kind of thing is muted.
            subject: the peer's address (any user, registered or not: muting must not probe) or a provider id.
            duration_s: how long, at most ten years; 0 for ever.

        Raises:
            ParleyError: INVALID_ARGUMENT for a bad target or duration; NOT_FOUND / USER_NOT_FOUND for an
                unregistered user; RESOURCE_EXHAUSTED / TOO_LARGE when the user holds the maximum of mutes.
        """
        subject = self._mute_subject(target, subject)
        if duration_s < 0 or duration_s > _MAX_MUTE_S:
            raise invalid_field("duration_s", f"at most {_MAX_MUTE_S} seconds (0 for ever)")
        now = self._now_ms()
        mute = MuteRecord(target, subject, now + duration_s * 1000 if duration_s else 0, now)
        limit = self._limits.max_mutes_per_user
        result = await self._store.set_mute(str(user), mute, limit, now)
        if result == MUTE_NO_USER:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "register the user first")
        if result == MUTE_TOO_MANY:
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_TOO_LARGE,
                f"a user may hold at most {limit} mutes",
                limit=limit,
            )
        await self._events.publish(Event(mute_changed=MuteChanged(address=str(user))))
        return mute

    async def clear_mute(self, user: Address, target: MuteTarget, subject: str) -> bool:
        """Lifts a mute; False when it was not muted (or the mute had ended).

        Raises:
            ParleyError: INVALID_ARGUMENT for a bad target.
        """
        subject = self._mute_subject(target, subject)
        removed = await self._store.clear_mute(str(user), target, subject)
        if removed is None:
            return False
        await self._events.publish(Event(mute_changed=MuteChanged(address=str(user))))
        return removed.in_force(self._now_ms())

    async def list_mutes(self, user: Address) -> list[MuteRecord]:
        """The user's mutes in force: peers, then providers, each ordered by subject."""
        now = self._now_ms()
        mutes = [mute for mute in await self._store.list_mutes(str(user)) if mute.in_force(now)]
        return sorted(mutes, key=lambda mute: (mute.target is MuteTarget.PROVIDER, mute.subject))

    def _mute_subject(self, target: MuteTarget, subject: str) -> str:
        """The canonical subject of a mute (a user's address without device, or an enlisted provider's id)."""
        if target is MuteTarget.PEER:
            return str(parse_address(subject, "peer").user)
        if not subject:
            raise missing_field("provider_id")
        if self._providers.get(subject) is None:
            raise invalid_field("provider_id", f"{subject!r} is not an enlisted provider")
        return subject

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
        recipient_provider = self._providers.get(recipient_address.provider)
        # An unavailable provider is answered as such first: that verdict says nothing about any user.
        if sender_address.provider != recipient_address.provider and (
            recipient_provider is not None and recipient_provider.status == ProviderStatus.PROVIDER_STATUS_APPROVED
        ):
            refusal = await self._sender_refusal(sender_address, recipient_address.user)
            if refusal is not None:
                return refusal
        return await self._resolve(sender_address.provider, sender_address.user, recipient_address.user)

    async def _sender_refusal(self, sender: Address, recipient: Address) -> Resolution | None:
        """Why ``sender`` may not write to another provider's ``recipient`` whoever the recipient is, or None.

        Consent and policy bind both ways: a user who may not be reached from other providers may not write to
        them either, so a disabled user's third-party chats are read-only on its side too.
        """
        provider = self._providers.get(sender.provider)
        if provider is not None:
            rule = provider.interop_policy.refusal(sender.user, sender.device)
            if rule is not None:
                return Resolution(Reachability.REACHABILITY_SENDER_POLICY, recipient, policy_rule=rule)
        consent = await self._store.get_consent(str(sender.user))
        state = ConsentState.CONSENT_STATE_OFF if consent is None else consent.state
        if state != ConsentState.CONSENT_STATE_ENABLED or (
            consent is not None and recipient.provider not in consent.allowed_providers
        ):
            return Resolution(Reachability.REACHABILITY_SENDER_CONSENT_MISSING, recipient, sender_consent=state)
        return None

    async def _resolve(self, asking_provider: str, sender: Address, recipient: Address) -> Resolution:
        view = await self._store.resolve_user(str(recipient), asking_provider, str(sender))
        provider = self._providers.get(recipient.provider)
        if provider is None or provider.status != ProviderStatus.PROVIDER_STATUS_APPROVED:
            return Resolution(Reachability.REACHABILITY_PROVIDER_UNAVAILABLE, recipient)
        if not view.exists:
            return Resolution(Reachability.REACHABILITY_NOT_FOUND, recipient)
        same_provider = asking_provider == recipient.provider
        devices = view.devices if same_provider else _policy_devices(provider, recipient, view.devices)
        if not devices and not same_provider:
            # The recipient's provider's policy decides which of its users and devices other providers may reach;
            # a user it keeps out is as unknown to them as one who never opted in.
            return Resolution(Reachability.REACHABILITY_NOT_FOUND, recipient)
        if same_provider or (view.consent == ConsentState.CONSENT_STATE_ENABLED and view.asking_provider_allowed):
            now = self._now_ms()
            muted = any(until == 0 or until > now for until in view.mutes_until_ms)
            return Resolution(
                Reachability.REACHABILITY_REACHABLE, recipient, devices, provider.features, view.inbox_mode, muted
            )
        if view.consent == ConsentState.CONSENT_STATE_DISABLED and view.asking_provider_allowed:
            # Only a provider that was allowed can have chats to make read-only; anyone else must not learn
            # that the user exists.
            return Resolution(Reachability.REACHABILITY_READ_ONLY, recipient)
        return Resolution(Reachability.REACHABILITY_NOT_FOUND, recipient)


def _policy_devices(
    provider: ProviderRecord, recipient: Address, devices: tuple[DeviceRecord, ...]
) -> tuple[DeviceRecord, ...]:
    """The recipient's devices its provider's interop policy lets other providers reach (none for a user it keeps
    out)."""
    policy = provider.interop_policy
    if policy.refusal(recipient, None) is not None:
        return ()
    if policy.primary_device_only:
        return tuple(device for device in devices if device.device_id == PRIMARY_DEVICE_ID)
    return devices


def _policy_refusal(provider_id: str, rule: str) -> ParleyError:
    """PERMISSION_DENIED / INTEROP_POLICY for a user or device ``provider_id``'s policy keeps out by ``rule``."""
    return permission_denied(
        ErrorReason.ERROR_REASON_INTEROP_POLICY,
        f"the interop policy of {provider_id} keeps this {'device' if rule == RULE_PRIMARY_DEVICE else 'user'} "
        "out of third-party chats",
        rule=rule,
        provider_id=provider_id,
    )


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
