"""Moderation in the test cluster: starting it with a known franking key, stamping as the relay does, and reading
its decisions and Redis state to compare two runs of one scenario."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import redis.asyncio as aioredis
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from parley.common.v1.common_pb2 import ErrorReason
from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_crypto import FrankingTag, frank, franking_context, stamp_commitment
from parley_moderation.app import ModerationSettings, build_moderation
from parley_moderation.model import Decision
from support.cluster import INTERNAL, Cluster, ProviderKeys
from support.telemetry import sums

FRANKING_KEY = hashlib.sha256(b"parley tests: the relay's franking key").digest()
"""The key the test relay stamps with and moderation verifies with."""

# Limits loose enough that tests which do not test them never meet them.
_UNLIMITED = {
    "send_burst": 1_000_000,
    "first_contact_burst": 1_000_000,
    "provider_burst": 1_000_000,
    "report_burst": 1_000_000,
}
NO_REFILL = 1e-9
"""A refill rate at which no token comes back during a test (tests never depend on the clock)."""

# The users of the send-decision scenarios: birdy's, the gatekeeper's, and one of a provider nobody enlisted.
ALICE = "username:alice@birdy"
CAROL = "username:carol@birdy"
ZOE = "username:zoe@birdy"
BOB = "phone:+4915112345678@gatekeeper"
DAVE = "username:dave@gatekeeper"
ERIN = "username:erin@gatekeeper"
GHOST = "username:ghost@nowhere"

Send = tuple[str, str, int]
"""(sender device or user, recipient, fan_out)."""


async def start_moderation(cluster: Cluster, **overrides: object) -> moderation_pb2_grpc.ModerationServiceStub:
    """Starts moderation (after identity) with the test franking key; returns a client stub."""
    await cluster.start(
        "moderation",
        ModerationSettings,
        build_moderation,
        franking_key=base64.b64encode(FRANKING_KEY).decode(),
        **{**_UNLIMITED, **overrides},
    )
    return moderation_pb2_grpc.ModerationServiceStub(cluster.channel("moderation"))


async def start_with_providers(
    cluster: Cluster, **overrides: object
) -> tuple[moderation_pb2_grpc.ModerationServiceStub, ProviderKeys]:
    """Identity with providers "gatekeeper" and "birdy" enlisted, then moderation: its stub, gatekeeper's keys."""
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    await cluster.enlist("birdy")
    return await start_moderation(cluster, **overrides), gatekeeper


def relay_stamp(
    tag: FrankingTag, sender_device: str, recipient: str, timestamp_ms: int, key: bytes = FRANKING_KEY
) -> bytes:
    """The stamp the relay adds to a franked message from ``sender_device`` to ``recipient`` at ``timestamp_ms``."""
    return stamp_commitment(key, tag.commitment, franking_context(sender_device, recipient, timestamp_ms))


def franked_report(
    plaintext: bytes,
    sender_device: str,
    recipient: str,
    *,
    timestamp_ms: int = 1_763_788_800_123,
    message_id: str = "m1",
) -> pb.ReportMessageRequest:
    """A correct report of a message ``sender_device`` sent to ``recipient``, franked and stamped for real."""
    tag = frank(plaintext)
    return pb.ReportMessageRequest(
        message_id=message_id,
        sender=sender_device,
        plaintext=plaintext,
        franking_key=tag.franking_key,
        commitment=tag.commitment,
        server_tag=relay_stamp(tag, sender_device, recipient, timestamp_ms),
        server_timestamp_ms=timestamp_ms,
        category="spam",
    )


async def check(
    moderation: moderation_pb2_grpc.ModerationServiceStub, sender: str, recipient: str, fan_out: int = 1
) -> pb.CheckSendResponse:
    """CheckSend as the relay calls it (internal token)."""
    return await moderation.CheckSend(
        pb.CheckSendRequest(sender=sender, recipient=recipient, fan_out=fan_out), metadata=INTERNAL
    )


def verdict_counts(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    """Decisions counted by ``moderation.check_send.verdicts`` so far, by (verdict, reason, limit)."""
    return {
        (attributes["verdict"], attributes["reason"], attributes["limit"]): int(value)
        for key, value in sums(reader, "moderation.check_send.verdicts").items()
        for attributes in [dict(key)]
    }


def decision_summary(decision: pb.CheckSendResponse | Decision) -> tuple[Any, ...]:
    """A decision (a response or the handler's) as (verdict, reason, limit, wait): what two runs of one scenario
    must agree on. Quota and breaker waits count down with the clock; whether there is one is what must agree."""
    clocked = decision.limit in ("provider_quota", "provider_circuit")
    return (
        pb.Verdict.Name(decision.verdict).removeprefix("VERDICT_"),
        ErrorReason.Name(decision.reason).removeprefix("ERROR_REASON_"),
        decision.limit,
        decision.retry_after_ms > 0 if clocked else decision.retry_after_ms,
    )


async def moderation_state(client: aioredis.Redis, *, exact: bool) -> dict[str, Any]:
    """Every moderation key (``mod:*``, ``rl:*``) with its contents.

    Args:
        exact: everything as stored (for "nothing changed"); otherwise without what only differs by when it was
            written (token timestamps, contact scores, breaker times), for comparing two runs.
    """
    state: dict[str, Any] = {}
    for pattern in ("mod:*", "rl:*"):
        async for raw_key in client.scan_iter(match=pattern):
            key = raw_key.decode()
            kind = (await client.type(key)).decode()
            if kind == "hash":
                fields = {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}
                if not exact:
                    fields.pop("ts", None)
                    if "tokens" in fields:
                        fields["tokens"] = str(round(float(fields["tokens"]), 6))
                    for clocked in ("since", "open_until"):
                        if clocked in fields:
                            fields[clocked] = str(int(fields[clocked]) > 0)
                state[key] = fields
            elif kind == "zset":
                members = await client.zrange(key, 0, -1, withscores=exact)
                state[key] = members if exact else sorted(members)
            else:
                state[key] = await client.get(key)
    return state


async def clear_moderation_state(client: aioredis.Redis) -> None:
    """Deletes every moderation key (``mod:*``, ``rl:*``), to run a scenario again from nothing."""
    keys = [key for pattern in ("mod:*", "rl:*") async for key in client.scan_iter(match=pattern)]
    if keys:
        await client.delete(*keys)
