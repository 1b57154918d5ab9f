"""Whole one-to-one sessions with the real libsignal (@signalapp/libsignal-client 0.103.0): PQXDH, then the
Double Ratchet with SPQR, both directions.

Every test runs twice, once with libsignal starting the session (it processes our bundle) and once with us
starting it (we process libsignal's). Device names are ACIs (UUID strings), as Signal's apps use, so libsignal
binds both addresses into the prekey messages it sends (``SignalMessage`` field 6) and checks ours.

The conversations run 200+ messages: alternating, one-sided bursts, out of order, and with messages lost on the
way, with our device restarted from its serialized records along the way. Every message sent is counted: each
one delivered must decrypt to exactly what was sent, on the side it was sent to, and each SPQR epoch the
messages carry must move past the first few.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import pytest
from libs.crypto.libsignal_peer import KyberKind, LibsignalDevice, LibsignalError, spqr_epoch

from parley_crypto import (
    BadMacError,
    CiphertextMessage,
    CryptoError,
    IdentityKeyPair,
    InMemoryProtocolStore,
    MessageType,
    PreKeyBundle,
    ProtocolAddress,
    SessionCipher,
    SessionRecord,
    generate_kyber_prekey,
    generate_prekeys,
    generate_signed_prekey,
    process_prekey_bundle,
)
from parley_crypto._wire import PreKeySignalMessage, encode_addresses

Initiator = Literal["libsignal", "parley"]
INITIATORS: list[Initiator] = ["libsignal", "parley"]
LAST_RESORT_KYBER_ID = 1
ONE_TIME_KYBER_ID = 2


class ParleyDevice:
    """Our device: one signed prekey, five one-time prekeys, a last-resort and a one-time Kyber prekey."""

    def __init__(self) -> None:
        self.address = ProtocolAddress(str(uuid.uuid4()), 1)
        identity = IdentityKeyPair.generate()
        self.store = InMemoryProtocolStore(identity, 1234)
        self.store.add_signed_prekey(generate_signed_prekey(identity, 1, timestamp=0))
        self.store.add_prekeys(generate_prekeys(1, 5))
        self.store.add_kyber_prekey(
            generate_kyber_prekey(identity, LAST_RESORT_KYBER_ID, timestamp=0), last_resort=True
        )
        self.store.add_kyber_prekey(generate_kyber_prekey(identity, ONE_TIME_KYBER_ID, timestamp=0))

    def bundle(self, *, one_time_prekey: bool = True, kyber: KyberKind = "one_time") -> PreKeyBundle:
        """What the key directory would hand out for this device."""
        store = self.store
        signed = store.signed_prekeys[1]
        prekey = min(store.prekeys.values(), key=lambda record: record.id) if one_time_prekey else None
        pq = store.kyber_prekeys[ONE_TIME_KYBER_ID if kyber == "one_time" else LAST_RESORT_KYBER_ID]
        return PreKeyBundle(
            registration_id=store.get_local_registration_id(),
            device_id=self.address.device_id,
            identity_key=store.get_identity_key_pair().public_key,
            signed_prekey_id=signed.id,
            signed_prekey=signed.key_pair.public_key,
            signed_prekey_signature=signed.signature,
            prekey_id=prekey.id if prekey else None,
            prekey=prekey.key_pair.public_key if prekey else None,
            kyber_prekey_id=pq.id,
            kyber_prekey=pq.key_pair.public_key,
            kyber_prekey_signature=pq.signature,
        )

    def cipher(self, remote: ProtocolAddress) -> SessionCipher:
        """The session cipher toward ``remote``, told our own address as libsignal's calls are."""
        return SessionCipher(self.store, remote, local_address=self.address)

    def restart(self) -> None:
        """A restarted device: every session record goes through its serialized form and back."""
        self.store.sessions = {
            address: SessionRecord.deserialize(record.serialize()) for address, record in self.store.sessions.items()
        }


@dataclass
class Flow:
    """One direction of a conversation: what was sent, what is on the way, what arrived."""

    sent: dict[int, bytes] = field(default_factory=dict)
    in_flight: list[tuple[int, CiphertextMessage]] = field(default_factory=list)
    lost: list[tuple[int, CiphertextMessage]] = field(default_factory=list)
    decrypted: dict[int, bytes] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)


class Conversation:
    """Our device and a libsignal device talking, with a hand on the network in between.

    ``send(side, n)`` encrypts ``n`` fresh texts on one side; ``deliver(side, ...)`` hands what is on the way
    to that side, in the order and with the losses given. Every delivered message must decrypt to what was
    sent; a failure names the message and the error.
    """

    def __init__(self, parley: ParleyDevice, libsignal: LibsignalDevice, *, restart_every: int = 0) -> None:
        self.parley = parley
        self.libsignal = libsignal
        self.flows = {"parley": Flow(), "libsignal": Flow()}  # keyed by sender
        self._restart_every = restart_every
        self._sequence = 0
        self._since_restart = 0

    def _cipher(self) -> SessionCipher:
        return self.parley.cipher(self.libsignal.address)

    def send(self, side: Initiator, count: int) -> None:
        """``side`` encrypts ``count`` new messages; they go on the way to the other side."""
        texts = []
        flow = self.flows[side]
        for _ in range(count):
            self._sequence += 1
            text = b"%s says %d: " % (side.encode(), self._sequence) + bytes(self._sequence % 97)
            flow.sent[self._sequence] = text
            texts.append((self._sequence, text))
        if side == "parley":
            messages = []
            for _, text in texts:
                messages.append(self._cipher().encrypt(text))
                self._maybe_restart()
        else:
            messages = self.libsignal.encrypt(self.parley.address, [text for _, text in texts])
        for (sequence, _), message in zip(texts, messages, strict=True):
            flow.epochs.append(spqr_epoch(message))
            flow.in_flight.append((sequence, message))

    def deliver(
        self,
        to: Initiator,
        *,
        order: Callable[[int], list[int]] | None = None,
        lose: Callable[[int], bool] | None = None,
    ) -> None:
        """Delivers everything on the way to ``to``: permuted by ``order(n)``; ``lose(sequence)`` ones are lost."""
        flow = self.flows[other(to)]
        batch, flow.in_flight = flow.in_flight, []
        if order is not None:
            batch = [batch[i] for i in order(len(batch))]
        kept: list[tuple[int, CiphertextMessage]] = []
        for sequence, message in batch:
            (flow.lost if lose is not None and lose(sequence) else kept).append((sequence, message))
        self._receive(to, kept)

    def deliver_lost(self, to: Initiator, *, pick: Callable[[int], bool] | None = None) -> None:
        """Messages lost on the way to ``to`` (those ``pick(sequence)`` chooses) turn up after all, late."""
        flow = self.flows[other(to)]
        late = [item for item in flow.lost if pick is None or pick(item[0])]
        flow.lost = [item for item in flow.lost if item not in late]
        self._receive(to, late)

    def deliver_too_late(self, to: Initiator) -> list[Exception]:
        """Every message lost on the way to ``to`` turns up, however old: each decrypts or is refused.

        Returns:
            The refusals; their messages stay counted as lost.
        """
        flow = self.flows[other(to)]
        late, flow.lost = flow.lost, []
        return self._receive(to, late, refusals_allowed=True)

    def _receive(
        self, to: Initiator, batch: Sequence[tuple[int, CiphertextMessage]], *, refusals_allowed: bool = False
    ) -> list[Exception]:
        flow = self.flows[other(to)]
        if to == "parley":
            results: list[bytes | Exception] = []
            for _, message in batch:
                try:
                    results.append(self._cipher().decrypt(message))
                except CryptoError as exc:
                    results.append(exc)
                self._maybe_restart()
        else:
            results = list(self.libsignal.decrypt(self.parley.address, [message for _, message in batch]))
        refusals = []
        for (sequence, message), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                if not refusals_allowed:
                    pytest.fail(f"{to} could not decrypt message {sequence} ({message.type.name}): {result!r}")
                refusals.append(result)
                flow.lost.append((sequence, message))
                continue
            assert result == flow.sent[sequence], f"message {sequence} decrypted to other bytes"
            flow.decrypted[sequence] = result
        return refusals

    def _maybe_restart(self) -> None:
        self._since_restart += 1
        if self._restart_every and self._since_restart >= self._restart_every:
            self.parley.restart()
            self._since_restart = 0

    def assert_every_message_counted(self) -> None:
        """Each side decrypted every message sent to it that was not lost, and nothing else."""
        for side, flow in self.flows.items():
            lost = {sequence for sequence, _ in flow.lost}
            assert not flow.in_flight, f"messages from {side} still on the way"
            assert set(flow.decrypted) == set(flow.sent) - lost, f"messages from {side} missing"

    def total(self) -> int:
        """Messages sent so far, both ways."""
        return sum(len(flow.sent) for flow in self.flows.values())


def start(
    initiator: Initiator,
    parley: ParleyDevice,
    libsignal: LibsignalDevice,
    *,
    one_time_prekey: bool = True,
    kyber: KyberKind = "one_time",
    restart_every: int = 0,
) -> Conversation:
    """The initiator processes the other side's bundle; nothing is sent yet."""
    if initiator == "libsignal":
        libsignal.process_bundle(parley.address, parley.bundle(one_time_prekey=one_time_prekey, kyber=kyber))
    else:
        bundle = libsignal.bundle(one_time_prekey=one_time_prekey, kyber=kyber)
        process_prekey_bundle(parley.store, libsignal.address, bundle)
    return Conversation(parley, libsignal, restart_every=restart_every)


def other(side: Initiator) -> Initiator:
    """The other side."""
    return "parley" if side == "libsignal" else "libsignal"


@pytest.mark.parametrize("initiator", INITIATORS)
@pytest.mark.parametrize("one_time_prekey", [True, False], ids=["one-time-prekey", "no-one-time-prekey"])
@pytest.mark.parametrize("kyber", ["one_time", "last_resort"])
def test_session_starts_and_both_sides_answer(
    libsignal: LibsignalDevice, initiator: Initiator, one_time_prekey: bool, kyber: KyberKind
) -> None:
    parley = ParleyDevice()
    talk = start(initiator, parley, libsignal, one_time_prekey=one_time_prekey, kyber=kyber)
    talk.send(initiator, 3)
    first = talk.flows[initiator].in_flight[0][1]
    assert first.type == MessageType.PREKEY
    prekey_message = PreKeySignalMessage.parse(first.body)
    assert prekey_message.version == 4
    assert (prekey_message.prekey_id is not None) == one_time_prekey
    assert prekey_message.kyber_ciphertext is not None
    assert prekey_message.kyber_ciphertext[0] == 0x08
    talk.deliver(other(initiator))
    talk.send(other(initiator), 2)
    assert talk.flows[other(initiator)].in_flight[0][1].type == MessageType.WHISPER
    talk.deliver(initiator)
    talk.send(initiator, 2)
    assert talk.flows[initiator].in_flight[0][1].type == MessageType.WHISPER
    talk.deliver(other(initiator))
    talk.assert_every_message_counted()
    if initiator == "libsignal":
        # The one-time keys we handed out are gone; the last-resort Kyber key stays.
        assert (1 in parley.store.prekeys) != one_time_prekey
        assert (ONE_TIME_KYBER_ID in parley.store.kyber_prekeys) == (kyber != "one_time")
        assert LAST_RESORT_KYBER_ID in parley.store.kyber_prekeys


ALTERNATING_MESSAGES = 400


@pytest.mark.parametrize("initiator", INITIATORS)
def test_alternating_conversation_runs_several_spqr_epochs(libsignal: LibsignalDevice, initiator: Initiator) -> None:
    parley = ParleyDevice()
    talk = start(initiator, parley, libsignal, restart_every=50)
    side = initiator
    while talk.total() < ALTERNATING_MESSAGES:
        talk.send(side, 1)
        talk.deliver(other(side))
        side = other(side)
    talk.assert_every_message_counted()
    assert_epochs_advanced(talk)


def assert_epochs_advanced(talk: Conversation, *, at_least: int = 4) -> None:
    """Both sides' messages reached SPQR epoch ``at_least`` (so ``at_least - 1`` epochs completed), never going back."""
    for side, flow in talk.flows.items():
        assert max(flow.epochs) >= at_least, f"{side} reached only epoch {max(flow.epochs)}"
        assert flow.epochs == sorted(flow.epochs), f"{side}'s epochs went back"


@pytest.mark.parametrize("initiator", INITIATORS)
def test_one_sided_bursts(libsignal: LibsignalDevice, initiator: Initiator) -> None:
    parley = ParleyDevice()
    talk = start(initiator, parley, libsignal, restart_every=37)
    rng = random.Random(11)
    side = initiator
    while talk.total() < 720:
        talk.send(side, rng.randint(1, 40))
        talk.deliver(other(side))
        side = other(side)
    talk.assert_every_message_counted()
    assert_epochs_advanced(talk)


@pytest.mark.parametrize("initiator", INITIATORS)
def test_out_of_order_delivery(libsignal: LibsignalDevice, initiator: Initiator) -> None:
    parley = ParleyDevice()
    talk = start(initiator, parley, libsignal, restart_every=41)
    rng = random.Random(12)

    def shuffled(count: int) -> list[int]:
        order = list(range(count))
        rng.shuffle(order)
        return order

    side = initiator
    while talk.total() < 600:
        talk.send(side, rng.randint(1, 12))
        # Both sides may be sending at once (once both have a session): messages cross on the way.
        if talk.flows[other(side)].decrypted and rng.random() < 0.5:
            talk.send(other(side), rng.randint(1, 4))
            talk.deliver(side, order=shuffled)
        talk.deliver(other(side), order=shuffled)
        side = other(side)
    talk.deliver(initiator, order=shuffled)
    talk.deliver(other(initiator), order=shuffled)
    talk.assert_every_message_counted()
    assert_epochs_advanced(talk)


@pytest.mark.parametrize("initiator", INITIATORS)
def test_lost_messages_and_late_arrivals(libsignal: LibsignalDevice, initiator: Initiator) -> None:
    parley = ParleyDevice()
    talk = start(initiator, parley, libsignal, restart_every=45)
    rng = random.Random(13)

    def lose(_sequence: int) -> bool:
        return rng.random() < 0.2

    def one_chance_in_two(candidates: set[int], sequence: int) -> bool:
        return sequence in candidates and rng.random() < 0.5

    # Per receiving side: lost messages already given their one chance to turn up late.
    had_their_chance: dict[Initiator, set[int]] = {"parley": set(), "libsignal": set()}

    side = initiator
    while talk.total() < 720:
        talk.send(side, rng.randint(1, 15))
        talk.deliver(other(side), lose=lose)
        # Half of what was lost on the way to this side in its last delivery turns up now, one burst late,
        # behind the newer messages of the same chain: it still decrypts.
        latest = {sequence for sequence, _ in talk.flows[other(side)].lost} - had_their_chance[side]
        talk.deliver_lost(side, pick=partial(one_chance_in_two, latest))
        had_their_chance[side] |= latest
        side = other(side)
    talk.assert_every_message_counted()
    assert_epochs_advanced(talk)
    assert sum(len(flow.lost) for flow in talk.flows.values()) > 30
    # What is still missing turns up last, epochs late. Both libsignal and we keep message keys only for the
    # newest five ratchet chains and SPQR epochs only back to the one before the newest, so the oldest are
    # refused on both sides, and the session goes on.
    for to in INITIATORS:
        refusals = talk.deliver_too_late(to)
        assert refusals, f"{to} still decrypts messages epochs old"
        if to == "parley":
            assert all(isinstance(refusal, BadMacError) for refusal in refusals)
        else:
            assert all("decryption failed" in str(refusal) for refusal in refusals)
    for _ in range(4):
        talk.send(side, 20)
        talk.deliver(other(side))
        side = other(side)
    talk.assert_every_message_counted()


@pytest.mark.parametrize("initiator", INITIATORS)
def test_our_device_restarts_after_every_message(libsignal: LibsignalDevice, initiator: Initiator) -> None:
    parley = ParleyDevice()
    talk = start(initiator, parley, libsignal, restart_every=1)
    rng = random.Random(14)
    side = initiator
    while talk.total() < 500:
        talk.send(side, rng.randint(1, 8))
        talk.deliver(other(side))
        side = other(side)
    talk.assert_every_message_counted()
    assert_epochs_advanced(talk)


def test_libsignal_binds_both_addresses_and_we_check_them(libsignal: LibsignalDevice) -> None:
    parley = ParleyDevice()
    libsignal.process_bundle(parley.address, parley.bundle())
    (message,) = libsignal.encrypt(parley.address, [b"bound to us"])
    assert PreKeySignalMessage.parse(message.body).message.addresses == encode_addresses(
        libsignal.address, parley.address
    )
    elsewhere = ProtocolAddress(str(uuid.uuid4()), 1)
    with pytest.raises(BadMacError):
        SessionCipher(parley.store, libsignal.address, local_address=elsewhere).decrypt(message)
    assert parley.store.sessions == {}
    assert parley.cipher(libsignal.address).decrypt(message) == b"bound to us"


def test_we_bind_both_addresses_as_libsignal_does_and_it_checks_them(libsignal: LibsignalDevice) -> None:
    parley = ParleyDevice()
    process_prekey_bundle(parley.store, libsignal.address, libsignal.bundle())
    impostor = SessionCipher(parley.store, libsignal.address, local_address=ProtocolAddress(str(uuid.uuid4()), 1))
    forged = impostor.encrypt(b"claims another sender")
    # Without field 6 libsignal accepts, for senders that predate it: the field's contents are what it checks.
    unbound = SessionCipher(parley.store, libsignal.address).encrypt(b"no addresses")
    genuine = parley.cipher(libsignal.address).encrypt(b"from us")
    assert PreKeySignalMessage.parse(genuine.body).message.addresses == encode_addresses(
        parley.address, libsignal.address
    )
    refused, accepted, decrypted = libsignal.decrypt(parley.address, [forged, unbound, genuine])
    assert isinstance(refused, LibsignalError)
    assert "decryption failed" in str(refused)
    assert (accepted, decrypted) == (b"no addresses", b"from us")
