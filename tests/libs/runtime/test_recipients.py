"""Identity's answers cached at the relay and key directory: registration checks and event-driven invalidation."""

from __future__ import annotations

import asyncio
import time

import grpc.aio
import pytest
from support.cluster import INTERNAL_TOKEN, Cluster

from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1.identity_pb2 import Reachability
from parley_runtime.clients import internal_channel
from parley_runtime.recipients import IdentityRecipients
from parley_runtime.redis_client import connect
from parley_stanza import Address

USER = "username:ann@birdy"


async def test_identity_events_drop_cached_answers_long_before_they_expire(cluster: Cluster) -> None:
    await cluster.start_identity()
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(birdy, USER, devices=2)
    # A cache far longer than any setting allows: only the event can make the answer change in time.
    channel = internal_channel(cluster.target("identity"), internal_token=INTERNAL_TOKEN, telemetry=cluster.telemetry)
    recipients = IdentityRecipients(channel, ttl_s=600)
    events = connect(cluster.redis_url, max_connections=1, blocking_reads_s=1.0)
    recipients.follow(events, block_ms=200)
    await asyncio.sleep(0.3)  # the follower reads from "now": let it start before the change
    user = Address.parse(USER)
    assert (await recipients.resolve(user, user)).device_ids == (1, 2)
    await cluster.identity().RemoveDevice(id_pb.RemoveDeviceRequest(device_id=2), metadata=birdy.auth(USER))
    answer = None
    for _ in range(100):
        answer = (await recipients.resolve(user, user)).device_ids
        if answer == (1,):
            break
        await asyncio.sleep(0.05)
    assert answer == (1,)
    await recipients.stop()
    await events.aclose()
    await channel.close()


async def test_callers_missing_the_cache_together_ask_identity_once(cluster: Cluster) -> None:
    await cluster.start_identity()
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(birdy, USER, devices=2)
    channel = internal_channel(cluster.target("identity"), internal_token=INTERNAL_TOKEN, telemetry=cluster.telemetry)
    recipients = IdentityRecipients(channel, ttl_s=1.0)
    asked = 0
    ask = recipients._stub.ResolveRecipient

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal asked
        asked += 1
        return ask(*args, **kwargs)

    recipients._stub.ResolveRecipient = counted
    user = Address.parse(USER)
    answers = await asyncio.gather(*(recipients.resolve(user, user) for _ in range(50)))
    assert {answer.device_ids for answer in answers} == {(1, 2)}
    assert asked == 1
    # A question asked before an invalidation is not shared with callers after it: they ask again.
    recipients.forget(user)
    first = asyncio.ensure_future(recipients.resolve(user, user))
    await asyncio.sleep(0)  # identity is asked
    recipients.forget(user)
    second = await asyncio.gather(*(recipients.resolve(user, user) for _ in range(5)))
    await first
    assert {answer.device_ids for answer in second} == {(1, 2)}
    assert asked == 3
    await channel.close()


class _SlowIdentity:
    """Stands in for identity's stub: counts ``ResolveRecipient`` calls and answers when released."""

    def __init__(self) -> None:
        self.asked = 0
        self.release = asyncio.Event()

    async def ResolveRecipient(
        self,
        request: id_pb.ResolveRecipientRequest,
        timeout: float,  # noqa: ASYNC109 -- the stub's signature: the call's deadline
    ) -> id_pb.ResolveRecipientResponse:
        self.asked += 1
        devices = self.asked  # each answer tells which question it was
        await self.release.wait()
        return id_pb.ResolveRecipientResponse(
            reachability=Reachability.REACHABILITY_REACHABLE,
            devices=[id_pb.Device(device_id=devices)],
        )


def _with_identity(identity: _SlowIdentity) -> IdentityRecipients:
    recipients = IdentityRecipients(grpc.aio.insecure_channel("127.0.0.1:1"), ttl_s=1.0)
    recipients._stub = identity  # type: ignore[assignment]  # the fake answers the one method resolve() uses
    return recipients


async def test_concurrent_misses_about_one_pair_share_one_question_to_identity() -> None:
    identity = _SlowIdentity()
    recipients = _with_identity(identity)
    user = Address.parse(USER)
    callers = [asyncio.create_task(recipients.resolve(user.with_device(1), user)) for _ in range(5)]
    other = asyncio.create_task(recipients.resolve(user.with_device(2), user))  # another asking device
    await asyncio.sleep(0.01)
    callers[0].cancel()  # one caller going away does not cancel the question the others wait for
    identity.release.set()
    answers = await asyncio.gather(*callers[1:])
    assert identity.asked == 2
    assert {answer.device_ids for answer in answers} == {(1,)}
    assert (await other).device_ids == (2,)
    # Answered, and cached: no more questions.
    assert (await recipients.resolve(user.with_device(1), user)).device_ids == (1,)
    assert identity.asked == 2


async def test_a_caller_arriving_after_an_event_does_not_share_a_question_asked_before_it() -> None:
    identity = _SlowIdentity()
    recipients = _with_identity(identity)
    user = Address.parse(USER)
    early = asyncio.create_task(recipients.resolve(user, user))
    await asyncio.sleep(0.01)
    recipients.forget(user)  # e.g. a device removed while the first question was on its way
    late = asyncio.create_task(recipients.resolve(user, user))
    await asyncio.sleep(0.01)
    identity.release.set()
    assert (await early).device_ids == (1,)
    assert (await late).device_ids == (2,)
    assert identity.asked == 2
    # The answer asked before the event was not cached; the one after it was.
    assert (await recipients.resolve(user, user)).device_ids == (2,)
    assert identity.asked == 2


async def test_a_fresh_question_never_shares_one_in_flight() -> None:
    identity = _SlowIdentity()
    recipients = _with_identity(identity)
    user = Address.parse(USER)
    cached = asyncio.create_task(recipients.resolve(user, user))
    await asyncio.sleep(0.01)
    fresh = asyncio.create_task(recipients.resolve(user, user, fresh=True))
    await asyncio.sleep(0.01)
    identity.release.set()
    assert {(await cached).device_ids, (await fresh).device_ids} == {(1,), (2,)}
    assert identity.asked == 2


async def test_expired_answers_are_dropped_not_kept_until_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer past its ttl goes when a newer one is cached, with its index entries: a replica keeps no answer
    per device it ever served."""
    identity = _SlowIdentity()
    identity.release.set()
    recipients = _with_identity(identity)
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    user, other = Address.parse(USER), Address.parse("username:other@birdy")
    await recipients.resolve(user.with_device(1), user)
    await recipients.resolve(user.with_device(2), user)
    clock[0] += 0.5
    await recipients.resolve(user.with_device(3), other)
    assert len(recipients._cache) == 3
    clock[0] += 0.6  # the first two expired, the third not
    await recipients.resolve(user.with_device(4), other)
    assert [key[3] for key in recipients._cache] == [3, 4]
    assert set(recipients._keys_by_recipient) == {other}
