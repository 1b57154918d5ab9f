"""Identity's answers cached at the relay and key directory: registration checks and event-driven invalidation."""

from __future__ import annotations

import asyncio

from support.cluster import INTERNAL_TOKEN, Cluster

from parley.identity.v1 import identity_pb2 as id_pb
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
