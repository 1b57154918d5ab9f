"""Reports over real gRPC and Redis with real franking: verification, forgeries, restriction, review, events."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import ADMIN, Cluster, ProviderKeys, error_reason
from support.moderation import NO_REFILL, check, franked_report, relay_stamp, start_moderation

from parley.common.v1.common_pb2 import ErrorReason, PageRequest
from parley.events.v1.events_pb2 import Event
from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_crypto import frank

BOB = "phone:+4915112345678@gatekeeper"
DAVE = "username:dave@gatekeeper"
ALICE = "username:alice@birdy"
ALICE_PHONE = f"{ALICE}/1"
TEXT = b"\x0a\x05hello"  # a serialized content message, as far as moderation cares

Stub = moderation_pb2_grpc.ModerationServiceStub


async def _setup(cluster: Cluster, **moderation: object) -> tuple[Stub, ProviderKeys, ProviderKeys]:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    birdy = await cluster.enlist("birdy")
    return await start_moderation(cluster, **moderation), gatekeeper, birdy


async def _reports(moderation: Stub, *, open_only: bool = False) -> list[pb.Report]:
    response = await moderation.ListReports(pb.ListReportsRequest(open_only=open_only), metadata=ADMIN)
    return list(response.reports)


async def _events(redis_url: str) -> list[Event]:
    client = aioredis.Redis.from_url(redis_url)
    entries = await client.xrange("events:{moderation}")
    await client.aclose()
    return [Event.FromString(fields[b"event"]) for _, fields in entries]


async def test_a_franked_message_verifies_and_is_stored_for_review(cluster: Cluster) -> None:
    moderation, gatekeeper, _ = await _setup(cluster)
    request = franked_report(TEXT, ALICE_PHONE, BOB, message_id="msg-1")
    response = await moderation.ReportMessage(request, metadata=gatekeeper.auth(BOB, 1))
    assert response.verified
    assert len(response.report_id) == 24
    [report] = await _reports(moderation, open_only=True)
    assert report.report_id == response.report_id
    assert (report.reporter, report.sender, report.message_id) == (BOB, ALICE_PHONE, "msg-1")
    assert report.verified
    assert report.outcome == pb.REPORT_OUTCOME_OPEN
    assert (report.plaintext, report.sent_at_ms, report.category) == (TEXT, request.server_timestamp_ms, "spam")
    assert [(e.actor, e.action) for e in report.audit] == [(BOB, "reported as 'spam'; franking verified")]
    assert report.audit[0].at_ms == report.created_at_ms > 0


def _wrong_franking_key(r: pb.ReportMessageRequest) -> None:
    r.franking_key = frank(TEXT).franking_key


def _stamp_by_another_key(r: pb.ReportMessageRequest) -> None:
    tag = frank(TEXT)
    r.franking_key, r.commitment = tag.franking_key, tag.commitment
    r.server_tag = relay_stamp(tag, ALICE_PHONE, BOB, r.server_timestamp_ms, key=hashlib.sha256(b"evil").digest())


def _stamp_flipped(r: pb.ReportMessageRequest) -> None:
    r.server_tag = bytes([r.server_tag[0] ^ 1]) + r.server_tag[1:]


def _plaintext_changed(r: pb.ReportMessageRequest) -> None:
    r.plaintext = b"\x0a\x05hellO"


def _other_time(r: pb.ReportMessageRequest) -> None:
    r.server_timestamp_ms += 1


def _other_sender_device(r: pb.ReportMessageRequest) -> None:
    r.sender = f"{ALICE}/2"


def _commitment_to_other_text(r: pb.ReportMessageRequest) -> None:
    # A consistent key and commitment for a text that was never sent, under the genuine stamp.
    tag = frank(b"\x0a\x04evil")
    r.plaintext, r.franking_key, r.commitment = b"\x0a\x04evil", tag.franking_key, tag.commitment


def _not_franked(r: pb.ReportMessageRequest) -> None:
    r.ClearField("franking_key")
    r.ClearField("commitment")
    r.ClearField("server_tag")


def _short_key(r: pb.ReportMessageRequest) -> None:
    r.franking_key = r.franking_key[:16]


@pytest.mark.parametrize(
    "forge",
    [
        _wrong_franking_key,
        _stamp_by_another_key,
        _stamp_flipped,
        _plaintext_changed,
        _other_time,
        _other_sender_device,
        _commitment_to_other_text,
        _not_franked,
        _short_key,
    ],
)
async def test_forged_reports_are_stored_unverified(
    cluster: Cluster, forge: Callable[[pb.ReportMessageRequest], None]
) -> None:
    moderation, gatekeeper, _ = await _setup(cluster, restrict_after_reports=1)
    request = franked_report(TEXT, ALICE_PHONE, BOB)
    forge(request)
    response = await moderation.ReportMessage(request, metadata=gatekeeper.auth(BOB))
    assert not response.verified
    [report] = await _reports(moderation)
    assert not report.verified
    assert "unverified" in report.audit[0].action
    # An unverified report never restricts anyone, even with a threshold of one.
    assert (await check(moderation, ALICE_PHONE, BOB)).verdict == pb.VERDICT_ALLOW


async def test_someone_elses_message_does_not_verify(cluster: Cluster) -> None:
    """Dave got Bob's report material (say, a screenshot of Bob's device); the stamp binds Bob as recipient."""
    moderation, gatekeeper, _ = await _setup(cluster)
    bobs = franked_report(TEXT, ALICE_PHONE, BOB)
    by_dave = await moderation.ReportMessage(bobs, metadata=gatekeeper.auth(DAVE))
    assert not by_dave.verified
    by_bob = await moderation.ReportMessage(bobs, metadata=gatekeeper.auth(BOB))
    assert by_bob.verified
    assert by_bob.report_id != by_dave.report_id


async def test_a_repeated_report_is_the_same_report_and_can_be_upgraded(cluster: Cluster) -> None:
    moderation, gatekeeper, _ = await _setup(cluster)
    genuine = franked_report(TEXT, ALICE_PHONE, BOB)
    mangled = pb.ReportMessageRequest()
    mangled.CopyFrom(genuine)
    _stamp_flipped(mangled)
    first = await moderation.ReportMessage(mangled, metadata=gatekeeper.auth(BOB))
    again = await moderation.ReportMessage(mangled, metadata=gatekeeper.auth(BOB))
    assert (first.report_id, first.verified) == (again.report_id, False)
    upgraded = await moderation.ReportMessage(genuine, metadata=gatekeeper.auth(BOB))
    assert (upgraded.report_id, upgraded.verified) == (first.report_id, True)
    # A later unverifiable repeat does not downgrade it.
    assert (await moderation.ReportMessage(mangled, metadata=gatekeeper.auth(BOB))).verified
    [report] = await _reports(moderation)
    assert report.verified
    assert len(report.audit) == 2
    assert "; unverified: relay stamp does not verify" in report.audit[0].action
    assert report.audit[1].action.endswith("; franking verified")


async def test_verified_reports_from_distinct_users_restrict_the_sender(cluster: Cluster) -> None:
    moderation, gatekeeper, birdy = await _setup(cluster, restrict_after_reports=2)
    assert (await check(moderation, f"{ALICE}/2", DAVE)).verdict == pb.VERDICT_ALLOW
    # Two messages reported by the same user count once.
    for message_id in ("m1", "m2"):
        request = franked_report(TEXT, ALICE_PHONE, BOB, message_id=message_id)
        assert (await moderation.ReportMessage(request, metadata=gatekeeper.auth(BOB))).verified
    assert (await check(moderation, f"{ALICE}/2", DAVE)).verdict == pb.VERDICT_ALLOW
    request = franked_report(TEXT, ALICE_PHONE, DAVE, message_id="m3")
    assert (await moderation.ReportMessage(request, metadata=gatekeeper.auth(DAVE))).verified
    # Every device of the sender is restricted, toward everyone.
    for device, recipient in ((1, BOB), (2, "username:zoe@birdy")):
        response = await check(moderation, f"{ALICE}/{device}", recipient)
        assert response.verdict == pb.VERDICT_REFUSE
        assert response.reason == ErrorReason.ERROR_REASON_SENDER_RESTRICTED
    newest = (await _reports(moderation))[0]
    assert newest.message_id == "m3"
    assert [e.actor for e in newest.audit] == [DAVE, "system"]
    assert newest.audit[1].action == "sender restricted automatically after 2 verified reports"
    # The restricted sender can still report, block and be reported; others still send.
    assert (await check(moderation, f"{BOB}/1", ALICE)).verdict == pb.VERDICT_ALLOW
    await moderation.Block(pb.BlockRequest(address=BOB), metadata=birdy.auth(ALICE))


async def test_review_resolves_with_audit_and_event(cluster: Cluster, redis_url: str) -> None:
    moderation, gatekeeper, _ = await _setup(cluster)
    report_id = (
        await moderation.ReportMessage(franked_report(TEXT, ALICE_PHONE, BOB), metadata=gatekeeper.auth(BOB))
    ).report_id
    resolved = await moderation.ResolveReport(
        pb.ResolveReportRequest(report_id=report_id, outcome=pb.REPORT_OUTCOME_ESCALATED, note="sent to birdy"),
        metadata=ADMIN,
    )
    assert resolved.report.outcome == pb.REPORT_OUTCOME_ESCALATED
    assert [(e.actor, e.action) for e in resolved.report.audit][1:] == [("admin", "resolved ESCALATED: sent to birdy")]
    assert await _reports(moderation, open_only=True) == []
    assert [r.report_id for r in await _reports(moderation)] == [report_id]
    # The sender is not restricted by an escalation...
    assert (await check(moderation, ALICE_PHONE, DAVE)).verdict == pb.VERDICT_ALLOW
    # ...but is by a SENDER_RESTRICTED outcome, which the trail records too.
    restricted = await moderation.ResolveReport(
        pb.ResolveReportRequest(report_id=report_id, outcome=pb.REPORT_OUTCOME_SENDER_RESTRICTED), metadata=ADMIN
    )
    assert [e.action for e in restricted.report.audit][2:] == ["resolved SENDER_RESTRICTED"]
    response = await check(moderation, f"{ALICE}/3", DAVE)
    assert (response.verdict, response.reason) == (pb.VERDICT_REFUSE, ErrorReason.ERROR_REASON_SENDER_RESTRICTED)
    events = [e.report_resolved for e in await _events(redis_url) if e.HasField("report_resolved")]
    assert [(e.report_id, e.reporter, e.outcome) for e in events] == [
        (report_id, BOB, "REPORT_OUTCOME_ESCALATED"),
        (report_id, BOB, "REPORT_OUTCOME_SENDER_RESTRICTED"),
    ]


async def test_reports_page_newest_first(cluster: Cluster) -> None:
    moderation, gatekeeper, _ = await _setup(cluster)
    ids = []
    for index in range(5):
        request = franked_report(TEXT, ALICE_PHONE, BOB, message_id=f"m{index}")
        ids.append((await moderation.ReportMessage(request, metadata=gatekeeper.auth(BOB))).report_id)
    await moderation.ResolveReport(
        pb.ResolveReportRequest(report_id=ids[3], outcome=pb.REPORT_OUTCOME_DISMISSED), metadata=ADMIN
    )
    for open_only, expected in ((False, set(ids)), (True, set(ids) - {ids[3]})):
        whole = await _reports(moderation, open_only=open_only)
        # Newest first; reports made within one millisecond tie on time and then go by id.
        keys = [(r.created_at_ms, r.report_id) for r in whole]
        assert keys == sorted(keys, reverse=True)
        assert {r.report_id for r in whole} == expected
        seen: list[str] = []
        token = ""
        while True:
            page = await moderation.ListReports(
                pb.ListReportsRequest(open_only=open_only, page=PageRequest(page_size=2, page_token=token)),
                metadata=ADMIN,
            )
            seen += [r.report_id for r in page.reports]
            token = page.page.next_page_token
            if not token:
                break
        assert seen == [r.report_id for r in whole]


async def test_report_pages_fit_in_one_response(cluster: Cluster) -> None:
    # 4 MiB responses and 1 MiB plaintexts: five reports would not fit one response; pages hold two at most.
    moderation, gatekeeper, _ = await _setup(cluster, max_report_plaintext_bytes=1024 * 1024)
    big = b"\x0a" + bytes(1024 * 1024 - 1)
    for index in range(5):
        request = franked_report(big, ALICE_PHONE, BOB, message_id=f"m{index}")
        assert (await moderation.ReportMessage(request, metadata=gatekeeper.auth(BOB))).verified
    sizes = []
    token = ""
    while True:
        page = await moderation.ListReports(
            pb.ListReportsRequest(page=PageRequest(page_size=100, page_token=token)), metadata=ADMIN
        )
        assert all(report.plaintext == big for report in page.reports)
        sizes.append(len(page.reports))
        token = page.page.next_page_token
        if not token:
            break
    assert sizes == [2, 2, 1]


async def test_reports_are_rate_limited_per_reporter(cluster: Cluster) -> None:
    moderation, gatekeeper, _ = await _setup(cluster, report_burst=2, report_per_second=NO_REFILL)
    for message_id in ("m1", "m2"):
        await moderation.ReportMessage(
            franked_report(TEXT, ALICE_PHONE, BOB, message_id=message_id), metadata=gatekeeper.auth(BOB)
        )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.ReportMessage(
            franked_report(TEXT, ALICE_PHONE, BOB, message_id="m3"), metadata=gatekeeper.auth(BOB)
        )
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "RATE_LIMITED"
    assert len(await _reports(moderation)) == 2


def _set(field: str, value: object) -> Callable[[pb.ReportMessageRequest], None]:
    return lambda r: setattr(r, field, value)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (_set("message_id", ""), "MISSING_FIELD"),
        (_set("message_id", "has space"), "INVALID_FIELD"),
        (_set("message_id", "x" * 129), "INVALID_FIELD"),
        (_set("sender", ""), "MISSING_FIELD"),
        (_set("sender", "alice"), "INVALID_ADDRESS"),
        (_set("sender", f"{BOB}/2"), "INVALID_FIELD"),  # one's own message
        (_set("plaintext", b""), "MISSING_FIELD"),
        (_set("plaintext", b"x" * 65_537), "TOO_LARGE"),
        (_set("franking_key", bytes(65)), "INVALID_FIELD"),
        (_set("commitment", bytes(65)), "INVALID_FIELD"),
        (_set("server_tag", bytes(65)), "INVALID_FIELD"),
        (_set("server_timestamp_ms", -1), "INVALID_FIELD"),
        (_set("category", ""), "MISSING_FIELD"),
        (_set("category", "x" * 65), "INVALID_FIELD"),
        (_set("category", "spam\n"), "INVALID_FIELD"),
    ],
)
async def test_bad_reports_are_refused_and_store_nothing(
    cluster: Cluster, mutate: Callable[[pb.ReportMessageRequest], None], reason: str
) -> None:
    moderation, gatekeeper, _ = await _setup(cluster, restrict_after_reports=1)
    request = franked_report(TEXT, ALICE_PHONE, BOB)
    mutate(request)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.ReportMessage(request, metadata=gatekeeper.auth(BOB))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason
    assert await _reports(moderation) == []
    assert (await check(moderation, ALICE_PHONE, DAVE)).verdict == pb.VERDICT_ALLOW


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (pb.ResolveReportRequest(outcome=pb.REPORT_OUTCOME_DISMISSED),
         grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (pb.ResolveReportRequest(report_id="nope", outcome=pb.REPORT_OUTCOME_DISMISSED),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (pb.ResolveReportRequest(report_id="0" * 24, outcome=pb.REPORT_OUTCOME_DISMISSED),
         grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
        (pb.ResolveReportRequest(report_id="{id}"), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (pb.ResolveReportRequest(report_id="{id}", outcome=pb.REPORT_OUTCOME_OPEN),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (pb.ResolveReportRequest(report_id="{id}", outcome=99), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (pb.ResolveReportRequest(report_id="{id}", outcome=pb.REPORT_OUTCOME_DISMISSED, note="x" * 1001),
         grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    ],
)  # fmt: skip
async def test_bad_resolutions_are_refused_and_change_nothing(
    cluster: Cluster, redis_url: str, request_: pb.ResolveReportRequest, code: grpc.StatusCode, reason: str
) -> None:
    moderation, gatekeeper, _ = await _setup(cluster)
    report_id = (
        await moderation.ReportMessage(franked_report(TEXT, ALICE_PHONE, BOB), metadata=gatekeeper.auth(BOB))
    ).report_id
    request = pb.ResolveReportRequest()
    request.CopyFrom(request_)
    request.report_id = request.report_id.replace("{id}", report_id)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.ResolveReport(request, metadata=ADMIN)
    assert error.value.code() == code
    assert error_reason(error.value) == reason
    [report] = await _reports(moderation, open_only=True)
    assert len(report.audit) == 1
    assert await _events(redis_url) == []


async def test_a_report_page_token_must_come_from_a_previous_page(cluster: Cluster) -> None:
    moderation, _, _ = await _setup(cluster)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.ListReports(pb.ListReportsRequest(page=PageRequest(page_token="zzz")), metadata=ADMIN)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "INVALID_FIELD"
