"""Token-bucket rate limits in Redis, shared by every replica (one atomic script per check)."""

from __future__ import annotations

from dataclasses import dataclass

from parley_runtime import redis_keys
from parley_runtime.errors import rate_limited
from parley_runtime.redis_client import Redis, load_script


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
    """Checks token buckets; see ``lua/token_bucket.lua``."""

    def __init__(self, client: Redis) -> None:
        self._script = load_script(client, "parley_runtime", "token_bucket")

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
