"""Relay state: durable per-device mailboxes (Redis streams), acceptance markers, presence, mailbox hints.

Every copy of a stanza for one user is written by one atomic script (``lua/store_stanzas.lua``) together with the
marker that makes a resend store nothing, so a relay dying at any point loses nothing and duplicates nothing. A
run of stanzas from one device to the same devices of one user (most of a ``SendBatch`` frame) is one script call.
Unary ``Send`` calls each store one stanza; those storing at the same moment share one pipeline (``store_shared``),
each with its own script calls, so each call's outcome is its own. A device's mailbox entry stays until that device
acknowledges it or the retention passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from redis.exceptions import NoScriptError

from parley_runtime import redis_keys
from parley_runtime.batching import Coalescer
from parley_runtime.redis_client import Redis, is_cluster, load_script, queue_script

_PRESENCE_CHUNK = 1000
"""Presence marks per pipeline: a replica with 100k streams refreshes in bounded requests, not one huge one."""

EPHEMERAL_PREFIX = b"e"
"""A mailbox-channel message starting with this byte carries an ephemeral stanza (typing) after it."""


class StoredStanza(NamedTuple):
    """One mailbox entry.

    Attributes:
        delivery_id: the stream entry id; what the device acknowledges.
        stanza: the stanza bytes.
        ts: acceptance time, Unix ms.
        message_id: the stanza's id.
        sender: the sending device's address.
        receipt_requested: whether the sender asked for receipts.
    """

    delivery_id: str
    stanza: bytes
    ts: int
    message_id: str
    sender: str
    receipt_requested: bool


class StoreResult(NamedTuple):
    """Outcome of storing one stanza for one user's devices."""

    duplicate: bool
    ts: int
    offline: tuple[tuple[int, int], ...] = ()
    """(device id, mailbox length) of the target devices without a live stream."""
    delivery_ids: tuple[str, ...] = ()
    """The stored copies' entry ids, in the request's device order (empty unless stored)."""
    full: tuple[int, int] | None = None
    """(device id, mailbox length) of a target device at the backlog cap: then nothing was stored."""


class StoreRequest(NamedTuple):
    """One stanza to store once for some devices of one user (idempotent per sender and id)."""

    user: str
    device_ids: tuple[int, ...]
    stanza: bytes
    ts: int
    message_id: str
    sender: str
    receipt_requested: bool
    retention_ms: int
    backlog_cap: int = 0
    """Refuse (store nothing) when a target mailbox holds this many entries; 0: no cap."""


class MailboxStore(Protocol):
    """Storage of the relay."""

    async def store_many(self, requests: Sequence[StoreRequest]) -> list[StoreResult]:
        """Stores each request's stanza for its devices, in order, in one round trip; one result per request."""

    async def store_shared(self, requests: Sequence[StoreRequest]) -> list[StoreResult]:
        """As :meth:`store_many`, in a round trip shared with the concurrent callers of this method (those asking
        while one is in flight go together in the next): for unary calls, which each store one stanza."""

    async def read(self, user: str, device_id: int, after: str, count: int) -> list[StoredStanza]:
        """Up to ``count`` entries after delivery id ``after`` ("0-0" for the start), oldest first."""

    async def acknowledge(self, user: str, device_id: int, delivery_ids: Sequence[str]) -> int:
        """Drops acknowledged entries; returns how many existed."""

    async def withdraw(self, request: StoreRequest, result: StoreResult) -> None:
        """Takes back the copies a stored request wrote, and its acceptance marker (the stanza was refused after
        all: its recipient's mailbox was full), so that a retry is stored afresh."""

    async def publish_ephemeral(self, user: str, device_ids: Sequence[int], stanza: bytes) -> None:
        """Hands a stanza that is never stored (typing) to whichever replica streams to each device."""

    async def mark_present(self, devices: Sequence[tuple[str, int]], replica: str, ttl_ms: int) -> None:
        """Records that ``replica`` holds a stream to each (user, device id), for ``ttl_ms``."""

    async def mark_absent(self, user: str, device_id: int, replica: str) -> None:
        """Clears the device's presence if ``replica`` still holds it."""

    async def pending(self, user: str, device_id: int) -> int:
        """Entries waiting in the device's mailbox."""


class RedisMailboxStore:
    """:class:`MailboxStore` on Redis streams."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._store = load_script(client, "parley_relay", "store_stanzas")
        self._shared = Coalescer(self._store_callers, name="mailbox-stores")
        # On a cluster, a hint goes to the shard of its channel's slot (the user's) instead of to every node.
        self._sharded = is_cluster(client)

    async def store_many(self, requests: Sequence[StoreRequest]) -> list[StoreResult]:
        outcome = (await self._store_callers([requests]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def store_shared(self, requests: Sequence[StoreRequest]) -> list[StoreResult]:
        return await self._shared.submit(requests)

    async def _store_callers(
        self, callers: Sequence[Sequence[StoreRequest]]
    ) -> list[list[StoreResult] | BaseException]:
        """Stores each caller's requests, in order, all in one pipeline; per caller its results, or the error one of
        its script calls met (the others' results stand: each caller's stanzas are script calls of its own)."""
        runs = [_runs(requests) for requests in callers]
        calls = [[_store_call(run) for run in caller_runs] for caller_runs in runs]
        # A hint only says "read your mailbox", so one per mailbox, after all the copies, serves the whole pipeline.
        hints = list(
            dict.fromkeys(
                redis_keys.mailbox_channel(r.user, d) for requests in callers for r in requests for d in r.device_ids
            )
        )
        # EVALSHA straight on the pipeline: redis-py's script objects would add a SCRIPT EXISTS round trip to
        # every pipeline. After a Redis restart or SCRIPT FLUSH the script is gone and every call failed having
        # done nothing; they are then run again one by one, in order, which loads it, and hinted again.
        async with self._client.pipeline(transaction=False) as pipe:
            for caller_calls in calls:
                for keys, args in caller_calls:
                    queue_script(pipe, self._store, keys, args)
            for channel in hints:
                self._hint(pipe, channel, b"")
            raw: list[Any] = await pipe.execute(raise_on_error=False)
        answers = iter(raw)
        outcomes: list[list[StoreResult] | BaseException] = []
        reloaded = False
        for caller_runs, caller_calls in zip(runs, calls, strict=True):
            results: list[StoreResult] = []
            failure: BaseException | None = None
            for run, (keys, args) in zip(caller_runs, caller_calls, strict=True):
                replies = next(answers)
                if failure is not None:
                    continue
                if isinstance(replies, NoScriptError):
                    replies = await self._store(keys=keys, args=args)
                    reloaded = True
                elif isinstance(replies, Exception):
                    failure = replies
                    continue
                results += [_store_result(request, reply) for request, reply in zip(run, replies, strict=True)]
            outcomes.append(failure if failure is not None else results)
        if reloaded:
            async with self._client.pipeline(transaction=False) as pipe:
                for channel in hints:
                    self._hint(pipe, channel, b"")
                await pipe.execute()
        return outcomes

    async def read(self, user: str, device_id: int, after: str, count: int) -> list[StoredStanza]:
        start = "-" if after == "0-0" else f"({after}"
        entries: Any = await self._client.xrange(redis_keys.mailbox(user, device_id), start, "+", count)
        return [
            StoredStanza(
                delivery_id=entry_id.decode(),
                stanza=fields[b"s"],
                ts=int(fields[b"t"]),
                message_id=fields[b"m"].decode(),
                sender=fields[b"f"].decode(),
                receipt_requested=fields[b"r"] == b"1",
            )
            for entry_id, fields in entries
        ]

    async def withdraw(self, request: StoreRequest, result: StoreResult) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for device_id, delivery_id in zip(request.device_ids, result.delivery_ids, strict=True):
                pipe.xdel(redis_keys.mailbox(request.user, device_id), delivery_id)
            pipe.delete(redis_keys.accepted(request.user, request.sender, request.message_id))
            await pipe.execute()

    async def acknowledge(self, user: str, device_id: int, delivery_ids: Sequence[str]) -> int:
        if not delivery_ids:
            return 0
        return int(await self._client.xdel(redis_keys.mailbox(user, device_id), *delivery_ids))

    async def publish_ephemeral(self, user: str, device_ids: Sequence[int], stanza: bytes) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for device in device_ids:
                self._hint(pipe, redis_keys.mailbox_channel(user, device), EPHEMERAL_PREFIX + stanza)
            await pipe.execute()

    async def mark_present(self, devices: Sequence[tuple[str, int]], replica: str, ttl_ms: int) -> None:
        for start in range(0, len(devices), _PRESENCE_CHUNK):
            async with self._client.pipeline(transaction=False) as pipe:
                for user, device_id in devices[start : start + _PRESENCE_CHUNK]:
                    pipe.set(redis_keys.presence(user, device_id), replica, px=ttl_ms)
                await pipe.execute()

    async def mark_absent(self, user: str, device_id: int, replica: str) -> None:
        key = redis_keys.presence(user, device_id)
        # Only our own mark: the device may already stream from another replica.
        if await self._client.get(key) == replica.encode():
            await self._client.delete(key)

    async def pending(self, user: str, device_id: int) -> int:
        return int(await self._client.xlen(redis_keys.mailbox(user, device_id)))

    def _hint(self, pipe: Any, channel: str, data: bytes) -> None:
        """Queues a message on a mailbox channel in ``pipe``: sharded on a cluster, as the hub subscribes."""
        if self._sharded:
            pipe.spublish(channel, data)
        else:
            pipe.publish(channel, data)


def _runs(requests: Sequence[StoreRequest]) -> list[list[StoreRequest]]:
    """``requests`` cut into runs of consecutive ones that one script call can store: same user, devices, sender,
    retention and cap (the stanzas of one frame to one recipient)."""
    runs: list[list[StoreRequest]] = []
    for request in requests:
        if runs and _same_call(runs[-1][0], request):
            runs[-1].append(request)
        else:
            runs.append([request])
    return runs


def _same_call(first: StoreRequest, other: StoreRequest) -> bool:
    return (
        first.user == other.user
        and first.device_ids == other.device_ids
        and first.sender == other.sender
        and first.retention_ms == other.retention_ms
        and first.backlog_cap == other.backlog_cap
    )


def _store_call(run: Sequence[StoreRequest]) -> tuple[list[str], list[bytes | str | int]]:
    """KEYS and ARGV of ``store_stanzas.lua`` for one run of requests (see :func:`_runs`)."""
    first = run[0]
    user, device_ids = first.user, first.device_ids
    keys = [redis_keys.mailbox(user, device) for device in device_ids]
    keys += [redis_keys.presence(user, device) for device in device_ids]
    keys += [redis_keys.accepted(user, first.sender, request.message_id) for request in run]
    args: list[bytes | str | int] = [len(device_ids), first.retention_ms, first.backlog_cap, first.sender]
    for request in run:
        args += (request.stanza, request.ts, request.message_id, "1" if request.receipt_requested else "0")
    return keys, args


def _store_result(request: StoreRequest, result: list[Any]) -> StoreResult:
    """The script's answer for one request as a :class:`StoreResult`."""
    outcome, ts = int(result[0]), int(result[1])
    device_ids = request.device_ids
    if outcome == 0:
        return StoreResult(duplicate=True, ts=ts)
    if outcome == 2:
        return StoreResult(duplicate=False, ts=ts, full=(device_ids[int(result[2]) - 1], int(result[3])))
    n = len(device_ids)
    ids = tuple(entry.decode() for entry in result[2 : 2 + n])
    offline = tuple((device_ids[int(result[i]) - 1], int(result[i + 1])) for i in range(2 + n, len(result), 2))
    return StoreResult(duplicate=False, ts=ts, offline=offline, delivery_ids=ids)
