"""The webhook signature: HMAC-SHA256 over ``<timestamp>.<body>`` with the provider's secret.

The notification service signs with :func:`sign`; a provider's endpoint checks deliveries with :func:`verify`.
Both sides share this one module, so the scheme cannot drift between them.

Every delivery carries ``Parley-Timestamp`` (Unix seconds) and ``Parley-Signature: v1=<hex>``, where ``<hex>`` is
the HMAC-SHA256 of the timestamp's ASCII digits, a ``.``, and the exact body bytes, keyed with the 32-byte secret
``RegisterWebhook`` returned. Binding the timestamp stops an old delivery from being replayed later; the receiver
checks it is recent. This module is pure (no I/O).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Parley-Signature"
TIMESTAMP_HEADER = "Parley-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_TYPE_HEADER = "Parley-Event-Type"
ATTEMPT_HEADER = "Parley-Attempt"
_VERSION = "v1="


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Parley-Signature`` header value for a body sent at ``timestamp``.

    Args:
        secret: the provider's signing secret.
        timestamp: Unix seconds, as sent in ``Parley-Timestamp``.
        body: the exact request body.

    Returns:
        ``"v1=<64 hex digits>"``.
    """
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return _VERSION + digest


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float, tolerance_s: int = 300) -> bool:
    """Whether a received delivery is authentic and recent (what a provider's endpoint runs).

    Args:
        secret: the provider's signing secret.
        timestamp: the ``Parley-Timestamp`` header.
        body: the exact request body bytes.
        signature: the ``Parley-Signature`` header.
        now: the receiver's clock, Unix seconds.
        tolerance_s: how far the timestamp may be from ``now``.

    Returns:
        True when the signature matches and the timestamp is within the tolerance.
    """
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)
