"""The relay's counters: accepted stanzas (new or duplicate), refusals by reason, and stored copies."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from support.cluster import Cluster
from support.relay import raw_message, start_world
from support.telemetry import Points, sums

from parley_stanza import encode


def _delta(before: Points, after: Points) -> Points:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


async def test_a_frame_counts_each_stanza_once(cluster: Cluster, metric_reader: InMemoryMetricReader) -> None:
    world = await start_world(cluster)
    ben, ana = world["ben"], world["ana_phone"]
    ana_devices = [world["ana_phone"].address, world["ana_laptop"].address]
    first = encode(raw_message(ben.address, ana.user, ana_devices, "count-1"))
    second = encode(raw_message(ben.address, ana.user, ana_devices, "count-2"))
    spoofed = encode(raw_message(world["cleo_phone"].address, ana.user, ana_devices, "count-3"))
    names = ("relay.stanzas.accepted", "relay.stanzas.refused", "relay.copies.stored")
    before = {name: sums(metric_reader, name) for name in names}
    async with ben.connect() as connection:
        results = (await connection.send([first, second, spoofed, first])).results
    assert [r.code for r in results] == [0, 0, 7, 0]  # the spoofed one: PERMISSION_DENIED
    assert [r.duplicate for r in results] == [False, False, False, True]
    after = {name: sums(metric_reader, name) for name in names}
    assert _delta(before["relay.stanzas.accepted"], after["relay.stanzas.accepted"]) == {
        (("duplicate", "False"), ("parley.provider", "birdy")): 2,
        (("duplicate", "True"), ("parley.provider", "birdy")): 1,
    }
    assert _delta(before["relay.stanzas.refused"], after["relay.stanzas.refused"]) == {
        (("parley.provider", "birdy"), ("reason", "SPOOFED_SENDER")): 1
    }
    # Two new messages, each stored for Ana's two devices; the duplicate stores nothing.
    assert _delta(before["relay.copies.stored"], after["relay.copies.stored"]) == {(): 4}
    await world.close()
