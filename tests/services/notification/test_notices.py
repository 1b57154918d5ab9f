"""WatchNotices: a user's clients hear of new providers, key changes of contacts, report outcomes, low prekeys."""

from __future__ import annotations

import asyncio
import contextlib

from support.cluster import Cluster
from support.notification import drained, notification, publish, start_notification

from parley.events.v1.events_pb2 import Event, IdentityKeyChanged, PreKeysLow, ReportResolved
from parley.notification.v1 import notification_pb2 as pb

BOB = "username:bob@gatekeeper"


def _report(reporter: str, report_id: str) -> Event:
    return Event(report_resolved=ReportResolved(report_id=report_id, reporter=reporter, outcome="REPORT_OUTCOME_X"))


async def test_a_user_hears_their_notices_and_only_theirs(cluster: Cluster) -> None:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    await start_notification(cluster)
    await drained(cluster.redis_url, "identity")
    call = notification(cluster).WatchNotices(pb.WatchNoticesRequest(), metadata=gatekeeper.auth(BOB))

    # The watch is live once a notice reaches it; until then, keep announcing one (a notice sent before the
    # server registered the watcher is, by design, not replayed).
    async def probe() -> None:
        for n in range(200):
            await publish(cluster.redis_url, "moderation", _report(BOB, f"probe-{n}"))
            await asyncio.sleep(0.05)

    prober = asyncio.create_task(probe())
    first = await asyncio.wait_for(call.read(), 20)
    prober.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await prober
    assert first.kind == pb.NOTICE_KIND_REPORT_RESOLVED

    await cluster.enlist("birdy")
    await publish(
        cluster.redis_url,
        "keys",
        Event(identity_key_changed=IdentityKeyChanged(address="username:ann@birdy/1", recent_requesters=[BOB])),
        Event(
            identity_key_changed=IdentityKeyChanged(
                address="username:cy@birdy/1", recent_requesters=["x:y@z", "username:eve@gatekeeper"]
            )
        ),
        Event(prekeys_low=PreKeysLow(address=f"{BOB}/1", remaining=3, low_watermark=10)),
    )
    await publish(cluster.redis_url, "moderation", _report("username:eve@gatekeeper", "r-eve"), _report(BOB, "r-bob"))

    expected = {
        (pb.NOTICE_KIND_PROVIDER_AVAILABLE, "birdy"),
        (pb.NOTICE_KIND_IDENTITY_KEY_CHANGED, "username:ann@birdy/1"),
        (pb.NOTICE_KIND_PREKEYS_LOW, f"{BOB}/1"),
        (pb.NOTICE_KIND_REPORT_RESOLVED, "r-bob"),
    }
    seen: set[tuple[int, str]] = set()
    async with asyncio.timeout(20):
        while not expected <= seen:
            notice = await call.read()
            assert notice.at_ms > 0
            seen.add((notice.kind, notice.subject))
    leftover_probes = {subject for kind, subject in seen if subject.startswith("probe-")}
    assert seen - expected - {(pb.NOTICE_KIND_REPORT_RESOLVED, s) for s in leftover_probes} == set()
    call.cancel()
