"""Reading Parley's machine-readable error reasons from failed calls (see docs/errors.md), and the SDK's own
refusals of content it will not send."""

from __future__ import annotations

from enum import StrEnum

import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from parley_stanza import Feature


def error_reason(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The ``ErrorInfo`` reason and metadata of a refused call, e.g. ``("STALE_DEVICES", {...})``.

    Returns ``("", {})`` when the status carries no ``ErrorInfo`` (e.g. a transport failure).
    """
    status = rpc_status.from_call(error)
    if status is None:
        return "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    return "", {}


class Refusal(StrEnum):
    """Why the SDK refused content before sending it, or a received edit or delete (machine-readable)."""

    FEATURE_MISSING = "feature_missing"
    """The recipient's provider cannot display the content, and nothing it can display says the same."""
    WINDOW_PASSED = "window_passed"
    """The edit or delete comes later than the recipient's provider honours."""
    NOT_AUTHOR = "not_author"
    """The edit or delete targets a message another user sent."""
    UNKNOWN_TARGET = "unknown_target"
    """The edit targets a message this device does not have (or no longer has)."""
    FRANKING_MISMATCH = "franking_mismatch"
    """A received message's franking commitment does not match its content: it could not be reported."""


class ContentRefusedError(Exception):
    """Content was refused before anything was sent: nothing left the device.

    Attributes:
        refusal: the machine-readable cause.
        reason: a sentence the sender's UI can show.
        provider: the recipient's provider.
        feature: the missing feature, for ``Refusal.FEATURE_MISSING``.
    """

    def __init__(self, refusal: Refusal, reason: str, *, provider: str, feature: Feature | None = None) -> None:
        super().__init__(reason)
        self.refusal = refusal
        self.reason = reason
        self.provider = provider
        self.feature = feature
