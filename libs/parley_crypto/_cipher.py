"""Pairwise sessions over the caller's stores: bundle processing, encryption and decryption.

Every function reads state from the stores, works on it, and writes back only once the operation succeeded;
a failure raises a :class:`CryptoError` subclass and leaves every store as it was.
"""

from __future__ import annotations

import secrets

from parley_crypto._errors import (
    BadMacError,
    CryptoError,
    DuplicateMessageError,
    InvalidKeyError,
    InvalidMessageError,
    InvalidVersionError,
    NoSessionError,
    UnknownPreKeyError,
    UntrustedIdentityError,
)
from parley_crypto._record import SessionRecord
from parley_crypto._stores import Direction, ProtocolAddress, ProtocolStore
from parley_crypto._wire import (
    CiphertextMessage,
    MessageType,
    PreKeySignalMessage,
    SignalMessage,
    encode_addresses,
    encode_prekey_message,
)
from parley_crypto._x3dh import PQXDH_VERSION, PreKeyBundle, initiate, respond


def process_prekey_bundle(
    store: ProtocolStore, address: ProtocolAddress, bundle: PreKeyBundle, *, allow_x3dh: bool = False
) -> None:
    """Starts a session with a remote device from its prekey bundle: PQXDH (version 4).

    The next :meth:`SessionCipher.encrypt` for ``address`` then sends a prekey message.

    Args:
        store: our stores.
        address: the remote device.
        bundle: its bundle, as fetched from the key directory.
        allow_x3dh: accept a bundle without a PQ prekey and start an X3DH (version 3) session, for peers that
            predate PQXDH; off by default (libsignal refuses version 3 since 0.75).

    Raises:
        PqPrekeyRequiredError: the bundle has no PQ prekey and X3DH is not allowed.
        UntrustedIdentityError: the bundle's identity differs from the trusted one for ``address``.
        InvalidSignatureError: a prekey signature does not verify.
        InvalidKeyError: the bundle is malformed.
    """
    if not store.is_trusted_identity(address, bundle.identity_key, Direction.SENDING):
        raise UntrustedIdentityError(f"identity of {address} changed")
    state = initiate(
        store.get_identity_key_pair(),
        bundle,
        local_registration_id=store.get_local_registration_id(),
        allow_x3dh=allow_x3dh,
    )
    record = store.load_session(address) or SessionRecord()
    record.promote(state)
    store.store_session(address, record)
    store.save_identity(address, bundle.identity_key)


class SessionCipher:
    """Encrypts to and decrypts from one remote device.

    Args:
        store: our stores.
        address: the remote device.
        local_address: our own address, which libsignal's calls always take: when both names are service ids
            (UUID strings, ``PNI:`` ones too), prekey messages bind both addresses under the MAC (``SignalMessage``
            field 6) and a received message that names other addresses there is refused, as libsignal does.
            Without it neither happens (the field of a received message goes unchecked).
        allow_x3dh: accept prekey messages that start X3DH (version 3) sessions, for peers that predate
            PQXDH; off by default. Sessions already stored keep working either way.
    """

    __slots__ = ("_address", "_allow_x3dh", "_check_addresses", "_receive_addresses", "_send_addresses", "_store")

    def __init__(
        self,
        store: ProtocolStore,
        address: ProtocolAddress,
        *,
        local_address: ProtocolAddress | None = None,
        allow_x3dh: bool = False,
    ) -> None:
        self._store = store
        self._address = address
        self._allow_x3dh = allow_x3dh
        self._check_addresses = local_address is not None
        if local_address is None:
            self._send_addresses = b""
            self._receive_addresses: bytes | None = None
        else:
            self._send_addresses = encode_addresses(local_address, address) or b""
            self._receive_addresses = encode_addresses(address, local_address)

    def encrypt(self, plaintext: bytes) -> CiphertextMessage:
        """Encrypts one message with the current session.

        Returns:
            A prekey message until the remote side has answered, a plain ``SignalMessage`` afterwards.

        Raises:
            NoSessionError: no session with the address (process a bundle first).
            UntrustedIdentityError: the session's remote identity is no longer trusted.
        """
        store = self._store
        record = store.load_session(self._address)
        state = record.current if record is not None else None
        if record is None or state is None:
            raise NoSessionError(f"no session with {self._address}")
        if not store.is_trusted_identity(self._address, state.remote_identity, Direction.SENDING):
            raise UntrustedIdentityError(f"identity of {self._address} changed")
        pending = state.pending_prekey
        # libsignal binds the addresses into the messages a prekey message carries, and only those.
        body = state.encrypt(plaintext, self._send_addresses if pending is not None else b"")
        if pending is None:
            message = CiphertextMessage(MessageType.WHISPER, body)
        else:
            message = CiphertextMessage(
                MessageType.PREKEY,
                encode_prekey_message(
                    version=state.version,
                    registration_id=state.local_registration_id,
                    prekey_id=pending.prekey_id,
                    signed_prekey_id=pending.signed_prekey_id,
                    kyber_prekey_id=pending.kyber_prekey_id,
                    kyber_ciphertext=pending.kyber_ciphertext,
                    base_key=pending.base_key,
                    identity_key=state.local_identity,
                    message=body,
                ),
            )
        store.store_session(self._address, record)
        return message

    def decrypt(self, message: CiphertextMessage) -> bytes:
        """Decrypts a message of either type.

        Raises:
            InvalidMessageError: unknown message type, or see :meth:`decrypt_signal_message` and
                :meth:`decrypt_prekey_message`.
        """
        if message.type == MessageType.PREKEY:
            return self.decrypt_prekey_message(message.body)
        if message.type == MessageType.WHISPER:
            return self.decrypt_signal_message(message.body)
        raise InvalidMessageError(f"not a pairwise message type: {message.type}")

    def decrypt_signal_message(self, data: bytes) -> bytes:
        """Decrypts a serialized ``SignalMessage``.

        Raises:
            NoSessionError: no session with the address.
            UntrustedIdentityError: the session's remote identity is no longer trusted.
            InvalidVersionError: unsupported message version.
            DuplicateMessageError: already decrypted.
            CounterTooFarError: counter beyond the skip window.
            BadMacError: fails authentication against every session (tampered, or a stale session).
            InvalidMessageError: malformed.
        """
        message = SignalMessage.parse(data)
        self._verify_addresses(message)
        record = self._store.load_session(self._address)
        if record is None or (record.current is None and not record.previous):
            raise NoSessionError(f"no session with {self._address}")
        remote = (record.current or record.previous[0]).remote_identity
        if not self._store.is_trusted_identity(self._address, remote, Direction.RECEIVING):
            raise UntrustedIdentityError(f"identity of {self._address} changed")
        plaintext = _decrypt_with_record(record, message)
        self._store.store_session(self._address, record)
        return plaintext

    def decrypt_prekey_message(self, data: bytes) -> bytes:
        """Decrypts a serialized ``PreKeySignalMessage``, setting up the session it starts if it is new.

        Raises:
            UntrustedIdentityError: the sender's identity differs from the trusted one.
            UnknownPreKeyError: a signed, one-time or PQ prekey id we do not hold (already used, or never ours).
            InvalidVersionError: unsupported message version, or a version-3 (X3DH) session start while X3DH
                is not allowed.
            DuplicateMessageError: already decrypted.
            BadMacError: fails authentication.
            InvalidMessageError: malformed.
        """
        store = self._store
        message = PreKeySignalMessage.parse(data)
        self._verify_addresses(message.message)
        if not store.is_trusted_identity(self._address, message.identity_key, Direction.RECEIVING):
            raise UntrustedIdentityError(f"identity of {self._address} changed")
        record = store.load_session(self._address)
        if record is not None and record.find_by_base_key(message.version, message.base_key) is not None:
            # A later prekey message of a session we already set up: an ordinary decryption.
            plaintext = _decrypt_with_record(record, message.message)
            store.store_session(self._address, record)
            return plaintext
        if message.version < PQXDH_VERSION and not self._allow_x3dh:
            raise InvalidVersionError("X3DH (version 3) sessions are not allowed; PQXDH (version 4) is required")
        if message.version >= PQXDH_VERSION and message.kyber_prekey_id is None:
            raise InvalidMessageError("version-4 prekey message without a PQ prekey and ciphertext")
        signed = store.load_signed_prekey(message.signed_prekey_id)
        if signed is None:
            raise UnknownPreKeyError(f"unknown signed prekey {message.signed_prekey_id}")
        one_time = None
        if message.prekey_id is not None:
            one_time = store.load_prekey(message.prekey_id)
            if one_time is None:
                raise UnknownPreKeyError(f"unknown one-time prekey {message.prekey_id}")
        kyber = None
        if message.kyber_prekey_id is not None:
            kyber = store.load_kyber_prekey(message.kyber_prekey_id)
            if kyber is None:
                raise UnknownPreKeyError(f"unknown PQ prekey {message.kyber_prekey_id}")
        try:
            state = respond(
                store.get_identity_key_pair(),
                signed_prekey=signed.key_pair,
                one_time_prekey=one_time.key_pair if one_time else None,
                kyber_prekey=kyber.key_pair if kyber else None,
                kyber_ciphertext=message.kyber_ciphertext,
                their_identity=message.identity_key,
                their_base_key=message.base_key,
                version=message.version,
                local_registration_id=store.get_local_registration_id(),
                remote_registration_id=message.registration_id,
            )
        except InvalidKeyError as exc:
            raise InvalidMessageError(f"prekey message carries a low-order key: {exc}") from exc
        plaintext = state.decrypt(message.message)
        record = record or SessionRecord()
        record.promote(state)
        store.store_session(self._address, record)
        if message.prekey_id is not None:
            store.remove_prekey(message.prekey_id)
        if message.kyber_prekey_id is not None:
            store.mark_kyber_prekey_used(message.kyber_prekey_id)
        store.save_identity(self._address, message.identity_key)
        return plaintext

    def _verify_addresses(self, message: SignalMessage) -> None:
        """Refuses a message whose field 6 names other addresses than this cipher's, as libsignal does.

        libsignal checks the field after the MAC and fails both the same way; the field is under the MAC, so
        checking it first changes no answer and leaves every store untouched.

        Raises:
            BadMacError: the field names other addresses, or ours are not service ids.
        """
        if message.addresses is None or not self._check_addresses:
            return
        expected = self._receive_addresses
        if expected is None or not secrets.compare_digest(expected, message.addresses):
            raise BadMacError("bad MAC (the message names other sender or recipient addresses)")

    def remote_registration_id(self) -> int:
        """The remote device's registration id from the current session.

        Raises:
            NoSessionError: no current session.
        """
        record = self._store.load_session(self._address)
        if record is None or record.current is None:
            raise NoSessionError(f"no session with {self._address}")
        return record.current.remote_registration_id


def _decrypt_with_record(record: SessionRecord, message: SignalMessage) -> bytes:
    """Tries the current session, then archived ones (newest first); promotes the one that worked."""
    first_error: CryptoError | None = None
    if record.current is not None:
        try:
            return record.current.decrypt(message)
        except DuplicateMessageError:
            raise
        except InvalidMessageError as exc:
            first_error = exc
    for index, state in enumerate(record.previous):
        try:
            plaintext = state.decrypt(message)
        except InvalidMessageError:
            continue
        record.promote_previous(index)
        return plaintext
    assert first_error is not None or record.current is None  # set whenever a current session was tried
    raise first_error or NoSessionError("no session can decrypt this message")
