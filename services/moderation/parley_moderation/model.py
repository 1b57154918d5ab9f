"""Moderation's domain values, shared by handler and store."""

from __future__ import annotations

from dataclasses import dataclass, field

from parley.common.v1.common_pb2 import ErrorReason
from parley.moderation.v1.moderation_pb2 import ReportOutcome, Verdict

SENDER_ALLOWED, SENDER_RESTRICTED, SENDER_BUCKET_EMPTY, FIRST_CONTACT_BUCKET_EMPTY = range(4)
"""Outcomes of the sender's checks (``lua/check_sender.lua``)."""

PROVIDER_ALLOWED, PROVIDER_CIRCUIT_OPEN, PROVIDER_QUOTA_USED_UP, PROVIDER_BUCKET_EMPTY = range(4)
"""Outcomes of the sender's provider's checks (``lua/check_provider.lua``)."""

PROVIDER_FIRST_CONTACT_EMPTY = 4
"""The provider's first-contact bucket refused a first contact every other limit allowed (a second stage)."""


@dataclass(frozen=True, slots=True)
class SendShape:
    """The limits one send decision applies, as the store's scripts take them.

    Attributes:
        sender_capacity: sender's bucket burst (messages).
        sender_per_second: sender's bucket refill.
        first_contact_capacity: first-contact bucket burst (messages to users who never sent to the sender).
        first_contact_per_second: first-contact bucket refill.
        provider_capacity: sender provider's bucket burst (messages).
        provider_per_second: sender provider's bucket refill.
        provider_first_contact_capacity: first-contact bucket burst of the sender's provider (all its users).
        provider_first_contact_per_second: that bucket's refill.
        provider_quota: device copies the sender's provider may send per quota window; 0 = unlimited.
        quota_window_ms: length of a quota window.
        breaker_threshold: limit refusals of one provider within ``breaker_window_ms`` that open its breaker.
        breaker_window_ms: the breaker's counting window.
        breaker_cooldown_ms: how long an open breaker refuses everything.
        max_contacts: contacts remembered per user for the first-contact rule.
        contact_ttl_ms: how long contacts are remembered after the last send.
        sender_args: the sender buckets' limits as ``check_sender.lua`` takes them (ARGV 2 to 5).
        contact_args: the contact bounds as ``check_recipient.lua`` takes them (ARGV 3 and 4).
        provider_args: the provider's limits as ``check_provider.lua`` takes them (ARGV 1 to 7).
    """

    sender_capacity: float
    sender_per_second: float
    first_contact_capacity: float
    first_contact_per_second: float
    provider_capacity: float
    provider_per_second: float
    provider_first_contact_capacity: float
    provider_first_contact_per_second: float
    provider_quota: int
    quota_window_ms: int
    breaker_threshold: int
    breaker_window_ms: int
    breaker_cooldown_ms: int
    max_contacts: int
    contact_ttl_ms: int
    sender_args: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    contact_args: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    provider_args: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every send passes these to its scripts; encoded once (as redis-py would encode each number), they cost
        # the client nothing per send.
        for name, values in (
            (
                "sender_args",
                (
                    self.sender_capacity,
                    self.sender_per_second,
                    self.first_contact_capacity,
                    self.first_contact_per_second,
                ),
            ),
            ("contact_args", (self.max_contacts, self.contact_ttl_ms)),
            (
                "provider_args",
                (
                    self.provider_capacity,
                    self.provider_per_second,
                    self.provider_quota,
                    self.quota_window_ms,
                    self.breaker_threshold,
                    self.breaker_window_ms,
                    self.breaker_cooldown_ms,
                ),
            ),
        ):
            object.__setattr__(self, name, tuple(repr(value).encode() for value in values))


@dataclass(frozen=True, slots=True)
class SendAttempt:
    """One send for the store to check, validated and reduced to users.

    Attributes:
        sender: the sender user's address.
        recipient: the recipient user's address.
        provider_id: the sender's provider.
        fan_out: device copies of this send (at least 1).
        shape: the limits that apply to it.
    """

    sender: str
    recipient: str
    provider_id: str
    fan_out: int
    shape: SendShape


@dataclass(frozen=True, slots=True)
class SendChecks:
    """What the three parts of a send decision found (one pipelined round trip).

    Attributes:
        sender_outcome: one of the ``SENDER_*`` outcomes.
        sender_retry_after_ms: when a sender bucket refused, ms until it could pass.
        first_contact: the recipient never sent to the sender.
        provider_outcome: one of the ``PROVIDER_*`` outcomes.
        provider_retry_after_ms: when the provider's checks refused, ms until they could pass.
        blocked: the recipient blocked the sender.
    """

    sender_outcome: int
    sender_retry_after_ms: int
    first_contact: bool
    provider_outcome: int
    provider_retry_after_ms: int
    blocked: bool


@dataclass(frozen=True, slots=True)
class Decision:
    """A send decision.

    Attributes:
        verdict: allow, drop silently, or refuse.
        reason: why, when refused.
        retry_after_ms: when a limit refused, ms until a retry could pass.
        limit: which limit refused (``sender``, ``first_contact``, ``provider``, ``provider_first_contact``,
            ``provider_quota``, ``provider_circuit``), or "".
    """

    verdict: Verdict.ValueType
    reason: ErrorReason.ValueType = ErrorReason.ERROR_REASON_UNSPECIFIED
    retry_after_ms: int = 0
    limit: str = ""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of a report's audit trail.

    Attributes:
        at_ms: when, Unix ms.
        actor: the reporter's address, ``"admin"`` or ``"system"``.
        action: what happened.
    """

    at_ms: int
    actor: str
    action: str


@dataclass(frozen=True, slots=True)
class Report:
    """A stored report.

    Attributes:
        report_id: derived from reporter, sender and message id.
        reporter: the reporting user's address.
        sender: the reported sender's address as the reporter gave it (canonical; usually a device).
        message_id: the reported message's id.
        verified: franking proved the report.
        category: the reporter's category.
        outcome: the current outcome.
        created_at_ms: when it was first reported, Unix ms.
        plaintext: the revealed content message.
        sent_at_ms: the relay's acceptance time the reporter gave.
        audit: the audit trail, oldest first.
    """

    report_id: str
    reporter: str
    sender: str
    message_id: str
    verified: bool
    category: str
    outcome: ReportOutcome.ValueType
    created_at_ms: int
    plaintext: bytes
    sent_at_ms: int
    audit: tuple[AuditRecord, ...] = ()

    @property
    def index_member(self) -> str:
        """The report's member in the report indexes (and the page token after it)."""
        return index_member(self.created_at_ms, self.report_id)


def index_member(created_at_ms: int, report_id: str) -> str:
    """``<created at, 13 digits>:<report id>``: index members sort by creation time, then id."""
    return f"{created_at_ms:013d}:{report_id}"
