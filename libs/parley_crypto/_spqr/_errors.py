"""The errors the SPQR layer raises, one class per failure the reference (``spqr::Error``) distinguishes.

They derive from parley_crypto's own hierarchy so a caller that already handles ``InvalidMessageError`` or
``InvalidStateError`` handles these too; the session cipher maps them, as libsignal maps ``spqr::Error``.
"""

from __future__ import annotations

from parley_crypto._errors import BadMacError, CryptoError, InvalidMessageError, InvalidStateError


class SpqrError(CryptoError):
    """Base class of every SPQR failure ("post-quantum ratchet error" in libsignal's wording)."""


class SpqrStateError(SpqrError, InvalidStateError):
    """Serialized SPQR state is malformed (``StateDecode``)."""


class SpqrMessageError(SpqrError, InvalidMessageError):
    """A ``pq_ratchet`` message is malformed or does not fit the state (``MsgDecode``)."""


class SpqrMacError(SpqrError, BadMacError):
    """An authenticated header or ciphertext failed its MAC (``MacVerifyFailed``)."""


class SpqrEpochOutOfRangeError(SpqrMessageError):
    """A message names an epoch the state cannot reach or has forgotten (``EpochOutOfRange``)."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"epoch not in valid range: {epoch}")
        self.epoch = epoch


class SpqrMinimumVersionError(SpqrMessageError):
    """The peer speaks a version below this session's minimum (``MinimumVersion``): libsignal refuses it."""

    def __init__(self) -> None:
        super().__init__("Minimum version")


class SpqrVersionMismatchError(SpqrMessageError):
    """The peer's version is below ours after negotiation already finished (``VersionMismatch``)."""

    def __init__(self) -> None:
        super().__init__("Version mismatch after negotiation")


class SpqrKeyJumpError(SpqrMessageError):
    """A message key lies further ahead of the chain than ``max_jump`` allows (``KeyJump``)."""

    def __init__(self, counter: int, at: int) -> None:
        super().__init__(f"Key jump: {counter} - {at}")


class SpqrKeyTrimmedError(SpqrMessageError):
    """A message key is older than the out-of-order window and was discarded (``KeyTrimmed``)."""

    def __init__(self, at: int) -> None:
        super().__init__(f"Key trimmed: {at}")


class SpqrKeyAlreadyRequestedError(SpqrMessageError):
    """A message key was already handed out once: a duplicate or replay (``KeyAlreadyRequested``)."""

    def __init__(self, at: int) -> None:
        super().__init__(f"Key already requested: {at}")


class SpqrErroneousDataError(SpqrMessageError):
    """The reassembled encapsulation key does not match its authenticated header (``ErroneousDataReceived``)."""


class SpqrSendKeyEpochDecreasedError(SpqrStateError):
    """The state asked for a send key in an epoch older than the last one used (``SendKeyEpochDecreased``)."""

    def __init__(self, was: int, now: int) -> None:
        super().__init__(f"Send key epoch decreased ({was} -> {now})")


class SpqrChainNotAvailableError(SpqrStateError):
    """The state holds neither a chain nor the parameters to create one (``ChainNotAvailable``)."""
