"""Every notification RPC refuses bad input and wrong callers with a status and a reason, changing nothing."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis
from support.cluster import ADMIN, INTERNAL, Cluster, ProviderKeys, error_reason
from support.notification import drained, notification, start_notification

from parley.common.v1.common_pb2 import PageRequest
from parley.identity.v1 import identity_pb2 as id_pb
from parley.notification.v1 import notification_pb2 as pb
from parley.notification.v1 import notification_pb2_grpc

ALICE = "username:alice@birdy"
BOB = "username:bob@birdy"


Stub = notification_pb2_grpc.NotificationServiceStub
Metadata = tuple[tuple[str, str], ...]


async def _setup(cluster: Cluster, **settings: object) -> tuple[ProviderKeys, Stub]:
    await cluster.start_identity()
    birdy = await cluster.enlist("birdy")
    await cluster.register_user(birdy, ALICE)
    await start_notification(cluster, **settings)
    await drained(cluster.redis_url, "identity")  # the approval's notices are out before any watcher starts
    return birdy, notification(cluster)


async def _keys(cluster: Cluster, pattern: str) -> list[bytes]:
    client = aioredis.Redis.from_url(cluster.redis_url)
    try:
        return sorted(await client.keys(pattern))
    finally:
        await client.aclose()


async def _refused(call: object, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    assert refused.value.code() == code, refused.value.details()
    assert error_reason(refused.value) == reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "MISSING_FIELD"),
        ("https://example.com/" + "a" * 2048, "TOO_LARGE"),
        ("ftp://example.com/hook", "INVALID_FIELD"),
        ("http://example.com/hook", "INVALID_FIELD"),
        ("https://user:pw@example.com/hook", "INVALID_FIELD"),
        ("https://example.com/hook#frag", "INVALID_FIELD"),
        ("https://10.0.0.7/hook", "INVALID_FIELD"),
        ("https://169.254.169.254/latest", "INVALID_FIELD"),
        ("https://[::1]/hook", "INVALID_FIELD"),
        ("https://localhost/hook", "INVALID_FIELD"),
        ("http://127.0.0.1:8080/hook", "INVALID_FIELD"),
        ("https:///nohost", "INVALID_FIELD"),
        ("https://example.com:99999/hook", "INVALID_FIELD"),
        ("https://exa mple.com/hook", "INVALID_FIELD"),
    ],
)
async def test_register_webhook_refuses_bad_urls(cluster: Cluster, url: str, reason: str) -> None:
    birdy, stub = await _setup(cluster, webhook_allow_loopback_http=False)
    request = pb.RegisterWebhookRequest(url=url)
    await _refused(
        stub.RegisterWebhook(request, metadata=birdy.auth("birdy")), grpc.StatusCode.INVALID_ARGUMENT, reason
    )
    assert await _keys(cluster, "webhook:*") == []


async def test_register_webhook_needs_a_provider_assertion(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)
    request = pb.RegisterWebhookRequest(url="https://birdy.example/hook")
    await _refused(stub.RegisterWebhook(request), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")
    await _refused(
        stub.RegisterWebhook(request, metadata=birdy.auth(ALICE)), grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID"
    )
    await _refused(stub.RegisterWebhook(request, metadata=ADMIN), grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID")
    assert await _keys(cluster, "webhook:*") == []
    first = await stub.RegisterWebhook(request, metadata=birdy.auth("birdy"))
    second = await stub.RegisterWebhook(request, metadata=birdy.auth("birdy"))
    assert len(first.signing_secret) == len(second.signing_secret) == 32
    assert first.signing_secret != second.signing_secret  # re-registering rotates the secret
    assert await _keys(cluster, "webhook:*") == [b"webhook:{birdy}"]


async def test_register_push_target_checks_the_token_and_needs_a_device(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)
    for token, reason in (("", "MISSING_FIELD"), ("x" * 4097, "TOO_LARGE"), ("bad\ntoken", "INVALID_FIELD")):
        await _refused(
            stub.RegisterPushTarget(pb.RegisterPushTargetRequest(push_token=token), metadata=birdy.auth(ALICE, 1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
        )
    request = pb.RegisterPushTargetRequest(push_token="tok")
    await _refused(
        stub.RegisterPushTarget(request, metadata=birdy.auth(ALICE)), grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID"
    )
    await _refused(
        stub.RegisterPushTarget(request, metadata=birdy.auth("birdy")),
        grpc.StatusCode.PERMISSION_DENIED,
        "TOKEN_INVALID",
    )
    assert await _keys(cluster, "push:*") == []
    await stub.RegisterPushTarget(request, metadata=birdy.auth(ALICE, 1))
    assert await _keys(cluster, "push:*") == [f"push:{{{ALICE}}}".encode()]


async def test_register_push_target_needs_a_device_identity_knows(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)
    await cluster.register_user(birdy, BOB, devices=2)
    await cluster.identity().RemoveDevice(id_pb.RemoveDeviceRequest(device_id=2), metadata=birdy.auth(BOB))
    request = pb.RegisterPushTargetRequest(push_token="tok")
    for user, device_id, reason in (
        ("username:carol@birdy", 1, "USER_NOT_FOUND"),  # never registered
        (ALICE, 2, "DEVICE_NOT_FOUND"),  # never registered
        (BOB, 2, "DEVICE_NOT_FOUND"),  # removed
    ):
        await _refused(
            stub.RegisterPushTarget(request, metadata=birdy.auth(user, device_id)), grpc.StatusCode.NOT_FOUND, reason
        )
    assert await _keys(cluster, "push:*") == []
    await stub.RegisterPushTarget(request, metadata=birdy.auth(BOB, 1))
    assert await _keys(cluster, "push:*") == [f"push:{{{BOB}}}".encode()]


async def test_removing_a_device_drops_its_push_token_and_only_its(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)
    await cluster.register_user(birdy, BOB, devices=2)
    for device_id in (1, 2):
        await stub.RegisterPushTarget(
            pb.RegisterPushTargetRequest(push_token=f"tok-{device_id}"), metadata=birdy.auth(BOB, device_id)
        )
    # Identity announces the removal on events:{identity}; notification takes the event in and drops the token.
    await cluster.identity().RemoveDevice(id_pb.RemoveDeviceRequest(device_id=2), metadata=birdy.auth(BOB))
    client = aioredis.Redis.from_url(cluster.redis_url)
    try:
        await drained(cluster.redis_url, "identity")
        assert await client.hgetall(f"push:{{{BOB}}}") == {b"1": b"tok-1"}
    finally:
        await client.aclose()


async def test_register_push_target_refuses_while_identity_is_down(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)
    await cluster.servers["identity"].stop(0)
    await _refused(
        stub.RegisterPushTarget(pb.RegisterPushTargetRequest(push_token="tok"), metadata=birdy.auth(ALICE, 1)),
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
    )
    assert await _keys(cluster, "push:*") == []


async def test_watch_notices_needs_a_user_assertion(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)
    for metadata, code, reason in (
        ((), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
        (birdy.auth("birdy"), grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID"),
        (INTERNAL, grpc.StatusCode.PERMISSION_DENIED, "TOKEN_INVALID"),
    ):
        call = stub.WatchNotices(pb.WatchNoticesRequest(), metadata=metadata)
        await _refused(call.read(), code, reason)


async def test_too_many_watchers_are_refused(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster, max_notice_watchers=1)
    first = stub.WatchNotices(pb.WatchNoticesRequest(), metadata=birdy.auth(ALICE))
    second = stub.WatchNotices(pb.WatchNoticesRequest(), metadata=birdy.auth(ALICE))
    # The first call to be served holds the only slot; the other is refused (which one is up to the scheduler).
    done, _ = await asyncio.wait(
        [asyncio.ensure_future(first.read()), asyncio.ensure_future(second.read())],
        return_when=asyncio.FIRST_COMPLETED,
    )
    [refused] = done
    with pytest.raises(grpc.aio.AioRpcError) as error:
        refused.result()
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "OVERLOADED"
    first.cancel()
    second.cancel()


async def test_dead_letter_rpcs_are_admin_only_and_check_their_input(cluster: Cluster) -> None:
    birdy, stub = await _setup(cluster)

    def provider() -> Metadata:
        return birdy.auth("birdy")

    def internal() -> Metadata:
        return INTERNAL

    for credentials, reason in ((provider, "ADMIN_REQUIRED"), (internal, "TOKEN_INVALID")):
        await _refused(
            stub.ListDeadLetters(pb.ListDeadLettersRequest(), metadata=credentials()),
            grpc.StatusCode.PERMISSION_DENIED,
            reason,
        )
        await _refused(
            stub.RedriveDeadLetters(pb.RedriveDeadLettersRequest(provider_id="birdy"), metadata=credentials()),
            grpc.StatusCode.PERMISSION_DENIED,
            reason,
        )
    await _refused(
        stub.ListDeadLetters(pb.ListDeadLettersRequest(page=PageRequest(page_token="nope")), metadata=ADMIN),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_FIELD",
    )
    for request, reason in (
        (pb.RedriveDeadLettersRequest(), "MISSING_FIELD"),
        (pb.RedriveDeadLettersRequest(dead_letter_ids=["1-0"], provider_id="birdy"), "INVALID_FIELD"),
        (pb.RedriveDeadLettersRequest(dead_letter_ids=["not-an-id"]), "INVALID_FIELD"),
        (pb.RedriveDeadLettersRequest(dead_letter_ids=[f"{n}-0" for n in range(501)]), "BATCH_TOO_LARGE"),
    ):
        await _refused(stub.RedriveDeadLetters(request, metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_redrive_with_an_unknown_id_redrives_nothing(cluster: Cluster) -> None:
    _, stub = await _setup(cluster)
    client = aioredis.Redis.from_url(cluster.redis_url)
    try:
        known = await client.xadd(
            "notify:{queue}:dead",
            {
                "delivery_id": "d1",
                "provider": "birdy",
                "type": "message_waiting",
                "data": "{}",
                "occurred_at_ms": 1,
                "coalesced": 0,
                "created_at_ms": 1,
                "attempts": 3,
                "last_error": "http 500",
                "at_ms": 2,
            },
        )
        request = pb.RedriveDeadLettersRequest(dead_letter_ids=[known.decode(), "1-1"])
        await _refused(stub.RedriveDeadLetters(request, metadata=ADMIN), grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
        assert await client.xlen("notify:{queue}:dead") == 1
        assert await client.zcard("notify:{queue}:due") == 0

        listed = await stub.ListDeadLetters(pb.ListDeadLettersRequest(provider_id="birdy"), metadata=ADMIN)
        assert [letter.idempotency_key for letter in listed.dead_letters] == ["d1"]
        other = await stub.ListDeadLetters(pb.ListDeadLettersRequest(provider_id="other"), metadata=ADMIN)
        assert list(other.dead_letters) == []
        redriven = await stub.RedriveDeadLetters(pb.RedriveDeadLettersRequest(provider_id="birdy"), metadata=ADMIN)
        assert redriven.redriven == 1
        assert await client.xlen("notify:{queue}:dead") == 0
        assert await client.hget("notify:{queue}:d:d1", "attempts") == b"0"
    finally:
        await client.aclose()


async def test_dead_letters_page_in_order(cluster: Cluster) -> None:
    _, stub = await _setup(cluster)
    client = aioredis.Redis.from_url(cluster.redis_url)
    try:
        for n in range(7):
            await client.xadd(
                "notify:{queue}:dead",
                {
                    "delivery_id": f"d{n}",
                    "provider": "birdy" if n % 2 else "gatekeeper",
                    "type": "message_waiting",
                    "data": "{}",
                    "occurred_at_ms": 1,
                    "coalesced": 0,
                    "created_at_ms": 1,
                    "attempts": 3,
                    "last_error": "timeout",
                    "at_ms": 2,
                },
            )
    finally:
        await client.aclose()
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListDeadLetters(
            pb.ListDeadLettersRequest(page=PageRequest(page_size=3, page_token=token)), metadata=ADMIN
        )
        seen += [letter.idempotency_key for letter in page.dead_letters]
        token = page.page.next_page_token
        if not token:
            break
    assert seen == [f"d{n}" for n in range(7)]
    birdy_only = await stub.ListDeadLetters(
        pb.ListDeadLettersRequest(provider_id="birdy", page=PageRequest(page_size=500)), metadata=ADMIN
    )
    assert [letter.idempotency_key for letter in birdy_only.dead_letters] == ["d1", "d3", "d5"]
