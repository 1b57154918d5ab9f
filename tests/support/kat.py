"""NIST known-answer test files (.rsp) and the AES-256 CTR-DRBG that expands their seeds.

The KEM KAT generators (``PQCgenKAT_kem``) seed NIST's ``randombytes`` DRBG with each entry's 48-byte ``seed``
and then draw the key-generation and encapsulation randomness from it; re-running that DRBG is how a test
recovers the exact coins an entry was made with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

VECTORS = Path(__file__).resolve().parent.parent / "libs" / "crypto" / "vectors"


class CtrDrbg:
    """NIST SP 800-90A CTR_DRBG with AES-256, no derivation function, as the KAT generators' ``rng.c``."""

    def __init__(self, entropy: bytes) -> None:
        """Instantiates from 48 bytes of entropy input (no personalization string)."""
        assert len(entropy) == 48
        self._key = bytes(32)
        self._v = bytes(16)
        self._update(entropy)

    def _blocks(self, count: int) -> bytes:
        # The DRBG's output blocks AES(K, V+1), AES(K, V+2), ... are exactly AES-CTR's keystream from V+1.
        start = (int.from_bytes(self._v, "big") + 1) % (1 << 128)
        self._v = ((start + count - 1) % (1 << 128)).to_bytes(16, "big")
        encryptor = Cipher(algorithms.AES(self._key), modes.CTR(start.to_bytes(16, "big"))).encryptor()
        return encryptor.update(bytes(16 * count)) + encryptor.finalize()

    def _update(self, provided: bytes | None) -> None:
        temp = self._blocks(3)
        if provided is not None:
            temp = bytes(a ^ b for a, b in zip(temp, provided, strict=True))
        self._key, self._v = temp[:32], temp[32:]

    def random_bytes(self, length: int) -> bytes:
        """The next ``length`` bytes, as ``randombytes`` returns them."""
        out = self._blocks(-(-length // 16))
        self._update(None)
        return out[:length]


@dataclass(frozen=True)
class KemVector:
    """One KEM KAT entry."""

    count: int
    seed: bytes
    pk: bytes
    sk: bytes
    ct: bytes
    ss: bytes


def read_kem_vectors(name: str) -> list[KemVector]:
    """Parses ``tests/libs/crypto/vectors/<name>``."""
    vectors: list[KemVector] = []
    entry: dict[str, str] = {}
    for line in [*(VECTORS / name).read_text().splitlines(), ""]:
        if " = " in line:
            key, value = line.split(" = ", 1)
            entry[key] = value
        elif entry:
            vectors.append(
                KemVector(
                    int(entry["count"]),
                    *(bytes.fromhex(entry[key]) for key in ("seed", "pk", "sk", "ct", "ss")),
                )
            )
            entry = {}
    return vectors
