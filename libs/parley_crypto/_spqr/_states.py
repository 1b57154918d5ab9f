"""The V1 state machine of the ML-KEM Braid (``spqr::v1::chunked::states``), both roles, and its serialization.

Party A starts on the *send_ek* side, B on the *send_ct* side; each completed epoch swaps the roles.

send_ek (publishes a fresh key)          send_ct (encapsulates to it)
  KeysUnsampled   --send-->  KeysSampled      NoHeaderReceived  --hdr decoded--> HeaderReceived
  KeysSampled     --ct1-->   HeaderSent       HeaderReceived    --send-->        Ct1Sampled (epoch secret)
  HeaderSent      --ct1 decoded--> Ct1Received Ct1Sampled  --ek decoded / ack--> EkReceivedCt1Sampled,
  Ct1Received     --ct2-->   EkSentCt1Received                                  Ct1Acknowledged or Ct2Sampled
  EkSentCt1Received --ct2 decoded, MAC ok--> send_ct's NoHeaderReceived, epoch + 1 (epoch secret)
                                              Ct2Sampled --message of epoch + 1--> send_ek's KeysUnsampled

Every ``send`` emits one chunk of whatever this side is sending (header+MAC, key, ct1, ct2+MAC) or an ack;
every ``recv`` feeds the peer's chunk to the matching decoder. Messages of older epochs are ignored, newer ones
than the state can reach are refused. The serialized form is SPQR's ``V1State`` message, field for field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from parley_crypto._errors import CryptoError
from parley_crypto._kdf import hkdf_sha256
from parley_crypto._spqr import _codec, _labels
from parley_crypto._spqr import _kem as kemsizes
from parley_crypto._spqr._authenticator import MAC_SIZE, Authenticator
from parley_crypto._spqr._erasure import PolyDecoder, PolyEncoder
from parley_crypto._spqr._errors import (
    SpqrEpochOutOfRangeError,
    SpqrErroneousDataError,
    SpqrMessageError,
    SpqrStateError,
)
from parley_crypto._spqr._kem import IncrementalKem
from parley_crypto._spqr._messages import Message, MessageType

RandomSource = Callable[[int], bytes]

_HDR_MSG = kemsizes.HEADER_SIZE + MAC_SIZE
_CT2_MSG = kemsizes.CIPHERTEXT2_SIZE + MAC_SIZE


@dataclass(frozen=True)
class EpochSecret:
    """The 32-byte secret both parties agree on for ``epoch``; it seeds that epoch's message-key chains."""

    epoch: int
    secret: bytes


# ---- send_ek side ------------------------------------------------------------------------------------------


@dataclass
class KeysUnsampled:
    """send_ek, no key pair for this epoch yet."""

    epoch: int
    auth: Authenticator


@dataclass
class KeysSampled:
    """send_ek, sending the authenticated header's chunks."""

    epoch: int
    auth: Authenticator
    ek: bytes
    dk: bytes
    sending_hdr: PolyEncoder


@dataclass
class HeaderSent:
    """send_ek, the peer started on ct1: sending key chunks, collecting ct1."""

    epoch: int
    auth: Authenticator
    dk: bytes
    sending_ek: PolyEncoder
    receiving_ct1: PolyDecoder


@dataclass
class Ct1Received:
    """send_ek, ct1 complete: still sending key chunks, now flagged as acknowledging ct1."""

    epoch: int
    auth: Authenticator
    dk: bytes
    ct1: bytes
    sending_ek: PolyEncoder


@dataclass
class EkSentCt1Received:
    """send_ek, the peer has the key: acking ct1, collecting ct2+MAC."""

    epoch: int
    auth: Authenticator
    dk: bytes
    ct1: bytes
    receiving_ct2: PolyDecoder


# ---- send_ct side ------------------------------------------------------------------------------------------


@dataclass
class NoHeaderReceived:
    """send_ct, collecting the peer's header+MAC."""

    epoch: int
    auth: Authenticator
    receiving_hdr: PolyDecoder


@dataclass
class HeaderReceived:
    """send_ct, header verified; the next send encapsulates."""

    epoch: int
    auth: Authenticator
    hdr: bytes
    receiving_ek: PolyDecoder


@dataclass
class Ct1Sampled:
    """send_ct, sending ct1 chunks while collecting the key."""

    epoch: int
    auth: Authenticator
    hdr: bytes
    es: bytes
    ct1: bytes
    sending_ct1: PolyEncoder
    receiving_ek: PolyDecoder


@dataclass
class EkReceivedCt1Sampled:
    """send_ct, key complete, ct1 not yet acknowledged: still sending ct1."""

    epoch: int
    auth: Authenticator
    es: bytes
    ek: bytes
    ct1: bytes
    sending_ct1: PolyEncoder


@dataclass
class Ct1Acknowledged:
    """send_ct, ct1 acknowledged, key still incomplete: sending nothing, collecting the key."""

    epoch: int
    auth: Authenticator
    hdr: bytes
    es: bytes
    ct1: bytes
    receiving_ek: PolyDecoder


@dataclass
class Ct2Sampled:
    """send_ct, sending ct2+MAC chunks until the peer's first message of the next epoch."""

    epoch: int
    auth: Authenticator
    sending_ct2: PolyEncoder


State = (
    KeysUnsampled
    | KeysSampled
    | HeaderSent
    | Ct1Received
    | EkSentCt1Received
    | NoHeaderReceived
    | HeaderReceived
    | Ct1Sampled
    | EkReceivedCt1Sampled
    | Ct1Acknowledged
    | Ct2Sampled
)


def init_a(auth_key: bytes) -> State:
    """Party A's first state: send_ek in epoch 1."""
    return KeysUnsampled(1, Authenticator.new(auth_key, 1))


def init_b(auth_key: bytes) -> State:
    """Party B's first state: send_ct in epoch 1, waiting for A's header."""
    return NoHeaderReceived(1, Authenticator.new(auth_key, 1), PolyDecoder.for_length(_HDR_MSG))


def _scka_key(shared_secret: bytes, epoch: int) -> bytes:
    return hkdf_sha256(shared_secret, _labels.ZERO_SALT, _labels.SCKA_KEY + epoch.to_bytes(8, "big"), 32)


def _send_ct2(epoch: int, auth: Authenticator, ek: bytes, es: bytes, ct1: bytes, kem: IncrementalKem) -> Ct2Sampled:
    try:
        ct2 = kem.encaps2(ek, _repair_libcrux_1275(es))
    except CryptoError as exc:
        # Only a key that matched its authenticated header reaches here; the KEM refusing it is the peer's doing.
        raise SpqrErroneousDataError(f"encapsulation failed: {exc}") from exc
    mac = auth.mac_ct(epoch, ct1 + ct2)
    return Ct2Sampled(epoch, auth, PolyEncoder.encode(ct2 + mac))


def send(  # noqa: PLR0911 - one case per state, as the reference's match
    state: State, rng: RandomSource, kem: IncrementalKem
) -> tuple[State, Message, EpochSecret | None]:
    """One outgoing braid message: ``(next state, message, epoch secret this send produced or None)``."""
    epoch = state.epoch
    match state:
        case KeysUnsampled(auth=auth):
            hdr, ek, dk = kem.generate(rng(kemsizes.KEY_GENERATION_SEED_SIZE))
            encoder = PolyEncoder.encode(hdr + auth.mac_hdr(epoch, hdr))
            chunk = encoder.next_chunk()
            return KeysSampled(epoch, auth, ek, dk, encoder), Message(epoch, MessageType.HDR, chunk), None
        case KeysSampled(sending_hdr=encoder):
            return state, Message(epoch, MessageType.HDR, encoder.next_chunk()), None
        case HeaderSent(sending_ek=encoder):
            return state, Message(epoch, MessageType.EK, encoder.next_chunk()), None
        case Ct1Received(sending_ek=encoder):
            return state, Message(epoch, MessageType.EK_CT1_ACK, encoder.next_chunk()), None
        case EkSentCt1Received():
            return state, Message(epoch, MessageType.CT1_ACK), None
        case NoHeaderReceived() | Ct1Acknowledged():
            return state, Message(epoch, MessageType.NONE), None
        case HeaderReceived(auth=auth, hdr=hdr, receiving_ek=receiving_ek):
            ct1, es, shared = kem.encaps1(hdr, rng(kemsizes.ENCAPSULATION_SEED_SIZE))
            secret = _scka_key(shared, epoch)
            auth = auth.update(epoch, secret)
            encoder = PolyEncoder.encode(ct1)
            chunk = encoder.next_chunk()
            next_state = Ct1Sampled(epoch, auth, hdr, es, ct1, encoder, receiving_ek)
            return next_state, Message(epoch, MessageType.CT1, chunk), EpochSecret(epoch, secret)
        case Ct1Sampled(sending_ct1=encoder) | EkReceivedCt1Sampled(sending_ct1=encoder):
            return state, Message(epoch, MessageType.CT1, encoder.next_chunk()), None
        case Ct2Sampled(sending_ct2=encoder):
            return state, Message(epoch, MessageType.CT2, encoder.next_chunk()), None
    raise AssertionError("unreachable")  # pragma: no cover


def recv(  # noqa: PLR0911, PLR0912 - one case per state and payload, as the reference's match
    state: State, msg: Message, kem: IncrementalKem
) -> tuple[State, EpochSecret | None]:
    """Takes one incoming braid message: ``(next state, epoch secret it completed or None)``.

    ``state`` itself is never changed (a decoder is copied before it takes a chunk), so a caller can keep it
    until the message authenticated.

    Raises:
        SpqrEpochOutOfRangeError: the message is from an epoch this state cannot have reached.
        SpqrMacError: a completed header or ciphertext fails its MAC.
        SpqrErroneousDataError: a completed key does not match its header.
    """
    if isinstance(state, Ct2Sampled) and msg.epoch == state.epoch + 1:
        # The peer has decapsulated and moved on: this side now publishes the next key.
        return KeysUnsampled(msg.epoch, state.auth), None
    if msg.epoch > state.epoch:
        raise SpqrEpochOutOfRangeError(msg.epoch)
    if msg.epoch < state.epoch:
        return state, None
    epoch, kind, chunk = msg.epoch, msg.kind, msg.chunk
    match state:
        case KeysSampled(auth=auth, ek=ek, dk=dk) if kind is MessageType.CT1 and chunk is not None:
            receiving_ct1 = PolyDecoder.for_length(kemsizes.CIPHERTEXT1_SIZE)
            receiving_ct1.add_chunk(chunk)
            return HeaderSent(epoch, auth, dk, PolyEncoder.encode(ek), receiving_ct1), None
        case HeaderSent(auth=auth, dk=dk, sending_ek=sending_ek, receiving_ct1=decoder) if (
            kind is MessageType.CT1 and chunk is not None
        ):
            decoder = decoder.with_chunk(chunk)
            ct1 = decoder.decoded_message()
            if ct1 is None:
                return replace(state, receiving_ct1=decoder), None
            return Ct1Received(epoch, auth, dk, ct1, sending_ek), None
        case Ct1Received(auth=auth, dk=dk, ct1=ct1) if kind is MessageType.CT2 and chunk is not None:
            receiving_ct2 = PolyDecoder.for_length(_CT2_MSG)
            receiving_ct2.add_chunk(chunk)
            return EkSentCt1Received(epoch, auth, dk, ct1, receiving_ct2), None
        case EkSentCt1Received(auth=auth, dk=dk, ct1=ct1, receiving_ct2=decoder) if (
            kind is MessageType.CT2 and chunk is not None
        ):
            decoder = decoder.with_chunk(chunk)
            decoded = decoder.decoded_message()
            if decoded is None:
                return replace(state, receiving_ct2=decoder), None
            ct2, mac = decoded[: kemsizes.CIPHERTEXT2_SIZE], decoded[kemsizes.CIPHERTEXT2_SIZE :]
            secret = _scka_key(kem.decaps(dk, ct1, ct2), epoch)
            auth = auth.update(epoch, secret)
            auth.verify_ct(epoch, ct1 + ct2, mac)
            next_state = NoHeaderReceived(epoch + 1, auth, PolyDecoder.for_length(_HDR_MSG))
            return next_state, EpochSecret(epoch, secret)
        case NoHeaderReceived(auth=auth, receiving_hdr=decoder) if kind is MessageType.HDR and chunk is not None:
            decoder = decoder.with_chunk(chunk)
            decoded = decoder.decoded_message()
            if decoded is None:
                return replace(state, receiving_hdr=decoder), None
            hdr, mac = decoded[: kemsizes.HEADER_SIZE], decoded[kemsizes.HEADER_SIZE :]
            auth.verify_hdr(epoch, hdr, mac)
            return HeaderReceived(epoch, auth, hdr, PolyDecoder.for_length(kemsizes.ENCAPSULATION_KEY_SIZE)), None
        case Ct1Sampled(auth=auth, hdr=hdr, es=es, ct1=ct1, receiving_ek=decoder) if (
            kind in (MessageType.EK, MessageType.EK_CT1_ACK) and chunk is not None
        ):
            acked = kind is MessageType.EK_CT1_ACK
            decoder = decoder.with_chunk(chunk)
            key_vector = decoder.decoded_message()
            if key_vector is not None:
                _check_ek(kem, key_vector, hdr)
                if acked:
                    return _send_ct2(epoch, auth, key_vector, es, ct1, kem), None
                return EkReceivedCt1Sampled(epoch, auth, es, key_vector, ct1, state.sending_ct1), None
            if acked:
                return Ct1Acknowledged(epoch, auth, hdr, es, ct1, decoder), None
            return replace(state, receiving_ek=decoder), None
        case EkReceivedCt1Sampled(auth=auth, es=es, ek=ek, ct1=ct1) if kind in (
            MessageType.CT1_ACK,
            MessageType.EK_CT1_ACK,
        ):
            return _send_ct2(epoch, auth, ek, es, ct1, kem), None
        case Ct1Acknowledged(auth=auth, hdr=hdr, es=es, ct1=ct1, receiving_ek=decoder) if (
            kind in (MessageType.EK, MessageType.EK_CT1_ACK) and chunk is not None
        ):
            # In order, no plain key chunk follows the first acking one; out of order they can, and count.
            decoder = decoder.with_chunk(chunk)
            key_vector = decoder.decoded_message()
            if key_vector is None:
                return replace(state, receiving_ek=decoder), None
            _check_ek(kem, key_vector, hdr)
            return _send_ct2(epoch, auth, key_vector, es, ct1, kem), None
    return state, None


# In the encapsulation state r̂ (3 x 256 i16) comes first, then e2 (256 i16), then 32 bytes of m.
_E2 = slice(3 * 512, 4 * 512)
_E2_BYTE_SWAPPED = frozenset({0x0100, 0x0200, -257})  # 1, 2 and -2 written big-endian, read little-endian


def _repair_libcrux_1275(es: bytes) -> bytes:
    """The encapsulation state as libcrux reads it, repaired if an old libcrux wrote it byte-swapped.

    libcrux issue 1275 stored the i16s of this state big-endian for a while; SPQR detects such states by e2,
    whose values must lie in [-2, 2], and swaps every i16 back (``incremental_mlkem768.rs``). Parley never
    writes such a state, but the reference's check costs little and keeps its behaviour whole.
    """
    e2 = es[_E2]
    for offset in range(0, len(e2), 2):
        value = int.from_bytes(e2[offset : offset + 2], "little", signed=True)
        if value in (0, -1):  # the same bytes in either order: undecided, look further
            continue
        if value in _E2_BYTE_SWAPPED:
            body = bytearray(es[:-32])
            body[0::2], body[1::2] = body[1::2], body[0::2]
            return bytes(body) + es[-32:]
        return es  # a well-formed value (or garbage the reference also leaves alone)
    return es


def _check_ek(kem: IncrementalKem, ek: bytes, hdr: bytes) -> None:
    if not kem.ek_matches_header(ek, hdr):
        raise SpqrErroneousDataError("encapsulation key does not match its header")


# ---- serialization (SPQR's V1State) ------------------------------------------------------------------------

# V1State.inner_state field numbers.
_FIELD = {
    KeysUnsampled: 1,
    KeysSampled: 2,
    HeaderSent: 3,
    Ct1Received: 4,
    EkSentCt1Received: 5,
    NoHeaderReceived: 6,
    HeaderReceived: 7,
    Ct1Sampled: 8,
    EkReceivedCt1Sampled: 9,
    Ct1Acknowledged: 10,
    Ct2Sampled: 11,
}


def _uc(epoch: int, auth: Authenticator, *extra: bytes) -> bytes:
    """An ``Unchunked.*`` message: epoch, authenticator, then its key material as fields 3, 4, 5."""
    out = _codec.opt_varint(1, epoch) + _codec.message(2, auth.to_proto())
    for number, value in enumerate(extra, start=3):
        out += _codec.opt_bytes(number, value)
    return out


def to_proto(state: State) -> bytes:
    """The ``V1State`` bytes of ``state``."""
    e, a = state.epoch, state.auth
    m = _codec.message
    match state:
        case KeysUnsampled():
            body = m(1, _uc(e, a))
        case KeysSampled():
            body = m(1, _uc(e, a, state.ek, state.dk)) + m(2, state.sending_hdr.to_proto())
        case HeaderSent():
            body = m(1, _uc(e, a, state.dk)) + m(2, state.sending_ek.to_proto()) + m(3, state.receiving_ct1.to_proto())
        case Ct1Received():
            body = m(1, _uc(e, a, state.dk, state.ct1)) + m(2, state.sending_ek.to_proto())
        case EkSentCt1Received():
            body = m(1, _uc(e, a, state.dk, state.ct1)) + m(3, state.receiving_ct2.to_proto())
        case NoHeaderReceived():
            body = m(1, _uc(e, a)) + m(2, state.receiving_hdr.to_proto())
        case HeaderReceived():
            body = m(1, _uc(e, a, state.hdr)) + m(2, state.receiving_ek.to_proto())
        case Ct1Sampled():
            uc = _uc(e, a, state.hdr, state.es, state.ct1)
            body = m(1, uc) + m(2, state.sending_ct1.to_proto()) + m(3, state.receiving_ek.to_proto())
        case EkReceivedCt1Sampled():
            body = m(1, _uc(e, a, state.es, state.ek, state.ct1)) + m(2, state.sending_ct1.to_proto())
        case Ct1Acknowledged():
            body = m(1, _uc(e, a, state.hdr, state.es, state.ct1)) + m(2, state.receiving_ek.to_proto())
        case Ct2Sampled():
            body = m(1, _uc(e, a)) + m(2, state.sending_ct2.to_proto())
    return m(_FIELD[type(state)], body)


def _parse_uc(raw: bytes, *lengths: int) -> tuple[int, Authenticator, list[bytes]]:
    fields = _codec.decode(raw)
    auth = Authenticator.from_proto(_codec.require_message(fields, 2))
    values = [_codec.get_bytes(fields, number) for number in range(3, 3 + len(lengths))]
    if any(len(v) != n for v, n in zip(values, lengths, strict=True)):
        raise SpqrStateError("key material of the wrong size")
    return _codec.get_int(fields, 1), auth, values


def _decoder(fields: dict[int, list[int | bytes]], number: int, length: int) -> PolyDecoder:
    decoder = PolyDecoder.from_proto(_codec.require_message(fields, number))
    if decoder.pts_needed != length // 2:
        # The reference reports this one as a message decode error, not a state decode error.
        raise SpqrMessageError("decoder sized for another message")
    return decoder


def _encoder(fields: dict[int, list[int | bytes]], number: int) -> PolyEncoder:
    return PolyEncoder.from_proto(_codec.require_message(fields, number))


def from_proto(raw: bytes) -> State:  # noqa: PLR0911 - one case per V1State field
    """Parses ``V1State`` bytes with the reference's checks.

    Raises:
        SpqrStateError: malformed bytes, a missing part, or key material of the wrong size.
        SpqrMessageError: a decoder sized for another message (the reference's ``MsgDecode``).
    """
    outer = _codec.decode(raw)
    present = [number for number in range(1, 12) if number in outer]
    if len(present) != 1:
        raise SpqrStateError("V1State holds no (or more than one) state")
    number = present[0]
    f = _codec.decode(_codec.require_message(outer, number))
    uc = _codec.require_message(f, 1)
    ks = kemsizes
    if number == 1:
        e, a, _ = _parse_uc(uc)
        return KeysUnsampled(e, a)
    if number == 2:
        e, a, (ek, dk) = _parse_uc(uc, ks.ENCAPSULATION_KEY_SIZE, ks.DECAPSULATION_KEY_SIZE)
        return KeysSampled(e, a, ek, dk, _encoder(f, 2))
    if number == 3:
        receiving_ct1 = _decoder(f, 3, ks.CIPHERTEXT1_SIZE)
        e, a, (dk,) = _parse_uc(uc, ks.DECAPSULATION_KEY_SIZE)
        return HeaderSent(e, a, dk, _encoder(f, 2), receiving_ct1)
    if number == 4:
        e, a, (dk, ct1) = _parse_uc(uc, ks.DECAPSULATION_KEY_SIZE, ks.CIPHERTEXT1_SIZE)
        return Ct1Received(e, a, dk, ct1, _encoder(f, 2))
    if number == 5:
        receiving_ct2 = _decoder(f, 3, _CT2_MSG)
        e, a, (dk, ct1) = _parse_uc(uc, ks.DECAPSULATION_KEY_SIZE, ks.CIPHERTEXT1_SIZE)
        return EkSentCt1Received(e, a, dk, ct1, receiving_ct2)
    if number == 6:
        receiving_hdr = _decoder(f, 2, _HDR_MSG)
        e, a, _ = _parse_uc(uc)
        return NoHeaderReceived(e, a, receiving_hdr)
    if number == 7:
        receiving_ek = _decoder(f, 2, ks.ENCAPSULATION_KEY_SIZE)
        e, a, (hdr,) = _parse_uc(uc, ks.HEADER_SIZE)
        return HeaderReceived(e, a, hdr, receiving_ek)
    if number == 8:
        receiving_ek = _decoder(f, 3, ks.ENCAPSULATION_KEY_SIZE)
        e, a, (hdr, es, ct1) = _parse_uc(uc, ks.HEADER_SIZE, ks.ENCAPSULATION_STATE_SIZE, ks.CIPHERTEXT1_SIZE)
        return Ct1Sampled(e, a, hdr, es, ct1, _encoder(f, 2), receiving_ek)
    if number == 9:
        e, a, (es, ek, ct1) = _parse_uc(uc, ks.ENCAPSULATION_STATE_SIZE, ks.ENCAPSULATION_KEY_SIZE, ks.CIPHERTEXT1_SIZE)
        return EkReceivedCt1Sampled(e, a, es, ek, ct1, _encoder(f, 2))
    if number == 10:
        receiving_ek = _decoder(f, 2, ks.ENCAPSULATION_KEY_SIZE)
        e, a, (hdr, es, ct1) = _parse_uc(uc, ks.HEADER_SIZE, ks.ENCAPSULATION_STATE_SIZE, ks.CIPHERTEXT1_SIZE)
        return Ct1Acknowledged(e, a, hdr, es, ct1, receiving_ek)
    e, a, _ = _parse_uc(uc)
    return Ct2Sampled(e, a, _encoder(f, 2))
