"""SPQR's erasure code: a message of N 32-byte chunks is recovered from any N distinct chunks received.

As ``spqr::encoding::polynomial``: the message is read as big-endian 16-bit values; value ``i`` is the point
``(i // 16, v)`` of polynomial ``i % 16`` over GF(2^16). Chunk ``k`` carries the values of all 16 polynomials
at ``x = k``: chunks below N are the message itself (a systematic code), later ones are evaluations of the
interpolated polynomials. On the wire a chunk is its index (a ``u16``) and 32 data bytes.

The encoder and decoder are kept in the session record mid-transfer, so their serialized forms
(``PolynomialEncoder`` / ``PolynomialDecoder`` of SPQR's ``pq_ratchet.proto``) are reproduced byte for byte,
including the encoder's switch from stored points to polynomial coefficients the first time a chunk beyond
the message is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parley_crypto import _protobuf as pb
from parley_crypto._spqr import _codec
from parley_crypto._spqr import _gf16 as gf
from parley_crypto._spqr._errors import SpqrStateError

CHUNK_SIZE = 32
NUM_POLYS = CHUNK_SIZE // 2
# Parity chunks computed per evaluation: indexes go up one per message, so the next ones are computed together.
_AHEAD = 32
MAX_MESSAGE = (1 << 16) * NUM_POLYS


class EncodingError(ValueError):
    """A message cannot be encoded (odd length, or longer than 2^16 chunks); a programming error here."""


@dataclass(frozen=True)
class Chunk:
    """One erasure-coded piece: ``index`` (0..65535) and exactly 32 bytes of ``data``."""

    index: int
    data: bytes


def _interpolate(xs: list[int], ys: list[int]) -> list[int]:
    """Coefficients (lowest first, exactly ``len(xs)`` of them) of the polynomial through ``(xs[i], ys[i])``.

    The reference sums precomputed Lagrange bases; interpolation through N distinct points has one answer of
    degree below N, so any correct method gives the same coefficients and the same serialized bytes.
    """
    n = len(xs)
    # master = prod (X - x_j), lowest coefficient first.
    master = [1]
    for xj in xs:
        shifted = [0, *master]
        for k, c in enumerate(master):
            shifted[k] ^= gf.mul(c, xj)
        master = shifted
    out = [0] * n
    for i, xi in enumerate(xs):
        if ys[i] == 0:
            continue
        denominator = 1
        for xj in xs:
            if xj != xi:
                denominator = gf.mul(denominator, xi ^ xj)
        scale = gf.div(ys[i], denominator)
        # Synthetic division of master by (X - xi), from the top coefficient down.
        quotient = master[n]
        out[n - 1] ^= gf.mul(quotient, scale)
        for k in range(n - 1, 0, -1):
            quotient = master[k] ^ gf.mul(quotient, xi)
            out[k - 1] ^= gf.mul(quotient, scale)
    return out


def _evaluate(coefficients: list[int], x: int) -> int:
    result = 0
    for c in reversed(coefficients):
        result = gf.mul(result, x) ^ c
    return result


@dataclass
class PolyEncoder:
    """Turns one message into an endless stream of chunks; ``next_chunk`` yields index 0, 1, 2, ...

    Exactly one of ``points`` (each polynomial's message values) and ``polys`` (its coefficients, lowest
    first) is set, each as packed big-endian u16s: the state is saved after every message, so the form it is
    saved in is the form it is kept in.
    """

    idx: int
    points: list[bytes] | None
    polys: list[bytes] | None = None
    # Derived, never serialized: the coefficients as logarithms, for evaluating all 16 polynomials at once,
    # and the chunks computed ahead (first index, their data), since indexes are asked for in sequence.
    _logs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)
    _ahead: tuple[int, list[bytes]] = field(default=(0, []), repr=False, compare=False)

    @classmethod
    def encode(cls, message: bytes) -> PolyEncoder:
        """An encoder for ``message`` (even length, at most 2^20 bytes).

        Raises:
            EncodingError: the length is odd or too long.
        """
        if len(message) % 2:
            raise EncodingError("message length must be divisible by 2")
        if len(message) > MAX_MESSAGE:
            raise EncodingError("message length is too long")
        values = np.frombuffer(message, dtype=">u2")
        return cls(idx=0, points=[values[poly::NUM_POLYS].tobytes() for poly in range(NUM_POLYS)])

    def _switch_to_polys(self) -> None:
        # First value beyond the message: from now on every chunk is computed, so the reference swaps its
        # stored points for coefficients (and serializes those from then on).
        assert self.points is not None
        coefficients = []
        for packed in self.points:
            ys = _u16s(packed)
            coefficients.append(_interpolate(list(range(len(ys))), ys))
        self.polys = [np.array(c, dtype=">u2").tobytes() for c in coefficients]
        self.points = None

    def chunk_at(self, index: int) -> Chunk:
        """The chunk with ``index`` (0..65535); may switch the encoder to coefficient form."""
        at = 2 * index
        if self.points is not None:
            if all(at < len(packed) for packed in self.points):
                return Chunk(index, b"".join(packed[at : at + 2] for packed in self.points))
            # Some polynomials may still hold this x (messages not a multiple of 32 bytes), but the reference
            # switches to coefficients at the first missing value and evaluates every polynomial from then on.
            self._switch_to_polys()
        first, ahead = self._ahead
        if first <= index < first + len(ahead):
            return Chunk(index, ahead[index - first])
        if self._logs is None:
            assert self.polys is not None
            self._logs = _log_matrix(self.polys)
        if index == 0:  # x = 0 only after the u16 index wrapped: each polynomial's constant term
            constants = self._logs[0][:, :1]
            return Chunk(index, _EXP[constants].astype(">u2").tobytes() if constants.size else bytes(CHUNK_SIZE))
        # One vectorized evaluation for the next _AHEAD indexes costs little more than one for a single index.
        ahead = _evaluate_many(self._logs, index, min(_AHEAD, 0x10000 - index))
        self._ahead = (index, ahead)
        return Chunk(index, ahead[0])

    def next_chunk(self) -> Chunk:
        """The next chunk in sequence; the counter is a ``u32`` whose low 16 bits are the chunk index."""
        chunk = self.chunk_at(self.idx & 0xFFFF)
        self.idx = (self.idx + 1) & 0xFFFFFFFF
        return chunk

    def to_proto(self) -> bytes:
        """``PolynomialEncoder { idx = 1; repeated bytes pts = 2; repeated bytes polys = 3; }``."""
        number, packed = (2, self.points) if self.points is not None else (3, self.polys)
        assert packed is not None
        return _codec.opt_varint(1, self.idx) + b"".join(pb.field_bytes(number, p) for p in packed)

    @classmethod
    def from_proto(cls, data: bytes) -> PolyEncoder:
        """Parses a serialized encoder with the reference's checks.

        Raises:
            SpqrStateError: malformed bytes, both or neither of points and polys, or odd-length entries.
        """
        fields = _codec.decode(data)
        idx = _codec.get_int(fields, 1, 0xFFFFFFFF)
        raw_points = _codec.get_repeated(fields, 2)
        raw_polys = _codec.get_repeated(fields, 3)
        if raw_points:
            if raw_polys or len(raw_points) != NUM_POLYS or any(len(p) % 2 for p in raw_points):
                raise SpqrStateError("invalid polynomial encoder")
            return cls(idx=idx, points=raw_points)
        if len(raw_polys) == NUM_POLYS:
            if any(not p or len(p) % 2 for p in raw_polys):
                raise SpqrStateError("invalid polynomial encoder")
            return cls(idx=idx, points=None, polys=raw_polys)
        raise SpqrStateError("invalid polynomial encoder")


@dataclass
class PolyDecoder:
    """Collects chunks of a message of ``pts_needed`` 16-bit values until any sufficient set has arrived.

    ``pts[p]`` maps x to y for polynomial ``p``; a later chunk with the same x replaces the earlier value, as
    the reference's sorted set does (its comment says "discard", its ``SortedSet::push`` replaces).
    """

    pts_needed: int
    pts: list[dict[int, int]] = field(default_factory=lambda: [{} for _ in range(NUM_POLYS)])
    is_complete: bool = False

    @classmethod
    def for_length(cls, length: int) -> PolyDecoder:
        """A decoder for a message of ``length`` bytes (even)."""
        if length % 2:
            raise EncodingError("message length must be divisible by 2")
        return cls(pts_needed=length // 2)

    def _necessary(self, poly: int) -> int:
        per_poly, remainder = divmod(self.pts_needed, NUM_POLYS)
        return per_poly + 1 if poly < remainder else per_poly

    def add_chunk(self, chunk: Chunk) -> None:
        """Takes one chunk's points; only points that can still help (a low x, or too few so far) are kept."""
        x = chunk.index
        for poly in range(NUM_POLYS):
            necessary = self._necessary(poly)
            if x < necessary or len(self.pts[poly]) < necessary:
                self.pts[poly][x] = chunk.data[2 * poly] << 8 | chunk.data[2 * poly + 1]

    def with_chunk(self, chunk: Chunk) -> PolyDecoder:
        """A copy of this decoder that took ``chunk``; this one is left as it was."""
        copy = PolyDecoder(self.pts_needed, [dict(points) for points in self.pts], self.is_complete)
        copy.add_chunk(chunk)
        return copy

    def decoded_message(self) -> bytes | None:
        """The message once every polynomial has enough points, else None."""
        if self.is_complete:
            return None
        for poly in range(NUM_POLYS):
            if len(self.pts[poly]) < self._necessary(poly):
                return None
        # Interpolated lazily, per polynomial, from its lowest ``necessary`` points (the reference's choice).
        polys: dict[int, list[int]] = {}
        out = bytearray()
        for i in range(self.pts_needed):
            poly, x = i % NUM_POLYS, i // NUM_POLYS
            y = self.pts[poly].get(x)
            if y is None:
                if poly not in polys:
                    chosen = sorted(self.pts[poly].items())[: self._necessary(poly)]
                    polys[poly] = _interpolate([p[0] for p in chosen], [p[1] for p in chosen])
                y = _evaluate(polys[poly], x)
            out += y.to_bytes(2, "big")
        return bytes(out)

    def to_proto(self) -> bytes:
        """``PolynomialDecoder { pts_needed = 1; polys = 2; repeated bytes pts = 3; is_complete = 4; }``."""
        out = _codec.opt_varint(1, self.pts_needed)
        out += pb.field_varint(2, NUM_POLYS)
        for points in self.pts:
            packed = np.array(sorted(points.items()), dtype=">u2").tobytes() if points else b""
            out += pb.field_bytes(3, packed)
        if self.is_complete:
            out += pb.field_varint(4, 1)
        return out

    @classmethod
    def from_proto(cls, data: bytes) -> PolyDecoder:
        """Parses a serialized decoder with the reference's checks (16 point lists of 4-byte points).

        Raises:
            SpqrStateError: malformed bytes.
        """
        fields = _codec.decode(data)
        raw = _codec.get_repeated(fields, 3)
        pts_needed = _codec.get_int(fields, 1, 0xFFFFFFFF)
        if len(raw) != NUM_POLYS or any(len(p) % 4 for p in raw):
            raise SpqrStateError("invalid polynomial decoder")
        # A repeated x keeps its last y, as the reference's sorted-set push does while it reads them in.
        pts = [dict(np.frombuffer(packed, dtype=">u2").reshape(-1, 2).tolist()) for packed in raw]
        return cls(pts_needed=pts_needed, pts=pts, is_complete=bool(_codec.get_int(fields, 4)))


# Antilogarithms over [0, 2 * ORDER) (the doubled table: a log plus a power needs no reduction), then ORDER
# zeros: a zero coefficient gets the "logarithm" _ZERO_LOG, which lands in the zeros whatever power is added,
# so one table lookup gives every term, zero or not.
_ZERO_LOG = 2 * gf.ORDER
_EXP = np.array(gf.EXP + [0] * gf.ORDER, dtype=np.uint16)
_LOG = np.array(gf.LOG, dtype=np.int64)
_LOG[0] = _ZERO_LOG


def _log_matrix(polys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The 16 coefficient lists as one matrix of logarithms (zero-padded, zeros as ``_ZERO_LOG``), and the
    exponents 0..width-1 its columns stand for."""
    width = max(len(p) for p in polys) // 2
    matrix = np.zeros((NUM_POLYS, width), dtype=np.int64)
    for row, packed in enumerate(polys):
        values = np.frombuffer(packed, dtype=">u2")
        matrix[row, : len(values)] = values
    return _LOG[matrix], np.arange(width, dtype=np.int64)


def _evaluate_many(logs: tuple[np.ndarray, np.ndarray], first: int, count: int) -> list[bytes]:
    """All 16 polynomials at each x in ``first .. first + count - 1`` (none of them 0): one 32-byte chunk each,
    big-endian. Sums of c_k * x^k through log tables, vectorized over polynomials, terms and points."""
    log_coefficients, exponents = logs
    if log_coefficients.shape[1] == 0:  # an empty message: every polynomial is zero
        return [bytes(CHUNK_SIZE)] * count
    powers = np.outer(exponents, _LOG[first : first + count]) % gf.ORDER
    values = np.bitwise_xor.reduce(_EXP[log_coefficients[:, :, None] + powers], axis=1)
    raw = values.T.astype(">u2").tobytes()
    return [raw[at : at + CHUNK_SIZE] for at in range(0, len(raw), CHUNK_SIZE)]


def _u16s(packed: bytes) -> list[int]:
    values: list[int] = np.frombuffer(packed, dtype=">u2").tolist()
    return values
