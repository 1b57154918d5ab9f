"""Key-directory rules: what a device may publish, and who may claim which bundle. No gRPC here.

Keys are checked completely (formats, XEdDSA signatures against the device's identity key, batch bounds) before
anything is written, so a refused call changes nothing. PQ prekeys are accepted in either KEM type libsignal knows
(0x08 Kyber1024, 0x0A ML-KEM-1024) and stored byte for byte as sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from opentelemetry import metrics

from parley.common.v1.common_pb2 import ErrorReason
from parley.events.v1.events_pb2 import Event, IdentityKeyChanged, PreKeysDrained, PreKeysLow
from parley.identity.v1.identity_pb2 import Reachability
from parley_crypto import InvalidKeyError, KemPublicKey, PublicKey, verify_signature
from parley_keydir.model import Bundle, DrainGuard, OneTimeKey, PqPreKeyKind, PreKeyCounts, PublishResult, SignedKey
from parley_keydir.store import (
    IDENTITY_WITHOUT_SIGNED_PREKEY,
    INCOMPLETE_FIRST_PUBLICATION,
    STALE_IDENTITY,
    TOO_MANY_ONE_TIME_PQ_PREKEYS,
    TOO_MANY_ONE_TIME_PREKEYS,
    KeyStore,
    PublishRefusedError,
)
from parley_runtime.errors import (
    Code,
    ParleyError,
    dependency_unavailable,
    invalid_field,
    missing_field,
    not_found,
    parse_address,
)
from parley_runtime.events import EventPublisher
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_runtime.recipients import Recipient, sender_refusal
from parley_stanza import Address

_MAX_PREKEY_ID = 0xFFFFFF  # libsignal's prekey ids are 24-bit
_MAX_REGISTRATION_ID = 16380
_SIGNATURE_SIZE = 64

# Metric attribute sets, built once rather than per fetch.
_KIND_ATTRIBUTES = {kind: {"kind": kind.value} for kind in PqPreKeyKind}
_EXHAUSTED_ATTRIBUTES = {flag: {"exhausted": flag} for flag in (False, True)}


class RecipientResolver(Protocol):
    """Asks identity whether ``sender`` may reach ``recipient`` (``parley_runtime.recipients.IdentityRecipients``)."""

    async def resolve(self, sender: Address, recipient: Address) -> Recipient:
        """Reachability and the recipient's registered device ids."""


@dataclass(frozen=True, slots=True)
class KeyDirectoryLimits:
    """Configurable bounds."""

    max_one_time_prekeys_per_call: int = 100
    """Per call, for one-time prekeys and one-time PQ prekeys each."""
    max_one_time_prekeys: int = 1000
    max_one_time_pq_prekeys: int = 200
    """Lower than for EC prekeys: each one-time PQ prekey takes about 1.6 KB of Redis memory, 44 times as much."""
    low_watermark: int = 10
    """For one-time prekeys and one-time PQ prekeys alike."""
    fetch: Limit = field(default_factory=lambda: Limit("keyfetch", capacity=100, per_second=1.0))
    """Bundle fetches per requesting user."""
    provider_fetch: Limit = field(
        default_factory=lambda: Limit("keyfetch_provider", capacity=10_000, per_second=1000.0)
    )
    """Bundle fetches per requesting provider, all its users together."""
    drain: DrainGuard = field(default_factory=DrainGuard)
    """One-time prekeys one device hands out per window, whoever asks."""
    max_requesters: int = 1000
    requester_ttl_ms: int = 30 * 24 * 3600 * 1000


class KeyDirectoryHandler:
    """The key directory's domain logic.

    Args:
        store: key storage.
        recipients: identity's view of recipients.
        events: publisher for the ``keys`` event stream.
        limiter: rate limiter for bundle fetches.
        limits: configurable bounds.
        meter: for the claim counters.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: KeyStore,
        recipients: RecipientResolver,
        events: EventPublisher,
        limiter: RateLimiter,
        limits: KeyDirectoryLimits,
        meter: metrics.Meter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._recipients = recipients
        self._events = events
        self._limiter = limiter
        self._limits = limits
        self._clock = clock
        self._claimed = meter.create_counter(
            "keydir.one_time_prekeys.claimed", unit="{bundle}", description="Bundles handed out"
        )
        self._pq_claimed = meter.create_counter(
            "keydir.pq_prekeys.claimed",
            unit="{bundle}",
            description="Bundles handed out with a PQ prekey, by its kind (one-time or last-resort)",
        )
        self._withheld = meter.create_counter(
            "keydir.one_time_prekeys.withheld",
            unit="{bundle}",
            description="Bundles handed out without a one-time prekey by a device's drain guard",
        )
        self._refused = meter.create_counter(
            "keydir.fetches.refused", unit="{fetch}", description="Bundle fetches refused by a rate limit"
        )
        self._refused_attributes = {
            limit.name: {"limit": limit.name} for limit in (limits.fetch, limits.provider_fetch)
        }

    @property
    def limits(self) -> KeyDirectoryLimits:
        """The configured bounds."""
        return self._limits

    # --- publication ------------------------------------------------------------------------------------------

    async def publish_keys(
        self,
        device: Address,
        *,
        registration_id: int | None,
        identity_key: bytes | None,
        signed_prekey: SignedKey | None,
        pq_prekey: SignedKey | None,
        one_time_prekeys: Sequence[OneTimeKey],
        one_time_pq_prekeys: Sequence[SignedKey],
    ) -> PublishResult:
        """Publishes any subset of a device's keys (the first publication needs identity + signed prekey).

        Args:
            device: the publishing device.
            registration_id: its registration id, or None to keep the stored one.
            identity_key: its serialized identity key, or None to keep the stored one.
            signed_prekey: a new signed prekey, or None.
            pq_prekey: a new last-resort PQ prekey, or None.
            one_time_prekeys: one-time prekeys to append.
            one_time_pq_prekeys: one-time PQ prekeys to append.

        Returns:
            The counts after the call and whether the identity key changed.

        Raises:
            ParleyError: INVALID_ARGUMENT (MISSING_FIELD, INVALID_FIELD, MALFORMED_KEY, BAD_SIGNATURE,
                BATCH_TOO_LARGE);
                RESOURCE_EXHAUSTED / TOO_LARGE when the device would hold too many one-time (PQ) prekeys.
        """
        if registration_id is not None and not 1 <= registration_id <= _MAX_REGISTRATION_ID:
            raise invalid_field("registration_id", f"must be in 1..{_MAX_REGISTRATION_ID}")
        if identity_key is not None:
            _check_curve_key(identity_key, "identity_key")
        self._check_batch("one_time_prekeys", [key.key_id for key in one_time_prekeys])
        for key in one_time_prekeys:
            _check_curve_key(key.public_key, "one_time_prekeys")
        self._check_batch("one_time_pq_prekeys", [key.key_id for key in one_time_pq_prekeys])
        assert device.device is not None
        user = str(device.user)
        # Signatures are checked against the key that will be current: the new one, else the stored one. The
        # store refuses if the stored key changes between this read and the write.
        stored_identity = await self._store.identity_key(user, device.device)
        if not stored_identity:
            for name, value in (
                ("identity_key", identity_key),
                ("registration_id", registration_id),
                ("signed_prekey", signed_prekey),
            ):
                if value is None:
                    raise missing_field(name)
        verifying_key = identity_key or stored_identity
        if signed_prekey is not None:
            _check_signed_key(signed_prekey, verifying_key, "signed_prekey", kem=False)
        if pq_prekey is not None:
            _check_signed_key(pq_prekey, verifying_key, "pq_prekey", kem=True)
        for pq_key in one_time_pq_prekeys:
            _check_signed_key(pq_key, verifying_key, "one_time_pq_prekeys", kem=True)
        try:
            result = await self._store.publish(
                user,
                device.device,
                verified_identity_key=identity_key or b"",
                read_identity_key=stored_identity,
                registration_id=registration_id,
                signed_prekey=signed_prekey,
                pq_prekey=pq_prekey,
                one_time_prekeys=one_time_prekeys,
                one_time_pq_prekeys=one_time_pq_prekeys,
                max_one_time_prekeys=self._limits.max_one_time_prekeys,
                max_one_time_pq_prekeys=self._limits.max_one_time_pq_prekeys,
                now_ms=int(self._clock() * 1000),
            )
        except PublishRefusedError as refused:
            raise self._publish_error(refused.code) from None
        if result.identity_key_changed:
            requesters = await self._store.recent_requesters(user, 100)
            await self._events.publish(
                Event(identity_key_changed=IdentityKeyChanged(address=str(device), recent_requesters=requesters))
            )
        return result

    def _publish_error(self, code: int) -> ParleyError:
        if code == TOO_MANY_ONE_TIME_PREKEYS:
            return ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_TOO_LARGE,
                f"a device may hold at most {self._limits.max_one_time_prekeys} one-time prekeys",
                limit=self._limits.max_one_time_prekeys,
            )
        if code == TOO_MANY_ONE_TIME_PQ_PREKEYS:
            return ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_TOO_LARGE,
                f"a device may hold at most {self._limits.max_one_time_pq_prekeys} one-time PQ prekeys",
                limit=self._limits.max_one_time_pq_prekeys,
            )
        if code == IDENTITY_WITHOUT_SIGNED_PREKEY:
            return invalid_field("signed_prekey", "a new identity key needs a new signed prekey")
        if code == INCOMPLETE_FIRST_PUBLICATION:
            return missing_field("identity_key")
        if code == STALE_IDENTITY:
            return dependency_unavailable("the identity key changed concurrently; retry")
        return ParleyError(Code.INTERNAL, ErrorReason.ERROR_REASON_INTERNAL, f"unexpected store outcome {code}")

    def _check_batch(self, field_name: str, key_ids: Sequence[int]) -> None:
        """Bounds one call's list of one-time keys of one kind; their ids must be in range and distinct."""
        limit = self._limits.max_one_time_prekeys_per_call
        if len(key_ids) > limit:
            raise ParleyError(
                Code.INVALID_ARGUMENT,
                ErrorReason.ERROR_REASON_BATCH_TOO_LARGE,
                f"at most {limit} {field_name} per call",
                limit=limit,
                field=field_name,
            )
        seen: set[int] = set()
        for key_id in key_ids:
            if not 0 <= key_id <= _MAX_PREKEY_ID or key_id in seen:
                raise invalid_field(field_name, f"key id {key_id} is out of range or repeated")
            seen.add(key_id)

    async def count(self, device: Address) -> PreKeyCounts:
        """Unclaimed one-time prekeys and one-time PQ prekeys, and whether a last-resort PQ prekey is published."""
        assert device.device is not None
        return await self._store.count(str(device.user), device.device)

    # --- hand-out ---------------------------------------------------------------------------------------------

    async def fetch_bundles(self, requester: Address, address: str) -> list[Bundle]:
        """Claims bundles for every device (or one device) of ``address``.

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_ADDRESS; RESOURCE_EXHAUSTED / RATE_LIMITED;
                NOT_FOUND / USER_NOT_FOUND (unreachable: the same answer for every reason);
                FAILED_PRECONDITION / READ_ONLY_CHAT or SENDER_CONSENT_MISSING; PERMISSION_DENIED / INTEROP_POLICY;
                NOT_FOUND / DEVICE_NOT_FOUND; NOT_FOUND / KEYS_NOT_FOUND.
        """
        target = parse_address(address, "address")
        limits = self._limits
        # Both buckets live in the requesting provider's slot and are taken in one script, together or not at
        # all: a fetch the provider's limit refuses is not charged to its user's, and the reverse.
        try:
            await self._limiter.take_together(
                requester.provider,
                [(str(requester.user), limits.fetch), (requester.provider, limits.provider_fetch)],
            )
        except ParleyError as error:
            name = error.metadata.get("limit", "")
            self._refused.add(1, self._refused_attributes.get(name) or {"limit": name})
            raise
        view = await self._recipients.resolve(requester, target.user)
        if (refusal := sender_refusal(view, requester.provider)) is not None:
            raise refusal
        if view.reachability == Reachability.REACHABILITY_READ_ONLY:
            raise ParleyError(
                Code.FAILED_PRECONDITION, ErrorReason.ERROR_REASON_READ_ONLY_CHAT, "this chat is read-only"
            )
        if view.reachability != Reachability.REACHABILITY_REACHABLE:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "this user cannot be found")
        devices = list(view.device_ids)
        if target.device is not None:
            if target.device not in devices:
                raise not_found(ErrorReason.ERROR_REASON_DEVICE_NOT_FOUND, f"no device {target.device}")
            devices = [target.device]
        elif target.user == requester.user:
            # A sender fetching its own user's bundles wants its other devices, never itself.
            devices = [d for d in devices if d != requester.device]
        bundles = await self._store.claim(
            str(target.user),
            devices,
            str(requester.user),
            now_ms=int(self._clock() * 1000),
            max_requesters=limits.max_requesters,
            requester_ttl_ms=limits.requester_ttl_ms,
            guard=limits.drain,
        )
        if not bundles:
            raise not_found(ErrorReason.ERROR_REASON_KEYS_NOT_FOUND, "no device of this user has published keys")
        await self._after_claim(target.user, bundles)
        return bundles

    async def _after_claim(self, user: Address, bundles: Sequence[Bundle]) -> None:
        """Counts the claims and raises the alarms they call for: ``prekeys_drained`` once per guard window,
        ``prekeys_low`` when a device's one-time prekeys or one-time PQ prekeys cross the watermark."""
        watermark = self._limits.low_watermark
        guard = self._limits.drain
        for bundle in bundles:
            if bundle.pq_prekey_kind is not None:
                self._pq_claimed.add(1, _KIND_ATTRIBUTES[bundle.pq_prekey_kind])
            if bundle.claims_in_window > guard.max_claims:
                self._withheld.add(1)
                if bundle.claims_in_window == guard.max_claims + 1:
                    # Once per window: the first bundle the guard withholds a one-time prekey from.
                    drained = PreKeysDrained(
                        address=str(user.with_device(bundle.device_id)),
                        limit=guard.max_claims,
                        window_s=guard.window_ms // 1000,
                    )
                    await self._events.publish(Event(prekeys_drained=drained))
                continue
            exhausted = bundle.one_time_prekey is None
            self._claimed.add(1, _EXHAUSTED_ATTRIBUTES[exhausted])
            left = bundle.remaining_one_time_prekeys
            pq_left = bundle.remaining_one_time_pq_prekeys
            # Once when a count crosses the watermark, and again when its last key is taken; one event even when
            # both kinds cross in the same claim, since one refill tops both up.
            crossed = not exhausted and left in (watermark - 1, 0)
            pq_crossed = bundle.pq_prekey_kind is PqPreKeyKind.ONE_TIME and pq_left in (watermark - 1, 0)
            if crossed or pq_crossed:
                await self._events.publish(
                    Event(
                        prekeys_low=PreKeysLow(
                            address=str(user.with_device(bundle.device_id)),
                            remaining=left,
                            low_watermark=watermark,
                            remaining_pq=pq_left,
                        )
                    )
                )


def _check_curve_key(key: bytes, field_name: str) -> None:
    try:
        PublicKey.deserialize(key)
    except InvalidKeyError:
        raise ParleyError(
            Code.INVALID_ARGUMENT,
            ErrorReason.ERROR_REASON_MALFORMED_KEY,
            f"{field_name}: not a serialized Curve25519 public key (0x05 + 32 bytes)",
            field=field_name,
        ) from None


def _check_signed_key(key: SignedKey, identity_key: bytes, field_name: str, *, kem: bool) -> None:
    if not 0 <= key.key_id <= _MAX_PREKEY_ID:
        raise invalid_field(field_name, "key id out of range")
    try:
        if kem:
            KemPublicKey.deserialize(key.public_key)
        else:
            PublicKey.deserialize(key.public_key)
    except InvalidKeyError:
        raise ParleyError(
            Code.INVALID_ARGUMENT,
            ErrorReason.ERROR_REASON_MALFORMED_KEY,
            f"{field_name}: malformed public key",
            field=field_name,
        ) from None
    if len(key.signature) != _SIGNATURE_SIZE or not verify_signature(identity_key, key.public_key, key.signature):
        raise ParleyError(
            Code.INVALID_ARGUMENT,
            ErrorReason.ERROR_REASON_BAD_SIGNATURE,
            f"{field_name}: signature does not verify with the identity key",
            field=field_name,
        )
