"""Discovery at the identity service: LookupAddress for providers' users, ResolveRecipient for Parley's services.

A lookup must not be an enumeration oracle: an absent user, a user who never opted in, one who does not allow
the asking provider, and one who disabled third-party chats all give the identical NOT_FOUND, after the same
Redis commands. The asking user is ``username:asker@birdy``; the users looked up are at ``gatekeeper``.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.cluster import ADMIN, INTERNAL, Cluster, ProviderKeys, error_reason

from parley.common.v1.common_pb2 import Feature
from parley.identity.v1 import identity_pb2 as pb

ASKER = "username:asker@birdy"
GATEKEEPER_FEATURES = [Feature.FEATURE_TEXT, Feature.FEATURE_REACTIONS, Feature.FEATURE_RECEIPTS]
REACHABLE = pb.Reachability.REACHABILITY_REACHABLE

# Users at gatekeeper, one per discovery case (set up by `_populate`).
OPEN = "username:open@gatekeeper"
ABSENT = "username:absent@gatekeeper"
NEVER_OPTED_IN = "username:off@gatekeeper"
OTHERS_ONLY = "username:robins@gatekeeper"
DISABLED = "username:gone@gatekeeper"


@dataclass
class World:
    """The providers' keys of one test."""

    birdy: ProviderKeys
    gatekeeper: ProviderKeys
    robin: ProviderKeys


async def _populate(cluster: Cluster, **settings: object) -> World:
    await cluster.start_identity(**settings)
    world = World(
        birdy=await cluster.enlist("birdy"),
        gatekeeper=await cluster.enlist("gatekeeper", features=GATEKEEPER_FEATURES),
        robin=await cluster.enlist("robin"),
    )
    await cluster.enlist("pending", approve=False)
    # The askers opted in themselves: a user whose own third-party chats are off cannot reach anyone elsewhere.
    await cluster.register_user(world.birdy, ASKER, allow=["gatekeeper"])
    await cluster.register_user(world.robin, "username:x@robin", allow=["gatekeeper"])
    await cluster.register_user(world.gatekeeper, OPEN, devices=2, allow=["birdy"])
    await cluster.register_user(world.gatekeeper, NEVER_OPTED_IN)
    await cluster.register_user(world.gatekeeper, OTHERS_ONLY, allow=["robin"])
    await cluster.register_user(world.gatekeeper, DISABLED, allow=["birdy"])
    await cluster.identity().DisableThirdPartyChats(
        pb.DisableThirdPartyChatsRequest(), metadata=world.gatekeeper.auth(DISABLED)
    )
    return world


@pytest.fixture
async def world(cluster: Cluster) -> World:
    return await _populate(cluster)


async def _lookup(cluster: Cluster, keys: ProviderKeys, asker: str, address: str) -> pb.LookupAddressResponse:
    return await cluster.identity().LookupAddress(pb.LookupAddressRequest(address=address), metadata=keys.auth(asker))


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def _redis_commands(spans: InMemorySpanExporter) -> list[str]:
    finished = sorted(spans.get_finished_spans(), key=lambda span: span.start_time or 0)
    return [
        str((span.attributes or {}).get("db.statement"))
        for span in finished
        # Root spans are background work (the provider directory's refreshes), not part of any lookup.
        if span.kind is SpanKind.CLIENT and (span.attributes or {}).get("db.system") == "redis" and span.parent
    ]


async def test_every_unreachable_user_looks_absent(cluster: Cluster, world: World, spans: InMemorySpanExporter) -> None:
    # Warm-up: the first call of each Lua script loads it, which would differ from later calls.
    await _lookup(cluster, world.birdy, ASKER, OPEN)
    answers = {}
    commands = {}
    for address in (
        ABSENT,
        NEVER_OPTED_IN,
        OTHERS_ONLY,
        DISABLED,
        "username:someone@pending",
        "username:someone@nowhere",
    ):
        spans.clear()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _lookup(cluster, world.birdy, ASKER, address)
        info = _error_info(error.value)
        answers[address] = (error.value.code(), error.value.details(), info.SerializeToString(deterministic=True))
        commands[address] = _redis_commands(spans)
    assert set(answers.values()) == {
        (
            grpc.StatusCode.NOT_FOUND,
            "this user cannot be found",
            error_details_pb2.ErrorInfo(domain="parley.dev", reason="USER_NOT_FOUND").SerializeToString(),
        )
    }
    assert len({tuple(sequence) for sequence in commands.values()}) == 1, commands
    assert commands[ABSENT], "no Redis commands were traced"


async def test_an_allowed_lookup_returns_devices_and_features(cluster: Cluster, world: World) -> None:
    found = await _lookup(cluster, world.birdy, ASKER, OPEN)
    assert found.address == OPEN
    assert [(d.device_id, d.registration_id) for d in found.devices] == [(1, 100), (2, 101)]
    assert all(d.created_at_ms > 0 for d in found.devices)
    assert list(found.features) == sorted(GATEKEEPER_FEATURES)
    # Another spelling and a device part name the same user.
    again = await _lookup(cluster, world.birdy, ASKER, "username:OPEN@gatekeeper/2")
    assert (again.address, len(again.devices)) == (OPEN, 2)


async def test_same_provider_lookup_needs_no_consent(cluster: Cluster, world: World) -> None:
    found = await _lookup(cluster, world.gatekeeper, OPEN, NEVER_OPTED_IN)
    assert found.address == NEVER_OPTED_IN
    assert [d.device_id for d in found.devices] == [1]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _lookup(cluster, world.gatekeeper, OPEN, ABSENT)
    assert error_reason(error.value) == "USER_NOT_FOUND"


@pytest.mark.parametrize(("address", "reason"), [("", "MISSING_FIELD"), ("open@gatekeeper", "INVALID_ADDRESS")])
async def test_a_bad_address_is_refused(cluster: Cluster, world: World, address: str, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _lookup(cluster, world.birdy, ASKER, address)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason


async def test_lookups_are_rate_limited_per_asking_user(cluster: Cluster) -> None:
    # A refill of one token per 100 s keeps the test independent of how fast the machine is.
    world = await _populate(cluster, lookup_burst=3, lookup_per_second=0.01)
    # Refused lookups count too: otherwise probing absent users would be free.
    await _lookup(cluster, world.birdy, ASKER, OPEN)
    for address in (ABSENT, NEVER_OPTED_IN):
        with pytest.raises(grpc.aio.AioRpcError):
            await _lookup(cluster, world.birdy, ASKER, address)
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await _lookup(cluster, world.birdy, ASKER, OPEN)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = _error_info(limited.value)
    assert info.reason == "RATE_LIMITED"
    assert 0 < int(info.metadata["retry_after_ms"]) <= 100_000
    # Another user of the same provider has a bucket of their own.
    await cluster.register_user(world.birdy, "username:other@birdy")
    assert (await _lookup(cluster, world.birdy, "username:other@birdy", OPEN)).address == OPEN


async def _resolve(cluster: Cluster, sender: str, recipient: str) -> pb.ResolveRecipientResponse:
    request = pb.ResolveRecipientRequest(sender=sender, recipient=recipient)
    return await cluster.identity().ResolveRecipient(request, metadata=INTERNAL)


async def test_resolve_recipient_reachable(cluster: Cluster, world: World) -> None:
    await cluster.identity().UpdateConsent(
        pb.UpdateConsentRequest(inbox_mode=pb.InboxMode.INBOX_MODE_MERGED), metadata=world.gatekeeper.auth(OPEN)
    )
    resolved = await _resolve(cluster, f"{ASKER}/1", OPEN)
    assert resolved.reachability == REACHABLE
    assert resolved.recipient == OPEN
    assert [d.device_id for d in resolved.devices] == [1, 2]
    assert list(resolved.features) == sorted(GATEKEEPER_FEATURES)
    assert resolved.inbox_mode == pb.InboxMode.INBOX_MODE_MERGED


@pytest.mark.parametrize(
    ("sender", "recipient", "reachability"),
    [
        (ASKER, DISABLED, pb.Reachability.REACHABILITY_READ_ONLY),
        # Robin was never allowed: it must not learn that the user exists at all.
        ("username:x@robin", DISABLED, pb.Reachability.REACHABILITY_NOT_FOUND),
        ("username:gk@gatekeeper", DISABLED, REACHABLE),
        (ASKER, ABSENT, pb.Reachability.REACHABILITY_NOT_FOUND),
        (ASKER, NEVER_OPTED_IN, pb.Reachability.REACHABILITY_NOT_FOUND),
        (ASKER, OTHERS_ONLY, pb.Reachability.REACHABILITY_NOT_FOUND),
        ("username:x@robin", OTHERS_ONLY, REACHABLE),
        (ASKER, "username:someone@pending", pb.Reachability.REACHABILITY_PROVIDER_UNAVAILABLE),
    ],
)
async def test_resolve_recipient_verdicts(
    cluster: Cluster, world: World, sender: str, recipient: str, reachability: int
) -> None:
    resolved = await _resolve(cluster, sender, recipient)
    assert resolved.reachability == reachability
    assert resolved.recipient == recipient
    if reachability != REACHABLE:
        # Nothing about an unreachable user leaks to the caller.
        assert (list(resolved.devices), list(resolved.features), resolved.inbox_mode) == ([], [], 0)


async def test_resolve_recipient_of_a_suspended_provider(cluster: Cluster, world: World) -> None:
    assert (await _resolve(cluster, ASKER, OPEN)).reachability == REACHABLE
    await cluster.identity().SuspendProvider(pb.SuspendProviderRequest(provider_id="gatekeeper"), metadata=ADMIN)
    resolved = await _resolve(cluster, ASKER, OPEN)
    assert resolved.reachability == pb.Reachability.REACHABILITY_PROVIDER_UNAVAILABLE
    assert list(resolved.devices) == []
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _lookup(cluster, world.birdy, ASKER, OPEN)
    assert error_reason(error.value) == "USER_NOT_FOUND"


@pytest.mark.parametrize(("field", "sender", "recipient"), [("sender", "bad", OPEN), ("recipient", ASKER, "")])
async def test_resolve_recipient_refuses_bad_addresses(
    cluster: Cluster, world: World, field: str, sender: str, recipient: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _resolve(cluster, sender, recipient)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _error_info(error.value).metadata["field"] == field
