"""Unary ``Send`` calls at the same moment share their Redis round trips (the replay guard's records, the mailbox
stores), and each still gets exactly its own outcome: accepted once, refused for its own reason, or failed alone."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import Cluster
from support.relay import raw_message, start_world

from parley.relay.v1 import relay_pb2
from parley_runtime import redis_keys
from parley_sdk import DeviceClient, error_reason
from parley_stanza import Message


async def _mailbox_ids(redis_url: str, device: DeviceClient) -> list[bytes]:
    client = aioredis.Redis.from_url(redis_url)
    entries: Any = await client.xrange(redis_keys.mailbox(str(device.user), device.device_id))
    await client.aclose()
    return [fields[b"m"] for _, fields in entries]


async def _send_all(calls: list[tuple[DeviceClient, Message]]) -> list[relay_pb2.SendResponse | BaseException]:
    return await asyncio.gather(*(device.send(message) for device, message in calls), return_exceptions=True)


@pytest.mark.parametrize("sessions", [True, False], ids=["sessions", "assertions"])
async def test_concurrent_sends_each_get_their_own_outcome_and_every_copy_is_stored_once(
    cluster: Cluster, redis_url: str, sessions: bool
) -> None:
    world = await start_world(cluster, sessions=sessions)
    ana, laptop = world["ana_phone"], world["ana_laptop"]
    ben, cleo, tablet = world["ben"], world["cleo_phone"], world["cleo_tablet"]
    to_ana = [ana.address, laptop.address]
    from_ben = [(ben, raw_message(ben.address, ana.user, to_ana, f"b{n}")) for n in range(12)]
    from_cleo = [(cleo, raw_message(cleo.address, ana.user, [*to_ana, tablet.address], f"c{n}")) for n in range(6)]
    stale = (ben, raw_message(ben.address, ana.user, [ana.address], "stale"))  # misses Ana's laptop
    again = from_ben[0]  # the same stanza twice at once

    outcomes = await _send_all([*from_ben, *from_cleo, stale, again])

    accepted = outcomes[:18]
    assert all(isinstance(outcome, relay_pb2.SendResponse) for outcome in accepted)
    assert [outcome.message_id for outcome in accepted] == [m.id for _, m in [*from_ben, *from_cleo]]
    refusal = outcomes[18]
    assert isinstance(refusal, grpc.aio.AioRpcError)
    assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refusal)[0] == "STALE_DEVICES"
    # Of the two calls with the same stanza exactly one stored it; both tell the same acceptance time.
    twice = [outcomes[0], outcomes[19]]
    assert all(isinstance(outcome, relay_pb2.SendResponse) for outcome in twice)
    assert sorted(outcome.duplicate for outcome in twice) == [False, True]
    assert twice[0].server_timestamp_ms == twice[1].server_timestamp_ms
    # Counted at the receiving end: every accepted stanza once in each of its devices' mailboxes, nothing else.
    expected = sorted(m.id.encode() for _, m in [*from_ben, *from_cleo])
    assert sorted(await _mailbox_ids(redis_url, ana)) == expected
    assert sorted(await _mailbox_ids(redis_url, laptop)) == expected
    assert sorted(await _mailbox_ids(redis_url, tablet)) == sorted(m.id.encode() for _, m in from_cleo)
    assert await _mailbox_ids(redis_url, cleo) == []
    await world.close()


async def test_a_send_whose_store_fails_fails_alone_and_stores_nothing(cluster: Cluster, redis_url: str) -> None:
    world = await start_world(cluster)
    ana, laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    cleo, tablet = world["cleo_phone"], world["cleo_tablet"]
    admin = aioredis.Redis.from_url(redis_url)
    # Cleo's tablet's mailbox is broken (not a stream): storing for Cleo fails, storing for Ana must not.
    await admin.set(redis_keys.mailbox(str(tablet.user), tablet.device_id), b"not a stream")
    to_ana = [(ben, raw_message(ben.address, ana.user, [ana.address, laptop.address], f"a{n}")) for n in range(6)]
    to_cleo = (ben, raw_message(ben.address, cleo.user, [cleo.address, tablet.address], "to-cleo"))

    outcomes = await _send_all([*to_ana[:3], to_cleo, *to_ana[3:]])

    failed = outcomes[3]
    assert isinstance(failed, grpc.aio.AioRpcError)
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(failed)[0] == "DEPENDENCY_UNAVAILABLE"
    assert all(isinstance(outcome, relay_pb2.SendResponse) for outcome in [*outcomes[:3], *outcomes[4:]])
    assert sorted(await _mailbox_ids(redis_url, ana)) == sorted(f"a{n}".encode() for n in range(6))
    assert await _mailbox_ids(redis_url, cleo) == []
    # Once the mailbox is mended, the same stanza is stored: nothing marked it as accepted.
    await admin.delete(redis_keys.mailbox(str(tablet.user), tablet.device_id))
    retried = await ben.send(to_cleo[1])
    assert not retried.duplicate
    assert await _mailbox_ids(redis_url, cleo) == [b"to-cleo"]
    assert await _mailbox_ids(redis_url, tablet) == [b"to-cleo"]
    await admin.aclose()
    await world.close()
