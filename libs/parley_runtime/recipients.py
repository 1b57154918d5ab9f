"""Identity's answers about users, as the relay and the key directory need them: reachability, devices, and
whether the user or device an assertion acts for is registered at all.

Every send and every key fetch needs these answers, and conversations ask about the same users many times a
second, so answers are reused for ``ttl_s`` (one second by default). Identity's ``consent_changed``,
``mute_changed`` and ``device_removed`` events drop the answers about that user (asked about, or asking: consent
binds senders too) as soon as they are read (:meth:`follow`), and ``interop_policy_changed`` drops every answer
involving the provider's users, so a withdrawn consent, a mute, a policy or a removed device normally shows within
milliseconds, and within ``ttl_s`` at worst (an event missed while Redis was away). Registration checks run on
every call a provider makes for a user, so a provider minting identities that were never registered
(``sub=username:ghost@A``, or ``dev=42`` of a real user) must not cost identity a call each time either: a
confirmed absence is remembered for ``ttl_s`` too. When an answer expires, the calls in flight about the same pair
all miss at once; they share one question to identity (never one asked before an event they have seen).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc.aio
from google.protobuf.message import DecodeError
from redis.exceptions import RedisError

from parley.common.v1.common_pb2 import ErrorReason
from parley.events.v1.events_pb2 import Event
from parley.identity.v1 import identity_pb2, identity_pb2_grpc
from parley.identity.v1.identity_pb2 import ConsentState, Reachability
from parley_runtime import redis_keys
from parley_runtime.background import cancel_and_wait
from parley_runtime.errors import Code, ParleyError, not_found, permission_denied
from parley_runtime.redis_client import Redis
from parley_stanza import Address, AddressKind, InvalidAddressError

_MAX_ENTRIES = 100_000
_EVENT_BATCH = 500
_log = logging.getLogger(__name__)
_K = TypeVar("_K")
_V = TypeVar("_V")


_Asker = tuple[AddressKind, str, str]
"""The asking user by its parts."""
_Key = tuple[AddressKind, str, str, int | None, Address]
"""A cached answer's key: the asking user by its parts, its device (the interop policy may tell devices apart),
and the recipient."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """What identity says about a recipient user: may the sender reach it, and its registered device ids.

    Attributes:
        reachability: identity's verdict.
        device_ids: the devices the sender is to reach (REACHABLE only).
        muted: the recipient muted the sender's user or provider (REACHABLE only).
        sender_consent: the sender's own consent state (SENDER_CONSENT_MISSING only).
        policy_rule: the interop policy rule keeping the sender out (SENDER_POLICY only).
    """

    reachability: Reachability.ValueType
    device_ids: tuple[int, ...]
    muted: bool = False
    sender_consent: ConsentState.ValueType = ConsentState.CONSENT_STATE_UNSPECIFIED
    policy_rule: str = ""


def sender_refusal(answer: Recipient, sender_provider: str) -> ParleyError | None:
    """The refusal of a verdict that is about the sender itself (its consent, its provider's policy), or None.

    Such refusals may name their reason: they tell the sender about itself, nothing about the recipient.

    Args:
        answer: identity's answer.
        sender_provider: the sender's provider (whose policy a SENDER_POLICY verdict applied).
    """
    if answer.reachability == Reachability.REACHABILITY_SENDER_CONSENT_MISSING:
        state = ConsentState.Name(answer.sender_consent).removeprefix("CONSENT_STATE_")
        return ParleyError(
            Code.FAILED_PRECONDITION,
            ErrorReason.ERROR_REASON_SENDER_CONSENT_MISSING,
            "your third-party chats are off or do not allow this provider; they are read-only until you turn them on",
            consent_state=state,
        )
    if answer.reachability == Reachability.REACHABILITY_SENDER_POLICY:
        return permission_denied(
            ErrorReason.ERROR_REASON_INTEROP_POLICY,
            f"the interop policy of {sender_provider} keeps you out of third-party chats here",
            rule=answer.policy_rule,
            provider_id=sender_provider,
        )
    return None


class IdentityRecipients:
    """Identity's ``ResolveRecipient`` behind a bounded cache of ``ttl_s``; also the registration check of
    :class:`parley_runtime.auth.Authenticator`.

    Args:
        channel: internal channel to identity.
        ttl_s: how long an answer is reused; 0 disables the cache.
        timeout_s: deadline of each call.
    """

    def __init__(self, channel: grpc.aio.Channel, *, ttl_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self._stub = identity_pb2_grpc.IdentityServiceStub(channel)
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._cache: OrderedDict[_Key, tuple[float, Recipient]] = OrderedDict()
        self._keys_by_recipient: dict[Address, set[_Key]] = {}
        self._keys_by_asker: dict[_Asker, set[_Key]] = {}
        # Bumped by every invalidation: an answer asked for before one may predate the change, so is not cached.
        self._generation = 0
        self._follower: asyncio.Task[None] | None = None
        self._absent: OrderedDict[tuple[Address, int | None], tuple[float, ErrorReason.ValueType]] = OrderedDict()
        self._asking: dict[_Key, tuple[int, asyncio.Future[Recipient]]] = {}
        """Questions to identity in flight, with the generation they were asked in."""

    async def resolve(self, sender: Address, recipient: Address, *, fresh: bool = False) -> Recipient:
        """Reachability and device ids of ``recipient`` as seen by ``sender``'s user.

        Args:
            sender: the asking user or device.
            recipient: the user asked about (a device part is ignored).
            fresh: ask identity even when a cached answer is still valid.

        Raises:
            grpc.aio.AioRpcError: identity failed or did not answer in time.
        """
        # The sender's user by its parts: ``sender.user`` would build and validate a new Address on every send.
        key = (sender.kind, sender.identifier, sender.provider, sender.device, recipient)
        if fresh:
            return await self._ask(key, sender, recipient)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        # When an answer expires, every call in flight about the same pair misses at once: they share one question
        # to identity, unless an event dropped answers since it was asked (it may predate the change).
        asking = self._asking.get(key)
        if asking is None or asking[0] != self._generation:
            task = asyncio.create_task(self._ask(key, sender, recipient), name="identity-resolve")
            self._asking[key] = asking = (self._generation, task)
            task.add_done_callback(lambda done: self._asked(key, done))
        # Shielded: a caller that goes away (its client cancelled) must not cancel the others' answer.
        return await asyncio.shield(asking[1])

    def _asked(self, key: _Key, done: asyncio.Future[Recipient]) -> None:
        """Forgets a question once answered (unless a newer one about the same pair took its place)."""
        asking = self._asking.get(key)
        if asking is not None and asking[1] is done:
            del self._asking[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have gone away before the answer came

    async def _ask(self, key: _Key, sender: Address, recipient: Address) -> Recipient:
        """Identity's answer, cached unless an event dropped answers while it was asked."""
        now = time.monotonic()
        generation = self._generation
        response = await self._stub.ResolveRecipient(
            identity_pb2.ResolveRecipientRequest(sender=str(sender), recipient=str(recipient)),
            timeout=self._timeout_s,
        )
        answer = Recipient(
            response.reachability,
            tuple(device.device_id for device in response.devices),
            muted=response.muted,
            sender_consent=response.sender_consent,
            policy_rule=response.policy_rule,
        )
        if self._ttl_s > 0 and generation == self._generation:
            self._drop_expired(now)
            self._cache[key] = (now + self._ttl_s, answer)
            self._cache.move_to_end(key)
            self._keys_by_recipient.setdefault(recipient, set()).add(key)
            self._keys_by_asker.setdefault(key[:3], set()).add(key)
            while len(self._cache) > _MAX_ENTRIES:
                oldest, _ = self._cache.popitem(last=False)
                self._unindex(oldest)
        return answer

    def forget(self, user: Address) -> None:
        """Drops every cached answer about ``user``, as a recipient and as the asker (its own consent binds its
        sends)."""
        self._generation += 1
        keys = self._keys_by_recipient.get(user, set()) | self._keys_by_asker.get(
            (user.kind, user.identifier, user.provider), set()
        )
        for key in keys:
            self._cache.pop(key, None)
            self._unindex(key)

    def forget_provider(self, provider_id: str) -> None:
        """Drops every cached answer in which a user of ``provider_id`` asks or is asked about (a policy change)."""
        self._generation += 1
        for key in [key for key in self._cache if key[2] == provider_id or key[4].provider == provider_id]:
            del self._cache[key]
            self._unindex(key)

    def _drop_expired(self, now: float) -> None:
        """Drops the answers expired by ``now`` from the front of the cache.

        One ttl for all, so answers expire about in the order they were cached: without this a replica would keep an
        answer per pair it ever served (about 1 KiB each, a device's stream asks one) until the entry bound.
        """
        while self._cache:
            oldest, (expires_at, _) = next(iter(self._cache.items()))
            if expires_at > now:
                return
            del self._cache[oldest]
            self._unindex(oldest)

    def _unindex(self, key: _Key) -> None:
        _discard(self._keys_by_recipient, key[4], key)
        _discard(self._keys_by_asker, key[:3], key)

    def follow(self, client: Redis, *, block_ms: int = 1000) -> None:
        """Starts reading identity's event stream from now on, forgetting the users its events name.

        Args:
            client: a Redis client whose commands may block ``block_ms`` (``connect(..., blocking_reads_s=...)``).
            block_ms: how long one read waits for new events.
        """
        self._follower = asyncio.create_task(self._follow(client, block_ms), name="identity-events")

    async def stop(self) -> None:
        """Stops following identity's events."""
        if self._follower is not None:
            await cancel_and_wait([self._follower])

    async def _follow(self, client: Redis, block_ms: int) -> None:
        stream = redis_keys.event_stream("identity")
        last = "$"
        while True:
            try:
                reply: Any = await client.xread({stream: last}, count=_EVENT_BATCH, block=block_ms)
            except (RedisError, OSError) as exc:
                # Missed events only leave answers to expire with their TTL, as without a follower.
                _log.warning("identity events interrupted: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get(b"type") == b"interop_policy_changed":
                        provider_id = _event_provider(fields)
                        if provider_id:
                            self.forget_provider(provider_id)
                        continue
                    user = _event_user(fields)
                    if user is not None:
                        self.forget(user)

    async def check_registered(self, user: Address, device_id: int | None) -> None:
        """Refuses a user (and device) that identity does not know.

        A cached answer may predate a registration made a moment ago, so a miss is asked again fresh before it is
        refused; the refusal is then remembered, so repeating it costs identity nothing for ``ttl_s``.

        Raises:
            ParleyError: NOT_FOUND / USER_NOT_FOUND or DEVICE_NOT_FOUND.
            grpc.aio.AioRpcError: identity failed or did not answer in time.
        """
        now = time.monotonic()
        known = self._absent.get((user, device_id))
        if known is not None and known[0] > now:
            reason = known[1]
        else:
            for fresh in (False, True):
                answer = await self.resolve(user, user, fresh=fresh)
                # A user asking about itself is answered without consent rules: REACHABLE exactly when it exists.
                exists = answer.reachability == Reachability.REACHABILITY_REACHABLE
                if exists and (device_id is None or device_id in answer.device_ids):
                    return
            reason = ErrorReason.ERROR_REASON_DEVICE_NOT_FOUND if exists else ErrorReason.ERROR_REASON_USER_NOT_FOUND
            if self._ttl_s > 0:
                _remember(self._absent, (user, device_id), (now + self._ttl_s, reason))
        if reason == ErrorReason.ERROR_REASON_DEVICE_NOT_FOUND:
            raise not_found(reason, f"device {device_id} of {user} is not registered")
        raise not_found(reason, f"user {user} is not registered")


def _event_user(fields: dict[bytes, bytes]) -> Address | None:
    """The user an identity event changes answers about, or None for events about something else."""
    kind = fields.get(b"type", b"")
    if kind not in (b"consent_changed", b"device_removed", b"mute_changed"):
        return None
    try:
        event = Event.FromString(fields[b"event"])
        address = event.consent_changed.address or event.device_removed.address or event.mute_changed.address
        return Address.parse(address).user
    except (KeyError, DecodeError, InvalidAddressError):
        _log.warning("unreadable identity event of type %s", kind.decode(errors="replace"))
        return None


def _event_provider(fields: dict[bytes, bytes]) -> str:
    """The provider an ``interop_policy_changed`` event names, or "" when it cannot be read."""
    try:
        return Event.FromString(fields[b"event"]).interop_policy_changed.provider_id
    except (KeyError, DecodeError):
        _log.warning("unreadable interop_policy_changed event")
        return ""


def _discard(index: dict[_K, set[_Key]], by: _K, key: _Key) -> None:
    """Takes ``key`` out of ``index[by]``, dropping the set once empty."""
    keys = index.get(by)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del index[by]


def _remember(cache: OrderedDict[_K, _V], key: _K, value: _V) -> None:
    """Stores ``value`` as the newest entry, dropping the oldest beyond the bound."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _MAX_ENTRIES:
        cache.popitem(last=False)
