"""A device's connection to the relay: send stanzas, receive deliveries, acknowledge them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from parley.relay.v1 import relay_pb2 as pb
from parley_sdk._provider import Metadata
from parley_stanza import Stanza, decode

_QUEUE = 1024


class StreamClosedError(ConnectionError):
    """The stream ended (relay restart, network loss) while the client wrote to it."""


@dataclass(frozen=True)
class Incoming:
    """One stanza pushed to this device.

    Attributes:
        delivery_id: what to acknowledge; empty for ephemeral stanzas (typing), which need no acknowledgement.
        stanza: the parsed stanza.
        server_timestamp_ms: when the relay accepted it.
    """

    delivery_id: str
    stanza: Stanza
    server_timestamp_ms: int


class RelayConnection:
    """The device's ``Connect`` stream. Use as an async context manager.

    Deliveries arrive in order; acknowledge each with :meth:`ack` once it is processed (persisted), never
    before: unacknowledged stanzas are delivered again on the next connection. :meth:`send` and :meth:`ack` may
    be called from many tasks at once: writes take turns on the stream (gRPC allows one write in flight per
    call), and sends are pipelined, each waiting only for its own results.

    Args:
        stub: relay stub.
        metadata: the device's call credentials.
    """

    def __init__(self, stub: Any, metadata: Metadata) -> None:
        self._stub = stub
        self._metadata = metadata
        self._call: Any = None
        self._incoming: asyncio.Queue[Incoming | BaseException | None] = asyncio.Queue(_QUEUE)
        self._results: dict[int, asyncio.Future[pb.SendResults]] = {}
        self._batch_ids = itertools.count(1)
        self._writing = asyncio.Lock()
        self.drained = asyncio.Event()
        """Set once the backlog queued before the connection has been delivered."""
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RelayConnection:
        self._call = self._stub.Connect(metadata=self._metadata)
        self._reader = asyncio.create_task(self._read(), name="relay-connection")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, grace: float = 5.0) -> None:
        """Ends the stream (unacknowledged deliveries stay queued at the relay).

        Half-closes first and waits up to ``grace`` seconds for the relay to end the stream, so that the
        acknowledgements already written are processed rather than cut off.
        """
        if self._call is not None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await self._call.done_writing()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(self._reader)
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        try:
            async for frame in self._call:
                kind = frame.WhichOneof("frame")
                if kind == "deliveries":
                    for delivery in frame.deliveries.deliveries:
                        await self._incoming.put(
                            Incoming(delivery.delivery_id, decode(delivery.stanza), delivery.server_timestamp_ms)
                        )
                elif kind == "send_results":
                    future = self._results.pop(frame.send_results.batch_id, None)
                    if future is not None and not future.done():
                        future.set_result(frame.send_results)
                elif kind == "queue_drained":
                    self.drained.set()
            await self._incoming.put(None)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                await self._incoming.put(error)
                for future in self._results.values():
                    if not future.done():
                        future.set_exception(error)

    async def receive(self) -> Incoming:
        """The next delivery (bound the wait with ``asyncio.timeout``).

        Raises:
            EOFError: the relay closed the stream.
            grpc.aio.AioRpcError: the stream failed (e.g. PERMISSION_DENIED after a suspension).
        """
        item = await self._incoming.get()
        if item is None:
            raise EOFError("the relay closed the stream")
        if isinstance(item, BaseException):
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Incoming]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Incoming]:
        while True:
            try:
                yield await self.receive()
            except EOFError:
                return

    async def ack(self, *delivery_ids: str) -> None:
        """Acknowledges deliveries (the relay then drops them and sends delivery receipts)."""
        ids = [d for d in delivery_ids if d]
        if ids:
            await self._write(pb.ConnectRequest(ack=pb.Ack(delivery_ids=ids)))

    async def send(self, stanzas: Sequence[bytes]) -> pb.SendResults:
        """Sends stanzas on the stream (pipelined); returns one result per stanza, in order."""
        batch_id = next(self._batch_ids)
        future: asyncio.Future[pb.SendResults] = asyncio.get_running_loop().create_future()
        self._results[batch_id] = future
        try:
            await self._write(pb.ConnectRequest(send=pb.SendBatch(batch_id=batch_id, stanzas=list(stanzas))))
        except BaseException:
            self._results.pop(batch_id, None)
            raise
        return await future

    async def _write(self, request: pb.ConnectRequest) -> None:
        try:
            async with self._writing:
                await self._call.write(request)
        except asyncio.InvalidStateError:
            raise StreamClosedError(
                "the relay stream has ended; reconnect (unacknowledged stanzas come again)"
            ) from None
