"""One device's ``Connect`` stream: backlog first, then live delivery, with acks, sends and keepalives.

Two coroutines serve a stream. The generator the servicer iterates writes the server's frames: replies the reader
queued (send results, pongs), then mailbox entries, never more than ``window`` deliveries unacknowledged, so a slow
consumer holds at most ``window`` stanzas of relay memory. The reader task handles client frames; it waits when
``_REPLIES`` replies are unsent, so a client that sends without reading cannot grow relay memory either. Both meet
at the device's listener: whatever gives the generator work (a hint, a reply, an ack opening the window) sets its
wake-up flag. Unacknowledged stanzas stay in the mailbox: after a reconnect, to this or any replica, they are
delivered again.

The stream has no call-long span (see ``ServiceDefinition.untraced_streams``); each frame's work gets its own span,
parented to the trace context the client opened the stream with.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace

from parley.relay.v1 import relay_pb2 as pb
from parley_relay.handler import RelayHandler
from parley_relay.hub import Listener, MailboxHub
from parley_relay.store import StoredStanza
from parley_runtime.background import cancel_and_wait
from parley_runtime.errors import Code, ParleyError
from parley_stanza import Address

_DELIVERY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_REPLIES = 32
_tracer = trace.get_tracer("parley.relay")


@dataclass(frozen=True)
class StreamSettings:
    """Bounds and timings of device streams."""

    window: int = 256
    batch: int = 64
    max_batch_stanzas: int = 100
    poll_interval_s: float = 30.0


class DeviceStream:
    """The state of one open stream.

    Args:
        handler: relay rules.
        hub: this replica's mailbox hints.
        device: the authenticated device.
        settings: bounds and timings.
        refusal: re-checks the device's provider (kill switch, interop policy), given the device; a ``ParleyError``
            ends the stream with it.
        trace_context: the client's trace context, parent of the frames' spans (None: the client sent none).
    """

    # Slots: one instance lives per open stream, and an instance dict of these attributes is several times larger.
    __slots__ = (
        "_device",
        "_device_id",
        "_ended",
        "_handler",
        "_hub",
        "_in_flight",
        "_refusal",
        "_replies",
        "_reply_room",
        "_settings",
        "_store",
        "_trace_context",
        "_user",
    )

    def __init__(
        self,
        handler: RelayHandler,
        hub: MailboxHub,
        device: Address,
        settings: StreamSettings,
        refusal: Callable[[Address], ParleyError | None],
        trace_context: otel_context.Context | None = None,
    ) -> None:
        assert device.device is not None
        self._handler = handler
        self._store = handler.store
        self._hub = hub
        self._device = device
        self._user = str(device.user)
        self._device_id = device.device
        self._settings = settings
        self._refusal = refusal
        self._trace_context = trace_context
        # A list and a lazily made event rather than a deque and an Event: an idle stream has neither in use,
        # and at most _REPLIES replies ever wait.
        self._replies: list[pb.ConnectResponse] = []
        self._reply_room: asyncio.Event | None = None
        self._in_flight: dict[str, StoredStanza] = {}
        # Set once the client stopped sending: None after a clean half-close, else what broke the reader.
        self._ended: tuple[BaseException | None] | None = None

    async def run(self, requests: AsyncIterator[pb.ConnectRequest]) -> AsyncIterator[pb.ConnectResponse]:
        """Yields the server's frames until the client closes the stream."""
        # One generator for the whole stream (each lives, with its frame, as long as the stream).
        listener = await self._hub.register(self._user, self._device_id)
        reader = asyncio.create_task(self._read(requests, listener), name="stream-reader")
        try:
            settings = self._settings
            after = "0-0"
            caught_up = False
            backlog: int | None = 0
            while True:
                listener.wake.clear()
                while self._replies:
                    yield self._replies.pop(0)
                    if self._reply_room is not None:
                        self._reply_room.set()
                if self._ended is not None:
                    self._raise_what_broke_the_reader()
                    return
                self._check_allowed()
                for stanza in listener.take_ephemeral():
                    yield pb.ConnectResponse(deliveries=pb.Deliveries(deliveries=[pb.Delivery(stanza=stanza)]))
                read = await self._read_mailbox(listener, after, caught_up=caught_up)
                if read is not None:
                    entries, caught_up = read
                    if entries:
                        after = entries[-1].delivery_id
                        if backlog is not None:
                            backlog += len(entries)
                        yield pb.ConnectResponse(deliveries=_deliveries(entries))
                        if not caught_up:
                            continue
                    if backlog is not None:
                        yield pb.ConnectResponse(queue_drained=pb.QueueDrained(delivered=backlog))
                        backlog = None
                # Hints, replies, acks and provider changes wake the stream; the poll is only a safety net.
                if not await listener.wake.wait(settings.poll_interval_s):
                    listener.hinted = True  # a hint may have been lost
        finally:
            await cancel_and_wait([reader])
            await self._hub.unregister(self._user, self._device_id, listener)

    async def _read_mailbox(
        self, listener: Listener, after: str, *, caught_up: bool
    ) -> tuple[list[StoredStanza], bool] | None:
        """The mailbox's next entries after ``after`` (now in flight) and whether they are all there is, or None
        when the window is full or the stream read everything and no hint came since."""
        free = self._settings.window - len(self._in_flight)
        # A read that came back short has read everything: the next one waits for a hint (an ack or a reply wakes
        # the stream too, and re-reading then found nothing: two reads in three on a busy stream).
        if free <= 0 or (caught_up and not listener.hinted):
            return None
        listener.hinted = False
        wanted = min(self._settings.batch, free)
        with self._span("deliver"):
            entries = await self._store.read(self._user, self._device_id, after, wanted)
        for entry in entries:
            self._in_flight[entry.delivery_id] = entry
        return entries, len(entries) < wanted

    def _raise_what_broke_the_reader(self) -> None:
        """Raises what ended the client's side of the stream, unless it was a clean half-close."""
        assert self._ended is not None
        if self._ended[0] is not None:
            raise self._ended[0]

    async def _read(self, requests: AsyncIterator[pb.ConnectRequest], listener: Listener) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("frame")
                if kind == "ack":
                    with self._span("ack"):
                        await self._acknowledge(list(request.ack.delivery_ids))
                    listener.wake.set()  # the window may have room again
                elif kind == "send":
                    self._check_allowed()  # the provider may have been suspended since the stream opened
                    with self._span("send"):
                        results = await self._send(request.send)
                    await self._reply(pb.ConnectResponse(send_results=results), listener)
                elif kind == "ping":
                    await self._reply(pb.ConnectResponse(pong=pb.Pong(nonce=request.ping.nonce)), listener)
        except Exception as exc:
            self._ended = (exc,)
        else:
            self._ended = (None,)
        listener.wake.set()

    async def _reply(self, frame: pb.ConnectResponse, listener: Listener) -> None:
        while len(self._replies) >= _REPLIES:
            if self._reply_room is None:
                self._reply_room = asyncio.Event()
            self._reply_room.clear()
            await self._reply_room.wait()
        self._replies.append(frame)
        listener.wake.set()

    def _check_allowed(self) -> None:
        if (refusal := self._refusal(self._device)) is not None:
            raise refusal

    def _span(self, frame: str) -> contextlib.AbstractContextManager[trace.Span]:
        return _tracer.start_as_current_span(f"relay.Connect/{frame}", context=self._trace_context)

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

    async def _send(self, batch: pb.SendBatch) -> pb.SendResults:
        results = pb.SendResults(batch_id=batch.batch_id)
        if len(batch.stanzas) > self._settings.max_batch_stanzas:
            for _ in batch.stanzas:
                results.results.add(
                    code=int(Code.INVALID_ARGUMENT),
                    reason="BATCH_TOO_LARGE",
                    message=f"at most {self._settings.max_batch_stanzas} stanzas per batch",
                    metadata={"limit": str(self._settings.max_batch_stanzas)},
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


def _deliveries(entries: list[StoredStanza]) -> pb.Deliveries:
    return pb.Deliveries(
        deliveries=[
            pb.Delivery(delivery_id=entry.delivery_id, stanza=entry.stanza, server_timestamp_ms=entry.ts)
            for entry in entries
        ]
    )
