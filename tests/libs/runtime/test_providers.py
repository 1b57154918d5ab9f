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
from parley_runtime.redis_batching import CommandBatcher
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


class _CountedPipelines:
    """Counts the pipelines a client executes, and can make each execute twice (its reply lost once, as a dropped
    connection makes redis-py send a whole pipeline again)."""

    def __init__(self, client: Any, *, twice: bool = False) -> None:
        self.executed: list[int] = []
        real_pipeline = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            pipe = real_pipeline(*args, **kwargs)
            real_execute = pipe.execute

            async def execute(*e_args: Any, **e_kwargs: Any) -> Any:
                self.executed.append(len(pipe.command_stack))
                if twice:
                    stack = list(pipe.command_stack)
                    await real_execute(*e_args, **e_kwargs)  # executed, but its replies are lost
                    pipe.command_stack = stack
                return await real_execute(*e_args, **e_kwargs)

            pipe.execute = execute
            return pipe

        client.pipeline = pipeline


async def test_concurrent_assertions_are_recorded_in_shared_round_trips_each_with_its_own_verdict(
    redis_url: str,
) -> None:
    client = connect(redis_url)
    counted = _CountedPipelines(client)
    guard = RedisReplayGuard(client, CommandBatcher(client))
    expires = time.time() + 60
    await guard.first_use("birdy", "jti-used-before-01", expires)
    ids = [f"jti-concurrent-{n:04d}" for n in range(40)]
    # Each id asked for twice at once, and one used before: exactly one first use per fresh id.
    verdicts = await asyncio.gather(
        *(guard.first_use("birdy", jti, expires) for jti in [*ids, *ids, "jti-used-before-01"])
    )
    assert verdicts[: len(ids)].count(True) + verdicts[len(ids) : 2 * len(ids)].count(True) == len(ids)
    assert all(a != b for a, b in zip(verdicts[: len(ids)], verdicts[len(ids) : 2 * len(ids)], strict=True))
    assert verdicts[-1] is False
    # 81 records in far fewer round trips than 81 (the first goes alone, the rest wait for it and go together).
    assert sum(counted.executed) >= 80
    assert len(counted.executed) <= 3
    # Every later use of any of them is a replay.
    assert not any(await asyncio.gather(*(guard.first_use("birdy", jti, expires) for jti in ids)))
    await client.aclose()


async def test_a_retried_shared_replay_guard_pipeline_is_still_each_callers_first_use(redis_url: str) -> None:
    """A pipeline redis-py sends again after a lost connection ran every record twice; each caller still finds its
    own nonce, so none of them is refused as a replay of itself."""
    client = connect(redis_url)
    guard = RedisReplayGuard(client, CommandBatcher(client))
    blocker = asyncio.create_task(guard.first_use("birdy", "jti-blocker-0001", time.time() + 60))
    await asyncio.sleep(0)
    counted = _CountedPipelines(client, twice=True)
    ids = [f"jti-retried-pipe-{n:03d}" for n in range(10)]
    verdicts = await asyncio.gather(*(guard.first_use("birdy", jti, time.time() + 60) for jti in ids))
    assert await blocker
    assert counted.executed, "the concurrent records went in a pipeline"
    assert all(verdicts)
    assert not any(await asyncio.gather(*(guard.first_use("birdy", jti, time.time() + 60) for jti in ids)))
    await client.aclose()
