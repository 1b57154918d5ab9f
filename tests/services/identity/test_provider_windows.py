"""Providers declare how long their clients honour edits and deletes for everyone; users' SDKs read it back."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import ADMIN, Cluster, ProviderKeys, error_reason

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.identity.v1 import identity_pb2 as id_pb


async def _enlist(cluster: Cluster, provider_id: str, **windows: int) -> id_pb.Provider:
    keys = ProviderKeys(provider_id)
    request = id_pb.EnlistProviderRequest(
        provider_id=provider_id,
        display_name=provider_id,
        signing_public_key=keys.public_key,
        identifier_kinds=[IdentifierKind.IDENTIFIER_KIND_USERNAME],
        features=[Feature.FEATURE_TEXT],
        **windows,
    )
    response = await cluster.identity().EnlistProvider(request, metadata=ADMIN)
    await cluster.identity().ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=ADMIN)
    return response.provider


async def test_windows_are_stored_with_defaults_and_listed_to_users(cluster: Cluster) -> None:
    await cluster.start_identity()
    declared = await _enlist(cluster, "quick", edit_window_s=60, delete_window_s=600)
    default = await _enlist(cluster, "plain")
    assert (declared.edit_window_s, declared.delete_window_s) == (60, 600)
    assert (default.edit_window_s, default.delete_window_s) == (900, 172_800)
    user = await cluster.enlist("gatekeeper")
    await cluster.register_user(user, "username:ana@gatekeeper")
    listed = await cluster.identity().ListAvailableProviders(
        id_pb.ListAvailableProvidersRequest(), metadata=user.auth("username:ana@gatekeeper")
    )
    windows = {p.provider_id: (p.edit_window_s, p.delete_window_s) for p in listed.providers}
    assert windows == {"gatekeeper": (900, 172_800), "plain": (900, 172_800), "quick": (60, 600)}


@pytest.mark.parametrize("field", ["edit_window_s", "delete_window_s"])
async def test_a_window_longer_than_thirty_days_is_refused(cluster: Cluster, field: str) -> None:
    await cluster.start_identity()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _enlist(cluster, "greedy", **{field: 30 * 24 * 3600 + 1})
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "INVALID_FIELD"
