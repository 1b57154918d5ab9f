"""The bare-transport floor of bench/relay.py: a do-nothing ``RelayService`` on ``grpc.aio``.

It has the relay's RPC shapes and nothing else: a ``Connect`` stream answers each ``SendBatch`` with one
``SendResults`` frame and pushes the batch's stanzas, unparsed, as one ``Deliveries`` frame to the stream of the
peer device the client names in its ``x-bench-peer`` metadata (the real relay reads the recipient from the
stanza); a unary ``Send`` pushes its one stanza the same way. Acks are read and dropped. Nothing is stored,
checked or authenticated, so what is left is the cost of gRPC itself for the same frames.

Run: ``python bench/_echo_relay.py <port>``; it serves on 127.0.0.1 until SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator

import grpc.aio

from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc

_OUTBOX = 32


class EchoRelay(relay_pb2_grpc.RelayServiceServicer):
    """Routes each batch to the peer's open stream; no other work."""

    def __init__(self) -> None:
        self._outboxes: dict[str, asyncio.Queue[pb.ConnectResponse | None]] = {}
        self._next_delivery = 0

    async def Send(self, request: pb.SendRequest, context: grpc.aio.ServicerContext) -> pb.SendResponse:
        metadata = dict(context.invocation_metadata() or ())
        ts = int(time.time() * 1000)
        target = self._outboxes.get(str(metadata.get("x-bench-peer", "")))
        if target is not None:
            self._next_delivery += 1
            delivery = pb.Delivery(
                delivery_id=f"{ts}-{self._next_delivery}", stanza=request.stanza, server_timestamp_ms=ts
            )
            await target.put(pb.ConnectResponse(deliveries=pb.Deliveries(deliveries=[delivery])))
        return pb.SendResponse(server_timestamp_ms=ts)

    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        metadata = dict(context.invocation_metadata() or ())
        device, peer = str(metadata["x-bench-device"]), str(metadata.get("x-bench-peer", ""))
        # None marks the end of the client's frames.
        outbox: asyncio.Queue[pb.ConnectResponse | None] = asyncio.Queue(_OUTBOX)
        self._outboxes[device] = outbox
        reader = asyncio.create_task(self._read(request_iterator, outbox, peer))
        try:
            # Like the relay: the (empty) backlog is announced before anything live.
            yield pb.ConnectResponse(queue_drained=pb.QueueDrained(delivered=0))
            while (frame := await outbox.get()) is not None:
                yield frame
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._outboxes.pop(device, None)

    async def _read(
        self, requests: AsyncIterator[pb.ConnectRequest], outbox: asyncio.Queue[pb.ConnectResponse | None], peer: str
    ) -> None:
        try:
            await self._route(requests, outbox, peer)
        finally:
            await outbox.put(None)

    async def _route(
        self, requests: AsyncIterator[pb.ConnectRequest], outbox: asyncio.Queue[pb.ConnectResponse | None], peer: str
    ) -> None:
        async for request in requests:
            if request.WhichOneof("frame") != "send":
                continue
            ts = int(time.time() * 1000)
            batch = request.send
            deliveries = pb.Deliveries()
            for stanza in batch.stanzas:
                self._next_delivery += 1
                deliveries.deliveries.add(
                    delivery_id=f"{ts}-{self._next_delivery}", stanza=stanza, server_timestamp_ms=ts
                )
            target = self._outboxes.get(peer)
            if target is not None:
                await target.put(pb.ConnectResponse(deliveries=deliveries))
            results = pb.SendResults(batch_id=batch.batch_id)
            for _ in batch.stanzas:
                results.results.add(server_timestamp_ms=ts)
            await outbox.put(pb.ConnectResponse(send_results=results))


async def serve(port: int) -> None:
    """Serves until SIGTERM or SIGINT."""
    server = grpc.aio.server()
    # The media RPCs are no part of the floor: the generated base class answers them UNIMPLEMENTED.
    relay_pb2_grpc.add_RelayServiceServicer_to_server(EchoRelay(), server)  # type: ignore[abstract]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
