"""Relay rules: what may be sent, to which devices it goes, and what an acknowledgement does. No gRPC here.

A stanza is checked completely (safe parsing, sender = authenticated device, recipient reachable, the recipient's
provider supports the stanza's kind, moderation, exact device list) before anything is stored, so a refused stanza
changes nothing. Accepted stanzas are stored
once per target device (the recipient's devices and the sender's other devices) by one atomic script per user.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from opentelemetry import metrics

from parley.common.v1.common_pb2 import ErrorReason, Feature
from parley.events.v1.events_pb2 import Event, MessageWaiting
from parley.identity.v1.identity_pb2 import Reachability
from parley_crypto import franking_context, stamp_commitment
from parley_relay.parity import ParityRecorder
from parley_relay.store import MailboxStore, StoredStanza, StoreRequest, StoreResult
from parley_runtime.errors import Code, ParleyError, invalid_field, not_found
from parley_runtime.events import EventPublisher
from parley_runtime.recipients import Recipient, sender_refusal
from parley_stanza import (
    Address,
    CallSignal,
    ChatState,
    Franking,
    GroupControl,
    LimitExceededError,
    Limits,
    Message,
    MessageType,
    Receipt,
    ReceiptType,
    StanzaError,
    decode,
    encode,
)

_log = logging.getLogger(__name__)

ProviderFeatures = Callable[[str], Collection[Feature.ValueType]]
"""The features a provider enlisted with, by provider id (none for a provider the relay does not know)."""

_Checked = Message | Receipt | ChatState | CallSignal | GroupControl
"""The stanza kinds a client may send (calls and group control only to be refused, with their reason)."""


class Send(NamedTuple):
    """One send as moderation sees it: who, to whom, and how many device copies."""

    sender: Address
    recipient: Address
    fan_out: int


class SendDecision(NamedTuple):
    """Moderation's decision on one send."""

    deliver: bool = True


class SendPolicy(Protocol):
    """Moderation: may each sender send to each recipient now? (see ``moderation_client``)."""

    async def check_many(self, sends: Sequence[Send]) -> list[SendDecision | ParleyError]:
        """One decision per send, taken in order, or the ``ParleyError`` refusing that send.

        Raises:
            ParleyError: when no decision could be taken at all (moderation unavailable).
        """


class RecipientResolver(Protocol):
    """Identity's view of recipients (``parley_runtime.recipients.IdentityRecipients``)."""

    async def resolve(self, sender: Address, recipient: Address) -> Recipient:
        """Reachability of ``recipient`` for ``sender`` and the recipient's device ids."""


class Accepted(NamedTuple):
    """The outcome of an accepted stanza."""

    message_id: str
    ts: int
    duplicate: bool


class _Targets(NamedTuple):
    """A message that passed every check but moderation's, with the devices it is for."""

    message: Message
    data: bytes
    recipient: Address
    recipient_devices: tuple[int, ...]
    own_devices: tuple[int, ...]
    silent: bool


class _CheckedMessage(NamedTuple):
    """A message that passed every check, with the mailbox writes it needs (recipient's first, then own)."""

    message: Message
    ts: int
    requests: tuple[StoreRequest, ...]
    silent: bool
    """The recipient muted the sender: its devices' wake-ups do not alert."""


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Configurable bounds of the relay rules."""

    stanza: Limits = field(default_factory=Limits)
    retention_ms: int = 30 * 24 * 3600 * 1000
    backlog_cap: int = 10_000
    """Undelivered stanzas one recipient device's mailbox may hold; beyond, sends to it are refused (MAILBOX_FULL)."""


class RelayHandler:
    """The relay's domain logic.

    Args:
        store: mailboxes.
        recipients: identity's view of recipients.
        policy: moderation.
        events: publisher for the ``relay`` event stream (``message_waiting``).
        franking_key: the relay's secret stamping key (shared with moderation), or b"" to not stamp.
        provider_features: each provider's enlisted features (the relay refuses stanza kinds a recipient's
            provider lacks).
        limits: configurable bounds.
        meter: for relay counters.
        parity: counts each provider's accepted, refused and delivered stanzas (metrics and the parity report).
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: MailboxStore,
        recipients: RecipientResolver,
        policy: SendPolicy,
        events: EventPublisher,
        *,
        franking_key: bytes,
        provider_features: ProviderFeatures,
        limits: RelayLimits,
        meter: metrics.Meter,
        parity: ParityRecorder,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._recipients = recipients
        self._policy = policy
        self._events = events
        self._franking_key = franking_key
        self._provider_features = provider_features
        self._limits = limits
        self._clock = clock
        self._parity = parity
        self._stored = meter.create_counter("relay.copies.stored", unit="{copy}", description="Mailbox copies")

    @property
    def store(self) -> MailboxStore:
        """The mailbox store (streams read and acknowledge through it)."""
        return self._store

    # --- sending -----------------------------------------------------------------------------------------------

    async def send(self, device: Address, data: bytes) -> Accepted:
        """Accepts one stanza from ``device``.

        Raises:
            ParleyError: INVALID_ARGUMENT / MALFORMED_STANZA or TOO_LARGE; PERMISSION_DENIED / SPOOFED_SENDER or
                INTEROP_POLICY; NOT_FOUND / USER_NOT_FOUND; FAILED_PRECONDITION / READ_ONLY_CHAT,
                SENDER_CONSENT_MISSING, STALE_DEVICES or FEATURE_UNSUPPORTED; whatever moderation refuses with.
        """
        try:
            stanza = self._checked(device, data)
            if isinstance(stanza, Message):
                outcome = (await self._send_messages(device, [(stanza, data)], shared=True))[0]
                if isinstance(outcome, ParleyError):
                    raise outcome
                accepted = outcome
            else:
                accepted = await self._send_other(device, stanza, data)
        except ParleyError as error:
            self._parity.sent(device.provider, Counter(), Counter([error.reason_name]))
            raise
        self._parity.sent(device.provider, Counter([accepted.duplicate]), Counter())
        return accepted

    async def send_batch(self, device: Address, stanzas: Sequence[bytes]) -> list[Accepted | ParleyError]:
        """Accepts the stanzas of one ``SendBatch`` frame from ``device``, in order, each as :meth:`send` would.

        Consecutive messages are checked together: identity's answers come from the resolver's cache, moderation
        decides them in one call and their copies are stored in one Redis round trip. A receipt or typing state
        between them is handled in its place, after the messages before it are stored, so order is kept.

        Returns:
            Per stanza, its acceptance or the ``ParleyError`` that refused it.
        """
        outcomes: list[Accepted | ParleyError | None] = []
        run: list[tuple[int, Message, bytes]] = []
        for data in stanzas:
            try:
                stanza = self._checked(device, data)
            except ParleyError as error:
                outcomes.append(error)
                continue
            if isinstance(stanza, Message):
                run.append((len(outcomes), stanza, data))
                outcomes.append(None)
                continue
            await self._send_run(device, run, outcomes)
            try:
                outcomes.append(await self._send_other(device, stanza, data))
            except ParleyError as error:
                outcomes.append(error)
        await self._send_run(device, run, outcomes)
        done = [outcome for outcome in outcomes if outcome is not None]
        # One count per frame, not per stanza: each metric add walks the SDK's aggregation.
        self._parity.sent(
            device.provider,
            Counter(o.duplicate for o in done if not isinstance(o, ParleyError)),
            Counter(o.reason_name for o in done if isinstance(o, ParleyError)),
        )
        return done

    async def _send_run(
        self, device: Address, run: list[tuple[int, Message, bytes]], outcomes: list[Accepted | ParleyError | None]
    ) -> None:
        """Sends the consecutive messages waiting in ``run`` and fills in their outcomes; empties ``run``."""
        if not run:
            return
        sent = await self._send_messages(device, [(message, data) for _, message, data in run])
        for (index, _, _), outcome in zip(run, sent, strict=True):
            outcomes[index] = outcome
        run.clear()

    async def _send_messages(
        self, device: Address, messages: Sequence[tuple[Message, bytes]], *, shared: bool = False
    ) -> list[Accepted | ParleyError]:
        """Checks each message, lets moderation decide all that passed in one call, stores them in one round trip
        (``shared``: a round trip shared with other unary calls storing at the same moment)."""
        outcomes: list[Accepted | ParleyError | None] = [None] * len(messages)
        passed: list[tuple[int, _Targets]] = []
        for index, (message, data) in enumerate(messages):
            try:
                passed.append((index, await self._targets(device, message, data)))
            except ParleyError as error:
                outcomes[index] = error
        if passed:
            sends = [Send(device, t.recipient, len(t.recipient_devices) + len(t.own_devices)) for _, t in passed]
            try:
                decisions = await self._policy.check_many(sends)
            except ParleyError as error:
                decisions = [error] * len(passed)
            checked: list[tuple[int, _CheckedMessage]] = []
            for (index, targets), decision in zip(passed, decisions, strict=True):
                if isinstance(decision, ParleyError):
                    outcomes[index] = decision
                else:
                    checked.append((index, self._checked_message(device, targets, decision)))
            stored = await self._store_checked([message for _, message in checked], shared=shared)
            for (index, _), accepted in zip(checked, stored, strict=True):
                outcomes[index] = accepted
        return [outcome for outcome in outcomes if outcome is not None]

    def _checked(self, device: Address, data: bytes) -> _Checked:
        """The decoded stanza, once its sender is known to be the authenticated device."""
        stanza = self._decode(data)
        if stanza.sender != device:
            raise ParleyError(
                Code.PERMISSION_DENIED,
                ErrorReason.ERROR_REASON_SPOOFED_SENDER,
                f"the stanza's sender {stanza.sender} is not the authenticated device {device}",
            )
        return stanza

    async def _send_other(self, device: Address, stanza: _Checked, data: bytes) -> Accepted:
        if isinstance(stanza, Receipt):
            return await self._send_receipt(device, stanza, data)
        if isinstance(stanza, ChatState):
            return await self._send_chat_state(device, stanza, data)
        # Calls and group control are not relayed yet, but a recipient whose provider could never take them
        # learns the sender the lasting reason, not a temporary one.
        if isinstance(stanza, CallSignal):
            await self._reach(device, stanza.recipient)
            self._require_feature(stanza.recipient, Feature.FEATURE_CALLS)
        elif isinstance(stanza, GroupControl):
            for member in stanza.members:
                self._require_feature(member, Feature.FEATURE_GROUPS)
        raise invalid_field("stanza", f"{type(stanza).__name__} stanzas are not relayed yet")

    def _require_feature(self, recipient: Address, feature: Feature.ValueType) -> None:
        """Refuses a stanza kind the recipient's provider did not enlist with (nothing is stored or forwarded)."""
        if feature in self._provider_features(recipient.provider):
            return
        name = Feature.Name(feature)
        raise ParleyError(
            Code.FAILED_PRECONDITION,
            ErrorReason.ERROR_REASON_FEATURE_UNSUPPORTED,
            f"the recipient's provider {recipient.provider} does not support {name}",
            feature=name,
            provider=recipient.provider,
        )

    def _decode(self, data: bytes) -> _Checked:
        try:
            stanza = decode(data, self._limits.stanza)
        except LimitExceededError as exc:
            raise ParleyError(
                Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_TOO_LARGE, f"stanza: {exc}", limit=exc.limit
            ) from None
        except StanzaError as exc:
            raise ParleyError(
                Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_MALFORMED_STANZA, f"stanza: {exc}"
            ) from None
        if not isinstance(stanza, _Checked):
            raise invalid_field("stanza", f"{type(stanza).__name__} stanzas are not accepted from clients")
        return stanza

    async def _reach(self, sender: Address, recipient: Address) -> Recipient:
        """Identity's answer when ``sender`` may reach ``recipient``; else the refusal its verdict calls for."""
        verdict = await self._recipients.resolve(sender, recipient)
        if verdict.reachability == Reachability.REACHABILITY_REACHABLE:
            return verdict
        if (refusal := sender_refusal(verdict, sender.provider)) is not None:
            raise refusal
        if verdict.reachability == Reachability.REACHABILITY_READ_ONLY:
            raise ParleyError(
                Code.FAILED_PRECONDITION,
                ErrorReason.ERROR_REASON_READ_ONLY_CHAT,
                "the recipient turned third-party chats off; this chat is read-only",
            )
        raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "this user cannot be found")

    async def _own_other_devices(self, device: Address) -> tuple[int, ...]:
        own = await self._recipients.resolve(device, device.user)
        return tuple(d for d in own.device_ids if d != device.device)

    async def _targets(self, device: Address, message: Message, data: bytes) -> _Targets:
        """Every check of a message but moderation's (type, reachability, exact devices)."""
        if message.type is not MessageType.CHAT or message.recipient is None:
            raise invalid_field("type", "only chat messages are relayed so far (groups come with sender keys)")
        recipient = message.recipient
        sender_user = device.user  # each use would build a new Address
        verdict = await self._reach(device, recipient)
        recipient_devices = verdict.device_ids
        own_devices = await self._own_other_devices(device) if recipient != sender_user else ()
        if recipient == sender_user:
            recipient_devices = tuple(d for d in recipient_devices if d != device.device)
        _check_devices(message, recipient, recipient_devices, sender_user, own_devices)
        return _Targets(message, data, recipient, recipient_devices, own_devices, verdict.muted)

    def _checked_message(self, device: Address, targets: _Targets, decision: SendDecision) -> _CheckedMessage:
        """The mailbox writes of a message moderation let through (only the sender's own when dropped silently)."""
        message, recipient = targets.message, targets.recipient
        ts = int(self._clock() * 1000)
        forwarded = self._stamp(message, recipient, ts) or targets.data
        delivered = targets.recipient_devices if decision.deliver else ()
        # The recipient's mailboxes are capped (others' traffic fills them); the sender's own are not.
        copies = ((recipient, delivered, True), (device.user, targets.own_devices, False))
        requests = tuple(
            self._store_request(user, device_ids, forwarded, message, ts, device, capped=capped)
            for user, device_ids, capped in copies
            if device_ids
        )
        return _CheckedMessage(message, ts, requests, targets.silent)

    async def _store_checked(
        self, checked: Sequence[_CheckedMessage], *, shared: bool = False
    ) -> list[Accepted | ParleyError]:
        """Stores every copy of the checked messages in one round trip (``shared``: with other unary calls'); their
        acceptances or refusals, in order."""
        requests = [r for message in checked for r in message.requests]
        store = self._store.store_shared if shared else self._store.store_many
        results = iter(await store(requests) if requests else ())
        outcomes: list[Accepted | ParleyError] = []
        copies = 0
        waiting: list[Event] = []
        for message in checked:
            stored = [(request, next(results)) for request in message.requests]
            full = next(((request, result) for request, result in stored if result.full is not None), None)
            if full is not None:
                outcomes.append(await self._refuse_full(full[0], full[1], stored, waiting))
                continue
            recipient = str(message.message.recipient)
            for request, result in stored:
                copies += _new_copies(request, result, waiting, silent=message.silent and request.user == recipient)
            if not stored:  # no device to deliver to at all: an empty fan-out is still an acceptance
                outcomes.append(Accepted(message.message.id, message.ts, False))
            else:
                first = stored[0][1]
                outcomes.append(Accepted(message.message.id, first.ts, first.duplicate))
        if copies:
            self._stored.add(copies)
        await self._events.publish_many(waiting)
        return outcomes

    async def _refuse_full(
        self,
        request: StoreRequest,
        result: StoreResult,
        stored: Sequence[tuple[StoreRequest, StoreResult]],
        waiting: list[Event],
    ) -> ParleyError:
        """The refusal of a stanza whose recipient has a full mailbox, once every copy it left elsewhere (the
        sender's own devices, stored in the same round trip) is taken back; the full device's provider is woken."""
        for other, other_result in stored:
            if other_result.delivery_ids:
                await self._store.withdraw(other, other_result)
        assert result.full is not None
        device_id, pending = result.full
        address = str(Address.parse(request.user).with_device(device_id))
        waiting.append(Event(message_waiting=MessageWaiting(address=address, pending=pending)))
        cap = self._limits.backlog_cap
        return ParleyError(
            Code.RESOURCE_EXHAUSTED,
            ErrorReason.ERROR_REASON_MAILBOX_FULL,
            f"the recipient device {address} has {pending} undelivered stanzas waiting (the cap is {cap}); retry later",
            limit=cap,
            device=address,
        )

    def _stamp(self, message: Message, recipient: Address, ts: int) -> bytes | None:
        """The stanza with the relay's franking stamp added, when it carries a commitment."""
        if message.franking is None or not self._franking_key:
            return None
        context = franking_context(str(message.sender), str(recipient), ts)
        stamp = stamp_commitment(self._franking_key, message.franking.commitment, context)
        stamped = Message(
            id=message.id,
            sender=message.sender,
            recipient=message.recipient,
            ts=message.ts,
            type=message.type,
            payloads=message.payloads,
            group=message.group,
            franking=Franking(message.franking.commitment, stamp),
            receipt_requested=message.receipt_requested,
        )
        return encode(stamped)

    async def _store_for(
        self,
        user: Address,
        device_ids: Sequence[int],
        data: bytes,
        stanza: Message | Receipt,
        ts: int,
        sender: Address,
        *,
        silent: bool = False,
    ) -> Accepted | None:
        if not device_ids:
            return None
        request = self._store_request(user, device_ids, data, stanza, ts, sender, capped=user != sender.user)
        result = (await self._store.store_many([request]))[0]
        waiting: list[Event] = []
        if result.full is not None:
            refusal = await self._refuse_full(request, result, [], waiting)
            await self._events.publish_many(waiting)
            raise refusal
        if copies := _new_copies(request, result, waiting, silent=silent):
            self._stored.add(copies)
        await self._events.publish_many(waiting)
        return Accepted(stanza.id, result.ts, result.duplicate)

    def _store_request(
        self,
        user: Address,
        device_ids: Sequence[int],
        data: bytes,
        stanza: Message | Receipt,
        ts: int,
        sender: Address,
        *,
        capped: bool,
    ) -> StoreRequest:
        return StoreRequest(
            user=str(user),
            device_ids=tuple(device_ids),
            stanza=data,
            ts=ts,
            message_id=stanza.id,
            sender=str(sender),
            receipt_requested=isinstance(stanza, Message) and stanza.receipt_requested,
            retention_ms=self._limits.retention_ms,
            backlog_cap=self._limits.backlog_cap if capped else 0,
        )

    async def _send_receipt(self, device: Address, receipt: Receipt, data: bytes, *, sync: bool = True) -> Accepted:
        """Stores a receipt for the confirmed messages' sender and, when ``sync``, the confirming user's others."""
        if receipt.recipient == device.user:
            raise invalid_field("recipient", "receipts confirm other users' messages")
        verdict = await self._reach(device, receipt.recipient)
        self._require_feature(receipt.recipient, Feature.FEATURE_RECEIPTS)
        own_devices = await self._own_other_devices(device) if sync else ()
        ts = int(self._clock() * 1000)
        first = await self._store_for(
            receipt.recipient, verdict.device_ids, data, receipt, ts, device, silent=verdict.muted
        )
        await self._store_for(device.user, own_devices, data, receipt, ts, device)
        return Accepted(receipt.id, first.ts if first else ts, first.duplicate if first else False)

    async def _send_chat_state(self, device: Address, state: ChatState, data: bytes) -> Accepted:
        if state.recipient is None:
            raise invalid_field("group", "group typing indicators come with groups")
        verdict = await self._reach(device, state.recipient)
        self._require_feature(state.recipient, Feature.FEATURE_TYPING)
        # Typing is never stored: only streams open right now see it.
        await self._store.publish_ephemeral(str(state.recipient), verdict.device_ids, data)
        return Accepted(state.id, int(self._clock() * 1000), False)

    # --- acknowledgements ---------------------------------------------------------------------------------------

    async def acknowledge(self, device: Address, delivered: Iterable[StoredStanza]) -> None:
        """Drops acknowledged copies and sends delivery receipts for messages that asked for them.

        Args:
            device: the acknowledging device.
            delivered: the acknowledged entries as they were delivered on this stream.
        """
        entries = list(delivered)
        assert device.device is not None
        await self._store.acknowledge(str(device.user), device.device, [e.delivery_id for e in entries])
        # An acknowledgement covers many copies from few senders: each sender's address is parsed once.
        senders = {text: Address.parse(text) for text in {e.sender for e in entries}}
        self._parity.delivered(device.provider, [(senders[e.sender].provider, e.ts) for e in entries])
        wanted: dict[Address, list[str]] = {}
        for entry in entries:
            sender = senders[entry.sender]
            # Copies of the user's own messages (sent from another of its devices) need no receipt.
            if entry.receipt_requested and sender.user != device.user:
                wanted.setdefault(sender, []).append(entry.message_id)
        for sender, message_ids in wanted.items():
            receipt = Receipt(
                id=f"dr{secrets.token_hex(8)}",
                sender=device,
                recipient=sender.user,
                ts=int(self._clock() * 1000),
                type=ReceiptType.DELIVERY,
                message_ids=tuple(dict.fromkeys(message_ids)),
            )
            try:
                # Only the sender needs to know; the user's other devices track their own deliveries.
                await self._send_receipt(device, receipt, encode(receipt), sync=False)
            except ParleyError as error:
                # The sender became unreachable meanwhile (blocked, opted out), or its provider takes no receipts
                # (FEATURE_UNSUPPORTED): the receipt is dropped.
                _log.info("delivery receipt dropped: %s", error.reason_name)


def _new_copies(request: StoreRequest, result: StoreResult, waiting: list[Event], *, silent: bool = False) -> int:
    """How many copies ``result`` added; appends a ``message_waiting`` event per target device without a stream
    (``silent`` when its user muted the sender)."""
    if result.duplicate:
        return 0
    for device_id, pending in result.offline:
        address = f"{request.user}/{device_id}"  # the user's canonical text, as the request holds it
        waiting.append(Event(message_waiting=MessageWaiting(address=address, pending=pending, silent=silent)))
    return len(request.device_ids)


def _check_devices(
    message: Message,
    recipient: Address,
    recipient_devices: Sequence[int],
    sender: Address,
    own_devices: Sequence[int],
) -> None:
    """Refuses a message whose payloads are not exactly one per current target device (as Signal-Server does)."""
    # Canonical texts rather than Address objects: a device's text is its user's plus "/<id>", and comparing
    # texts spares building (and validating) an Address per device on every message.
    expected = {f"{recipient}/{d}" for d in recipient_devices} | {f"{sender}/{d}" for d in own_devices}
    given = {str(payload.device) for payload in message.payloads}
    missing, stale = expected - given, given - expected
    if missing or stale:
        raise ParleyError(
            Code.FAILED_PRECONDITION,
            ErrorReason.ERROR_REASON_STALE_DEVICES,
            "the message's device payloads do not match the current devices; fetch keys and retry",
            missing_devices=",".join(sorted(missing)),
            stale_devices=",".join(sorted(stale)),
        )
