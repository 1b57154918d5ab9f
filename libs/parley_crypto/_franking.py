"""Message franking: a report can prove what a sender said without the relay ever reading messages.

The sender draws a fresh 32-byte franking key per message and computes the commitment
``HMAC-SHA256(franking_key, plaintext)``. The franking key travels inside the end-to-end ciphertext (in the
content message); the commitment travels outside it, where the relay sees it and stamps it:
``stamp = HMAC-SHA256(relay_key, commitment || context)``, with ``context`` binding sender, recipient and time
(the relay defines its encoding). The recipient checks the commitment on receipt. To report, the recipient
hands the moderator the plaintext, the franking key, the commitment, the context and the stamp; the moderator
(who holds ``relay_key``) checks the stamp, then the commitment, and so learns that this sender sent exactly
this plaintext, while nobody else's messages are opened.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from parley_crypto._errors import FrankingError

FRANKING_KEY_SIZE = 32
COMMITMENT_SIZE = 32


@dataclass(frozen=True, slots=True)
class FrankingTag:
    """A message's franking key (goes inside the ciphertext) and commitment (goes outside).

    Attributes:
        franking_key: fresh random 32 bytes.
        commitment: HMAC-SHA256(franking_key, plaintext).
    """

    franking_key: bytes
    commitment: bytes


def frank(plaintext: bytes) -> FrankingTag:
    """Draws a franking key and commits to ``plaintext`` (the serialized content message)."""
    key = secrets.token_bytes(FRANKING_KEY_SIZE)
    return FrankingTag(key, hmac.digest(key, plaintext, "sha256"))


def verify_commitment(plaintext: bytes, franking_key: bytes, commitment: bytes) -> None:
    """Checks that ``commitment`` commits to ``plaintext`` under ``franking_key`` (recipient and moderator).

    Raises:
        FrankingError: it does not, or the key or commitment has the wrong length.
    """
    if len(franking_key) != FRANKING_KEY_SIZE or len(commitment) != COMMITMENT_SIZE:
        raise FrankingError("franking key and commitment must be 32 bytes each")
    if not hmac.compare_digest(hmac.digest(franking_key, plaintext, "sha256"), commitment):
        raise FrankingError("commitment does not match the plaintext")


def franking_context(sender: str, recipient: str, timestamp_ms: int) -> bytes:
    """The delivery context the relay stamps: sender device, recipient user and acceptance time.

    Each text is length-prefixed so that no two (sender, recipient) pairs encode alike.

    Args:
        sender: the sending device's canonical address.
        recipient: the recipient user's canonical address.
        timestamp_ms: the relay's acceptance time, Unix milliseconds.
    """
    sender_bytes, recipient_bytes = sender.encode(), recipient.encode()
    return (
        len(sender_bytes).to_bytes(2, "big")
        + sender_bytes
        + len(recipient_bytes).to_bytes(2, "big")
        + recipient_bytes
        + timestamp_ms.to_bytes(8, "big")
    )


def stamp_commitment(relay_key: bytes, commitment: bytes, context: bytes) -> bytes:
    """The relay's stamp binding a commitment to its delivery context.

    Args:
        relay_key: the relay's secret franking key (at least 32 bytes).
        commitment: the sender's commitment as seen outside the ciphertext.
        context: the relay's encoding of sender, recipient and time.

    Raises:
        FrankingError: ``relay_key`` is shorter than 32 bytes or the commitment is not 32 bytes.
    """
    if len(relay_key) < 32 or len(commitment) != COMMITMENT_SIZE:
        raise FrankingError("relay key must be at least 32 bytes and the commitment 32 bytes")
    return hmac.digest(relay_key, commitment + context, "sha256")


def verify_report(
    *, relay_key: bytes, plaintext: bytes, franking_key: bytes, commitment: bytes, context: bytes, stamp: bytes
) -> None:
    """The moderator's check of a report: the relay stamped this commitment, and it commits to this plaintext.

    Raises:
        FrankingError: the stamp or the commitment does not verify.
    """
    expected = stamp_commitment(relay_key, commitment, context)
    if not hmac.compare_digest(expected, stamp):
        raise FrankingError("relay stamp does not verify")
    verify_commitment(plaintext, franking_key, commitment)
