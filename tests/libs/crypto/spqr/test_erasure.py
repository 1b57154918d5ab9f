"""GF(2^16) arithmetic and SPQR's erasure code: any N chunks of an N-chunk message bring it back, and the
encoder's and decoder's serialized forms are the reference's."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_crypto._spqr import _gf16 as gf
from parley_crypto._spqr._erasure import Chunk, EncodingError, PolyDecoder, PolyEncoder
from parley_crypto._spqr._errors import SpqrStateError

pytestmark = pytest.mark.timeout(120)

# The sizes the V1 braid sends: header+MAC, encapsulation key, ct1, ct2+MAC.
V1_SIZES = (96, 1152, 960, 160)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_table_multiplication_is_carryless_multiplication_mod_the_polynomial(a: int, b: int) -> None:
    assert gf.mul(a, b) == gf.mul_slow(a, b)


@given(st.integers(0, 0xFFFF), st.integers(1, 0xFFFF))
def test_division_inverts_multiplication(a: int, b: int) -> None:
    assert gf.mul(gf.div(a, b), b) == a


def test_field_known_answers() -> None:
    # x^16 = x^12 + x^3 + x + 1 is the reduction rule of 0x1100b.
    assert gf.mul(0x8000, 2) == 0x100B
    assert gf.mul(0x100B, 1) == 0x100B
    # x is a generator: its powers reach 1 only after 2^16 - 1 steps.
    assert gf.EXP[0xFFFF] == 1
    assert 1 not in gf.EXP[1:0xFFFF]
    with pytest.raises(ZeroDivisionError):
        gf.div(1, 0)


def test_reference_small_case_decodes_from_chunks_one_and_two() -> None:
    # The reference's own encode_and_decode_small: 10 bytes, chunks 1 and 2 only.
    encoder = PolyEncoder.encode(b"abcdefghij")
    decoder = PolyDecoder.for_length(10)
    decoder.add_chunk(encoder.chunk_at(1))
    decoder.add_chunk(encoder.chunk_at(2))
    assert decoder.decoded_message() == b"abcdefghij"


def test_first_chunks_are_the_message_itself() -> None:
    message = bytes(range(64))
    encoder = PolyEncoder.encode(message)
    assert encoder.next_chunk() == Chunk(0, message[:32])
    assert encoder.next_chunk() == Chunk(1, message[32:])
    assert encoder.idx == 2


def test_parity_chunk_of_a_constant_message_is_that_constant() -> None:
    # A polynomial through points that all share one y is that constant: every later chunk repeats it.
    encoder = PolyEncoder.encode(bytes([3]) * 1088)
    assert encoder.chunk_at(100).data == bytes([3]) * 32
    assert encoder.points is None
    assert encoder.polys is not None


def test_parity_chunk_known_answer_for_two_points() -> None:
    # Through (0, a) and (1, b) the line is a + (a ^ b) X, so at x = 2 it is a ^ mul(a ^ b, 2).
    message = bytes(range(64))
    chunk = PolyEncoder.encode(message).chunk_at(2)
    for poly in range(16):
        a = int.from_bytes(message[2 * poly : 2 * poly + 2], "big")
        b = int.from_bytes(message[32 + 2 * poly : 34 + 2 * poly], "big")
        assert int.from_bytes(chunk.data[2 * poly : 2 * poly + 2], "big") == a ^ gf.mul(a ^ b, 2)


@pytest.mark.parametrize("size", V1_SIZES)
def test_worst_case_only_parity_chunks(size: int) -> None:
    # As the reference's encode_and_decode_large: none of the received chunks holds message data.
    rng = random.Random(size)
    message = rng.randbytes(size)
    needed = size // 32
    encoder = PolyEncoder.encode(message)
    decoder = PolyDecoder.for_length(size)
    for n, index in enumerate(range(needed + 1, 2 * needed + 1), start=1):
        decoder.add_chunk(encoder.chunk_at(index))
        if n < needed:
            assert decoder.decoded_message() is None
    assert decoder.decoded_message() == message


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(V1_SIZES), st.randoms(use_true_random=False), st.data())
def test_any_n_distinct_chunks_recover_the_message(size: int, rng: random.Random, data: st.DataObject) -> None:
    message = rng.randbytes(size)
    needed = size // 32
    indices = data.draw(st.lists(st.integers(0, 200), min_size=needed, max_size=needed, unique=True))
    encoder = PolyEncoder.encode(message)
    decoder = PolyDecoder.for_length(size)
    for index in indices:
        assert decoder.decoded_message() is None
        decoder.add_chunk(encoder.chunk_at(index))
    assert decoder.decoded_message() == message


def test_duplicates_do_not_count_twice() -> None:
    message = bytes(range(96))
    encoder = PolyEncoder.encode(message)
    decoder = PolyDecoder.for_length(96)
    for _ in range(5):
        decoder.add_chunk(encoder.chunk_at(7))
        decoder.add_chunk(encoder.chunk_at(9))
    assert decoder.decoded_message() is None
    decoder.add_chunk(encoder.chunk_at(0))
    assert decoder.decoded_message() == message


def test_a_corrupted_chunk_changes_the_result() -> None:
    # The code corrects erasures, not errors: integrity is the authenticator's job, above this layer.
    message = bytes(range(96))
    encoder = PolyEncoder.encode(message)
    decoder = PolyDecoder.for_length(96)
    bad = encoder.chunk_at(5)
    decoder.add_chunk(Chunk(bad.index, bytes([bad.data[0] ^ 1]) + bad.data[1:]))
    decoder.add_chunk(encoder.chunk_at(6))
    decoder.add_chunk(encoder.chunk_at(7))
    assert decoder.decoded_message() not in (None, message)


def test_serialization_round_trips_mid_transfer() -> None:
    # The reference's to_and_from_pb: both sides saved and restored with two chunks still to go.
    message = bytes([3]) * 1088
    encoder = PolyEncoder.encode(message)
    decoder = PolyDecoder.for_length(1088)
    for index in range(2, 34):
        decoder.add_chunk(encoder.chunk_at(index))
    encoder2 = PolyEncoder.from_proto(encoder.to_proto())
    decoder2 = PolyDecoder.from_proto(decoder.to_proto())
    assert encoder2.to_proto() == encoder.to_proto()
    assert decoder2.to_proto() == decoder.to_proto()
    for index in range(2):
        decoder2.add_chunk(encoder2.chunk_at(index + 34))
    assert decoder2.decoded_message() == message


def test_encoder_serialized_layout() -> None:
    # idx (field 1) then 16 point lists (field 2, big-endian u16s); after a parity chunk, 16 polys (field 3).
    encoder = PolyEncoder.encode(bytes(range(32)))
    encoder.next_chunk()
    raw = encoder.to_proto()
    assert raw[:2] == b"\x08\x01"
    assert raw[2:6] == b"\x12\x02\x00\x01"
    assert raw.count(b"\x12\x02") == 16
    encoder.next_chunk()
    raw = encoder.to_proto()
    assert raw[:2] == b"\x08\x02"
    assert raw[2:6] == b"\x1a\x02\x00\x01"  # degree-0 polynomial: the one point's value


def test_decoder_serialized_layout() -> None:
    decoder = PolyDecoder.for_length(96)
    decoder.add_chunk(Chunk(258, bytes(range(32))))
    raw = decoder.to_proto()
    # pts_needed = 48, polys = 16, then 16 lists of (x, y) as BE16 pairs.
    assert raw.startswith(b"\x08\x30\x10\x10\x1a\x04\x01\x02\x00\x01")
    assert PolyDecoder.from_proto(raw).pts[0] == {258: 1}


@pytest.mark.parametrize(
    "raw",
    [
        b"\x12\x01\x00",  # one point list, of odd length
        b"\x12\x00" * 15,  # fifteen point lists
        b"\x12\x00" * 16 + b"\x1a\x02\x00\x00" * 16,  # both points and polys
        b"\x1a\x00" * 16,  # empty polynomials
        b"",  # neither
        b"\xff",  # not protobuf
    ],
)
def test_malformed_encoder_state_is_refused(raw: bytes) -> None:
    with pytest.raises(SpqrStateError):
        PolyEncoder.from_proto(raw)


@pytest.mark.parametrize("raw", [b"\x08\x30", b"\x08\x30" + b"\x1a\x03abc" + b"\x1a\x00" * 15, b"\x0a"])
def test_malformed_decoder_state_is_refused(raw: bytes) -> None:
    with pytest.raises(SpqrStateError):
        PolyDecoder.from_proto(raw)


def test_odd_and_oversized_messages_are_refused() -> None:
    with pytest.raises(EncodingError):
        PolyEncoder.encode(b"abc")
    with pytest.raises(EncodingError):
        PolyEncoder.encode(bytes((1 << 20) + 2))
    with pytest.raises(EncodingError):
        PolyDecoder.for_length(3)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40).map(lambda n: 2 * n), st.randoms(use_true_random=False), st.integers(0, 0xFFFF))
def test_vectorized_evaluation_matches_horner(size: int, rng: random.Random, index: int) -> None:
    # Every computed chunk equals each polynomial evaluated one multiplication at a time (any message size).
    message = rng.randbytes(size)
    encoder = PolyEncoder.encode(message)
    encoder.chunk_at(size // 2 + 17)  # beyond the message: coefficient form from here on
    assert encoder.polys is not None
    expected = b""
    for packed in encoder.polys:
        value = 0
        for k in range(len(packed) - 2, -2, -2):
            value = gf.mul(value, index) ^ int.from_bytes(packed[k : k + 2], "big")
        expected += value.to_bytes(2, "big")
    assert encoder.chunk_at(index).data == expected


def _horner(polys: list[bytes], x: int) -> bytes:
    out = b""
    for packed in polys:
        value = 0
        for k in range(len(packed) - 2, -2, -2):
            value = gf.mul(value, x) ^ int.from_bytes(packed[k : k + 2], "big")
        out += value.to_bytes(2, "big")
    return out


@pytest.mark.parametrize("start", [40, 65_500])
def test_chunks_computed_ahead_match_horner_through_the_index_wrap(start: int) -> None:
    # Parity chunks are computed in batches ahead of need; each still equals its own evaluation, across
    # batch edges and the u16 index wrapping back to 0.
    encoder = PolyEncoder.encode(random.Random(start).randbytes(1152))
    encoder.idx = start
    chunks = [encoder.next_chunk() for _ in range(100)]
    assert encoder.polys is not None
    for offset, chunk in enumerate(chunks):
        assert chunk.index == (start + offset) & 0xFFFF
        assert chunk.data == _horner(encoder.polys, chunk.index), chunk.index
