"""SPQR's public surface (``spqr::{initial_state, send, recv, current_version}``) over serialized state.

The state is opaque bytes the session record keeps (libsignal's ``SessionStructure.pq_ratchet_state``, field
15): SPQR's ``PqRatchetState`` message, byte-compatible with the reference. Every call parses the state, works
on a copy and returns new bytes, so a call that raises leaves the caller's state untouched.

Version negotiation, as the reference runs it: a fresh state remembers ``min_version`` and the parameters
to start its chain until the first message arrives. A message of a lower version than ours downgrades the
state if that version is still at or above ``min_version`` (``SpqrMinimumVersionError`` otherwise); after
the first received message negotiation is over and a lower version is refused (``SpqrVersionMismatchError``).
A message of a version we do not know is ignored. An empty message is version 0 (no SPQR).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from parley_crypto._spqr import _codec, _states
from parley_crypto._spqr._chain import Chain, ChainParams, Direction
from parley_crypto._spqr._errors import (
    SpqrChainNotAvailableError,
    SpqrMinimumVersionError,
    SpqrStateError,
    SpqrVersionMismatchError,
)
from parley_crypto._spqr._kem import ML_KEM_768, IncrementalKem
from parley_crypto._spqr._messages import Message
from parley_crypto._spqr._states import RandomSource


class Version(IntEnum):
    """SPQR protocol versions: V0 is "no post-quantum ratchet", V1 the ML-KEM Braid."""

    V0 = 0
    V1 = 1


# By number, so the hot path indexes a tuple rather than calling the enum.
_VERSIONS = tuple(sorted(Version))


@dataclass(frozen=True)
class SendResult:
    """What ``send`` yields: the next ``state``, the ``msg`` for SignalMessage field 5, and the message ``key``
    (the HKDF salt of this message's keys; None while no epoch key exists yet)."""

    state: bytes
    msg: bytes
    key: bytes | None


@dataclass(frozen=True)
class RecvResult:
    """What ``recv`` yields: the next ``state`` and the received message's ``key`` (None as for ``send``)."""

    state: bytes
    key: bytes | None


@dataclass(frozen=True)
class CurrentVersion:
    """The state's version, and its minimum while negotiation is still open (None once it finished)."""

    version: Version
    min_version: Version | None


@dataclass
class _Negotiation:
    auth_key: bytes
    direction: Direction
    min_version: int
    chain_params: ChainParams | None

    def to_proto(self) -> bytes:
        out = _codec.opt_bytes(1, self.auth_key) + _codec.opt_varint(2, int(self.direction))
        out += _codec.opt_varint(3, self.min_version)
        if self.chain_params is not None:
            out += _codec.message(4, self.chain_params.to_proto())
        return out

    @classmethod
    def from_proto(cls, raw: bytes) -> _Negotiation:
        fields = _codec.decode(raw)
        direction = _codec.get_int(fields, 2)
        if direction > 1:
            raise SpqrStateError("unknown direction")
        params = _codec.get_message(fields, 4)
        return cls(
            auth_key=_codec.get_bytes(fields, 1),
            direction=Direction(direction),
            min_version=_codec.get_int(fields, 3, 0xFFFFFFFF),
            chain_params=None if params is None else ChainParams.from_proto(params),
        )

    def chain(self) -> Chain:
        if self.chain_params is None:
            raise SpqrChainNotAvailableError("no chain parameters to start a chain")
        return Chain.new(self.auth_key, self.direction, self.chain_params)


@dataclass
class _PqRatchetState:
    negotiation: _Negotiation | None
    chain: Chain | None
    inner: _states.State | None

    @property
    def version(self) -> Version:
        return Version.V0 if self.inner is None else Version.V1

    def to_proto(self) -> bytes:
        out = b""
        if self.negotiation is not None:
            out += _codec.message(1, self.negotiation.to_proto())
        if self.chain is not None:
            out += _codec.message(2, self.chain.to_proto())
        if self.inner is not None:
            out += _codec.message(3, _states.to_proto(self.inner))
        return out

    @classmethod
    def from_proto(cls, raw: bytes) -> _PqRatchetState:
        # An empty state is V0, as in the reference: sessions from before SPQR carry none.
        if not raw:
            return cls(None, None, None)
        fields = _codec.decode(raw)
        negotiation = _codec.get_message(fields, 1)
        chain = _codec.get_message(fields, 2)
        inner = _codec.get_message(fields, 3)
        return cls(
            negotiation=None if negotiation is None else _Negotiation.from_proto(negotiation),
            chain=None if chain is None else Chain.from_proto(chain),
            inner=None if inner is None else _states.from_proto(inner),
        )

    def chain_or_new(self) -> Chain:
        if self.chain is not None:
            return self.chain
        if self.negotiation is None:
            raise SpqrChainNotAvailableError("no chain and no negotiation state")
        return self.negotiation.chain()


def _inner_for(version: Version | int, direction: Direction, auth_key: bytes) -> _states.State | None:
    if version == Version.V0:
        return None
    return _states.init_a(auth_key) if direction is Direction.A2B else _states.init_b(auth_key)


def initial_state(
    *,
    auth_key: bytes,
    direction: Direction,
    version: Version = Version.V1,
    min_version: Version = Version.V1,
    chain_params: ChainParams | None = None,
) -> bytes:
    """The SPQR state of a new session.

    Args:
        auth_key: the 32-byte PQR key PQXDH derives beside the root and chain keys.
        direction: A2B for the session's initiator, B2A for its recipient.
        version: the highest version to speak (V0 gives the empty state).
        min_version: the lowest version the peer may negotiate down to; libsignal requires V1.
        chain_params: out-of-order bounds (libsignal's: max_jump 25 000, or 2^32-1 for a self-session;
            max_ooo_keys 2 000, which are the defaults).

    Returns:
        The serialized state.
    """
    if version == Version.V0:
        return b""
    return _initial(auth_key, direction, version, min_version, chain_params).to_proto()


def _initial(
    auth_key: bytes, direction: Direction, version: Version, min_version: Version, chain_params: ChainParams | None
) -> _PqRatchetState:
    negotiation = _Negotiation(auth_key, direction, int(min_version), chain_params or ChainParams())
    return _PqRatchetState(negotiation, None, _inner_for(version, direction, auth_key))


def current_version(state: bytes) -> CurrentVersion:
    """The version a state speaks, and whether negotiation is still open.

    Raises:
        SpqrStateError: malformed state.
    """
    parsed = _PqRatchetState.from_proto(state)
    if parsed.negotiation is None:
        return CurrentVersion(parsed.version, None)
    try:
        minimum = Version(parsed.negotiation.min_version)
    except ValueError:
        raise SpqrStateError("unknown minimum version") from None
    return CurrentVersion(parsed.version, minimum)


def _send(
    parsed: _PqRatchetState, rng: RandomSource, kem: IncrementalKem
) -> tuple[_PqRatchetState, bytes, bytes | None]:
    """``send`` on a parsed state, which it may change in place: ``(next state, message, key)``."""
    if parsed.inner is None:
        return _PqRatchetState(None, None, None), b"", None
    inner, msg, epoch_secret = _states.send(parsed.inner, rng, kem)
    chain = parsed.chain
    if chain is None:
        if parsed.negotiation is None:
            raise SpqrChainNotAvailableError("no chain and no negotiation state")
        # While the peer might still negotiate down to V0 there is no key to give: it could not match it.
        if parsed.negotiation.min_version > Version.V0:
            chain = parsed.negotiation.chain()
    index, key = 0, b""
    if chain is not None:
        if epoch_secret is not None:
            chain.add_epoch(epoch_secret.epoch, epoch_secret.secret)
        index, key = chain.send_key(msg.epoch - 1)
    elif epoch_secret is not None:
        raise SpqrStateError("an epoch secret with no chain to take it")
    return _PqRatchetState(parsed.negotiation, chain, inner), msg.serialize(index), key or None


def _recv(parsed: _PqRatchetState, msg: bytes, kem: IncrementalKem) -> tuple[_PqRatchetState, bytes | None]:
    """``recv`` on a parsed state, which it leaves as it was: ``(next state, key)``; the very same object back
    means "unchanged". The next state shares what receiving does not change (copy on write)."""
    if not msg:
        msg_version = Version.V0
    elif msg[0] < len(_VERSIONS):
        msg_version = _VERSIONS[msg[0]]
    else:
        # Newer than anything we speak: keep sending our own version and let the peer negotiate down.
        return parsed, None
    if msg_version < parsed.version:
        negotiation = parsed.negotiation
        if negotiation is None:
            raise SpqrVersionMismatchError
        if msg_version < negotiation.min_version:
            raise SpqrMinimumVersionError
        parsed = _PqRatchetState(
            None, parsed.chain_or_new(), _inner_for(msg_version, negotiation.direction, negotiation.auth_key)
        )
    if parsed.inner is None:
        return _PqRatchetState(None, None, None), None
    message, index = Message.deserialize(msg)
    inner, epoch_secret = _states.recv(parsed.inner, message, kem)
    chain = parsed.chain.copy_for_receive() if parsed.chain is not None else parsed.chain_or_new()
    if epoch_secret is not None:
        chain.add_epoch(epoch_secret.epoch, epoch_secret.secret)
    key_epoch = message.epoch - 1
    key = b"" if key_epoch == 0 and index == 0 else chain.recv_key(key_epoch, index)
    # Receiving ends negotiation: from here on the peer's version is known.
    return _PqRatchetState(None, chain, inner), key or None


def send(state: bytes, rng: RandomSource, kem: IncrementalKem = ML_KEM_768) -> SendResult:
    """Advances the state for one outgoing message.

    Args:
        state: the current serialized state.
        rng: a source of random bytes (``os.urandom``); 64 bytes per new key pair, 32 per encapsulation.
        kem: the incremental ML-KEM-768 (tests may pass another implementation of the protocol).

    Returns:
        The next state, the ``pq_ratchet`` bytes and the message key (None before the first epoch key).

    Raises:
        SpqrStateError: malformed state.
    """
    next_state, msg, key = _send(_PqRatchetState.from_proto(state), rng, kem)
    return SendResult(next_state.to_proto(), msg, key)


def recv(state: bytes, msg: bytes, kem: IncrementalKem = ML_KEM_768) -> RecvResult:
    """Advances the state for one incoming message's ``pq_ratchet`` bytes (empty when the peer sent none).

    Returns:
        The next state and the message key (None when the message carries none).

    Raises:
        SpqrMinimumVersionError: the peer speaks a version below our minimum ("Minimum version").
        SpqrVersionMismatchError: the peer dropped to a lower version after negotiation.
        SpqrMessageError (and subclasses): a malformed message, or one the chain refuses.
        SpqrMacError: a completed header or ciphertext fails its MAC.
        SpqrStateError: malformed state.
    """
    parsed = _PqRatchetState.from_proto(state)
    next_state, key = _recv(parsed, msg, kem)
    return RecvResult(state if next_state is parsed else next_state.to_proto(), key)


class PqRatchet:
    """One session's SPQR state, kept parsed between messages: the hot path neither re-parses nor re-serializes.

    The same protocol as :func:`send` and :func:`recv` over bytes (the tests hold both to the same answers).
    ``send`` advances this state in place. ``recv`` leaves it as it was and returns the next state, which
    shares what receiving does not change, so the Double Ratchet adopts it only once the message
    authenticated. The serialized form is computed when asked for, at most once per change.
    """

    __slots__ = ("_parsed", "_serialized")

    def __init__(self, state: bytes = b"") -> None:
        self._serialized: bytes | None = state
        self._parsed: _PqRatchetState | None = None

    @classmethod
    def initial(
        cls,
        *,
        auth_key: bytes,
        direction: Direction,
        min_version: Version = Version.V1,
        chain_params: ChainParams | None = None,
    ) -> PqRatchet:
        """A new session's V1 state, as :func:`initial_state` gives it serialized, but parsed already: a session
        set-up then neither serializes it nor parses it back before its first message."""
        return cls._of(_initial(auth_key, direction, Version.V1, min_version, chain_params), None)

    @classmethod
    def _of(cls, parsed: _PqRatchetState, serialized: bytes | None) -> PqRatchet:
        ratchet = cls.__new__(cls)
        ratchet._parsed, ratchet._serialized = parsed, serialized
        return ratchet

    def serialize(self) -> bytes:
        """The state as bytes (SPQR's ``PqRatchetState``), for the session record."""
        if self._serialized is None:
            assert self._parsed is not None
            self._serialized = self._parsed.to_proto()
        return self._serialized

    def _parsed_state(self) -> _PqRatchetState:
        if self._parsed is None:
            assert self._serialized is not None
            self._parsed = _PqRatchetState.from_proto(self._serialized)
        return self._parsed

    def send(self, rng: RandomSource, kem: IncrementalKem = ML_KEM_768) -> tuple[bytes, bytes | None]:
        """Advances this state for one outgoing message: ``(pq_ratchet bytes, message key or None)``.

        Raises:
            SpqrStateError: malformed state (the state is then unusable, as the session it belongs to).
        """
        parsed = self._parsed_state()
        saved = self._serialized
        self._parsed, self._serialized = None, None
        try:
            next_state, msg, key = _send(parsed, rng, kem)
        except Exception:
            # Only a corrupt state fails here; fall back to its saved bytes when there are any.
            self._parsed, self._serialized = (None, saved) if saved is not None else (parsed, None)
            raise
        self._parsed = next_state
        return msg, key

    def recv(self, msg: bytes, kem: IncrementalKem = ML_KEM_768) -> tuple[PqRatchet, bytes | None]:
        """The state after one incoming message, and its key; this state stays as it was.

        Raises:
            The errors of :func:`recv`; this state is unchanged by them.
        """
        parsed = self._parsed_state()
        next_state, key = _recv(parsed, msg, kem)
        if next_state is parsed:
            return self, key
        return PqRatchet._of(next_state, None), key

    def __bool__(self) -> bool:
        # Truthiness is "runs SPQR at all": the empty state (version 0) is false.
        return self._parsed.inner is not None if self._parsed is not None else bool(self._serialized)
