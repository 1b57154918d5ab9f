"""The V1 braid end to end over serialized state with the real incremental ML-KEM-768: both roles, many
epochs, dropped and reordered messages, restarts mid-epoch, version negotiation, and tampering."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from support.spqr import seeded

from parley_crypto import _mlkem768_incremental as mlkem
from parley_crypto._errors import CryptoError
from parley_crypto._spqr import (
    ChainParams,
    CurrentVersion,
    Direction,
    PqRatchet,
    SpqrEpochOutOfRangeError,
    SpqrErroneousDataError,
    SpqrError,
    SpqrMacError,
    SpqrMinimumVersionError,
    SpqrSendKeyEpochDecreasedError,
    SpqrStateError,
    SpqrVersionMismatchError,
    Version,
    _states,
    current_version,
    initial_state,
    recv,
    send,
)
from parley_crypto._spqr._api import _PqRatchetState
from parley_crypto._spqr._messages import Message, MessageType

pytestmark = pytest.mark.timeout(300)

AUTH_KEY = bytes([41]) * 32


class Party:
    """One side of a session: its serialized state (all it keeps) and a seeded randomness source."""

    def __init__(
        self, direction: Direction, seed: int, *, version: Version = Version.V1, minimum: Version = Version.V1
    ):
        self.state = initial_state(auth_key=AUTH_KEY, direction=direction, version=version, min_version=minimum)
        self.rng = seeded(seed)
        self.seen: set[str] = set()

    def send(self) -> tuple[bytes, bytes | None]:
        result = send(self.state, self.rng)
        self._keep(result.state)
        return result.msg, result.key

    def recv(self, msg: bytes) -> bytes | None:
        result = recv(self.state, msg)
        self._keep(result.state)
        return result.key

    def _keep(self, state: bytes) -> None:
        # Every intermediate state must survive a save and a restore unchanged: a restarted device continues.
        parsed = _PqRatchetState.from_proto(state)
        assert parsed.to_proto() == state
        if parsed.inner is not None:
            self.seen.add(type(parsed.inner).__name__)
        self.state = state

    @property
    def epoch(self) -> int:
        chain = _PqRatchetState.from_proto(self.state).chain
        return 0 if chain is None else chain.current_epoch


def test_lockstep_over_several_epochs() -> None:
    # The reference's lockstep_run_with_logging, run longer: keys agree on every message, epochs advance.
    alex, blake = Party(Direction.A2B, 1), Party(Direction.B2A, 2)
    keys = set()
    for _ in range(130):
        msg, key = alex.send()
        assert blake.recv(msg) == key
        assert key is not None
        keys.add(key)
        msg, key = blake.send()
        assert alex.recv(msg) == key
        keys.add(key)
    assert len(keys) == 260  # no message key repeats
    assert alex.epoch >= 3
    assert blake.epoch >= 3
    assert current_version(alex.state) == CurrentVersion(Version.V1, None)
    # Both roles walked through their states (the ack-dependent ones are the random test's business).
    assert {"KeysUnsampled", "KeysSampled", "HeaderSent", "Ct1Received", "EkSentCt1Received"} <= alex.seen
    assert {"NoHeaderReceived", "HeaderReceived", "Ct1Sampled", "Ct2Sampled"} <= alex.seen | blake.seen


def test_first_keys_exist_at_once_when_v1_is_required() -> None:
    # min_version_v1_always_creates_keys: with V1 required, the very first message has a key.
    alex, blake = Party(Direction.A2B, 3), Party(Direction.B2A, 4)
    msg, key = blake.send()
    assert key is not None
    assert alex.recv(msg) == key
    msg, key = alex.send()
    assert key is not None
    assert blake.recv(msg) == key


def test_random_conversation_with_drops() -> None:
    # The reference's ratchet test: random sends both ways, 30% of messages lost.
    rng = random.Random(5)
    alex, blake = Party(Direction.A2B, 6), Party(Direction.B2A, 7)
    for _ in range(700):
        if rng.random() < 0.5:
            msg, key = alex.send()
            if rng.random() < 0.7:
                assert blake.recv(msg) == key
        if rng.random() < 0.5:
            msg, key = blake.send()
            if rng.random() < 0.7:
                assert alex.recv(msg) == key
    assert min(alex.epoch, blake.epoch) >= 3


def test_bursts_delivered_out_of_order() -> None:
    # One-sided bursts, each delivered shuffled and with a loss: keys still agree and epochs still complete.
    rng = random.Random(8)
    alex, blake = Party(Direction.A2B, 9), Party(Direction.B2A, 10)
    for round_number in range(90):
        sender, receiver = (alex, blake) if round_number % 2 == 0 else (blake, alex)
        burst = [sender.send() for _ in range(rng.randint(1, 8))]
        rng.shuffle(burst)
        for msg, key in burst[: max(1, len(burst) - 1)]:
            assert receiver.recv(msg) == key
    assert min(alex.epoch, blake.epoch) >= 2
    assert "Ct1Acknowledged" in alex.seen | blake.seen or "EkReceivedCt1Sampled" in alex.seen | blake.seen


def test_late_message_of_a_finished_epoch_still_decrypts() -> None:
    alex, blake = Party(Direction.A2B, 11), Party(Direction.B2A, 12)
    held: list[tuple[bytes, bytes | None]] = []
    while alex.epoch < 2:
        msg, key = alex.send()
        if not held:
            held.append((msg, key))  # the very first message, epoch 1's key 0 chain
        else:
            assert blake.recv(msg) == key
        msg, key = blake.send()
        assert alex.recv(msg) == key
    late, key = held[0]
    assert blake.recv(late) == key


def test_negotiation_without_a_minimum_gives_no_keys_until_a_message_arrives() -> None:
    # empty_key_until_version_negotiation: min V0 on both sides.
    alex = Party(Direction.A2B, 13, minimum=Version.V0)
    blake = Party(Direction.B2A, 14, minimum=Version.V0)
    a1, ka1 = alex.send()
    b1, kb1 = blake.send()
    assert (ka1, kb1) == (None, None)
    assert current_version(alex.state) == CurrentVersion(Version.V1, Version.V0)
    assert blake.recv(a1) is None
    b2, kb2 = blake.send()
    assert kb2 is not None
    assert alex.recv(b1) is None
    assert alex.recv(b2) == kb2
    assert current_version(alex.state) == CurrentVersion(Version.V1, None)


def test_negotiation_down_to_v0() -> None:
    alex = Party(Direction.A2B, 15, minimum=Version.V0)
    blake = Party(Direction.B2A, 16, version=Version.V0, minimum=Version.V0)
    assert blake.state == b""
    msg, _ = alex.send()
    assert blake.recv(msg) is None
    msg, key = blake.send()
    assert (msg, key) == (b"", None)
    assert alex.recv(msg) is None
    assert current_version(alex.state) == CurrentVersion(Version.V0, None)


def test_a_peer_without_spqr_is_refused_when_v1_is_required() -> None:
    # negotiation_refused: what libsignal reports as "post-quantum ratchet error: Minimum version".
    alex = Party(Direction.A2B, 17)
    with pytest.raises(SpqrMinimumVersionError, match="Minimum version"):
        alex.recv(b"")
    blake = Party(Direction.B2A, 18)
    with pytest.raises(SpqrMinimumVersionError):
        blake.recv(b"")


def test_no_downgrade_after_negotiation() -> None:
    alex = Party(Direction.A2B, 19, minimum=Version.V0)
    blake = Party(Direction.B2A, 20, minimum=Version.V0)
    msg, _ = blake.send()
    alex.recv(msg)
    with pytest.raises(SpqrVersionMismatchError):
        alex.recv(b"")


def test_unknown_future_version_is_ignored() -> None:
    alex = Party(Direction.A2B, 21)
    before = alex.state
    assert recv(before, b"\x02anything").state == before
    assert recv(before, b"\x02anything").key is None


def test_message_from_a_future_epoch_is_refused() -> None:
    blake = Party(Direction.B2A, 22)
    with pytest.raises(SpqrEpochOutOfRangeError):
        blake.recv(Message(3, MessageType.NONE).serialize(1))


def test_restart_mid_epoch_continues_from_the_saved_bytes() -> None:
    alex, blake = Party(Direction.A2B, 23), Party(Direction.B2A, 24)
    for _ in range(20):
        msg, key = alex.send()
        assert blake.recv(msg) == key
        msg, key = blake.send()
        assert alex.recv(msg) == key
    # A "restarted" Alex is nothing but her saved bytes and a new randomness source.
    saved = bytes(alex.state)
    alex = Party(Direction.A2B, 25)
    alex.state = saved
    for _ in range(40):
        msg, key = alex.send()
        assert blake.recv(msg) == key
        msg, key = blake.send()
        assert alex.recv(msg) == key
    assert alex.epoch >= 1


def test_a_failed_receive_leaves_the_saved_state_as_it_was() -> None:
    alex = Party(Direction.A2B, 26)
    before = alex.state
    with pytest.raises(SpqrError):
        recv(before, Message(9, MessageType.NONE).serialize(1))
    assert alex.state == before
    assert send(before, seeded(1)).state == send(before, seeded(1)).state  # same input, same output


def run_until_failure(
    tamper_kind: MessageType, from_alex: bool, tamper: Callable[[bytes], bytes], steps: int = 150
) -> None:
    """Lockstep run in which every message of one kind from one side is altered by ``tamper``."""
    alex, blake = Party(Direction.A2B, 27), Party(Direction.B2A, 28)
    for _ in range(steps):
        for sender, receiver, is_alex in ((alex, blake, True), (blake, alex, False)):
            msg, _ = sender.send()
            parsed, _index = Message.deserialize(msg)
            if parsed.kind is tamper_kind and is_alex == from_alex:
                msg = tamper(msg)
            receiver.recv(msg)


def flip_last_data_bit(msg: bytes) -> bytes:
    return msg[:-1] + bytes([msg[-1] ^ 1])


@pytest.mark.parametrize(
    ("kind", "from_alex", "error"),
    [
        (MessageType.HDR, True, SpqrMacError),  # the header's MAC chains the previous epochs
        (MessageType.EK, True, SpqrErroneousDataError),  # the key must hash to the authenticated header
        (MessageType.EK_CT1_ACK, True, SpqrErroneousDataError),
        (MessageType.CT1, False, SpqrMacError),  # a wrong ct1 decapsulates to another secret: the MAC fails
        (MessageType.CT2, False, SpqrMacError),
    ],
)
def test_tampered_chunks_are_refused_when_their_message_completes(
    kind: MessageType, from_alex: bool, error: type[SpqrError]
) -> None:
    with pytest.raises(error):
        run_until_failure(kind, from_alex, flip_last_data_bit)


def test_every_bit_flip_in_version_epoch_or_index_is_refused_or_yields_another_key() -> None:
    # The key hangs on version, epoch and index. The payload type and chunk are not bound to the key here:
    # the SignalMessage MAC covers all of field 5, and a bad chunk fails the braid's own MACs later (above).
    alex, blake = Party(Direction.A2B, 29), Party(Direction.B2A, 30)
    for _ in range(3):
        msg, key = alex.send()
        blake.recv(msg)
        msg, key = blake.send()
        alex.recv(msg)
    msg, key = alex.send()
    assert key is not None
    parsed, index = Message.deserialize(msg)
    keyed_bits = 8 * (len(Message(parsed.epoch, MessageType.NONE).serialize(index)) - 1)
    for bit in range(keyed_bits):
        flipped = bytearray(msg)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            got = recv(blake.state, bytes(flipped)).key
        except SpqrError:
            continue
        assert got != key, f"bit {bit} went unnoticed"


def test_every_single_bit_flip_of_a_state_is_refused_or_parses_cleanly() -> None:
    # State has no MAC (the store is trusted), but no corruption may surface as anything but a typed error.
    alex = Party(Direction.A2B, 31)
    alex.send()
    state = alex.state
    for bit in range(0, 8 * min(len(state), 400), 3):
        flipped = bytearray(state)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            send(bytes(flipped), seeded(bit))
        except CryptoError:
            continue


@pytest.mark.parametrize(
    "state",
    [
        b"\x1a\x00",  # V1State with no inner state
        b"\x1a\x04\x0a\x02\x0a\x00",  # KeysUnsampled without an authenticator
        b"\x1a\x04\x12\x02\x0a\x00" + b"",  # KeysSampled without key material or encoder
        b"\x0a\x01",  # truncated
        b"\x12\x02\x08\x05",  # chain with an unknown direction and no parameters
    ],
)
def test_malformed_states_are_refused(state: bytes) -> None:
    with pytest.raises(SpqrStateError):
        send(state, seeded(0))


def test_key_material_of_the_wrong_size_is_refused() -> None:
    alex = Party(Direction.A2B, 32)
    alex.send()
    parsed = _PqRatchetState.from_proto(alex.state)
    assert isinstance(parsed.inner, _states.KeysSampled)
    parsed.inner.dk = parsed.inner.dk[:-1]
    with pytest.raises(SpqrStateError):
        send(parsed.to_proto(), seeded(0))


def test_self_session_parameters_survive_serialization() -> None:
    state = initial_state(auth_key=AUTH_KEY, direction=Direction.A2B, chain_params=ChainParams(max_jump=2**32 - 1))
    first = send(state, seeded(0))
    chain = _PqRatchetState.from_proto(first.state).chain
    assert chain is not None
    # Stored as the reference stores it (the default max_ooo_keys as zero), read back with the same bounds.
    assert (chain.params.jump, chain.params.ooo) == (2**32 - 1, 2000)
    assert chain.params.max_ooo_keys == 0


def _byte_swapped(es: bytes) -> bytes:
    body = bytearray(es[:-32])
    body[0::2], body[1::2] = body[1::2], body[0::2]
    return bytes(body) + es[-32:]


def test_encapsulation_state_written_by_libcrux_issue_1275_is_repaired() -> None:
    # States saved by libsignal builds with libcrux issue 1275 hold the i16s big-endian; SPQR swaps them back.
    keys = mlkem.generate(bytes(64))
    _, es, _ = mlkem.encaps1(keys.header, bytes(32))
    assert _states._repair_libcrux_1275(es) == es
    assert _states._repair_libcrux_1275(_byte_swapped(es)) == es


def test_braid_finishes_an_epoch_from_a_byte_swapped_saved_state() -> None:
    alex, blake = Party(Direction.A2B, 33), Party(Direction.B2A, 34)
    while True:
        msg, key = alex.send()
        assert blake.recv(msg) == key
        parsed = _PqRatchetState.from_proto(blake.state)
        if isinstance(parsed.inner, _states.Ct1Sampled):
            break
        msg, key = blake.send()
        assert alex.recv(msg) == key
    parsed.inner.es = _byte_swapped(parsed.inner.es)
    blake.state = parsed.to_proto()
    while alex.epoch < 2:
        msg, key = blake.send()
        assert alex.recv(msg) == key
        msg, key = alex.send()
        assert blake.recv(msg) == key


def test_parsed_handle_gives_the_same_answers_as_the_bytes_functions() -> None:
    # PqRatchet (what sessions keep) against send/recv over bytes: same randomness, same messages, keys, states.
    rng = random.Random(35)
    alex = Party(Direction.A2B, 36)
    blake = Party(Direction.B2A, 37)
    alex_handle, alex_rng = PqRatchet(alex.state), seeded(36)
    blake_handle, blake_rng = PqRatchet(blake.state), seeded(37)
    for _ in range(150):
        if rng.random() < 0.5:
            msg, key = alex.send()
            assert alex_handle.send(alex_rng) == (msg, key)
            assert alex_handle.serialize() == alex.state
            if rng.random() < 0.8:
                blake.recv(msg)
                blake_handle, got = blake_handle.recv(msg)
                assert got == key
                assert blake_handle.serialize() == blake.state
        else:
            msg, key = blake.send()
            assert blake_handle.send(blake_rng) == (msg, key)
            if rng.random() < 0.8:
                alex.recv(msg)
                alex_handle, got = alex_handle.recv(msg)
                assert got == key
                assert alex_handle.serialize() == alex.state
    assert min(alex.epoch, blake.epoch) >= 1


def test_parsed_handle_is_unchanged_by_a_receive_it_does_not_adopt() -> None:
    alex, blake = Party(Direction.A2B, 38), Party(Direction.B2A, 39)
    for _ in range(5):  # mid-transfer, with chain keys in use on both sides
        msg, _ = alex.send()
        blake.recv(msg)
        msg, _ = blake.send()
        alex.recv(msg)
    handle = PqRatchet(blake.state)
    msg, key = alex.send()
    pending, got = handle.recv(msg)
    assert got == key
    assert handle.serialize() == blake.state  # not adopted: the old state stands
    again, got_again = handle.recv(msg)  # and can take the same message again
    assert got_again == key
    assert again.serialize() == pending.serialize()
    with pytest.raises(SpqrEpochOutOfRangeError):
        handle.recv(Message(9, MessageType.NONE).serialize(1))
    assert handle.serialize() == blake.state
    # Nothing the receives did leaked into the kept state: it sends exactly as a fresh copy of its bytes does.
    assert handle.send(seeded(5)) == PqRatchet(blake.state).send(seeded(5))
    assert not PqRatchet(b"")
    assert handle


def test_a_send_that_fails_on_a_corrupt_state_leaves_its_bytes() -> None:
    alex = Party(Direction.A2B, 40)
    alex.send()
    parsed = _PqRatchetState.from_proto(alex.state)
    assert parsed.chain is not None
    parsed.chain.send_epoch = 7  # later than any epoch this chain holds
    corrupt = parsed.to_proto()
    handle = PqRatchet(corrupt)
    with pytest.raises(SpqrSendKeyEpochDecreasedError):
        handle.send(seeded(0))
    assert handle.serialize() == corrupt
    with pytest.raises(SpqrSendKeyEpochDecreasedError):
        send(corrupt, seeded(0))
