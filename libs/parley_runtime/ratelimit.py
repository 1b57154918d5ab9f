"""Token-bucket rate limits in Redis, shared by every replica (one atomic script per check)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from parley_runtime import redis_keys
from parley_runtime.errors import rate_limited
from parley_runtime.redis_batching import CommandBatcher
from parley_runtime.redis_client import Redis, load_script, load_scripts, queue_script


@dataclass(frozen=True)
class Limit:
    """A bucket's shape.

    Attributes:
        name: bucket name, part of the key (e.g. ``"lookup"``).
        capacity: burst size in tokens.
        per_second: refill rate in tokens per second.
    """

    name: str
    capacity: float
    per_second: float


class RateLimiter:
    """Checks token buckets; see ``lua/token_bucket.lua`` and ``lua/token_buckets.lua``.

    Args:
        client: the Redis client.
        batcher: when given, :meth:`take_together` shares its pipelines with concurrent calls.
    """

    def __init__(self, client: Redis, batcher: CommandBatcher | None = None) -> None:
        self._client = client
        self._batcher = batcher
        self._script = load_script(client, "parley_runtime", "token_bucket")
        self._together = load_script(client, "parley_runtime", "token_buckets")

    async def try_take(self, subject: str, limit: Limit, cost: float = 1.0) -> int:
        """Takes ``cost`` tokens from ``subject``'s bucket.

        Returns:
            0 when allowed, otherwise the milliseconds until the call could pass.
        """
        allowed, retry_after_ms = await self._script(
            keys=[redis_keys.rate_limit(subject, limit.name)],
            args=[limit.capacity, limit.per_second, cost],
        )
        return 0 if allowed else int(retry_after_ms)

    async def take(self, subject: str, limit: Limit, cost: float = 1.0) -> None:
        """Like :meth:`try_take` but raises RESOURCE_EXHAUSTED / RATE_LIMITED when refused."""
        retry_after_ms = await self.try_take(subject, limit, cost)
        if retry_after_ms:
            raise rate_limited(retry_after_ms, limit.name)

    async def take_all(self, checks: Sequence[tuple[str, Limit]]) -> None:
        """Takes one token from each (subject, limit) bucket in one round trip.

        Every bucket is charged, even when an earlier one refuses (they are checked together, not in turn).

        Raises:
            ParleyError: RESOURCE_EXHAUSTED / RATE_LIMITED for the first bucket that refused, with ``limit`` =
                that bucket's name and the longest ``retry_after_ms`` of the refusals.
        """
        calls = [
            ([redis_keys.rate_limit(subject, limit.name)], [limit.capacity, limit.per_second, 1.0])
            for subject, limit in checks
        ]
        answers = await self._run(calls)
        # After a restart, flush or failover the script is gone and those calls did nothing: load it, run them again.
        missing = [index for index, answer in enumerate(answers) if isinstance(answer, NoScriptError)]
        if missing:
            await load_scripts(self._client, [self._script])
            for index, answer in zip(missing, await self._run([calls[i] for i in missing]), strict=True):
                answers[index] = answer
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        refused = [
            (limit, int(wait)) for (_, limit), (allowed, wait) in zip(checks, answers, strict=True) if not allowed
        ]
        if refused:
            raise rate_limited(max(wait for _, wait in refused), refused[0][0].name)

    async def take_together(self, group: str, checks: Sequence[tuple[str, Limit]]) -> None:
        """Takes one token from each (subject, limit) bucket, or from none when any bucket is short: a call refused
        by one limit is not charged to the others. The buckets live in ``group``'s slot
        (:func:`~parley_runtime.redis_keys.grouped_rate_limit`), so one script takes them atomically.

        Raises:
            ParleyError: RESOURCE_EXHAUSTED / RATE_LIMITED, with ``limit`` = the first refusing bucket's name and
                the longest ``retry_after_ms`` of the refusals.
        """
        keys = [redis_keys.grouped_rate_limit(group, subject, limit.name) for subject, limit in checks]
        args = [value for _, limit in checks for value in (limit.capacity, limit.per_second)]
        if self._batcher is not None:
            refused, retry_after_ms = await self._batcher.run_script(self._together, keys, args)
        else:
            refused, retry_after_ms = await self._together(keys=keys, args=args)
        if refused:
            raise rate_limited(int(retry_after_ms), checks[int(refused) - 1][1].name)

    async def _run(self, calls: Sequence[tuple[list[str], list[float]]]) -> list[Any]:
        """EVALSHAs the bucket script once per call in one pipeline; errors come back in place of the answers."""
        async with self._client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                queue_script(pipe, self._script, keys, args)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        return answers
