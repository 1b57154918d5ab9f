"""One device's ``Connect`` stream: backlog first, then live delivery, with acks, sends and keepalives.

Three tasks share a bounded outbox of server frames: the pusher reads the mailbox (never more than ``window``
deliveries unacknowledged, so a slow consumer holds at most ``window`` stanzas of relay memory), the reader
handles client frames, and the generator the servicer iterates writes the outbox to the wire. Unacknowledged
stanzas stay in the mailbox: after a reconnect, to this or any replica, they are delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from parley.common.v1.common_pb2 import ErrorReason
from parley.relay.v1 import relay_pb2 as pb
from parley_relay.handler import RelayHandler
from parley_relay.hub import Listener, MailboxHub
from parley_relay.store import StoredStanza
from parley_runtime.errors import Code, ParleyError, permission_denied
from parley_stanza import Address

_DELIVERY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_OUTBOX = 32


@dataclass(frozen=True)
class StreamSettings:
    """Bounds and timings of device streams."""

    window: int = 256
    batch: int = 64
    max_batch_stanzas: int = 100
    poll_interval_s: float = 2.0
    presence_ttl_ms: int = 30_000
    replica: str = "relay"


@dataclass(frozen=True)
class _Closed:
    error: BaseException | None


class DeviceStream:
    """The state of one open stream.

    Args:
        handler: relay rules.
        hub: this replica's mailbox hints.
        device: the authenticated device.
        settings: bounds and timings.
        allowed: re-checks the device's provider (kill switch); False ends the stream.
    """

    def __init__(
        self,
        handler: RelayHandler,
        hub: MailboxHub,
        device: Address,
        settings: StreamSettings,
        allowed: Callable[[], bool],
    ) -> None:
        assert device.device is not None
        self._handler = handler
        self._store = handler.store
        self._hub = hub
        self._device = device
        self._user = str(device.user)
        self._device_id = device.device
        self._settings = settings
        self._allowed = allowed
        self._outbox: asyncio.Queue[pb.ConnectResponse | _Closed] = asyncio.Queue(_OUTBOX)
        self._in_flight: dict[str, StoredStanza] = {}
        self._window_open = asyncio.Event()
        self._window_open.set()

    async def run(self, requests: AsyncIterator[pb.ConnectRequest]) -> AsyncIterator[pb.ConnectResponse]:
        """Yields the server's frames until the client closes the stream."""
        listener = await self._hub.register(self._user, self._device_id)
        await self._store.mark_present(
            self._user, self._device_id, self._settings.replica, self._settings.presence_ttl_ms
        )
        tasks = [
            asyncio.create_task(self._read(requests), name="stream-reader"),
            asyncio.create_task(self._push(listener), name="stream-pusher"),
            asyncio.create_task(self._keep_present(), name="stream-presence"),
        ]
        try:
            while True:
                frame = await self._outbox.get()
                if isinstance(frame, _Closed):
                    if frame.error is not None:
                        raise frame.error
                    return
                yield frame
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._hub.unregister(self._user, self._device_id, listener)
            with contextlib.suppress(Exception):
                await self._store.mark_absent(self._user, self._device_id, self._settings.replica)

    async def _read(self, requests: AsyncIterator[pb.ConnectRequest]) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("frame")
                if kind == "ack":
                    await self._acknowledge(list(request.ack.delivery_ids))
                elif kind == "send":
                    await self._outbox.put(pb.ConnectResponse(send_results=await self._send(request.send)))
                elif kind == "ping":
                    await self._outbox.put(pb.ConnectResponse(pong=pb.Pong(nonce=request.ping.nonce)))
        except Exception as exc:
            await self._outbox.put(_Closed(exc))
            return
        await self._outbox.put(_Closed(None))

    async def _acknowledge(self, delivery_ids: list[str]) -> None:
        known, unknown = [], []
        for delivery_id in delivery_ids:
            if not _DELIVERY_ID.fullmatch(delivery_id):
                continue  # not an id this relay hands out; acknowledging it cannot mean anything
            entry = self._in_flight.pop(delivery_id, None)
            if entry is None:
                unknown.append(delivery_id)
            else:
                known.append(entry)
        if known:
            await self._handler.acknowledge(self._device, known)
        if unknown:
            # Delivered on an earlier stream: drop them, without receipts (those went with the first ack).
            await self._store.acknowledge(self._user, self._device_id, unknown)
        self._window_open.set()

    async def _send(self, batch: pb.SendBatch) -> pb.SendResults:
        results = pb.SendResults(batch_id=batch.batch_id)
        if len(batch.stanzas) > self._settings.max_batch_stanzas:
            for _ in batch.stanzas:
                results.results.add(
                    code=int(Code.INVALID_ARGUMENT),
                    reason="BATCH_TOO_LARGE",
                    message=f"at most {self._settings.max_batch_stanzas} stanzas per batch",
                )
            return results
        for outcome in await self._handler.send_batch(self._device, batch.stanzas):
            if isinstance(outcome, ParleyError):
                error = outcome
                results.results.add(
                    code=int(error.code), reason=error.reason_name, message=error.message, metadata=error.metadata
                )
            else:
                results.results.add(
                    message_id=outcome.message_id, server_timestamp_ms=outcome.ts, duplicate=outcome.duplicate
                )
        return results

    async def _push(self, listener: Listener) -> None:
        settings = self._settings
        after = "0-0"
        backlog: int | None = 0
        try:
            while True:
                listener.wake.clear()
                if not self._allowed():
                    raise permission_denied(
                        ErrorReason.ERROR_REASON_PROVIDER_SUSPENDED, "the provider was suspended; stream closed"
                    )
                await self._push_ephemeral(listener)
                free = settings.window - len(self._in_flight)
                if free <= 0:
                    self._window_open.clear()
                    await self._wait(self._window_open)
                    continue
                entries = await self._store.read(self._user, self._device_id, after, min(settings.batch, free))
                if entries:
                    after = entries[-1].delivery_id
                    for entry in entries:
                        self._in_flight[entry.delivery_id] = entry
                    if backlog is not None:
                        backlog += len(entries)
                    await self._outbox.put(pb.ConnectResponse(deliveries=_deliveries(entries)))
                    continue
                if backlog is not None:
                    await self._outbox.put(pb.ConnectResponse(queue_drained=pb.QueueDrained(delivered=backlog)))
                    backlog = None
                await self._wait(listener.wake)
        except Exception as exc:
            await self._outbox.put(_Closed(exc))

    async def _push_ephemeral(self, listener: Listener) -> None:
        while not listener.ephemeral.empty():
            stanza = listener.ephemeral.get_nowait()
            await self._outbox.put(
                pb.ConnectResponse(deliveries=pb.Deliveries(deliveries=[pb.Delivery(stanza=stanza)]))
            )

    async def _wait(self, event: asyncio.Event) -> None:
        # The poll interval bounds how long a lost hint or a suspension can go unnoticed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.poll_interval_s):
                await event.wait()

    async def _keep_present(self) -> None:
        interval = self._settings.presence_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            await self._store.mark_present(
                self._user, self._device_id, self._settings.replica, self._settings.presence_ttl_ms
            )


def _deliveries(entries: list[StoredStanza]) -> pb.Deliveries:
    return pb.Deliveries(
        deliveries=[
            pb.Delivery(delivery_id=entry.delivery_id, stanza=entry.stanza, server_timestamp_ms=entry.ts)
            for entry in entries
        ]
    )
