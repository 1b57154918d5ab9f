"""The SDK's relay stream is safe to use from many tasks at once: sends are pipelined and acks overlap them."""

from __future__ import annotations

import asyncio

from support.cluster import Cluster
from support.relay import raw_message, start_world

from parley_sdk import DeviceClient, RelayConnection
from parley_stanza import Address, encode

CONCURRENT = 200


async def _send_and_ack(
    sender: DeviceClient, devices: list[Address], stream: RelayConnection, recipient: Address, tag: str
) -> tuple[list[int], set[str]]:
    """Sends CONCURRENT single-stanza frames at once while acknowledging every delivery the moment it arrives."""
    received: set[str] = set()
    acks: list[asyncio.Task[None]] = []

    async def receive() -> None:
        while len(received) < CONCURRENT:
            incoming = await stream.receive()
            received.add(incoming.stanza.id)
            acks.append(asyncio.create_task(stream.ack(incoming.delivery_id)))

    receiving = asyncio.create_task(receive())
    frames = [[encode(raw_message(sender.address, recipient, devices, f"{tag}-{i}"))] for i in range(CONCURRENT)]
    results = await asyncio.gather(*(stream.send(frame) for frame in frames))
    async with asyncio.timeout(60):
        await receiving
        await asyncio.gather(*acks)
    return [result.results[0].code for result in results], received


async def test_two_hundred_concurrent_sends_and_acks_on_one_stream(cluster: Cluster) -> None:
    world = await start_world(cluster)
    ana, laptop, ben = world["ana_phone"], world["ana_laptop"], world["ben"]
    async with ana.connect() as ana_stream, ben.connect() as ben_stream:
        await ana_stream.drained.wait()
        await ben_stream.drained.wait()
        (ana_codes, ana_got), (ben_codes, ben_got) = await asyncio.gather(
            _send_and_ack(ana, [ben.address, laptop.address], ana_stream, ben.user, "from-ana"),
            _send_and_ack(ben, [ana.address, laptop.address], ben_stream, ana.user, "from-ben"),
        )
    assert ana_codes == ben_codes == [0] * CONCURRENT
    # Every message counted at the other end, each once.
    assert ben_got == {f"from-ana-{i}" for i in range(CONCURRENT)}
    assert ana_got == {f"from-ben-{i}" for i in range(CONCURRENT)}
    await world.close()
