"""Safety numbers: libsignal's numeric fingerprint (60 digits) and its scannable form.

Per party: ``h = SHA-512(0x0000 || key || stable_id || key)``, then ``iterations - 1`` times
``h = SHA-512(h || key)`` (key = the 33-byte serialized identity key). The first 30 bytes give six 5-byte
big-endian numbers, each shown mod 100000 as five digits. The displayed number is both halves with the
lexicographically smaller first, so both parties see the same 60 digits. The scannable form is the protobuf
``CombinedFingerprints`` (1 version, 2 {1 local 32 bytes}, 3 {1 remote 32 bytes}).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from parley_crypto import _protobuf as pb
from parley_crypto._errors import InvalidKeyError, InvalidStateError
from parley_crypto._keys import PublicKey

# Signal's iteration count for safety numbers.
DEFAULT_ITERATIONS = 5200
FINGERPRINT_VERSION = 1


def _party_hash(iterations: int, stable_id: bytes, key: PublicKey) -> bytes:
    key_bytes = key.serialize()
    digest = hashlib.sha512(b"\x00\x00" + key_bytes + stable_id + key_bytes).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha512(digest + key_bytes).digest()
    return digest


def _digits(digest: bytes) -> str:
    return "".join(f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5))


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """The safety number of two identities, as one of the two parties computes it.

    Attributes:
        display: the 60-digit number both parties see.
        scannable: the serialized ``CombinedFingerprints`` for a QR code.
    """

    display: str
    scannable: bytes

    @classmethod
    def create(
        cls,
        local_id: bytes,
        local_key: PublicKey,
        remote_id: bytes,
        remote_key: PublicKey,
        *,
        version: int = FINGERPRINT_VERSION,
        iterations: int = DEFAULT_ITERATIONS,
    ) -> Fingerprint:
        """Computes the safety number.

        Args:
            local_id: our stable identifier (e.g. the UTF-8 of our address).
            local_key: our identity key.
            remote_id: their stable identifier.
            remote_key: their identity key.
            version: the scannable fingerprint version (1, or 2 as Signal uses with service ids).
            iterations: hash iterations (Signal uses 5200).

        Raises:
            InvalidKeyError: ``iterations`` outside libsignal's 2..1,000,000.
        """
        if not 1 < iterations <= 1_000_000:
            raise InvalidKeyError(f"invalid fingerprint iterations {iterations}")
        local = _party_hash(iterations, local_id, local_key)
        remote = _party_hash(iterations, remote_id, remote_key)
        local_digits, remote_digits = _digits(local), _digits(remote)
        display = local_digits + remote_digits if local_digits < remote_digits else remote_digits + local_digits
        scannable = (
            pb.field_varint(1, version)
            + pb.field_bytes(2, pb.field_bytes(1, local[:32]))
            + pb.field_bytes(3, pb.field_bytes(1, remote[:32]))
        )
        return cls(display, scannable)

    def matches_scanned(self, scanned: bytes) -> bool:
        """Whether the other party's scannable fingerprint matches ours (their local is our remote).

        Raises:
            InvalidStateError: ``scanned`` is malformed or of another version.
        """
        try:
            ours, theirs = pb.decode(self.scannable), pb.decode(scanned)
            if pb.get_int(theirs, 1, 0) != pb.get_int(ours, 1):
                raise InvalidStateError("fingerprint version mismatch")
            their_local = pb.get_bytes(pb.decode(pb.get_bytes(theirs, 2)), 1)
            their_remote = pb.get_bytes(pb.decode(pb.get_bytes(theirs, 3)), 1)
            our_local = pb.get_bytes(pb.decode(pb.get_bytes(ours, 2)), 1)
            our_remote = pb.get_bytes(pb.decode(pb.get_bytes(ours, 3)), 1)
        except pb.DecodeError as exc:
            raise InvalidStateError(f"malformed scannable fingerprint: {exc}") from exc
        same_remote = secrets.compare_digest(their_local, our_remote)
        same_local = secrets.compare_digest(their_remote, our_local)
        return same_remote and same_local
