"""SPQR, the Sparse Post-Quantum Ratchet ("ML-KEM Braid"), as libsignal runs it through the ``spqr`` crate.

Private to parley_crypto. The Double Ratchet talks to it only through the names below, the way libsignal's
session code calls ``spqr::{initial_state, send, recv}``: the state is opaque bytes kept in the session record,
``send`` yields the bytes for SignalMessage field 5 (``pq_ratchet``) and a message key, ``recv`` takes those
bytes back, and the message key is the HKDF salt of that message's cipher, MAC and IV keys.
See docs/crypto.md, "SPQR".
"""

from parley_crypto._spqr._api import (
    CurrentVersion,
    PqRatchet,
    RecvResult,
    SendResult,
    Version,
    current_version,
    initial_state,
    recv,
    send,
)
from parley_crypto._spqr._chain import ChainParams, Direction
from parley_crypto._spqr._errors import (
    SpqrChainNotAvailableError,
    SpqrEpochOutOfRangeError,
    SpqrErroneousDataError,
    SpqrError,
    SpqrKeyAlreadyRequestedError,
    SpqrKeyJumpError,
    SpqrKeyTrimmedError,
    SpqrMacError,
    SpqrMessageError,
    SpqrMinimumVersionError,
    SpqrSendKeyEpochDecreasedError,
    SpqrStateError,
    SpqrVersionMismatchError,
)
from parley_crypto._spqr._kem import ML_KEM_768, IncrementalKem

__all__ = [
    "ML_KEM_768",
    "ChainParams",
    "CurrentVersion",
    "Direction",
    "IncrementalKem",
    "PqRatchet",
    "RecvResult",
    "SendResult",
    "SpqrChainNotAvailableError",
    "SpqrEpochOutOfRangeError",
    "SpqrErroneousDataError",
    "SpqrError",
    "SpqrKeyAlreadyRequestedError",
    "SpqrKeyJumpError",
    "SpqrKeyTrimmedError",
    "SpqrMacError",
    "SpqrMessageError",
    "SpqrMinimumVersionError",
    "SpqrSendKeyEpochDecreasedError",
    "SpqrStateError",
    "SpqrVersionMismatchError",
    "Version",
    "current_version",
    "initial_state",
    "recv",
    "send",
]
