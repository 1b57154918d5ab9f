"""Helpers for the SPQR tests (tests/libs/crypto/spqr): an independent HKDF and seeded randomness."""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable


def rfc5869(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written out from RFC 5869 with the standard library, independent of the code under test."""
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
    return out[:length]


def seeded(seed: int) -> Callable[[int], bytes]:
    """A reproducible random-bytes source, so a failing scenario replays exactly."""
    return random.Random(seed).randbytes
