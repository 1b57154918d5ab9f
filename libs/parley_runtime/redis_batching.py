"""Shared pipelines for concurrent callers: the Redis commands that calls in flight issue in the same turn of the
event loop go out as one pipeline, one round trip (one per node of a cluster) instead of one each.

A busy unary service spends most of a call's Redis cost on the round trip, not in Redis: checking out a pooled
connection, a write and a read system call, a wake-up per reply. Calls that are served together reach their
Redis step together (the replies of one pipeline resume them all in the same turn). A command goes out at the end
of the turn it was issued in, or, while ``max_in_flight`` pipelines are on their way, with everything else queued
as soon as one of them returns: under load, batches grow instead of round trips multiplying.

Each command keeps its own outcome: a command that fails (a script error, a wrong type) fails only its caller, and
a pipeline that fails as a whole (Redis unreachable) fails each of its callers with that error. Commands of one
batch are independent; a caller that needs one command's answer before the next (the replay guard before the
rate limit, the rate limit before the claim) awaits it first, so its next command goes in a later batch. Nothing
is atomic across the commands of a batch, exactly as with separate calls.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from parley_runtime.redis_client import Redis, load_scripts

_MAX_BATCH = 512
"""Commands per pipeline at most: a reply buffer stays small and one caller's wait stays short."""

_Command = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class CommandBatcher:
    """Sends the commands issued in one turn of the event loop as one pipeline (no transaction).

    Made inside the event loop it serves.

    Args:
        client: the pooled client (single node or cluster: a cluster pipeline sends each node its share at once).
        max_in_flight: pipelines on their way at once; more commands wait for one of them to return (or for a
            full batch of ``_MAX_BATCH``).
    """

    def __init__(self, client: Redis, *, max_in_flight: int = 1) -> None:
        self._client = client
        # Looked up once: on Python 3.11 every asyncio.get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._max_in_flight = max_in_flight
        self._queue: list[_Command] = []
        self._context: contextvars.Context | None = None
        self._sampled = False
        self._sending: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Pipelines sent so far (for tests and benchmarks)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Runs one command in the next shared pipeline and returns its reply, parsed as the client would.

        Args:
            args: the command and its arguments (``"SET", key, value, "NX"``).
            options: redis-py's parsing options for the reply (``get=True`` for ``SET ... GET``).

        Raises:
            redis.exceptions.RedisError: the command failed, or the whole pipeline did.
        """
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue((args, options, future))
        return await future

    async def run_script(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Runs a registered script (EVALSHA) in the next shared pipeline; loads it once and runs it again when
        Redis lost its script cache (a restart, a flush, a failover).

        Raises:
            redis.exceptions.RedisError: the script failed, or the pipeline did.
        """
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.execute_command(*command)
        except NoScriptError:
            await load_scripts(self._client, [script])
            return await self.execute_command(*command)

    def _enqueue(self, command: _Command) -> None:
        first = not self._queue
        self._queue.append(command)
        # The pipeline runs in the context of a caller whose trace is sampled when there is one, so that a sampled
        # trace shows its Redis work (and unsampled ones make no Redis spans at all).
        sampled = trace.get_current_span().get_span_context().trace_flags.sampled
        if first or (sampled and not self._sampled):
            self._context = contextvars.copy_context()
            self._sampled = sampled
        if first:
            self._loop.call_soon(self._flush)
        elif len(self._queue) >= _MAX_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._queue or (len(self._sending) >= self._max_in_flight and len(self._queue) < _MAX_BATCH):
            return
        batch, self._queue = self._queue, []
        context, self._context, self._sampled = self._context, None, False
        task = self._loop.create_task(self._send(batch), context=context)
        # A reference until it ends: the loop keeps only weak ones.
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        # What queued up while the pipelines were in flight goes out now, as one.
        self._flush()

    async def _send(self, batch: list[_Command]) -> None:
        self.batches += 1
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for args, options, _ in batch:
                    pipe.execute_command(*args, **options)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            # Whatever failed the pipeline as a whole fails each of its callers.
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), reply in zip(batch, replies, strict=True):
            # A caller that gave up (its deadline passed) is not waiting any more.
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
