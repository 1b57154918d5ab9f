"""Moderation rules: send decisions, blocks, reports and their review. No gRPC here.

Every method validates its input completely before anything is written, so a refused call changes nothing. A
send decision refuses with a verdict, not an error: the relay turns it into the sender's error, or, for a
block, into an answer identical to a delivered send.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry import metrics

from parley.common.v1.common_pb2 import ErrorReason
from parley.events.v1.events_pb2 import Event, ReportResolved
from parley.moderation.v1.moderation_pb2 import ReportOutcome, Verdict
from parley_crypto import FrankingError, franking_context, verify_report
from parley_moderation.batcher import SendCheckBatcher
from parley_moderation.model import (
    FIRST_CONTACT_BUCKET_EMPTY,
    PROVIDER_ALLOWED,
    PROVIDER_BUCKET_EMPTY,
    PROVIDER_CIRCUIT_OPEN,
    PROVIDER_FIRST_CONTACT_EMPTY,
    PROVIDER_QUOTA_USED_UP,
    SENDER_ALLOWED,
    SENDER_BUCKET_EMPTY,
    SENDER_RESTRICTED,
    AuditRecord,
    Decision,
    Report,
    SendAttempt,
    SendChecks,
    SendShape,
)
from parley_moderation.store import ModerationStore
from parley_runtime.auth import ProviderDirectory, ProviderRecord, provider_refusal
from parley_runtime.errors import Code, ParleyError, invalid_field, missing_field, not_found, parse_address, reason_name
from parley_runtime.events import EventPublisher
from parley_runtime.ratelimit import Limit, RateLimiter
from parley_stanza import Address, InvalidAddressError

_MAX_PAGE = 500
_DEFAULT_PAGE = 50
# retry_after_ms is a uint32 on the wire; a bucket refilling at a near-zero rate can ask for longer.
_MAX_RETRY_AFTER_MS = 2**32 - 1
# The stanza codec's id rule (parley_stanza's ID_PATTERN): a reported message id is a stanza id.
_MESSAGE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REPORT_ID = re.compile(r"[0-9a-f]{24}")
_INDEX_MEMBER = re.compile(r"[0-9]{13}:[0-9a-f]{24}")
_MAX_CATEGORY = 64
_MAX_NOTE = 1000
# Franking keys, commitments and stamps are 32 bytes; anything much longer is junk, refused before any work.
_MAX_FRANKING_FIELD = 64

_RESOLVED_OUTCOMES = frozenset(
    {
        ReportOutcome.REPORT_OUTCOME_DISMISSED,
        ReportOutcome.REPORT_OUTCOME_SENDER_RESTRICTED,
        ReportOutcome.REPORT_OUTCOME_ESCALATED,
    }
)


@dataclass(frozen=True, slots=True)
class ModerationLimits:
    """Configurable bounds and thresholds (see the service README for their meaning and defaults)."""

    sender: Limit = field(default_factory=lambda: Limit("send", capacity=120, per_second=2.0))
    first_contact: Limit = field(default_factory=lambda: Limit("first_contact", capacity=10, per_second=10 / 3600))
    provider: Limit = field(default_factory=lambda: Limit("provider_send", capacity=20_000, per_second=2_000))
    provider_first_contact: Limit = field(
        default_factory=lambda: Limit("provider_first_contact", capacity=10_000, per_second=10_000 / 3600)
    )
    provider_quota: int = 0
    provider_quota_overrides: Mapping[str, int] = field(default_factory=dict)
    quota_window_ms: int = 86_400_000
    breaker_threshold: int = 1000
    breaker_window_ms: int = 10_000
    breaker_cooldown_ms: int = 30_000
    max_fan_out: int = 1000
    max_check_batch: int = 1000
    max_contacts: int = 10_000
    contact_ttl_ms: int = 90 * 86_400_000
    max_blocks: int = 10_000
    report: Limit = field(default_factory=lambda: Limit("report", capacity=20, per_second=20 / 86_400))
    max_report_plaintext_bytes: int = 65_536
    max_report_page: int = 32
    restrict_after_reports: int = 3
    report_window_ms: int = 30 * 86_400_000
    restriction_ms: int = 7 * 86_400_000

    def shape(self, provider_id: str) -> SendShape:
        """The limits of a send by a user of ``provider_id``."""
        return SendShape(
            sender_capacity=self.sender.capacity,
            sender_per_second=self.sender.per_second,
            first_contact_capacity=self.first_contact.capacity,
            first_contact_per_second=self.first_contact.per_second,
            provider_capacity=self.provider.capacity,
            provider_per_second=self.provider.per_second,
            provider_first_contact_capacity=self.provider_first_contact.capacity,
            provider_first_contact_per_second=self.provider_first_contact.per_second,
            provider_quota=self.provider_quota_overrides.get(provider_id, self.provider_quota),
            quota_window_ms=self.quota_window_ms,
            breaker_threshold=self.breaker_threshold,
            breaker_window_ms=self.breaker_window_ms,
            breaker_cooldown_ms=self.breaker_cooldown_ms,
            max_contacts=self.max_contacts,
            contact_ttl_ms=self.contact_ttl_ms,
        )


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One send to decide (``CheckSendRequest``), as the relay asks.

    Attributes:
        sender: the sending device's (or user's) address.
        recipient: the recipient user's address (a device part is ignored).
        fan_out: device copies the send makes; 0 counts as 1.
    """

    sender: str
    recipient: str
    fan_out: int


@dataclass(frozen=True, slots=True)
class ReportSubmission:
    """What a reporter reveals about one received message (``ReportMessageRequest``)."""

    message_id: str
    sender: str
    plaintext: bytes
    franking_key: bytes
    commitment: bytes
    server_tag: bytes
    server_timestamp_ms: int
    category: str


class ModerationHandler:
    """Moderation's domain logic.

    Args:
        store: moderation storage.
        checks: runs send checks, concurrent callers' together (over ``store``).
        providers: the provider directory, kept current by identity's stream (the kill switch).
        events: publisher for the ``moderation`` event stream.
        limiter: rate limiter for reports.
        limits: configurable bounds.
        franking_key: the secret the relay stamps franking commitments with.
        meter: for the verdict, report and restriction counters.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: ModerationStore,
        checks: SendCheckBatcher,
        providers: ProviderDirectory,
        events: EventPublisher,
        limiter: RateLimiter,
        limits: ModerationLimits,
        franking_key: bytes,
        meter: metrics.Meter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._checks = checks
        self._providers = providers
        self._events = events
        self._limiter = limiter
        self._limits = limits
        self._franking_key = franking_key
        self._clock = clock
        self._shapes: dict[str, SendShape] = {}
        # Per provider: the record last seen in the directory and what it decides. The directory replaces a
        # (frozen) record on every change, so a record that is not the one cached is a change, seen at once.
        self._provider_verdicts: dict[str, tuple[ProviderRecord, Decision | None]] = {}
        self._verdict_attributes: dict[tuple[Verdict.ValueType, ErrorReason.ValueType, str], dict[str, str]] = {}
        self._verdicts = meter.create_counter(
            "moderation.check_send.verdicts", unit="{decision}", description="Send decisions by verdict and reason"
        )
        self._reports = meter.create_counter(
            "moderation.reports", unit="{report}", description="Reports received, by franking verification"
        )
        self._restrictions = meter.create_counter(
            "moderation.senders.restricted", unit="{sender}", description="Senders restricted, by cause"
        )

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # --- send decisions -----------------------------------------------------------------------------------------

    async def check_send(self, sender: str, recipient: str, fan_out: int) -> Decision:
        """Decides one send: provider status, sender restriction, limits, then blocks.

        Exactly as if after every send admitted before it, though its checks may share a Redis pipeline with
        those of concurrent calls (:class:`~parley_moderation.batcher.SendCheckBatcher`).

        Args:
            sender: the sending device's (or user's) address.
            recipient: the recipient user's address (a device part is ignored).
            fan_out: device copies the send makes; 0 counts as 1.

        Returns:
            The decision. A refused send takes nothing from any bucket or quota; a blocked sender is charged like
            any sender, so that nothing it observes differs from a delivered send.

        Raises:
            ParleyError: INVALID_ARGUMENT / MISSING_FIELD, INVALID_ADDRESS, INVALID_FIELD (fan_out too large).
        """
        attempt, decision = self._send(sender, recipient, fan_out, "")
        if decision is None:
            (checks,) = await self._checks.check_send_many((attempt,))
            decision = _decide(checks)
        self._verdicts.add(1, self._attributes(decision.verdict, decision.reason, decision.limit))
        return decision

    async def check_send_batch(self, requests: Sequence[SendRequest]) -> list[Decision]:
        """Decides many sends, in order, each exactly as :meth:`check_send` would after the ones before it.

        Args:
            requests: the sends; their tokens are taken in this order.

        Returns:
            One decision per request, in order.

        Raises:
            ParleyError: INVALID_ARGUMENT / BATCH_TOO_LARGE over the configured number of checks; MISSING_FIELD,
                INVALID_ADDRESS, INVALID_FIELD as :meth:`check_send`, with the field named by the request's
                index (e.g. ``checks[3].sender``). A refused batch decides nothing and changes nothing.
        """
        limit = self._limits.max_check_batch
        if len(requests) > limit:
            raise ParleyError(
                Code.INVALID_ARGUMENT,
                ErrorReason.ERROR_REASON_BATCH_TOO_LARGE,
                f"at most {limit} checks per call",
                limit=limit,
                field="checks",
            )
        # Every request is validated before any is decided: one bad entry refuses the batch untouched.
        sends = [
            self._send(request.sender, request.recipient, request.fan_out, f"checks[{index}].")
            for index, request in enumerate(requests)
        ]
        # Sends the provider cache refuses never reach Redis, as in a single decision; the rest go in one call.
        checked = iter(await self._checks.check_send_many([attempt for attempt, refusal in sends if refusal is None]))
        decisions = [refusal or _decide(next(checked)) for _, refusal in sends]
        # One counter update per kind of decision in the batch, not per decision: each add walks the aggregation.
        kinds = Counter((decision.verdict, decision.reason, decision.limit) for decision in decisions)
        for kind, count in kinds.items():
            self._verdicts.add(count, self._attributes(*kind))
        return decisions

    def _send(self, sender: str, recipient: str, fan_out: int, prefix: str) -> tuple[SendAttempt, Decision | None]:
        """A validated send, and its verdict when the provider cache alone decides it (no Redis work)."""
        sender_user = parse_address(sender, f"{prefix}sender").user
        recipient_user = parse_address(recipient, f"{prefix}recipient").user
        if fan_out > self._limits.max_fan_out:
            raise invalid_field(f"{prefix}fan_out", f"at most {self._limits.max_fan_out}")
        attempt = SendAttempt(
            sender=str(sender_user),
            recipient=str(recipient_user),
            provider_id=sender_user.provider,
            fan_out=max(fan_out, 1),
            shape=self._shape(sender_user.provider),
        )
        return attempt, self._provider_refusal(sender_user.provider) or self._provider_refusal(recipient_user.provider)

    def _attributes(self, verdict: Verdict.ValueType, reason: ErrorReason.ValueType, limit: str) -> dict[str, str]:
        """The verdict counter's attributes for a kind of decision, built once per kind (there are a few dozen)."""
        key = (verdict, reason, limit)
        attributes = self._verdict_attributes.get(key)
        if attributes is None:
            attributes = self._verdict_attributes[key] = {
                "verdict": Verdict.Name(verdict).removeprefix("VERDICT_"),
                "reason": reason_name(reason) if reason else "",
                "limit": limit,
            }
        return attributes

    def _provider_refusal(self, provider_id: str) -> Decision | None:
        record = self._providers.get(provider_id)
        if record is None:
            return _UNKNOWN_PROVIDER
        cached = self._provider_verdicts.get(provider_id)
        if cached is not None and cached[0] is record:
            return cached[1]
        reason = provider_refusal(record)
        refusal = None if reason is None else Decision(Verdict.VERDICT_REFUSE, reason)
        self._provider_verdicts[provider_id] = (record, refusal)
        return refusal

    def _shape(self, provider_id: str) -> SendShape:
        shape = self._shapes.get(provider_id)
        if shape is None:
            # Providers are few; one shape each is built once instead of on every send.
            shape = self._shapes[provider_id] = self._limits.shape(provider_id)
        return shape

    # --- blocks -------------------------------------------------------------------------------------------------

    async def block(self, user: Address, address: str) -> None:
        """``user`` blocks every device of ``address``'s user (at any provider). Idempotent.

        Raises:
            ParleyError: INVALID_ARGUMENT / MISSING_FIELD, INVALID_ADDRESS, INVALID_FIELD (oneself);
                RESOURCE_EXHAUSTED / TOO_LARGE when the user holds the maximum of blocks.
        """
        blocked = parse_address(address, "address").user
        if blocked == user.user:
            raise invalid_field("address", "a user cannot block themselves")
        if not await self._store.block(str(user.user), str(blocked), self._limits.max_blocks):
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_TOO_LARGE,
                f"a user may hold at most {self._limits.max_blocks} blocks",
                limit=self._limits.max_blocks,
            )

    async def unblock(self, user: Address, address: str) -> None:
        """Lifts ``user``'s block of ``address``'s user, if any.

        Raises:
            ParleyError: INVALID_ARGUMENT / MISSING_FIELD, INVALID_ADDRESS.
        """
        blocked = parse_address(address, "address").user
        await self._store.unblock(str(user.user), str(blocked))

    async def list_blocks(self, user: Address, page_size: int, page_token: str) -> tuple[list[str], str]:
        """A page of ``user``'s blocks ordered by address, and the next page's token ("" at the end).

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_FIELD for a page token this service did not issue.
        """
        after = ""
        if page_token:
            try:
                after = str(Address.parse(page_token))
            except InvalidAddressError:
                raise invalid_field("page.page_token", "not a token from a previous page") from None
        size = _page_size(page_size)
        addresses = await self._store.list_blocks(str(user.user), after, size + 1)
        return addresses[:size], (addresses[size - 1] if len(addresses) > size else "")

    # --- reports ------------------------------------------------------------------------------------------------

    async def report_message(self, reporter: Address, submission: ReportSubmission) -> tuple[str, bool]:
        """Verifies and stores ``reporter``'s report; a verified one counts toward the sender's restriction.

        Franking proves the report when the relay's stamp verifies over the commitment and the delivery context
        (the sender as given, the reporter as recipient, the relay's timestamp) and the commitment opens to the
        plaintext under the franking key. Anything else (wrong key, wrong stamp, changed plaintext, another
        user's message, no franking) is stored as unverified.

        Returns:
            The report's id and whether it is verified.

        Raises:
            ParleyError: INVALID_ARGUMENT / MISSING_FIELD, INVALID_FIELD, INVALID_ADDRESS, TOO_LARGE;
                RESOURCE_EXHAUSTED / RATE_LIMITED.
        """
        sender = self._check_submission(reporter, submission)
        await self._limiter.take(str(reporter.user), self._limits.report)
        verified, why = self._verify(reporter, sender, submission)
        now_ms = self._now_ms()
        reporter_text = str(reporter.user)
        report_id = _report_id(reporter_text, str(sender), submission.message_id)
        action = f"reported as {submission.category!r}; " + ("franking verified" if verified else f"unverified: {why}")
        stored_verified = await self._store.save_report(
            Report(
                report_id=report_id,
                reporter=reporter_text,
                sender=str(sender),
                message_id=submission.message_id,
                verified=verified,
                category=submission.category,
                outcome=ReportOutcome.REPORT_OUTCOME_OPEN,
                created_at_ms=now_ms,
                plaintext=submission.plaintext,
                sent_at_ms=submission.server_timestamp_ms,
                audit=(AuditRecord(now_ms, reporter_text, action),),
            )
        )
        self._reports.add(1, {"verified": verified})
        if stored_verified:
            # Counting is idempotent per reporter, so a retry after a failure here counts the report after all.
            threshold = self._limits.restrict_after_reports
            restricted = await self._store.count_verified_report(
                str(sender.user),
                reporter_text,
                now_ms=now_ms,
                window_ms=self._limits.report_window_ms,
                threshold=threshold,
                restriction_ms=self._limits.restriction_ms,
                why=f"{threshold} verified reports",
            )
            if restricted:
                self._restrictions.add(1, {"cause": "reports"})
                await self._store.append_audit(
                    report_id,
                    AuditRecord(
                        now_ms, "system", f"sender restricted automatically after {threshold} verified reports"
                    ),
                )
        return report_id, stored_verified

    def _check_submission(self, reporter: Address, submission: ReportSubmission) -> Address:
        if not submission.message_id:
            raise missing_field("message_id")
        if not _MESSAGE_ID.fullmatch(submission.message_id):
            raise invalid_field("message_id", "not a stanza id")
        sender = parse_address(submission.sender, "sender")
        if sender.user == reporter.user:
            raise invalid_field("sender", "a user cannot report their own message")
        if not submission.plaintext:
            raise missing_field("plaintext")
        limit = self._limits.max_report_plaintext_bytes
        if len(submission.plaintext) > limit:
            raise ParleyError(
                Code.INVALID_ARGUMENT,
                ErrorReason.ERROR_REASON_TOO_LARGE,
                f"plaintext: at most {limit} bytes",
                limit=limit,
                field="plaintext",
            )
        for name in ("franking_key", "commitment", "server_tag"):
            if len(getattr(submission, name)) > _MAX_FRANKING_FIELD:
                raise invalid_field(name, "franking keys, commitments and stamps are 32 bytes")
        if submission.server_timestamp_ms < 0:
            raise invalid_field("server_timestamp_ms", "must not be negative")
        if not submission.category:
            raise missing_field("category")
        if len(submission.category) > _MAX_CATEGORY or not submission.category.isprintable():
            raise invalid_field("category", f"at most {_MAX_CATEGORY} printable characters")
        return sender

    def _verify(self, reporter: Address, sender: Address, submission: ReportSubmission) -> tuple[bool, str]:
        if not (submission.franking_key or submission.commitment or submission.server_tag):
            return False, "the message was not franked"
        try:
            verify_report(
                relay_key=self._franking_key,
                plaintext=submission.plaintext,
                franking_key=submission.franking_key,
                commitment=submission.commitment,
                context=franking_context(str(sender), str(reporter.user), submission.server_timestamp_ms),
                stamp=submission.server_tag,
            )
        except FrankingError as exc:
            return False, str(exc)
        return True, ""

    async def list_reports(self, *, open_only: bool, page_size: int, page_token: str) -> tuple[list[Report], str]:
        """A page of reports, newest first, and the next page's token ("" at the end).

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_FIELD for a page token this service did not issue.
        """
        if page_token and not _INDEX_MEMBER.fullmatch(page_token):
            raise invalid_field("page.page_token", "not a token from a previous page")
        # Reports carry their plaintext: a page holds no more than fit in one gRPC response at the largest.
        size = min(_page_size(page_size), self._limits.max_report_page)
        reports = await self._store.list_reports(open_only=open_only, before=page_token, limit=size + 1)
        return reports[:size], (reports[size - 1].index_member if len(reports) > size else "")

    async def resolve_report(self, report_id: str, outcome: ReportOutcome.ValueType, note: str) -> Report:
        """Records an operator's decision on a report, with an audit entry and a ``report_resolved`` event.

        SENDER_RESTRICTED also restricts the reported sender's user for the configured restriction time.

        Raises:
            ParleyError: INVALID_ARGUMENT / MISSING_FIELD, INVALID_FIELD; NOT_FOUND / NOT_FOUND.
        """
        if not report_id:
            raise missing_field("report_id")
        if not _REPORT_ID.fullmatch(report_id):
            raise invalid_field("report_id", "not a report id")
        if outcome == ReportOutcome.REPORT_OUTCOME_UNSPECIFIED:
            raise missing_field("outcome")
        if outcome not in _RESOLVED_OUTCOMES:
            raise invalid_field("outcome", "must be DISMISSED, SENDER_RESTRICTED or ESCALATED")
        if len(note) > _MAX_NOTE or not note.isprintable():
            raise invalid_field("note", f"at most {_MAX_NOTE} printable characters")
        outcome_name = ReportOutcome.Name(outcome).removeprefix("REPORT_OUTCOME_")
        action = f"resolved {outcome_name}" + (f": {note}" if note else "")
        if not await self._store.resolve_report(report_id, outcome, AuditRecord(self._now_ms(), "admin", action)):
            raise not_found(ErrorReason.ERROR_REASON_NOT_FOUND, f"no report {report_id}")
        report = await self._store.get_report(report_id)
        assert report is not None  # reports are never deleted
        if outcome == ReportOutcome.REPORT_OUTCOME_SENDER_RESTRICTED:
            await self._store.restrict(
                str(Address.parse(report.sender).user), self._limits.restriction_ms, f"review of report {report_id}"
            )
            self._restrictions.add(1, {"cause": "review"})
        await self._events.publish(
            Event(
                report_resolved=ReportResolved(
                    report_id=report_id, reporter=report.reporter, outcome=ReportOutcome.Name(outcome)
                )
            )
        )
        return report


# Decisions without a wait are the same every time: one object each instead of one per decision.
_ALLOW = Decision(Verdict.VERDICT_ALLOW)
_DROP_SILENTLY = Decision(Verdict.VERDICT_DROP_SILENTLY)
_SENDER_RESTRICTED = Decision(Verdict.VERDICT_REFUSE, ErrorReason.ERROR_REASON_SENDER_RESTRICTED)
_UNKNOWN_PROVIDER = Decision(Verdict.VERDICT_REFUSE, ErrorReason.ERROR_REASON_UNKNOWN_PROVIDER)

# Refusals by outcome of each part: reason and the name of the limit (for the caller and the metrics).
_PROVIDER_REFUSALS = {
    PROVIDER_CIRCUIT_OPEN: (ErrorReason.ERROR_REASON_PROVIDER_THROTTLED, "provider_circuit"),
    PROVIDER_QUOTA_USED_UP: (ErrorReason.ERROR_REASON_QUOTA_EXCEEDED, "provider_quota"),
    PROVIDER_BUCKET_EMPTY: (ErrorReason.ERROR_REASON_RATE_LIMITED, "provider"),
    PROVIDER_FIRST_CONTACT_EMPTY: (ErrorReason.ERROR_REASON_RATE_LIMITED, "provider_first_contact"),
}
_SENDER_REFUSALS = {
    SENDER_BUCKET_EMPTY: (ErrorReason.ERROR_REASON_RATE_LIMITED, "sender"),
    FIRST_CONTACT_BUCKET_EMPTY: (ErrorReason.ERROR_REASON_RATE_LIMITED, "first_contact"),
}


def _decide(checks: SendChecks) -> Decision:
    """The verdict from the three parts of a send decision.

    A restricted sender is refused first (its own state), then the provider's limits, then the sender's; a block
    counts only for a send every limit allowed, so a blocked sender sees exactly what any sender would.
    """
    if checks.sender_outcome == SENDER_ALLOWED and checks.provider_outcome == PROVIDER_ALLOWED:
        return _DROP_SILENTLY if checks.blocked else _ALLOW
    if checks.sender_outcome == SENDER_RESTRICTED:
        return _SENDER_RESTRICTED
    for refusals, outcome, retry_after_ms in (
        (_PROVIDER_REFUSALS, checks.provider_outcome, checks.provider_retry_after_ms),
        (_SENDER_REFUSALS, checks.sender_outcome, checks.sender_retry_after_ms),
    ):
        if outcome in refusals:
            reason, limit = refusals[outcome]
            return Decision(Verdict.VERDICT_REFUSE, reason, min(retry_after_ms, _MAX_RETRY_AFTER_MS), limit)
    return _DROP_SILENTLY if checks.blocked else _ALLOW


def _page_size(requested: int) -> int:
    return min(requested or _DEFAULT_PAGE, _MAX_PAGE)


def _report_id(reporter: str, sender: str, message_id: str) -> str:
    """Derived, so that reporting one message twice finds the first report (no lookup table needed)."""
    return hashlib.sha256(f"{reporter}\0{sender}\0{message_id}".encode()).hexdigest()[:24]
