"""Parley's error model on the domain side: handlers raise :class:`ParleyError`, servers map it to gRPC.

A failure is a status :class:`Code` (the gRPC code, mirrored here so handlers never import grpc) plus a
machine-readable reason (a ``parley.common.v1.ErrorReason`` value) and optional string metadata. The server
runtime turns it into a gRPC status with a ``google.rpc.ErrorInfo`` detail (see docs/errors.md).
"""

from __future__ import annotations

import enum

from parley.common.v1.common_pb2 import ErrorReason
from parley_stanza import Address, InvalidAddressError

ERROR_DOMAIN = "parley.dev"
_REASON_PREFIX = "ERROR_REASON_"


class Code(enum.IntEnum):
    """gRPC status codes used by Parley (values equal grpc.StatusCode's numeric codes)."""

    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


def reason_name(reason: ErrorReason.ValueType) -> str:
    """The ``ErrorInfo.reason`` string for a reason enum value, e.g. ``"TOKEN_EXPIRED"``."""
    return ErrorReason.Name(reason).removeprefix(_REASON_PREFIX)


def reason_value(name: str) -> ErrorReason.ValueType:
    """The enum value for an ``ErrorInfo.reason`` string; raises ``ValueError`` for unknown names."""
    return ErrorReason.Value(_REASON_PREFIX + name)


class ParleyError(Exception):
    """A failure the caller should see as a gRPC status plus a machine-readable reason.

    Raising it guarantees nothing was changed: handlers validate before they write.

    Attributes:
        code: the status code.
        reason: the ``ErrorReason`` value.
        message: human-readable detail; never carries secrets or other users' data.
        metadata: reason-specific details, e.g. ``{"field": "address"}``.
    """

    def __init__(self, code: Code, reason: ErrorReason.ValueType, message: str, **metadata: str | int) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = {key: str(value) for key, value in metadata.items()}

    @property
    def reason_name(self) -> str:
        """The reason as carried in ``ErrorInfo.reason``."""
        return reason_name(self.reason)

    def __repr__(self) -> str:
        return f"ParleyError({self.code.name}, {self.reason_name}, {self.message!r}, {self.metadata!r})"


def missing_field(field: str) -> ParleyError:
    """INVALID_ARGUMENT / MISSING_FIELD for an empty required field."""
    return ParleyError(
        Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_MISSING_FIELD, f"{field} is required", field=field
    )


def parse_address(text: str, field: str) -> Address:
    """The address in request field ``field``.

    Raises:
        ParleyError: INVALID_ARGUMENT / MISSING_FIELD when empty, INVALID_ADDRESS when it does not parse.
    """
    if not text:
        raise missing_field(field)
    try:
        return Address.parse(text)
    except InvalidAddressError as exc:
        raise ParleyError(
            Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_INVALID_ADDRESS, f"{field}: {exc}", field=field
        ) from None


def invalid_field(field: str, why: str) -> ParleyError:
    """INVALID_ARGUMENT / INVALID_FIELD for a field with a bad value."""
    return ParleyError(Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_INVALID_FIELD, f"{field}: {why}", field=field)


def not_found(reason: ErrorReason.ValueType, message: str, **metadata: str | int) -> ParleyError:
    """NOT_FOUND with the given reason."""
    return ParleyError(Code.NOT_FOUND, reason, message, **metadata)


def permission_denied(reason: ErrorReason.ValueType, message: str, **metadata: str | int) -> ParleyError:
    """PERMISSION_DENIED with the given reason."""
    return ParleyError(Code.PERMISSION_DENIED, reason, message, **metadata)


def unauthenticated(reason: ErrorReason.ValueType, message: str) -> ParleyError:
    """UNAUTHENTICATED with the given reason."""
    return ParleyError(Code.UNAUTHENTICATED, reason, message)


DEPENDENCY_RETRY_AFTER_MS = 1000
"""What a refusal for an unavailable dependency suggests waiting before a retry."""


def dependency_unavailable(message: str) -> ParleyError:
    """UNAVAILABLE / DEPENDENCY_UNAVAILABLE with a ``retry_after_ms`` hint: Redis or a peer service did not
    answer in time, or a state it holds is changing; the same call may pass on a retry."""
    return ParleyError(
        Code.UNAVAILABLE,
        ErrorReason.ERROR_REASON_DEPENDENCY_UNAVAILABLE,
        message,
        retry_after_ms=DEPENDENCY_RETRY_AFTER_MS,
    )


def rate_limited(retry_after_ms: int, what: str) -> ParleyError:
    """RESOURCE_EXHAUSTED / RATE_LIMITED with the time until a retry can pass and the limit's name (``limit``)."""
    return ParleyError(
        Code.RESOURCE_EXHAUSTED,
        ErrorReason.ERROR_REASON_RATE_LIMITED,
        f"rate limit for {what} exceeded; retry in {retry_after_ms} ms",
        retry_after_ms=retry_after_ms,
        limit=what,
    )
