"""The interop policy at identity: an admin RPC, validated, carried by the provider feed, applied at opt-in and on
every resolve (both sides of a third-party chat), never to chats within one provider."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import ADMIN, INTERNAL, Cluster, ProviderKeys, error_reason

from parley.identity.v1 import identity_pb2 as pb

DE = "phone:+4915112345678@gatekeeper"
US = "phone:+12025550123@gatekeeper"
NAMED = "username:nemo@gatekeeper"
BEN = "username:ben@birdy"
REACHABLE = pb.Reachability.REACHABILITY_REACHABLE
NOT_FOUND = pb.Reachability.REACHABILITY_NOT_FOUND


@pytest.fixture
async def keys(cluster: Cluster) -> dict[str, ProviderKeys]:
    await cluster.start_identity()
    keys = {name: await cluster.enlist(name) for name in ("gatekeeper", "birdy")}
    for user in (DE, US, NAMED):
        await cluster.register_user(keys["gatekeeper"], user, devices=2, allow=["birdy"])
    await cluster.register_user(keys["birdy"], BEN, allow=["gatekeeper"])
    return keys


async def _policy(cluster: Cluster, regions: list[str], primary_only: bool = False) -> pb.Provider:
    request = pb.SetInteropPolicyRequest(
        provider_id="gatekeeper",
        policy=pb.InteropPolicy(allowed_regions=regions, primary_device_only=primary_only),
    )
    return (await cluster.identity().SetInteropPolicy(request, metadata=ADMIN)).provider


async def _resolve(cluster: Cluster, sender: str, recipient: str) -> pb.ResolveRecipientResponse:
    request = pb.ResolveRecipientRequest(sender=sender, recipient=recipient)
    return await cluster.identity().ResolveRecipient(request, metadata=INTERNAL)


async def test_the_policy_is_stored_normalized_and_admin_only(cluster: Cluster, keys: dict[str, ProviderKeys]) -> None:
    provider = await _policy(cluster, ["eu", "CH", "EU"], primary_only=True)
    assert list(provider.interop_policy.allowed_regions) == ["CH", "EU"]
    assert provider.interop_policy.primary_device_only
    stored = await cluster.identity().GetProvider(pb.GetProviderRequest(provider_id="gatekeeper"), metadata=ADMIN)
    assert stored.provider.interop_policy == provider.interop_policy
    with pytest.raises(grpc.aio.AioRpcError) as bad_region:
        await _policy(cluster, ["Europe"])
    assert error_reason(bad_region.value) == "INVALID_FIELD"
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await cluster.identity().SetInteropPolicy(pb.SetInteropPolicyRequest(provider_id="nobody"), metadata=ADMIN)
    assert error_reason(unknown.value) == "UNKNOWN_PROVIDER"
    with pytest.raises(grpc.aio.AioRpcError) as not_admin:
        await cluster.identity().SetInteropPolicy(
            pb.SetInteropPolicyRequest(provider_id="gatekeeper"), metadata=keys["gatekeeper"].auth(DE)
        )
    assert error_reason(not_admin.value) == "ADMIN_REQUIRED"


async def test_regions_apply_at_opt_in_and_on_both_sides_of_a_resolve(
    cluster: Cluster, keys: dict[str, ProviderKeys]
) -> None:
    await _policy(cluster, ["EU"])
    # Recipients the policy keeps out are as unknown as users who never opted in; a name has no region.
    assert (await _resolve(cluster, BEN, DE)).reachability == REACHABLE
    assert (await _resolve(cluster, BEN, US)).reachability == NOT_FOUND
    assert (await _resolve(cluster, BEN, NAMED)).reachability == NOT_FOUND
    # Senders learn why they cannot write.
    refused = await _resolve(cluster, f"{US}/1", BEN)
    assert (refused.reachability, refused.policy_rule) == (pb.Reachability.REACHABILITY_SENDER_POLICY, "region")
    assert list(refused.devices) == []
    # Chats within the gatekeeper are not third-party chats.
    assert (await _resolve(cluster, f"{US}/1", DE)).reachability == REACHABLE
    with pytest.raises(grpc.aio.AioRpcError) as opt_in:
        await cluster.identity().EnableThirdPartyChats(
            pb.EnableThirdPartyChatsRequest(allowed_providers=["birdy"]), metadata=keys["gatekeeper"].auth(US)
        )
    assert opt_in.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(opt_in.value) == "INTEROP_POLICY"
    await cluster.identity().EnableThirdPartyChats(
        pb.EnableThirdPartyChatsRequest(allowed_providers=["birdy"]), metadata=keys["gatekeeper"].auth(DE)
    )


async def test_primary_devices_only(cluster: Cluster, keys: dict[str, ProviderKeys]) -> None:
    await _policy(cluster, [], primary_only=True)
    assert [d.device_id for d in (await _resolve(cluster, BEN, DE)).devices] == [1]
    found = await cluster.identity().LookupAddress(
        pb.LookupAddressRequest(address=DE), metadata=keys["birdy"].auth(BEN)
    )
    assert [d.device_id for d in found.devices] == [1]
    assert (await _resolve(cluster, f"{DE}/1", BEN)).reachability == REACHABLE
    refused = await _resolve(cluster, f"{DE}/2", BEN)
    assert (refused.reachability, refused.policy_rule) == (pb.Reachability.REACHABILITY_SENDER_POLICY, "primary_device")
    # Within the provider every device still counts, and a user without its primary device is out of reach.
    assert [d.device_id for d in (await _resolve(cluster, f"{US}/1", DE)).devices] == [1, 2]
    await cluster.identity().RemoveDevice(pb.RemoveDeviceRequest(device_id=1), metadata=keys["gatekeeper"].auth(DE))
    assert (await _resolve(cluster, BEN, DE)).reachability == NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as opt_in:
        await cluster.identity().EnableThirdPartyChats(
            pb.EnableThirdPartyChatsRequest(allowed_providers=["birdy"]), metadata=keys["gatekeeper"].auth(DE, 2)
        )
    assert error_reason(opt_in.value) == "INTEROP_POLICY"
