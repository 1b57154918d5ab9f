"""Mutes at identity: set, clear and list over real gRPC on a real Redis; bounded, validated, private, and kept
across restarts of the service."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import INTERNAL, Cluster, ProviderKeys, error_reason

from parley.identity.v1 import identity_pb2 as pb

ANA = "username:ana@gatekeeper"
BEN = "username:ben@birdy"


@pytest.fixture
async def keys(cluster: Cluster) -> dict[str, ProviderKeys]:
    await cluster.start_identity(max_mutes_per_user=3)
    keys = {name: await cluster.enlist(name) for name in ("gatekeeper", "birdy", "robin")}
    await cluster.register_user(keys["gatekeeper"], ANA, allow=["birdy", "robin"])
    for user in (BEN, "username:cleo@birdy", "username:rob@robin"):
        await cluster.register_user(keys[user.rpartition("@")[2]], user, allow=["gatekeeper"])
    return keys


def _ana(keys: dict[str, ProviderKeys]) -> tuple[tuple[str, str], ...]:
    """Fresh credentials of Ana (assertions are one-time)."""
    return keys["gatekeeper"].auth(ANA)


async def _muted(cluster: Cluster, sender: str) -> bool:
    request = pb.ResolveRecipientRequest(sender=sender, recipient=ANA)
    return (await cluster.identity().ResolveRecipient(request, metadata=INTERNAL)).muted


async def test_mutes_are_listed_resolved_and_cleared(cluster: Cluster, keys: dict[str, ProviderKeys]) -> None:
    identity = cluster.identity()
    await identity.SetMute(pb.SetMuteRequest(peer=f"{BEN}/3", duration_s=3600), metadata=_ana(keys))
    await identity.SetMute(pb.SetMuteRequest(provider_id="robin"), metadata=_ana(keys))
    listed = (await identity.ListMutes(pb.ListMutesRequest(), metadata=_ana(keys))).mutes
    assert [(m.WhichOneof("target"), m.peer or m.provider_id, m.until_ms == 0) for m in listed] == [
        ("peer", BEN, False),
        ("provider_id", "robin", True),
    ]
    assert await _muted(cluster, f"{BEN}/1")
    assert await _muted(cluster, "username:rob@robin/1")
    assert not await _muted(cluster, "username:cleo@birdy/1")
    # Ben never learns he is muted: nothing user-facing says so, and his own view of Ana is unchanged.
    found = await identity.LookupAddress(pb.LookupAddressRequest(address=ANA), metadata=keys["birdy"].auth(BEN))
    assert found.address == ANA

    cleared = await identity.ClearMute(pb.ClearMuteRequest(peer=BEN), metadata=_ana(keys))
    assert cleared.cleared
    assert not (await identity.ClearMute(pb.ClearMuteRequest(peer=BEN), metadata=_ana(keys))).cleared
    assert not await _muted(cluster, f"{BEN}/1")


async def test_mutes_survive_a_restart(cluster: Cluster, keys: dict[str, ProviderKeys]) -> None:
    await cluster.identity().SetMute(pb.SetMuteRequest(provider_id="birdy"), metadata=_ana(keys))
    await cluster.servers.pop("identity").stop(0)
    restarted = await cluster.start_identity()
    replacement = next(name for name in cluster.servers if cluster.target(name) == restarted)
    [mute] = (await cluster.identity(replacement).ListMutes(pb.ListMutesRequest(), metadata=_ana(keys))).mutes
    assert (mute.provider_id, mute.until_ms) == ("birdy", 0)


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (pb.SetMuteRequest(), grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"),
        (pb.SetMuteRequest(peer="not an address"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ADDRESS"),
        (pb.SetMuteRequest(provider_id="nobody"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
        (pb.SetMuteRequest(peer=BEN, duration_s=11 * 365 * 86_400), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    ],
    ids=["no-target", "bad-peer", "unknown-provider", "too-long"],
)
async def test_bad_mutes_are_refused(
    cluster: Cluster, keys: dict[str, ProviderKeys], request_: pb.SetMuteRequest, code: grpc.StatusCode, reason: str
) -> None:
    identity = cluster.identity()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.SetMute(request_, metadata=_ana(keys))
    assert (error.value.code(), error_reason(error.value)) == (code, reason)
    assert list((await identity.ListMutes(pb.ListMutesRequest(), metadata=_ana(keys))).mutes) == []


async def test_a_user_holds_a_bounded_number_of_mutes(cluster: Cluster, keys: dict[str, ProviderKeys]) -> None:
    identity = cluster.identity()
    for index in range(3):
        await identity.SetMute(pb.SetMuteRequest(peer=f"username:u{index}@birdy"), metadata=_ana(keys))
    # Replacing one that exists is not one more.
    await identity.SetMute(pb.SetMuteRequest(peer="username:u0@birdy", duration_s=60), metadata=_ana(keys))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await identity.SetMute(pb.SetMuteRequest(peer="username:u3@birdy"), metadata=_ana(keys))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "TOO_LARGE"
    assert len((await identity.ListMutes(pb.ListMutesRequest(), metadata=_ana(keys))).mutes) == 3
    # An unregistered user has nothing to mute with.
    with pytest.raises(grpc.aio.AioRpcError) as ghost:
        await identity.SetMute(
            pb.SetMuteRequest(peer=BEN), metadata=keys["gatekeeper"].auth("username:ghost@gatekeeper")
        )
    assert error_reason(ghost.value) == "USER_NOT_FOUND"
