"""Block, Unblock and ListBlocks over real gRPC and Redis."""

from __future__ import annotations

import grpc
import pytest
from support.cluster import Cluster, ProviderKeys, error_reason
from support.moderation import start_moderation

from parley.common.v1.common_pb2 import PageRequest
from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc

BOB = "phone:+4915112345678@gatekeeper"


async def _setup(
    cluster: Cluster, **moderation: object
) -> tuple[moderation_pb2_grpc.ModerationServiceStub, ProviderKeys]:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    return await start_moderation(cluster, **moderation), gatekeeper


async def _blocks(moderation: moderation_pb2_grpc.ModerationServiceStub, keys: ProviderKeys, user: str) -> list[str]:
    response = await moderation.ListBlocks(pb.ListBlocksRequest(), metadata=keys.auth(user))
    return list(response.addresses)


async def test_blocks_hold_any_provider_and_are_idempotent(cluster: Cluster) -> None:
    moderation, gatekeeper = await _setup(cluster)
    # Any provider, enlisted or not: a block is about an address; device parts and spelling are normalized.
    for address in ("username:Alice@birdy/2", "username:alice@birdy", "email:Eve@Example.com@lurker"):
        await moderation.Block(pb.BlockRequest(address=address), metadata=gatekeeper.auth(BOB))
    assert await _blocks(moderation, gatekeeper, BOB) == ["email:eve@example.com@lurker", "username:alice@birdy"]
    # Blocks are per user.
    assert await _blocks(moderation, gatekeeper, "username:dave@gatekeeper") == []
    await moderation.Unblock(pb.UnblockRequest(address="username:alice@birdy/5"), metadata=gatekeeper.auth(BOB))
    await moderation.Unblock(pb.UnblockRequest(address="username:alice@birdy"), metadata=gatekeeper.auth(BOB))
    assert await _blocks(moderation, gatekeeper, BOB) == ["email:eve@example.com@lurker"]


async def test_blocks_page_in_address_order(cluster: Cluster) -> None:
    moderation, gatekeeper = await _setup(cluster)
    names = [f"username:user{i:02d}@birdy" for i in range(5)]
    for name in reversed(names):
        await moderation.Block(pb.BlockRequest(address=name), metadata=gatekeeper.auth(BOB))
    seen: list[str] = []
    token = ""
    while True:
        page = await moderation.ListBlocks(
            pb.ListBlocksRequest(page=PageRequest(page_size=2, page_token=token)), metadata=gatekeeper.auth(BOB)
        )
        seen += page.addresses
        token = page.page.next_page_token
        if not token:
            break
    assert seen == names


async def test_a_user_may_hold_a_bounded_number_of_blocks(cluster: Cluster) -> None:
    moderation, gatekeeper = await _setup(cluster, max_blocks=2)
    for name in ("username:a1@birdy", "username:a2@birdy"):
        await moderation.Block(pb.BlockRequest(address=name), metadata=gatekeeper.auth(BOB))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.Block(pb.BlockRequest(address="username:a3@birdy"), metadata=gatekeeper.auth(BOB))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error.value) == "TOO_LARGE"
    # Blocking someone already blocked is not a new block.
    await moderation.Block(pb.BlockRequest(address="username:a1@birdy"), metadata=gatekeeper.auth(BOB))
    assert await _blocks(moderation, gatekeeper, BOB) == ["username:a1@birdy", "username:a2@birdy"]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "MISSING_FIELD"),
        ("alice", "INVALID_ADDRESS"),
        ("username:alice@Bad_Provider", "INVALID_ADDRESS"),
        (BOB, "INVALID_FIELD"),
        (f"{BOB}/3", "INVALID_FIELD"),
    ],
)
async def test_bad_block_requests_change_nothing(cluster: Cluster, address: str, reason: str) -> None:
    moderation, gatekeeper = await _setup(cluster)
    await moderation.Block(pb.BlockRequest(address="username:alice@birdy"), metadata=gatekeeper.auth(BOB))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.Block(pb.BlockRequest(address=address), metadata=gatekeeper.auth(BOB))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason
    if reason != "INVALID_FIELD":  # unblocking oneself is a harmless no-op, not an error
        with pytest.raises(grpc.aio.AioRpcError) as unblock:
            await moderation.Unblock(pb.UnblockRequest(address=address), metadata=gatekeeper.auth(BOB))
        assert unblock.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(unblock.value) == reason
    assert await _blocks(moderation, gatekeeper, BOB) == ["username:alice@birdy"]


async def test_a_page_token_must_come_from_a_previous_page(cluster: Cluster) -> None:
    moderation, gatekeeper = await _setup(cluster)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await moderation.ListBlocks(
            pb.ListBlocksRequest(page=PageRequest(page_token="not a token")), metadata=gatekeeper.auth(BOB)
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "INVALID_FIELD"
