"""Moderation state: the :class:`ModerationStore` protocol and its Redis implementation.

A send decision touches three Redis Cluster slots: the sender's (restriction, contacts, buckets), the
recipient's (blocks, contacts) and the sender's provider's (bucket, quota, breaker). Each slot has its own script
(``lua/check_*.lua``, KEYS and ARGV documented at their tops); the three go out as one pipeline, one round trip.
They cannot see one another's results, so when one part refuses a send another part allowed, a second round
trip gives back what the allowing part took (``lua/refund_*.lua``): a refused send costs no bucket or quota
anything, and an abusive user cannot drain the provider's budget with sends refused for the user alone. Refusals
are the uncommon case; the common one stays one round trip. Blocks live in the blocking user's slot, reports in
the shared ``{reports}`` slot.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import NoScriptError

from parley.moderation.v1.moderation_pb2 import ReportOutcome
from parley_moderation.model import PROVIDER_ALLOWED, SENDER_ALLOWED, AuditRecord, Report, SendChecks, SendShape
from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis, load_script


class ModerationStore(Protocol):
    """Storage of send limits, blocks, restrictions and reports."""

    async def check_send(
        self, sender: str, recipient: str, provider_id: str, *, fan_out: int, shape: SendShape, now_ms: int
    ) -> SendChecks:
        """Runs the three checks of one send; tokens and quota stay taken only when sender and provider allow it."""

    async def block(self, user: str, blocked: str, max_blocks: int) -> bool:
        """Adds a block (a no-op when it exists); False when ``user`` already holds ``max_blocks`` others."""

    async def unblock(self, user: str, blocked: str) -> None:
        """Removes a block if present."""

    async def list_blocks(self, user: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` blocked addresses ordered by address, starting after ``after`` ("" = from the start)."""

    async def save_report(self, report: Report) -> bool:
        """Stores a report with its single audit entry, or upgrades a stored unverified one; True when verified."""

    async def count_verified_report(
        self, sender: str, reporter: str, *, now_ms: int, window_ms: int, threshold: int, restriction_ms: int, why: str
    ) -> bool:
        """Counts ``reporter``'s verified report against ``sender``; True when it restricted the sender."""

    async def restrict(self, sender: str, duration_ms: int, why: str) -> None:
        """Restricts ``sender`` for ``duration_ms``."""

    async def append_audit(self, report_id: str, entry: AuditRecord) -> None:
        """Appends an entry to a report's audit trail."""

    async def get_report(self, report_id: str) -> Report | None:
        """The report with its audit trail, or None."""

    async def list_reports(self, *, open_only: bool, before: str, limit: int) -> list[Report]:
        """Up to ``limit`` reports, newest first, older than index member ``before`` ("" = the newest)."""

    async def resolve_report(self, report_id: str, outcome: ReportOutcome.ValueType, entry: AuditRecord) -> bool:
        """Sets the outcome and appends ``entry``; False when there is no such report."""


def _encode_audit(entry: AuditRecord) -> str:
    return json.dumps({"at_ms": entry.at_ms, "actor": entry.actor, "action": entry.action}, separators=(",", ":"))


def _decode_audit(raw: bytes) -> AuditRecord:
    data = json.loads(raw)
    return AuditRecord(at_ms=int(data["at_ms"]), actor=str(data["actor"]), action=str(data["action"]))


class RedisModerationStore:
    """:class:`ModerationStore` on Redis."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._check_sender = load_script(client, "parley_moderation", "check_sender")
        self._check_recipient = load_script(client, "parley_moderation", "check_recipient")
        self._check_provider = load_script(client, "parley_moderation", "check_provider")
        self._refund_sender = load_script(client, "parley_moderation", "refund_sender")
        self._refund_provider = load_script(client, "parley_moderation", "refund_provider")
        self._block = load_script(client, "parley_moderation", "block")
        self._save_report = load_script(client, "parley_moderation", "save_report")
        self._count_verified_report = load_script(client, "parley_moderation", "count_verified_report")
        self._resolve_report = load_script(client, "parley_moderation", "resolve_report")

    # --- send decisions -----------------------------------------------------------------------------------------

    async def check_send(
        self, sender: str, recipient: str, provider_id: str, *, fan_out: int, shape: SendShape, now_ms: int
    ) -> SendChecks:
        calls = check_send_calls(sender, recipient, provider_id, fan_out=fan_out, shape=shape, now_ms=now_ms)
        scripts = (self._check_sender, self._check_recipient, self._check_provider)
        # EVALSHA straight on the pipeline: redis-py's script objects would add a SCRIPT EXISTS round trip to
        # every pipeline. After a Redis restart or SCRIPT FLUSH the scripts are gone; each one that failed
        # for that alone (it did nothing) is then run again, loading it.
        async with self._client.pipeline(transaction=False) as pipe:
            for script, (keys, args) in zip(scripts, calls, strict=True):
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError):
                keys, args = calls[index]
                results[index] = await scripts[index](keys=keys, args=args)
            elif isinstance(result, Exception):
                raise result
        sender_result, blocked, provider_result = results
        sender_allowed = int(sender_result[0]) == SENDER_ALLOWED
        provider_allowed = int(provider_result[0]) == PROVIDER_ALLOWED
        if sender_allowed and not provider_allowed:
            await self._refund_sender(
                keys=calls[0][0][2:],
                args=[shape.sender_capacity, shape.first_contact_capacity, int(sender_result[2])],
            )
        elif provider_allowed and not sender_allowed:
            await self._refund_provider(
                keys=calls[2][0][:2], args=[shape.provider_capacity, int(provider_result[2]), fan_out]
            )
        return SendChecks(
            sender_outcome=int(sender_result[0]),
            sender_retry_after_ms=int(sender_result[1]),
            first_contact=bool(int(sender_result[2])),
            provider_outcome=int(provider_result[0]),
            provider_retry_after_ms=int(provider_result[1]),
            blocked=bool(int(blocked)),
        )

    # --- blocks -------------------------------------------------------------------------------------------------

    async def block(self, user: str, blocked: str, max_blocks: int) -> bool:
        return int(await self._block(keys=[redis_keys.blocks(user)], args=[blocked, max_blocks])) >= 0

    async def unblock(self, user: str, blocked: str) -> None:
        await self._client.zrem(redis_keys.blocks(user), blocked)

    async def list_blocks(self, user: str, after: str, limit: int) -> list[str]:
        members: list[Any] = await self._client.zrangebylex(
            redis_keys.blocks(user), f"({after}" if after else "-", "+", start=0, num=limit
        )
        return [member.decode() for member in members]

    # --- reports ------------------------------------------------------------------------------------------------

    async def save_report(self, report: Report) -> bool:
        verified = await self._save_report(
            keys=[
                redis_keys.report(report.report_id),
                redis_keys.report_audit(report.report_id),
                redis_keys.REPORT_INDEX,
                redis_keys.OPEN_REPORT_INDEX,
            ],
            args=[
                report.reporter,
                report.sender,
                report.message_id,
                int(report.verified),
                report.category,
                report.created_at_ms,
                report.plaintext,
                report.sent_at_ms,
                report.outcome,
                report.index_member,
                _encode_audit(report.audit[0]),
            ],
        )
        return bool(int(verified))

    async def count_verified_report(
        self, sender: str, reporter: str, *, now_ms: int, window_ms: int, threshold: int, restriction_ms: int, why: str
    ) -> bool:
        restricted = await self._count_verified_report(
            keys=[redis_keys.verified_reporters(sender), redis_keys.sender_restriction(sender)],
            args=[reporter, now_ms, window_ms, threshold, restriction_ms, why],
        )
        return bool(int(restricted))

    async def restrict(self, sender: str, duration_ms: int, why: str) -> None:
        await self._client.set(redis_keys.sender_restriction(sender), why, px=duration_ms)

    async def append_audit(self, report_id: str, entry: AuditRecord) -> None:
        await self._client.rpush(redis_keys.report_audit(report_id), _encode_audit(entry))

    async def get_report(self, report_id: str) -> Report | None:
        reports = await self._load_reports([report_id])
        return reports[0] if reports else None

    async def list_reports(self, *, open_only: bool, before: str, limit: int) -> list[Report]:
        index = redis_keys.OPEN_REPORT_INDEX if open_only else redis_keys.REPORT_INDEX
        members: list[Any] = await self._client.zrange(
            index, f"({before}" if before else "+", "-", desc=True, bylex=True, offset=0, num=limit
        )
        return await self._load_reports([member.decode().partition(":")[2] for member in members])

    async def _load_reports(self, report_ids: Sequence[str]) -> list[Report]:
        if not report_ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for report_id in report_ids:
                pipe.hgetall(redis_keys.report(report_id))
                pipe.lrange(redis_keys.report_audit(report_id), 0, -1)
            raw: list[Any] = await pipe.execute()
        reports = []
        for report_id, fields, audit in zip(report_ids, raw[::2], raw[1::2], strict=True):
            if not fields:
                continue
            reports.append(
                Report(
                    report_id=report_id,
                    reporter=fields[b"reporter"].decode(),
                    sender=fields[b"sender"].decode(),
                    message_id=fields[b"message_id"].decode(),
                    verified=fields[b"verified"] == b"1",
                    category=fields[b"category"].decode(),
                    outcome=ReportOutcome.ValueType(int(fields[b"outcome"])),
                    created_at_ms=int(fields[b"created_at_ms"]),
                    plaintext=fields[b"plaintext"],
                    sent_at_ms=int(fields[b"sent_at_ms"]),
                    audit=tuple(_decode_audit(entry) for entry in audit),
                )
            )
        return reports

    async def resolve_report(self, report_id: str, outcome: ReportOutcome.ValueType, entry: AuditRecord) -> bool:
        found = await self._resolve_report(
            keys=[redis_keys.report(report_id), redis_keys.report_audit(report_id), redis_keys.OPEN_REPORT_INDEX],
            args=[outcome, _encode_audit(entry)],
        )
        return bool(int(found))


def check_send_calls(
    sender: str, recipient: str, provider_id: str, *, fan_out: int, shape: SendShape, now_ms: int
) -> tuple[tuple[list[str], list[Any]], ...]:
    """KEYS and ARGV of ``check_sender``, ``check_recipient`` and ``check_provider`` for one send.

    Public so that the benchmark's floor sends exactly what the service sends.

    Args:
        sender: the sender user's address.
        recipient: the recipient user's address.
        provider_id: the sender's provider.
        fan_out: device copies of this send.
        shape: the limits.
        now_ms: now, Unix ms (contact times).
    """
    return (
        (
            [
                redis_keys.sender_restriction(sender),
                redis_keys.contacts(sender),
                redis_keys.rate_limit(sender, "send"),
                redis_keys.rate_limit(sender, "first_contact"),
            ],
            [
                recipient,
                shape.sender_capacity,
                shape.sender_per_second,
                shape.first_contact_capacity,
                shape.first_contact_per_second,
                int(sender != recipient),
            ],
        ),
        (
            [redis_keys.blocks(recipient), redis_keys.contacts(recipient)],
            [sender, now_ms, shape.max_contacts, shape.contact_ttl_ms],
        ),
        (
            [
                redis_keys.rate_limit(provider_id, "provider_send"),
                redis_keys.provider_quota(provider_id),
                redis_keys.provider_breaker(provider_id),
            ],
            [
                shape.provider_capacity,
                shape.provider_per_second,
                shape.provider_quota,
                shape.quota_window_ms,
                fan_out,
                shape.breaker_threshold,
                shape.breaker_window_ms,
                shape.breaker_cooldown_ms,
            ],
        ),
    )
