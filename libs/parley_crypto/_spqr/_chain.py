"""SPQR's symmetric ratchet (``spqr::chain``): per-epoch send and receive chains that yield message keys.

Each epoch secret the braid agrees on starts a new pair of chains; a message key is HKDF output of its
chain's running ``next`` value and counter. Received keys may be asked for out of order: keys skipped over
are kept (``prev``, packed as ``BE32(index) || key``) within ``max_ooo_keys``, jumps beyond ``max_jump`` are
refused, and old send chains are wiped as soon as a newer send epoch is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from parley_crypto._kdf import hkdf_sha256
from parley_crypto._spqr import _codec, _labels
from parley_crypto._spqr._errors import (
    SpqrEpochOutOfRangeError,
    SpqrKeyAlreadyRequestedError,
    SpqrKeyJumpError,
    SpqrKeyTrimmedError,
    SpqrSendKeyEpochDecreasedError,
    SpqrStateError,
)

DEFAULT_MAX_JUMP = 25_000
DEFAULT_MAX_OOO_KEYS = 2_000
# Epochs kept before the current send epoch, so late messages of the previous epoch still decrypt.
_EPOCHS_TO_KEEP_PRIOR_TO_SEND_EPOCH = 1
_KEY_SIZE = 4 + 32
_U32 = 0xFFFFFFFF


class Direction(IntEnum):
    """Which party a state belongs to: A (the session initiator, sends the first header) or B."""

    A2B = 0
    B2A = 1

    def switch(self) -> Direction:
        """The other party's direction."""
        return Direction.B2A if self is Direction.A2B else Direction.A2B


@dataclass(frozen=True)
class ChainParams:
    """Out-of-order bounds; a zero means the library default, as in the reference's ``ChainParams`` proto."""

    max_jump: int = DEFAULT_MAX_JUMP
    max_ooo_keys: int = DEFAULT_MAX_OOO_KEYS

    @property
    def jump(self) -> int:
        """``max_jump`` with zero read as the default."""
        return self.max_jump or DEFAULT_MAX_JUMP

    @property
    def ooo(self) -> int:
        """``max_ooo_keys`` with zero read as the default."""
        return self.max_ooo_keys or DEFAULT_MAX_OOO_KEYS

    @property
    def trim_size(self) -> int:
        """Number of stored keys at which the history is garbage-collected."""
        return self.ooo * 11 // 10 + 1

    def to_proto(self) -> bytes:
        """``ChainParams { max_jump = 1; max_ooo_keys = 2; }``, defaults written as zero as the reference does."""
        return _codec.opt_varint(1, 0 if self.max_jump == DEFAULT_MAX_JUMP else self.max_jump) + _codec.opt_varint(
            2, 0 if self.max_ooo_keys == DEFAULT_MAX_OOO_KEYS else self.max_ooo_keys
        )

    @classmethod
    def from_proto(cls, data: bytes) -> ChainParams:
        """Parses serialized parameters (zeros kept, read as defaults)."""
        fields = _codec.decode(data)
        return cls(_codec.get_int(fields, 1, _U32), _codec.get_int(fields, 2, _U32))


def _next_key(next_value: bytes, counter: int) -> tuple[bytes, int, bytes]:
    """One chain step: ``(new next, new counter, key)``."""
    counter += 1
    out = hkdf_sha256(next_value, _labels.ZERO_SALT, counter.to_bytes(4, "big") + _labels.CHAIN_NEXT, 64)
    return out[:32], counter, out[32:]


@dataclass
class _History:
    """Skipped receive keys, ``BE32(index) || key`` each, in the reference's (swap-remove) order."""

    data: bytearray = field(default_factory=bytearray)

    def add(self, index: int, key: bytes) -> None:
        self.data += index.to_bytes(4, "big") + key

    def _remove(self, at: int) -> None:
        # Swap-remove: the last key moves into the hole, exactly as the reference does.
        end = len(self.data) - _KEY_SIZE
        if at + _KEY_SIZE < len(self.data):
            self.data[at : at + _KEY_SIZE] = self.data[end:]
            del self.data[end:]
        else:
            del self.data[at:]

    def gc(self, current: int, params: ChainParams) -> None:
        if len(self.data) < params.trim_size * _KEY_SIZE:
            return
        if current < params.ooo:
            raise SpqrStateError("key history larger than its window")
        horizon = current - params.ooo
        at = 0
        while at < len(self.data):
            if int.from_bytes(self.data[at : at + 4], "big") < horizon:
                self._remove(at)  # the moved-in key is looked at next, so ``at`` stays
            else:
                at += _KEY_SIZE

    def get(self, at: int, current: int, params: ChainParams) -> bytes:
        if at + params.ooo < current:
            raise SpqrKeyTrimmedError(at)
        want = at.to_bytes(4, "big")
        for offset in range(0, len(self.data), _KEY_SIZE):
            if self.data[offset : offset + 4] == want:
                key = bytes(self.data[offset + 4 : offset + _KEY_SIZE])
                self._remove(offset)
                return key
        raise SpqrKeyAlreadyRequestedError(at)


@dataclass
class _EpochDirection:
    ctr: int
    next: bytes
    prev: _History = field(default_factory=_History)

    def next_key(self) -> tuple[int, bytes]:
        self.next, self.ctr, key = _next_key(self.next, self.ctr)
        return self.ctr, key

    def key(self, at: int, params: ChainParams) -> bytes:
        if at > self.ctr:
            if at - self.ctr > params.jump:
                raise SpqrKeyJumpError(self.ctr, at)
        elif at < self.ctr:
            return self.prev.get(at, self.ctr, params)
        else:
            raise SpqrKeyAlreadyRequestedError(at)
        if at > self.ctr + params.ooo:
            self.prev.data.clear()  # every held key is about to fall out of the window
        while at > self.ctr + 1:
            self.next, self.ctr, skipped = _next_key(self.next, self.ctr)
            if self.ctr + params.ooo >= at:
                self.prev.add(self.ctr, skipped)
        self.prev.gc(self.ctr, params)
        self.next, self.ctr, key = _next_key(self.next, self.ctr)
        return key

    def to_proto(self) -> bytes:
        return (
            _codec.opt_varint(1, self.ctr) + _codec.opt_bytes(2, self.next) + _codec.opt_bytes(3, bytes(self.prev.data))
        )

    @classmethod
    def from_proto(cls, data: bytes) -> _EpochDirection:
        fields = _codec.decode(data)
        next_value = _codec.get_bytes(fields, 2)
        prev = _codec.get_bytes(fields, 3)
        if next_value and len(next_value) != 32:
            raise SpqrStateError("malformed chain key")
        if len(prev) % _KEY_SIZE:
            raise SpqrStateError("malformed key history")
        return cls(_codec.get_int(fields, 1, _U32), next_value, _History(bytearray(prev)))


@dataclass
class _Epoch:
    send: _EpochDirection
    recv: _EpochDirection


def _link(derived: bytes, direction: Direction) -> _Epoch:
    def half(d: Direction) -> _EpochDirection:
        return _EpochDirection(0, derived[32:64] if d is Direction.A2B else derived[64:96])

    return _Epoch(send=half(direction), recv=half(direction.switch()))


@dataclass
class Chain:
    """Message keys of every live epoch for one party."""

    direction: Direction
    current_epoch: int
    send_epoch: int
    links: list[_Epoch]  # links[-1] is current_epoch, earlier ones precede it
    next_root: bytes
    params: ChainParams

    @classmethod
    def new(cls, initial_key: bytes, direction: Direction, params: ChainParams) -> Chain:
        """The chain of epoch 0, keyed from the session's ``auth_key``."""
        derived = hkdf_sha256(initial_key, _labels.ZERO_SALT, _labels.CHAIN_START, 96)
        return cls(direction, 0, 0, [_link(derived, direction)], derived[:32], params)

    def add_epoch(self, epoch: int, secret: bytes) -> None:
        """Starts the chains of ``epoch`` (which must be the next one) from its braid secret."""
        if epoch != self.current_epoch + 1:
            raise SpqrStateError(f"epoch {epoch} does not follow {self.current_epoch}")
        derived = hkdf_sha256(secret, self.next_root, _labels.CHAIN_ADD_EPOCH, 96)
        self.current_epoch = epoch
        self.next_root = derived[:32]
        self.links.append(_link(derived, self.direction))

    def _index(self, epoch: int) -> int:
        back = self.current_epoch - epoch
        if epoch > self.current_epoch or back >= len(self.links):
            raise SpqrEpochOutOfRangeError(epoch)
        return len(self.links) - 1 - back

    def send_key(self, epoch: int) -> tuple[int, bytes]:
        """The next send key of ``epoch``: ``(index, key)``; moving to a newer epoch forgets old send chains.

        Raises:
            SpqrSendKeyEpochDecreasedError: ``epoch`` is older than the last send epoch.
            SpqrEpochOutOfRangeError: the epoch is not held.
        """
        if epoch < self.send_epoch:
            raise SpqrSendKeyEpochDecreasedError(self.send_epoch, epoch)
        index = self._index(epoch)
        if self.send_epoch != epoch:
            self.send_epoch = epoch
            while index > _EPOCHS_TO_KEEP_PRIOR_TO_SEND_EPOCH:
                self.links.pop(0)
                index -= 1
            for older in self.links[:index]:
                older.send.next = b""
        return self.links[index].send.next_key()

    def copy_for_receive(self) -> Chain:
        """A copy that ``add_epoch`` and ``recv_key`` may change while this chain stays as it was.

        Receiving touches one receive half of one link, which :meth:`recv_key` replaces rather than changes;
        the rest is shared.
        """
        return Chain(self.direction, self.current_epoch, self.send_epoch, list(self.links), self.next_root, self.params)

    def recv_key(self, epoch: int, index: int) -> bytes:
        """The receive key ``index`` of ``epoch``, each handed out once.

        Raises:
            SpqrEpochOutOfRangeError, SpqrKeyJumpError, SpqrKeyTrimmedError, SpqrKeyAlreadyRequestedError.
        """
        at = self._index(epoch)
        link = self.links[at]
        recv = _EpochDirection(link.recv.ctr, link.recv.next, _History(bytearray(link.recv.prev.data)))
        key = recv.key(index, self.params)
        self.links[at] = _Epoch(link.send, recv)  # a new link: one that a kept copy of this chain holds stays
        return key

    def to_proto(self) -> bytes:
        """``Chain { direction = 1; current_epoch = 2; links = 3; next_root = 4; send_epoch = 5; params = 6; }``."""
        out = _codec.opt_varint(1, int(self.direction)) + _codec.opt_varint(2, self.current_epoch)
        for link in self.links:
            out += _codec.message(3, _codec.message(1, link.send.to_proto()) + _codec.message(2, link.recv.to_proto()))
        out += _codec.opt_bytes(4, self.next_root) + _codec.opt_varint(5, self.send_epoch)
        return out + _codec.message(6, self.params.to_proto())

    @classmethod
    def from_proto(cls, data: bytes) -> Chain:
        """Parses a serialized chain.

        Raises:
            SpqrStateError: malformed bytes or a missing part.
        """
        fields = _codec.decode(data)
        direction = _codec.get_int(fields, 1)
        if direction > 1:
            raise SpqrStateError("unknown direction")
        links = []
        for raw in _codec.get_repeated(fields, 3):
            link = _codec.decode(raw)
            links.append(
                _Epoch(
                    send=_EpochDirection.from_proto(_codec.require_message(link, 1)),
                    recv=_EpochDirection.from_proto(_codec.require_message(link, 2)),
                )
            )
        return cls(
            direction=Direction(direction),
            current_epoch=_codec.get_int(fields, 2),
            send_epoch=_codec.get_int(fields, 5),
            links=links,
            next_root=_codec.get_bytes(fields, 4),
            params=ChainParams.from_proto(_codec.require_message(fields, 6)),
        )
