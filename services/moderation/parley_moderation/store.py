"""Moderation state: the :class:`ModerationStore` protocol and its Redis implementation.

A send decision touches three Redis Cluster slots: the sender's (restriction, contacts, buckets), the
recipient's (blocks, contacts) and the sender's provider's (bucket, quota, breaker). Each slot has its own script
(``lua/check_*.lua``, KEYS and ARGV documented at their tops); the three go out as one pipeline, one round trip.
They cannot see one another's results, so when one part refuses a send another part allowed, a second round
trip gives back what the allowing part took (``lua/refund_*.lua``): a refused send costs no bucket or quota
anything, and an abusive user cannot drain the provider's budget with sends refused for the user alone. Refusals
are the uncommon case; the common one stays one round trip. Blocks live in the blocking user's slot, reports in
the shared ``{reports}`` slot.

Many sends are decided with the scripts of all of them in one pipeline, in order. Redis runs a pipeline's
scripts in order, so each send's scripts see exactly the state the sends before it left, as if each were decided
alone after the previous one, until one send needs a refund: sent alone, that refund would have run before the
next send's scripts. The sends after it were therefore run on speculation. They are undone (tokens and quota
refunded, breaker counts and contact records restored from what the scripts returned, newest first), the refund
goes out, and those sends run again: all in the next pipeline. So the batch's decisions and final state are
those of deciding the sends one by one, and the common case (nothing refunded) stays one round trip. All sends
of one provider in a pipeline share one ``check_provider`` call, which checks them in order: the provider's
bucket and quota are read and written once instead of once per send. Likewise a run of consecutive sends from one
sender to one recipient (a relay's frame in one conversation) shares one ``check_sender`` and one
``check_recipient`` call, so a frame of fifty such sends is three scripts, not a hundred and one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from parley.moderation.v1.moderation_pb2 import ReportOutcome
from parley_moderation.model import (
    PROVIDER_ALLOWED,
    PROVIDER_FIRST_CONTACT_EMPTY,
    SENDER_ALLOWED,
    AuditRecord,
    Report,
    SendAttempt,
    SendChecks,
    SendShape,
)
from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis, load_script, load_scripts, queue_script


class ModerationStore(Protocol):
    """Storage of send limits, blocks, restrictions and reports."""

    async def check_send_many(self, attempts: Sequence[SendAttempt], *, now_ms: int) -> list[SendChecks]:
        """Runs the three checks of each send, in order, as if each were checked alone after the one before.

        Tokens and quota stay taken only for sends that sender and provider both allow.

        Args:
            attempts: the sends, in the order their tokens are taken.
            now_ms: now, Unix ms (contact times).

        Returns:
            What the checks of each send found, one per attempt, in order.
        """

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


_ScriptCall = tuple[AsyncScript, list[str], list[Any]]
"""A script with its KEYS and ARGV, as a pipeline runs it."""

_ProviderKey = tuple[str, SendShape]
"""A provider and the limits its sends meet: the sends one ``check_provider`` call checks together."""


def _runs(wave: Sequence[SendAttempt]) -> list[int]:
    """The lengths of the wave's runs: consecutive sends from one sender to one other user, under one shape.

    A run's user checks are one ``check_sender`` and one ``check_recipient`` call. That keeps each slot's order:
    a run's sender and recipient scripts touch disjoint keys (the sender's restriction, contacts and buckets; the
    recipient's blocks and contacts), so running the sender's part of every send before the recipient's part of
    any is the same as interleaving them. A send to oneself stays a run of its own.
    """
    runs: list[int] = []
    previous: tuple[str, str, SendShape] | None = None
    for attempt in wave:
        conversation = (attempt.sender, attempt.recipient, attempt.shape)
        if conversation == previous and attempt.sender != attempt.recipient:
            runs[-1] += 1
        else:
            runs.append(1)
        previous = conversation
    return runs


def _wave_replies(
    wave: Sequence[SendAttempt], results: Sequence[Any], providers: Sequence[_ProviderKey], runs: Sequence[int]
) -> list[tuple[Any, Any, Any]]:
    """Each send's (sender, recipient, provider) replies from the replies of :meth:`_wave_calls`' scripts."""
    per_provider = {key: iter(reply) for key, reply in zip(providers, results, strict=False)}
    users = results[len(providers) :]
    senders = [reply for index in range(len(runs)) for reply in users[2 * index]]
    recipients = [reply for index in range(len(runs)) for reply in users[2 * index + 1]]
    return [
        (sender, recipient, next(per_provider[attempt.provider_id, attempt.shape]))
        for attempt, sender, recipient in zip(wave, senders, recipients, strict=True)
    ]


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
        self._restore_breaker = load_script(client, "parley_moderation", "restore_breaker")
        self._restore_contacts = load_script(client, "parley_moderation", "restore_contacts")
        self._block = load_script(client, "parley_moderation", "block")
        self._save_report = load_script(client, "parley_moderation", "save_report")
        self._count_verified_report = load_script(client, "parley_moderation", "count_verified_report")
        self._resolve_report = load_script(client, "parley_moderation", "resolve_report")
        self._token_bucket = load_script(client, "parley_runtime", "token_bucket")
        self._scripts = [value for value in vars(self).values() if isinstance(value, AsyncScript)]

    # --- send decisions -----------------------------------------------------------------------------------------

    async def check_send_many(self, attempts: Sequence[SendAttempt], *, now_ms: int) -> list[SendChecks]:
        found: list[SendChecks] = []
        undo: list[_ScriptCall] = []
        # A first contact every limit allowed still needs a token from its provider's first-contact bucket, a slot
        # the sender's script cannot reach; that call goes first in the next pipeline, like a refund.
        second_stage: tuple[SendAttempt, Any, Any] | None = None
        wave_size = len(attempts)
        while len(found) < len(attempts) or undo or second_stage:
            wave = attempts[len(found) : len(found) + wave_size]
            head = [*undo, *([self._provider_first_contact_call(second_stage[0])] if second_stage else [])]
            runs = _runs(wave)
            calls, provider_calls = self._wave_calls(wave, runs, now_ms)
            results = await self._run(head + calls)
            replies = _wave_replies(wave, results[len(head) :], provider_calls, runs)
            staged, undo = results[len(undo) : len(head)], []
            if second_stage is not None:
                attempt, sender, provider = second_stage
                second_stage = None
                allowed, retry_after_ms = (int(value) for value in staged[0])
                if not allowed:
                    # Refused after all: what the first stage took goes back, after undoing the wave that ran
                    # on the speculation that it would pass.
                    found[-1] = replace(
                        found[-1],
                        provider_outcome=PROVIDER_FIRST_CONTACT_EMPTY,
                        provider_retry_after_ms=retry_after_ms,
                    )
                    undo = [
                        *self._undo_all(wave, replies, now_ms),
                        self._refund_provider_call(attempt, provider),
                        self._refund_sender_call(attempt, sender),
                    ]
                    continue
            for offset, (attempt, (sender, recipient, provider)) in enumerate(zip(wave, replies, strict=True)):
                found.append(
                    SendChecks(
                        sender_outcome=int(sender[0]),
                        sender_retry_after_ms=int(sender[1]),
                        first_contact=bool(int(sender[2])),
                        provider_outcome=int(provider[0]),
                        provider_retry_after_ms=int(provider[1]),
                        blocked=int(recipient[0]) == 1,
                    )
                )
                refund = self._refund(attempt, sender, provider)
                needs_second_stage = refund is None and int(sender[0]) == SENDER_ALLOWED and int(sender[2]) == 1
                if refund is not None or needs_second_stage:
                    undo = self._undo_all(wave[offset + 1 :], replies[offset + 1 :], now_ms)
                    if refund is not None:
                        undo.append(refund)
                    else:
                        second_stage = (attempt, sender, provider)
                    # Speculating far past a send that needed a refund wastes work when refunds come often (a
                    # sender past its first-contact limit): the next wave is twice what this one got through.
                    wave_size = 2 * (offset + 1)
                    break
            else:
                wave_size *= 2
        return found

    def _wave_calls(
        self, wave: Sequence[SendAttempt], runs: Sequence[int], now_ms: int
    ) -> tuple[list[_ScriptCall], list[_ProviderKey]]:
        """The scripts of a wave: one ``check_provider`` per provider (its sends in order), then each run's
        ``check_sender`` and ``check_recipient`` (see :func:`_runs`); and the providers of the first calls, in order.

        Scripts in different slots cannot see one another, so only the order within a slot matters: a provider's
        sends keep theirs inside its one call, and each user's keys see the sends in order.
        """
        fan_outs: dict[_ProviderKey, list[int]] = {}
        for attempt in wave:
            fan_outs.setdefault((attempt.provider_id, attempt.shape), []).append(attempt.fan_out)
        calls: list[_ScriptCall] = []
        start = 0
        for length in runs:
            attempt = wave[start]
            start += length
            (sender_keys, sender_args), (recipient_keys, recipient_args) = user_check_calls(
                attempt.sender, attempt.recipient, shape=attempt.shape, now_ms=now_ms, sends=length
            )
            calls.append((self._check_sender, sender_keys, sender_args))
            calls.append((self._check_recipient, recipient_keys, recipient_args))
        provider_calls = [
            (self._check_provider, *provider_check_call(provider_id, shape=shape, fan_outs=sends))
            for (provider_id, shape), sends in fan_outs.items()
        ]
        return [*provider_calls, *calls], list(fan_outs)

    def _refund(self, attempt: SendAttempt, sender: Any, provider: Any) -> _ScriptCall | None:
        """The refund a send needs when one part refused what another allowed, else None."""
        sender_allowed = int(sender[0]) == SENDER_ALLOWED
        provider_allowed = int(provider[0]) == PROVIDER_ALLOWED
        if sender_allowed and not provider_allowed:
            return self._refund_sender_call(attempt, sender)
        if provider_allowed and not sender_allowed:
            return self._refund_provider_call(attempt, provider)
        return None

    def _undo_all(
        self, attempts: Sequence[SendAttempt], replies: Sequence[Sequence[Any]], now_ms: int
    ) -> list[_ScriptCall]:
        """What undoes speculated sends, newest first."""
        return [
            call
            for attempt, sent in reversed(list(zip(attempts, replies, strict=True)))
            for call in self._undo(attempt, sent, now_ms)
        ]

    def _undo(self, attempt: SendAttempt, replies: Sequence[Any], now_ms: int) -> list[_ScriptCall]:
        """What undoes a speculated send's three scripts, in reverse order of theirs."""
        sender, recipient, provider = replies
        calls: list[_ScriptCall] = []
        if int(provider[0]) == PROVIDER_ALLOWED:
            calls.append(self._refund_provider_call(attempt, provider))
        elif len(provider) > 3:  # the refusal counted toward the breaker; the breaker before and after follow
            calls.append((self._restore_breaker, [redis_keys.provider_breaker(attempt.provider_id)], provider[3:10]))
        if int(recipient[0]) == 0:
            calls.append(
                (
                    self._restore_contacts,
                    [redis_keys.contacts(attempt.recipient)],
                    [attempt.sender, recipient[1], now_ms, *recipient[2:]],
                )
            )
        if int(sender[0]) == SENDER_ALLOWED:
            calls.append(self._refund_sender_call(attempt, sender))
        return calls

    def _refund_sender_call(self, attempt: SendAttempt, sender: Any) -> _ScriptCall:
        return (
            self._refund_sender,
            [redis_keys.rate_limit(attempt.sender, "send"), redis_keys.rate_limit(attempt.sender, "first_contact")],
            [attempt.shape.sender_capacity, attempt.shape.first_contact_capacity, int(sender[2])],
        )

    def _provider_first_contact_call(self, attempt: SendAttempt) -> _ScriptCall:
        shape = attempt.shape
        return (
            self._token_bucket,
            [redis_keys.rate_limit(attempt.provider_id, "provider_first_contact")],
            [shape.provider_first_contact_capacity, shape.provider_first_contact_per_second, 1],
        )

    def _refund_provider_call(self, attempt: SendAttempt, provider: Any) -> _ScriptCall:
        return (
            self._refund_provider,
            [
                redis_keys.rate_limit(attempt.provider_id, "provider_send"),
                redis_keys.provider_quota(attempt.provider_id),
            ],
            [attempt.shape.provider_capacity, int(provider[2]), attempt.fan_out],
        )

    async def _run(self, calls: Sequence[_ScriptCall]) -> list[Any]:
        """Runs scripts as one pipeline, in order; returns their replies."""
        # EVALSHA straight on the pipeline: redis-py's script objects would add a SCRIPT EXISTS round trip to
        # every pipeline. After a Redis restart or SCRIPT FLUSH the scripts are gone, so from some point on every
        # call fails for that alone (doing nothing). Every script is then loaded, not only the failed ones: a
        # script loaded later on its own would fail first while the calls after it ran, out of order. The
        # failed calls then run again, in order.
        results = await self._pipeline(calls)
        failed = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
        if failed:
            await load_scripts(self._client, self._scripts)
            for index, result in zip(failed, await self._pipeline([calls[i] for i in failed]), strict=True):
                results[index] = result
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results

    async def _pipeline(self, calls: Sequence[_ScriptCall]) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args in calls:
                queue_script(pipe, script, keys, args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

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
        *user_check_calls(sender, recipient, shape=shape, now_ms=now_ms),
        provider_check_call(provider_id, shape=shape, fan_outs=[fan_out]),
    )


def user_check_calls(
    sender: str, recipient: str, *, shape: SendShape, now_ms: int, sends: int = 1
) -> tuple[tuple[list[str], list[Any]], tuple[list[str], list[Any]]]:
    """KEYS and ARGV of ``check_sender`` and ``check_recipient`` for ``sends`` consecutive sends from ``sender`` to
    ``recipient`` (see :func:`check_send_calls`)."""
    return (
        (
            [
                redis_keys.sender_restriction(sender),
                redis_keys.contacts(sender),
                redis_keys.rate_limit(sender, "send"),
                redis_keys.rate_limit(sender, "first_contact"),
            ],
            [recipient, *shape.sender_args, int(sender != recipient), sends],
        ),
        (
            [redis_keys.blocks(recipient), redis_keys.contacts(recipient)],
            [sender, now_ms, *shape.contact_args, sends],
        ),
    )


def provider_check_call(provider_id: str, *, shape: SendShape, fan_outs: Sequence[int]) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one ``check_provider`` call checking sends of ``provider_id`` in order.

    Args:
        provider_id: the sender's provider.
        shape: the limits.
        fan_outs: device copies of each send.
    """
    return (
        [
            redis_keys.rate_limit(provider_id, "provider_send"),
            redis_keys.provider_quota(provider_id),
            redis_keys.provider_breaker(provider_id),
        ],
        [*shape.provider_args, *fan_outs],
    )
