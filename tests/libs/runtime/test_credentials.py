"""Each service has its own credential and each internal RPC serves only the services that need it (issue 10,
item 8): WatchProviders (every provider's keys) is not open to whoever holds some internal token any more."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import CREDENTIALS, Cluster
from support.moderation import start_moderation

from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.moderation.v1 import moderation_pb2 as mod_pb
from parley_runtime.config import ConfigError, ServiceSettings, load_settings
from parley_runtime.credentials import credential_hash, new_credential, parse_peers, peers_line
from parley_sdk import error_reason


def _as(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),)


async def _watch_first(identity: identity_pb2_grpc.IdentityServiceStub, credential: str) -> grpc.StatusCode:
    call = identity.WatchProviders(id_pb.WatchProvidersRequest(), metadata=_as(credential), timeout=5)
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        return error.code()
    finally:
        call.cancel()
    return grpc.StatusCode.OK


async def test_each_internal_rpc_serves_only_its_callers(cluster: Cluster) -> None:
    await cluster.start_identity()
    moderation = await start_moderation(cluster)
    identity = cluster.identity()
    check = mod_pb.CheckSendRequest(sender="username:a@birdy/1", recipient="username:b@birdy", fan_out=1)

    # The relay asks moderation for send decisions; the key directory has no business there.
    await moderation.CheckSend(check, metadata=_as(CREDENTIALS["relay"]))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.CheckSend(check, metadata=_as(CREDENTIALS["keydir"]))
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    reason, metadata = error_reason(error.value)
    assert (reason, metadata["service"]) == ("INTERNAL_ONLY", "keydir")

    # Every service that follows identity may watch the providers; identity's own credential may not.
    assert await _watch_first(identity, CREDENTIALS["notification"]) == grpc.StatusCode.OK
    assert await _watch_first(identity, CREDENTIALS["identity"]) == grpc.StatusCode.PERMISSION_DENIED
    # A credential of a known service name but not the one listed as its peer is no credential at all.
    assert await _watch_first(identity, new_credential("relay")) == grpc.StatusCode.PERMISSION_DENIED


async def test_rotating_one_services_credential_touches_no_other(cluster: Cluster) -> None:
    rotated = new_credential("relay")
    peers = parse_peers(peers_line(CREDENTIALS))
    # During the rotation identity accepts the relay's old and new credential; nobody else's entry changes.
    peers["relay"] = peers["relay"] | {credential_hash(rotated)}
    line = ",".join(f"{name}={'|'.join(sorted(digests))}" for name, digests in peers.items())
    await cluster.start_identity(internal_peers=line)
    identity = cluster.identity()
    for credential in (CREDENTIALS["relay"], rotated, CREDENTIALS["keydir"]):
        assert await _watch_first(identity, credential) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("internal_token", "no-service-name-here-at-all"),
        ("internal_token", "relay:short"),
        ("internal_peers", "relay=abc"),
        ("internal_peers", f"relay={'0' * 64},relay={'1' * 64}"),
    ],
)
def test_malformed_credentials_are_refused_at_start(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(ServiceSettings, **{variable: value})
    assert f"PARLEY_{variable.upper()}" in str(error.value)
    if variable == "internal_token":
        assert value not in str(error.value)  # a credential, even a malformed one, is never echoed
