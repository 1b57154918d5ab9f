"""Handler rules that real servers cannot reach on demand, on a real Redis store with a scripted device check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from parley_notification.handler import DeviceStatus, HandlerLimits, NotificationHandler
from parley_notification.notices import NoticeHub
from parley_notification.store import RedisNotificationStore
from parley_runtime.errors import Code, ParleyError
from parley_runtime.redis_client import Redis, connect
from parley_stanza import Address

DEVICE = Address.parse("username:alice@birdy/1")


class ScriptedDevices:
    """A ``DeviceRegistry`` that gives one answer and records what it was asked."""

    def __init__(self, status: DeviceStatus) -> None:
        self.status = status
        self.asked: list[Address] = []

    async def device_status(self, device: Address) -> DeviceStatus:
        """The scripted answer."""
        self.asked.append(device)
        return self.status


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = connect(redis_url)
    yield redis
    await redis.aclose()


def _handler(client: Redis, devices: ScriptedDevices) -> NotificationHandler:
    store = RedisNotificationStore(client)
    return NotificationHandler(store, NoticeHub(store, max_watchers=1), devices, HandlerLimits())


async def test_a_provider_identity_no_longer_vouches_for_is_asked_to_retry(client: Redis) -> None:
    devices = ScriptedDevices(DeviceStatus.PROVIDER_UNAVAILABLE)
    with pytest.raises(ParleyError) as refused:
        await _handler(client, devices).register_push_target(DEVICE, "tok")
    assert (refused.value.code, refused.value.reason_name) == (Code.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    assert devices.asked == [DEVICE]
    assert await client.keys("push:*") == []


async def test_a_bad_token_is_refused_before_identity_is_asked(client: Redis) -> None:
    devices = ScriptedDevices(DeviceStatus.REGISTERED)
    with pytest.raises(ParleyError) as refused:
        await _handler(client, devices).register_push_target(DEVICE, "bad\ntoken")
    assert refused.value.reason_name == "INVALID_FIELD"
    assert devices.asked == []
