"""Every KDF and MAC label SPQR uses, byte for byte as the reference spells them.

Note the two spaces in ``CHAIN_START``: that is the reference's string, and keys only agree with it.
"""

from __future__ import annotations

AUTH_UPDATE = b"Signal_PQCKA_V1_MLKEM768:Authenticator Update"
AUTH_CIPHERTEXT = b"Signal_PQCKA_V1_MLKEM768:ciphertext"
AUTH_HEADER = b"Signal_PQCKA_V1_MLKEM768:ekheader"
SCKA_KEY = b"Signal_PQCKA_V1_MLKEM768:SCKA Key"
CHAIN_START = b"Signal PQ Ratchet V1 Chain  Start"
CHAIN_ADD_EPOCH = b"Signal PQ Ratchet V1 Chain Add Epoch"
CHAIN_NEXT = b"Signal PQ Ratchet V1 Chain Next"

ZERO_SALT = bytes(32)
