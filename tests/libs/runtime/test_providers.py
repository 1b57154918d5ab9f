"""Following identity's provider list at start-up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import ProviderStatus
from parley.identity.v1.identity_pb2 import Provider
from parley_runtime.config import IdentityPeerSettings, load_settings
from parley_runtime.providers import ProviderCache, RedisReplayGuard, follow_identity
from parley_runtime.redis_client import connect
from parley_runtime.telemetry import Telemetry
from parley_runtime.testing import free_port


async def test_a_start_that_never_hears_identity_times_out_and_leaves_no_watch_behind(telemetry: Telemetry) -> None:
    # Nothing listens on the port: identity never answers.
    settings = load_settings(
        IdentityPeerSettings,
        identity_target=f"127.0.0.1:{free_port()}",
        startup_timeout_s=0.3,
        internal_token="keydir:test-credential-of-the-keydir",
    )
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await follow_identity(settings, telemetry)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


def _provider(provider_id: str, status: ProviderStatus.ValueType) -> Provider:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Provider(provider_id=provider_id, status=status, signing_public_key=key)


def test_listeners_hear_which_provider_changed_or_that_everything_may_have() -> None:
    cache = ProviderCache()
    heard: list[str | None] = []
    cache.on_change(heard.append)
    cache.replace_all([_provider("birdy", ProviderStatus.PROVIDER_STATUS_APPROVED)])
    cache.put(_provider("birdy", ProviderStatus.PROVIDER_STATUS_SUSPENDED))
    assert heard == [None, "birdy"]
    record = cache.get("birdy")
    assert record is not None
    assert record.status == ProviderStatus.PROVIDER_STATUS_SUSPENDED


async def test_a_retried_replay_guard_write_is_still_the_first_use(redis_url: str) -> None:
    """redis-py re-sends a command whose connection dropped before its reply (a Redis restart); the replay guard's
    write must count that as the one first use, not refuse the caller's fresh assertion as replayed (found by the
    fault soak: TOKEN_REPLAYED refusals after Redis restarts)."""
    client = connect(redis_url)
    real_set = client.set

    async def set_twice(*args: Any, **kwargs: Any) -> Any:
        await real_set(*args, **kwargs)  # executed, but its reply is lost with the connection
        return await real_set(*args, **kwargs)  # the retry

    guard = RedisReplayGuard(client)
    client.set = set_twice  # type: ignore[method-assign]
    assert await guard.first_use("birdy", "jti-retried-0001", time.time() + 60)
    client.set = real_set  # type: ignore[method-assign]
    # A real second use is still a replay.
    assert not await guard.first_use("birdy", "jti-retried-0001", time.time() + 60)
    await client.aclose()
