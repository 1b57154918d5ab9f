"""The Double Ratchet on one session state, as libsignal runs it.

Decryption computes everything it would change (new chains, skipped keys, the next root key) into locals, checks
the MAC and the padding, and only then writes to the state, so a forged or corrupted message changes nothing.
Bounds follow libsignal: 2000 skipped message keys kept per receiver chain, a jump of at most 25,000 messages,
five receiver chains kept per session.

Version-4 sessions run SPQR beside the Double Ratchet (libsignal's triple ratchet): every message carries the
SPQR message in its ``pq_ratchet`` field, and SPQR's message key salts the HKDF of the message keys. The SPQR
state is bytes in the session; on receipt its new value, like everything else, is committed only after the MAC.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from parley_crypto import _spqr
from parley_crypto._errors import (
    BadMacError,
    CounterTooFarError,
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidVersionError,
)
from parley_crypto._kdf import aes_cbc_decrypt, aes_cbc_encrypt, chain_step, mac, message_keys, root_step
from parley_crypto._keys import KeyPair, PublicKey
from parley_crypto._wire import MAC_SIZE, SignalMessage, encode_signal_message, version_byte

MAX_MESSAGE_KEYS = 2000
MAX_FORWARD_JUMPS = 25_000
MAX_RECEIVER_CHAINS = 5
# What a session without SPQR sends in field 5, and the key it salts with: nothing (libsignal's empty state).
_NO_SPQR: tuple[bytes, bytes | None] = (b"", None)


class ReceiverChain:
    """One receiving chain: the remote ratchet key it belongs to, its chain key and skipped message keys.

    ``skipped`` maps a counter to its message-key seed, oldest first (dicts keep insertion order).
    """

    __slots__ = ("chain_key", "index", "ratchet_key", "skipped")

    def __init__(
        self, ratchet_key: PublicKey, chain_key: bytes, index: int, skipped: dict[int, bytes] | None = None
    ) -> None:
        self.ratchet_key = ratchet_key
        self.chain_key = chain_key
        self.index = index
        self.skipped: dict[int, bytes] = skipped if skipped is not None else {}


@dataclass(slots=True)
class PendingPreKey:
    """What the initiator repeats in every message until the responder answers (libsignal's
    "unacknowledged prekey message")."""

    prekey_id: int | None
    signed_prekey_id: int
    base_key: PublicKey
    kyber_prekey_id: int | None = None
    kyber_ciphertext: bytes | None = None


class SessionState:
    """The state of one Double Ratchet session between two devices."""

    __slots__ = (
        "_mac_prefix_recv",
        "_mac_prefix_send",
        "_pq",
        "_sender_key_bytes",
        "_version_prefix",
        "alice_base_key",
        "local_identity",
        "local_registration_id",
        "pending_prekey",
        "previous_counter",
        "receiver_chains",
        "remote_identity",
        "remote_registration_id",
        "root_key",
        "sender_chain_key",
        "sender_index",
        "sender_ratchet",
        "version",
    )

    def __init__(
        self,
        *,
        version: int,
        local_identity: PublicKey,
        remote_identity: PublicKey,
        root_key: bytes,
        sender_ratchet: KeyPair,
        sender_chain_key: bytes,
        alice_base_key: PublicKey,
        sender_index: int = 0,
        previous_counter: int = 0,
        receiver_chains: list[ReceiverChain] | None = None,
        pending_prekey: PendingPreKey | None = None,
        local_registration_id: int = 0,
        remote_registration_id: int = 0,
        pq_ratchet_state: bytes | _spqr.PqRatchet = b"",
    ) -> None:
        self.version = version
        self.local_identity = local_identity
        self.remote_identity = remote_identity
        self.root_key = root_key
        self.sender_ratchet = sender_ratchet
        self.sender_chain_key = sender_chain_key
        self.sender_index = sender_index
        self.previous_counter = previous_counter
        self.receiver_chains: list[ReceiverChain] = receiver_chains if receiver_chains is not None else []
        self.pending_prekey = pending_prekey
        self.alice_base_key = alice_base_key
        self.local_registration_id = local_registration_id
        self.remote_registration_id = remote_registration_id
        # SPQR's state, None for sessions that run none (version 3, and version 4 records from before SPQR): bytes
        # from a stored record, or a new session's state as it was built.
        if isinstance(pq_ratchet_state, _spqr.PqRatchet):
            self._pq: _spqr.PqRatchet | None = pq_ratchet_state
        else:
            self._pq = _spqr.PqRatchet(pq_ratchet_state) if pq_ratchet_state else None
        # Per-message constants, derived once: the MAC's identity prefix in each direction.
        local, remote = local_identity.serialize(), remote_identity.serialize()
        self._mac_prefix_send = local + remote
        self._mac_prefix_recv = remote + local
        self._version_prefix = version_byte(version)
        self._sender_key_bytes = sender_ratchet.public_key.serialize()

    @property
    def pq_ratchet_state(self) -> bytes:
        """SPQR's serialized state, as the session record keeps it (empty: this session runs no SPQR)."""
        return self._pq.serialize() if self._pq is not None else b""

    @pq_ratchet_state.setter
    def pq_ratchet_state(self, state: bytes) -> None:
        self._pq = _spqr.PqRatchet(state) if state else None

    def receiver_chain(self, ratchet_key: PublicKey) -> ReceiverChain | None:
        """The receiving chain for a remote ratchet key, if this session has one."""
        raw = ratchet_key.raw
        for chain in self.receiver_chains:
            if chain.ratchet_key.raw == raw:
                return chain
        return None

    def add_receiver_chain(self, chain: ReceiverChain) -> None:
        """Adds a receiving chain, dropping the oldest beyond libsignal's limit of five."""
        self.receiver_chains.append(chain)
        if len(self.receiver_chains) > MAX_RECEIVER_CHAINS:
            del self.receiver_chains[0]

    def encrypt(self, plaintext: bytes, addresses: bytes = b"") -> bytes:
        """Encrypts one message on the sending chain and advances it.

        Args:
            plaintext: the message.
            addresses: ``SignalMessage`` field 6 (sender and recipient, see ``_wire.encode_addresses``), or
                empty to leave it out.

        Returns:
            The serialized ``SignalMessage``.
        """
        chain_key = self.sender_chain_key
        seed, next_chain_key = chain_step(chain_key)
        pq_msg, pq_key = self._pq.send(secrets.token_bytes) if self._pq else _NO_SPQR
        cipher_key, mac_key, iv = message_keys(seed, pq_key)
        ciphertext = aes_cbc_encrypt(cipher_key, iv, plaintext)
        authenticated = encode_signal_message(
            self._version_prefix,
            self._sender_key_bytes,
            self.sender_index,
            self.previous_counter,
            ciphertext,
            pq_msg,
            addresses,
        )
        tag = mac(mac_key, self._mac_prefix_send + authenticated)[:MAC_SIZE]
        self.sender_chain_key = next_chain_key
        self.sender_index += 1
        return authenticated + tag

    def decrypt(self, message: SignalMessage) -> bytes:  # noqa: PLR0912, PLR0915 - one hot function, no call overhead
        """Decrypts a ``SignalMessage``; the state changes only if it authenticates.

        Raises:
            InvalidVersionError: the message's version is not this session's.
            DuplicateMessageError: the message key was already used.
            CounterTooFarError: the counter jumps beyond the bounded skip window.
            BadMacError: the MAC does not verify.
            InvalidMessageError: a low-order ratchet key, or a ciphertext malformed under a valid MAC.
            SpqrMinimumVersionError: the peer runs no SPQR though this session requires it (libsignal's
                "post-quantum ratchet error: Minimum version"); both are ``InvalidMessageError``s.
            SpqrVersionMismatchError: the peer dropped SPQR after it was negotiated.
            SpqrStateError: the stored SPQR state is corrupt (an ``InvalidStateError``).
        """
        if message.version != self.version:
            raise InvalidVersionError(f"message version {message.version} in a version {self.version} session")
        counter = message.counter
        chain = self.receiver_chain(message.ratchet_key)
        new_sender: KeyPair | None = None
        if chain is None:
            if counter > MAX_FORWARD_JUMPS:
                raise CounterTooFarError(f"counter {counter} on a new chain")
            # A new remote ratchet key: two DH ratchet steps, kept in locals until the MAC verifies.
            try:
                root_key, chain_key = root_step(self.root_key, self.sender_ratchet.agree(message.ratchet_key))
                new_sender = KeyPair.generate()
                next_root_key, next_sender_chain = root_step(root_key, new_sender.agree(message.ratchet_key))
            except InvalidKeyError as exc:
                raise InvalidMessageError("ratchet key is a low-order point") from exc
            index = 0
        else:
            chain_key, index = chain.chain_key, chain.index
        skipped: list[tuple[int, bytes]] = []
        if counter < index:
            old_seed = chain.skipped.get(counter) if chain is not None else None
            if old_seed is None:
                raise DuplicateMessageError(f"message {counter} was already received")
            seed = old_seed
        else:
            if counter - index > MAX_FORWARD_JUMPS:
                raise CounterTooFarError(f"counter jumps {counter - index} messages ahead")
            while index < counter:
                skip_seed, chain_key = chain_step(chain_key)
                skipped.append((index, skip_seed))
                index += 1
            seed, chain_key = chain_step(chain_key)
            index += 1
        # SPQR's key salts the message keys; its new state waits, like the rest, for the MAC (libsignal's order).
        try:
            next_pq, pq_key = self._pq.recv(message.pq_ratchet) if self._pq else (None, None)
        except (_spqr.SpqrMinimumVersionError, _spqr.SpqrVersionMismatchError):
            raise  # the peer's SPQR version: a typed answer the caller can act on
        except _spqr.SpqrMessageError as exc:
            # Field 5 sits under the MAC, so a genuine message always fits; one that does not is forged, or
            # from a session this state is not (a stale one): the same answer as a MAC failure.
            raise BadMacError(f"bad MAC (post-quantum ratchet error: {exc})") from exc
        cipher_key, mac_key, iv = message_keys(seed, pq_key)
        expected = mac(mac_key, self._mac_prefix_recv + message.authenticated)[:MAC_SIZE]
        if not secrets.compare_digest(expected, message.mac):
            raise BadMacError("bad MAC")
        plaintext = aes_cbc_decrypt(cipher_key, iv, message.ciphertext)
        # Authenticated: commit.
        self._pq = next_pq
        if chain is None:
            chain = ReceiverChain(message.ratchet_key, chain_key, index)
            self.add_receiver_chain(chain)
            assert new_sender is not None  # set together with chain is None above
            self.root_key = next_root_key
            self.previous_counter = max(self.sender_index, 1) - 1
            self.sender_ratchet = new_sender
            self.sender_chain_key = next_sender_chain
            self.sender_index = 0
            self._sender_key_bytes = new_sender.public_key.serialize()
        elif counter < chain.index:
            del chain.skipped[counter]
        else:
            chain.chain_key = chain_key
            chain.index = index
        if skipped:
            store = chain.skipped
            for skipped_counter, skipped_seed in skipped[-MAX_MESSAGE_KEYS:]:
                store[skipped_counter] = skipped_seed
            while len(store) > MAX_MESSAGE_KEYS:
                del store[next(iter(store))]
        self.pending_prekey = None
        return plaintext
