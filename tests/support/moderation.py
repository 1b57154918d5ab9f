"""Moderation in the test cluster: starting it with a known franking key, and stamping as the relay does."""

from __future__ import annotations

import base64
import hashlib

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_crypto import FrankingTag, frank, franking_context, stamp_commitment
from parley_moderation.app import ModerationSettings, build_moderation
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
