"""One device of one user: its Signal-protocol state, its keys in the directory, end-to-end encryption, and the
rules content follows on the way out (capability downgrade, franking, edit and delete windows) and on the way in
(authorship and windows of edits and deletes, disappearing timers, suppression of deleted messages)."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import grpc.aio

from parley.content.v1 import content_pb2
from parley.identity.v1 import identity_pb2 as id_pb
from parley.keydir.v1 import keydir_pb2 as kd_pb
from parley.moderation.v1 import moderation_pb2 as mod_pb
from parley.relay.v1 import relay_pb2, relay_pb2_grpc
from parley_crypto import (
    CiphertextMessage,
    FrankingError,
    IdentityKeyPair,
    InMemoryProtocolStore,
    KemPublicKey,
    MessageType,
    PreKeyBundle,
    ProtocolAddress,
    ProtocolStore,
    PublicKey,
    SessionCipher,
    generate_kyber_prekey,
    generate_prekeys,
    generate_registration_id,
    generate_signed_prekey,
    process_prekey_bundle,
    verify_commitment,
)
from parley_sdk._errors import ContentRefusedError, Refusal, error_reason
from parley_sdk._messages import InMemoryMessageStore, MessageStore, Outcome, Received, StoredMessage, Tombstone
from parley_sdk._provider import ProviderBackend
from parley_sdk._providers import ProviderInfo
from parley_sdk._relay import Incoming, RelayConnection
from parley_stanza import (
    Adapted,
    Address,
    Feature,
    Franking,
    Message,
    Payload,
    PayloadKind,
    Refused,
    Stanza,
    decode_content,
    downgrade,
    encode,
    encode_content,
)
from parley_stanza import MessageType as StanzaType

# Failures after which a resumable upload goes on from the bytes the relay stored. INTERNAL is among them because
# gRPC reports a client stream the server ended mid-write as INTERNAL ("Internal error from Core"), hiding the
# server's own status (UNAVAILABLE when the relay lost Redis); going on is safe whatever happened, since the relay
# says where the upload stands and refuses chunks at any other offset.
_UPLOAD_RESUMABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)

_MAX_PREKEY_ID = 0xFFFFFF
"""Prekey ids stay below this (24 bits, as libsignal's clients keep them)."""
_MAX_PREKEYS_PER_CALL = 100
"""One-time prekeys of each kind the key directory takes per call (its default bound)."""

_FRANKING_KEY_BYTES = 32
"""A fresh franking key per message, the size parley_crypto's franking and moderation's reports take."""

_TIMED_BODIES = ("text", "media")
"""Bodies the chat's disappearing timer applies to (a reaction or an edit lives and goes with its target)."""

_KIND_BY_TYPE = {MessageType.PREKEY: PayloadKind.PREKEY, MessageType.WHISPER: PayloadKind.MESSAGE}
_TYPE_BY_KIND = {kind: message_type for message_type, kind in _KIND_BY_TYPE.items()}


class NotForThisDeviceError(Exception):
    """The message carries no payload for this device."""


@dataclass(frozen=True)
class PreKeyCounts:
    """Unclaimed one-time prekeys the key directory holds for a device, of each kind."""

    one_time: int
    """One-time (Curve25519) prekeys."""
    one_time_pq: int
    """One-time PQ (Kyber) prekeys."""


@dataclass(frozen=True)
class Decrypted:
    """A message as this device read it."""

    message: Message
    content: content_pb2.Content
    prekey_message: bool
    """True for a prekey message: the sender's session is new or not yet answered by this device."""


class DeviceClient:
    """A registered device: keys, sessions, encryption to every device of a recipient and of its own user.

    Create one with :meth:`register`. Its Signal-protocol state (identity key, prekeys, sessions) lives in
    ``store``: in memory by default; a real client passes a ``store_factory`` whose stores persist, and after a
    restart builds the device again from its address and its store with this constructor. Prekey ids are drawn
    at random (and checked against the store), so a restarted device needs no counter to avoid reusing one.
    Its messages (what edits, deletes, disappearing timers and reports need) live in ``messages``.

    Args:
        backend: the provider backend acting for this device.
        device: the device's address.
        store: its Signal-protocol state.
        messages: its messages; in memory when not given.
        clock: seconds since the epoch (disappearing timers, the sender's window check; tests inject their own).
    """

    def __init__(
        self,
        backend: ProviderBackend,
        device: Address,
        store: ProtocolStore,
        *,
        messages: MessageStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if device.device is None:
            raise ValueError("a DeviceClient needs a device address")
        self.backend = backend
        self.address = device
        self.device_id = device.device
        self.store = store
        self.messages: MessageStore = messages if messages is not None else InMemoryMessageStore()
        self._clock = clock
        # Device lists of the users this device talks to; refreshed when the relay answers STALE_DEVICES.
        self._devices: dict[Address, list[Address]] = {}
        self.sent = 0
        self.decrypted = 0
        self.sessions_started: Counter[kd_pb.PqPreKeyKind.ValueType] = Counter()
        """Sessions this device started, by the kind of PQ prekey their bundle carried (one-time or last-resort)."""

    @classmethod
    async def register(
        cls,
        backend: ProviderBackend,
        user: Address,
        *,
        new_user: bool,
        store_factory: Callable[[IdentityKeyPair, int], ProtocolStore] = InMemoryProtocolStore,
        messages: MessageStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> DeviceClient:
        """Registers a new device (and first the user when ``new_user``) and creates its identity key.

        Args:
            backend: the provider backend acting for the user.
            user: the user's address.
            new_user: register the user first.
            store_factory: makes the device's store from its new identity key pair and registration id.
            messages: the device's message store; in memory when not given.
            clock: seconds since the epoch.

        Raises:
            grpc.aio.AioRpcError: refused by identity (see docs/errors.md).
        """
        if new_user:
            await backend.identity.RegisterUser(id_pb.RegisterUserRequest(), metadata=backend.credentials(str(user)))
        registration_id = generate_registration_id()
        response = await backend.identity.RegisterDevice(
            id_pb.RegisterDeviceRequest(registration_id=registration_id), metadata=backend.credentials(str(user))
        )
        store = store_factory(IdentityKeyPair.generate(), registration_id)
        return cls(backend, Address.parse(response.address), store, messages=messages, clock=clock)

    @property
    def _local_address(self) -> ProtocolAddress:
        """This device as the Signal Protocol names it (checked against a message's sender/recipient binding)."""
        return ProtocolAddress(str(self.address.user), self.device_id)

    def _credentials(self) -> tuple[tuple[str, str], ...]:
        return self.backend.credentials(str(self.address.user), self.device_id)

    @property
    def user(self) -> Address:
        """The device's user."""
        return self.address.user

    @property
    def identity_key(self) -> PublicKey:
        """The device's identity public key."""
        return self.store.get_identity_key_pair().public_key

    async def publish_keys(
        self, one_time_prekeys: int = 100, *, post_quantum: bool = True, one_time_pq_prekeys: int | None = None
    ) -> PreKeyCounts:
        """Publishes identity key, signed prekey, one-time prekeys and, with ``post_quantum``, a last-resort PQ
        (Kyber1024) prekey and one-time PQ prekeys, as libsignal devices do.

        Args:
            one_time_prekeys: one-time prekeys to publish (at most 100).
            post_quantum: publish PQ prekeys; without them no one can start a session with this device.
            one_time_pq_prekeys: one-time PQ prekeys to publish (at most 100); by default as many as
                ``one_time_prekeys``, and none without ``post_quantum``.

        Returns:
            The one-time prekeys of each kind the directory now holds for this device.

        Raises:
            grpc.aio.AioRpcError: refused by the key directory (see docs/errors.md).
        """
        if one_time_pq_prekeys is None:
            one_time_pq_prekeys = one_time_prekeys if post_quantum else 0
        if one_time_pq_prekeys and not post_quantum:
            raise ValueError("one-time PQ prekeys need post_quantum")
        identity = self.store.get_identity_key_pair()
        now_ms = int(time.time() * 1000)
        signed = generate_signed_prekey(identity, self._free_id(self.store.load_signed_prekey), timestamp=now_ms)
        self.store.add_signed_prekey(signed)
        request = kd_pb.PublishKeysRequest(
            registration_id=self.store.get_local_registration_id(),
            identity_key=identity.public_key.serialize(),
            signed_prekey=kd_pb.SignedPreKey(
                key_id=signed.id, public_key=signed.key_pair.public_key.serialize(), signature=signed.signature
            ),
            one_time_prekeys=self._new_one_time_prekeys(one_time_prekeys),
        )
        if post_quantum:
            kyber = generate_kyber_prekey(identity, self._free_id(self.store.load_kyber_prekey), timestamp=now_ms)
            self.store.add_kyber_prekey(kyber, last_resort=True)
            request.pq_prekey.CopyFrom(
                kd_pb.KemSignedPreKey(
                    key_id=kyber.id, public_key=kyber.key_pair.public_key.serialize(), signature=kyber.signature
                )
            )
            request.one_time_pq_prekeys.extend(self._new_one_time_pq_prekeys(one_time_pq_prekeys))
        response: kd_pb.PublishKeysResponse = await self.backend.keydir.PublishKeys(
            request, metadata=self._credentials()
        )
        return PreKeyCounts(response.one_time_prekey_count, response.one_time_pq_prekey_count)

    async def refill_prekeys(self, target: int = 100) -> PreKeyCounts:
        """Tops the directory's one-time prekeys, and its one-time PQ prekeys, each up to ``target`` when it is
        below the directory's low-watermark (call it on a ``prekeys_low`` webhook, or now and then).

        One-time PQ prekeys are refilled only for a device that published a last-resort PQ prekey: one that
        speaks PQXDH at all.

        Returns:
            The counts after the call.

        Raises:
            grpc.aio.AioRpcError: refused by the key directory (see docs/errors.md).
        """
        count: kd_pb.GetPreKeyCountResponse = await self.backend.keydir.GetPreKeyCount(
            kd_pb.GetPreKeyCountRequest(), metadata=self._credentials()
        )
        before = PreKeyCounts(count.one_time_prekey_count, count.one_time_pq_prekey_count)
        request = kd_pb.UploadOneTimePreKeysRequest()
        if before.one_time < count.low_watermark:
            missing = min(target - before.one_time, _MAX_PREKEYS_PER_CALL)
            request.one_time_prekeys.extend(self._new_one_time_prekeys(missing))
        if count.has_pq_prekey and before.one_time_pq < count.low_watermark:
            missing = min(target - before.one_time_pq, _MAX_PREKEYS_PER_CALL)
            request.one_time_pq_prekeys.extend(self._new_one_time_pq_prekeys(missing))
        if not request.one_time_prekeys and not request.one_time_pq_prekeys:
            return before
        response: kd_pb.UploadOneTimePreKeysResponse = await self.backend.keydir.UploadOneTimePreKeys(
            request, metadata=self._credentials()
        )
        return PreKeyCounts(response.one_time_prekey_count, response.one_time_pq_prekey_count)

    async def rotate_signed_prekey(self) -> int:
        """Replaces the published signed prekey with a fresh one (clients do this every few days).

        The previous signed prekey stays in the local store so that prekey messages built on it still decrypt.

        Returns:
            The new signed prekey's id.
        """
        identity = self.store.get_identity_key_pair()
        key_id = self._free_id(self.store.load_signed_prekey)
        signed = generate_signed_prekey(identity, key_id, timestamp=int(time.time() * 1000))
        self.store.add_signed_prekey(signed)
        await self.backend.keydir.RotateSignedPreKey(
            kd_pb.RotateSignedPreKeyRequest(
                signed_prekey=kd_pb.SignedPreKey(
                    key_id=signed.id, public_key=signed.key_pair.public_key.serialize(), signature=signed.signature
                )
            ),
            metadata=self._credentials(),
        )
        return signed.id

    def _new_one_time_prekeys(self, count: int) -> list[kd_pb.OneTimePreKey]:
        start = self._free_id(self.store.load_prekey, count)
        records = generate_prekeys(start, count)
        self.store.add_prekeys(records)
        return [kd_pb.OneTimePreKey(key_id=r.id, public_key=r.key_pair.public_key.serialize()) for r in records]

    def _new_one_time_pq_prekeys(self, count: int) -> list[kd_pb.KemSignedPreKey]:
        identity = self.store.get_identity_key_pair()
        start = self._free_id(self.store.load_kyber_prekey, count)
        now_ms = int(time.time() * 1000)
        published = []
        for key_id in range(start, start + count):
            record = generate_kyber_prekey(identity, key_id, timestamp=now_ms)
            # Not last-resort: the store deletes it when the first session built on it arrives.
            self.store.add_kyber_prekey(record, last_resort=False)
            published.append(
                kd_pb.KemSignedPreKey(
                    key_id=record.id, public_key=record.key_pair.public_key.serialize(), signature=record.signature
                )
            )
        return published

    @staticmethod
    def _free_id(load: Callable[[int], object | None], count: int = 1) -> int:
        """A random first id of ``count`` consecutive prekey ids none of which the store holds."""
        while True:
            start = secrets.randbelow(_MAX_PREKEY_ID - count) + 1
            if all(load(key_id) is None for key_id in range(start, start + count)):
                return start

    async def enable_third_party_chats(self, allowed_providers: Sequence[str], *, merged_inbox: bool = False) -> None:
        """Opts the user in to chats from ``allowed_providers``, from this device (the gatekeeper's interop policy
        may refuse it: PERMISSION_DENIED / INTEROP_POLICY with the ``rule``)."""
        mode = id_pb.INBOX_MODE_MERGED if merged_inbox else id_pb.INBOX_MODE_SEPARATE
        await self.backend.identity.EnableThirdPartyChats(
            id_pb.EnableThirdPartyChatsRequest(allowed_providers=allowed_providers, inbox_mode=mode),
            metadata=self._credentials(),
        )

    async def mute(
        self, *, peer: Address | None = None, provider: str | None = None, duration_s: int = 0
    ) -> id_pb.Mute:
        """Mutes a peer user's chat or a whole provider for the user: its messages still arrive, but their
        wake-ups do not alert (webhook ``alert: false``).

        Args:
            peer: the user to mute (exclusive with ``provider``).
            provider: the provider whose every user to mute.
            duration_s: how long, seconds; 0 (the default) for ever.

        Returns:
            The mute in force (``until_ms`` 0 for ever).

        Raises:
            ValueError: neither or both of ``peer`` and ``provider`` given.
            grpc.aio.AioRpcError: refused by identity (INVALID_ARGUMENT, RESOURCE_EXHAUSTED / TOO_LARGE).
        """
        request = id_pb.SetMuteRequest(duration_s=duration_s, **_mute_target(peer, provider))
        response: id_pb.SetMuteResponse = await self.backend.identity.SetMute(request, metadata=self._credentials())
        return response.mute

    async def unmute(self, *, peer: Address | None = None, provider: str | None = None) -> bool:
        """Lifts the user's mute of ``peer`` or ``provider``; False when there was none in force.

        Raises:
            ValueError: neither or both of ``peer`` and ``provider`` given.
        """
        request = id_pb.ClearMuteRequest(**_mute_target(peer, provider))
        response: id_pb.ClearMuteResponse = await self.backend.identity.ClearMute(request, metadata=self._credentials())
        return response.cleared

    async def mutes(self) -> list[id_pb.Mute]:
        """The user's mutes in force."""
        response: id_pb.ListMutesResponse = await self.backend.identity.ListMutes(
            id_pb.ListMutesRequest(), metadata=self._credentials()
        )
        return list(response.mutes)

    async def lookup(self, address: str) -> id_pb.LookupAddressResponse:
        """Looks a user up (NOT_FOUND / USER_NOT_FOUND when unreachable, for every reason alike)."""
        response: id_pb.LookupAddressResponse = await self.backend.identity.LookupAddress(
            id_pb.LookupAddressRequest(address=address), metadata=self.backend.credentials(str(self.user))
        )
        return response

    async def _devices_of(self, user: Address) -> list[Address]:
        cached = self._devices.get(user)
        if cached is not None:
            return cached
        if user == self.user:
            response = await self.backend.identity.ListDevices(
                id_pb.ListDevicesRequest(), metadata=self.backend.credentials(str(user))
            )
            ids = [d.device_id for d in response.devices if d.device_id != self.device_id]
        else:
            ids = [d.device_id for d in (await self.lookup(str(user))).devices]
        devices = [user.with_device(device_id) for device_id in ids]
        self._devices[user] = devices
        return devices

    def forget_devices(self, *users: Address) -> None:
        """Drops cached device lists, e.g. after the relay answered STALE_DEVICES."""
        for user in users:
            self._devices.pop(user.user, None)

    async def _ensure_session(self, device: Address) -> None:
        assert device.device is not None
        remote = ProtocolAddress(str(device.user), device.device)
        if self.store.load_session(remote) is not None:
            return
        response = await self.backend.keydir.FetchPreKeyBundles(
            kd_pb.FetchPreKeyBundlesRequest(address=str(device)), metadata=self._credentials()
        )
        bundle = response.bundles[0]
        # The bundle's PQ prekey is the one-time one the directory claimed for us, or else the last-resort one.
        process_prekey_bundle(self.store, remote, bundle_from_proto(bundle))
        self.sessions_started[bundle.pq_prekey_kind] += 1

    async def encrypt(
        self, recipient: Address, content: content_pb2.Content, *, message_id: str | None = None
    ) -> Message:
        """Encrypts ``content`` for every device of ``recipient`` and every other device of this user.

        Sessions are started on first contact from freshly claimed prekey bundles, always with PQXDH (version 4).

        Returns:
            The message stanza, ready for ``parley_stanza.encode`` and the relay.

        Raises:
            parley_crypto.PqPrekeyRequiredError: a recipient device's bundle has no PQ (Kyber) prekey; no session
                is started with it rather than a downgraded version-3 one.
        """
        return await self._encrypt_plaintext(recipient, encode_content(content), message_id or secrets.token_hex(8))

    async def _encrypt_plaintext(
        self,
        recipient: Address,
        plaintext: bytes,
        message_id: str,
        *,
        franking: Franking | None = None,
        receipt_requested: bool = True,
    ) -> Message:
        payloads = []
        for device in [*await self._devices_of(recipient.user), *await self._devices_of(self.user)]:
            await self._ensure_session(device)
            assert device.device is not None
            ciphertext = SessionCipher(
                self.store, ProtocolAddress(str(device.user), device.device), local_address=self._local_address
            ).encrypt(plaintext)
            payloads.append(Payload.of(device, _KIND_BY_TYPE[ciphertext.type], ciphertext.body))
        self.sent += 1
        return Message(
            id=message_id,
            sender=self.address,
            recipient=recipient.user,
            ts=self._now_ms(),
            type=StanzaType.CHAT,
            payloads=tuple(payloads),
            franking=franking,
            receipt_requested=receipt_requested,
        )

    def _relay(self) -> relay_pb2_grpc.RelayServiceStub:
        if self.backend.relay is None:
            raise RuntimeError("the provider backend was created without a relay_target")
        return self.backend.relay

    async def send(self, stanza: Stanza) -> relay_pb2.SendResponse:
        """Sends one stanza through the relay (unary ``Send``).

        Raises:
            grpc.aio.AioRpcError: refused; ``parley_sdk.error_reason`` reads the machine-readable reason.
        """
        response: relay_pb2.SendResponse = await self._relay().Send(
            relay_pb2.SendRequest(stanza=encode(stanza)), metadata=self._credentials()
        )
        return response

    async def send_content(
        self, recipient: Address, content: content_pb2.Content, *, message_id: str | None = None
    ) -> relay_pb2.SendResponse:
        """Fits ``content`` to the recipient's provider (:meth:`fit_content`), franks, encrypts and sends it, and
        keeps it in ``messages``; refreshes device lists once on STALE_DEVICES.

        Every device gets the same fitted content (the sender's other devices see what was actually sent), under
        one franking commitment: a fresh franking key inside the content, ``HMAC-SHA256(key, plaintext)`` outside
        the ciphertext for the relay to stamp, so that the recipient can report it (:meth:`report`).

        Raises:
            ContentRefusedError: the content cannot go to the recipient's provider; nothing was sent.
            grpc.aio.AioRpcError: the relay refused the message (see ``error_reason``).
        """
        fitted = (await self.fit_content(recipient, content)).content
        fitted.franking_key = secrets.token_bytes(_FRANKING_KEY_BYTES)
        plaintext = encode_content(fitted)
        franking = Franking(hmac.digest(fitted.franking_key, plaintext, "sha256"))
        own = await self.provider_info(self.address.provider)
        # A delivery receipt is worth asking for only when this user's app can show it.
        receipt_requested = own is None or Feature.RECEIPTS in own.features
        message_id = message_id or secrets.token_hex(8)
        for attempt in range(2):
            message = await self._encrypt_plaintext(
                recipient, plaintext, message_id, franking=franking, receipt_requested=receipt_requested
            )
            try:
                accepted = await self.send(message)
            except grpc.aio.AioRpcError as error:
                if attempt or error_reason(error)[0] != "STALE_DEVICES":
                    raise
                self.forget_devices(recipient, self.user)
            else:
                self._keep_sent(recipient.user, message_id, fitted, accepted.server_timestamp_ms)
                return accepted
        raise AssertionError("unreachable")  # pragma: no cover -- the loop returns or raises

    async def provider_info(self, provider_id: str) -> ProviderInfo | None:
        """What a provider's clients can display and its edit and delete windows (identity's, cached); None for a
        provider identity does not list as approved."""
        return await self.backend.providers.get(provider_id, acting_for=str(self.user))

    async def fit_content(self, recipient: Address, content: content_pb2.Content) -> Adapted:
        """The content as ``send_content`` would send it to ``recipient``, and what was changed to fit.

        Applies the chat's disappearing timer to a text or media message, then ``parley_stanza.downgrade`` with
        the features of the recipient's provider (a sticker becomes an image, an edit a correction, ...), and
        checks an edit or delete: it must target a message this user sent, within the window the recipient's
        provider honours. A UI can call this first to show what will happen.

        Raises:
            ContentRefusedError: the content cannot go to this recipient; nothing was sent.
        """
        timed = content_pb2.Content()
        timed.CopyFrom(content)
        timer = self.messages.chat_timer(recipient.user)
        if timer and not timed.expire_timer_seconds and timed.WhichOneof("body") in _TIMED_BODIES:
            timed.expire_timer_seconds = timer
        info = await self.provider_info(recipient.provider)
        if info is None:
            # Not an approved provider: the relay refuses the send with the reason (USER_NOT_FOUND).
            return Adapted(timed)
        result = downgrade(timed, info.features)
        if isinstance(result, Refused):
            raise ContentRefusedError(
                Refusal.FEATURE_MISSING, result.reason, provider=info.provider_id, feature=result.feature
            )
        self._check_own_target(result.content, info)
        return result

    def _check_own_target(self, content: content_pb2.Content, info: ProviderInfo) -> None:
        """Refuses an edit or delete of a message this user did not send, or later than ``info``'s window."""
        body = content.WhichOneof("body")
        if body == "edit":
            target_id, window_s, verb = content.edit.target_message_id, info.edit_window_s, "edit"
        elif body == "delete":
            target_id, window_s, verb = content.delete.target_message_id, info.delete_window_s, "delete"
        else:
            return
        target = self.messages.get(self.user, target_id)
        if target is None or target.deleted:
            if self.messages.authors_of(target_id) and target is None:
                raise ContentRefusedError(
                    Refusal.NOT_AUTHOR, f"You can only {verb} your own messages.", provider=info.provider_id
                )
            raise ContentRefusedError(
                Refusal.UNKNOWN_TARGET, "This message is no longer available.", provider=info.provider_id
            )
        if self._now_ms() - target.server_timestamp_ms > window_s * 1000:
            raise ContentRefusedError(
                Refusal.WINDOW_PASSED,
                f"It is too late to {verb} this message: {info.display_name} allows it for {window_s} seconds.",
                provider=info.provider_id,
            )

    def _keep_sent(self, chat: Address, message_id: str, content: content_pb2.Content, ts: int) -> None:
        """Keeps a sent message, and applies a sent edit, delete or timer to this device's own view."""
        timer = content.expire_timer_seconds
        self.messages.put(
            StoredMessage(message_id, self.address, chat, ts, content, outgoing=True, expire_timer_s=timer,
                          expires_at_ms=ts + timer * 1000 if timer else None)
        )  # fmt: skip
        body = content.WhichOneof("body")
        if body == "edit":
            self._apply_edit(self.user, content.edit.target_message_id, content.edit.text)
        elif body == "delete":
            self._apply_delete(self.user, content.delete.target_message_id)
        elif body == "disappearing_timer":
            self.messages.set_chat_timer(chat, content.disappearing_timer.seconds)

    def _apply_edit(self, author: Address, target_id: str, text: str) -> StoredMessage | None:
        target = self.messages.get(author, target_id)
        if target is None or target.content is None:
            return None
        edited = content_pb2.Content()
        edited.CopyFrom(target.content)
        edited.text.body = text
        updated = dataclasses.replace(target, content=edited, edited=True)
        self.messages.put(updated)
        return updated

    def _apply_delete(self, author: Address, target_id: str) -> StoredMessage | None:
        target = self.messages.get(author, target_id)
        if target is None:
            return None
        # Deleted for everyone means gone here too: the plaintext and what a report of it would need go with it.
        updated = dataclasses.replace(target, content=None, plaintext=b"", franking_key=b"", commitment=b"", stamp=b"")
        self.messages.put(updated)
        return updated

    async def send_edit(
        self, recipient: Address, target_message_id: str, text: str, *, message_id: str | None = None
    ) -> relay_pb2.SendResponse:
        """Replaces the text of a message this user sent to ``recipient`` (a correction for a provider without edits).

        Raises:
            ContentRefusedError: not this user's message, unknown, or later than the recipient's provider allows.
            grpc.aio.AioRpcError: the relay refused it.
        """
        edit = content_pb2.Content(
            sent_at_ms=self._now_ms(), edit=content_pb2.Edit(target_message_id=target_message_id, text=text)
        )
        return await self.send_content(recipient, edit, message_id=message_id)

    async def send_delete(
        self, recipient: Address, target_message_id: str, *, message_id: str | None = None
    ) -> relay_pb2.SendResponse:
        """Deletes a message this user sent to ``recipient`` for everyone.

        Raises:
            ContentRefusedError: the recipient's provider cannot delete for everyone, not this user's message, or
                later than its window.
            grpc.aio.AioRpcError: the relay refused it.
        """
        delete = content_pb2.Content(
            sent_at_ms=self._now_ms(), delete=content_pb2.Delete(target_message_id=target_message_id)
        )
        return await self.send_content(recipient, delete, message_id=message_id)

    async def set_disappearing_timer(
        self, recipient: Address, seconds: int, *, message_id: str | None = None
    ) -> relay_pb2.SendResponse:
        """Sets the chat's disappearing-message timer (0 turns it off) for both sides; text and media sent from
        now on carry it, and each device drops them that many seconds after reading (the sender's after sending).

        Raises:
            ContentRefusedError: the recipient's provider does not support disappearing messages.
            grpc.aio.AioRpcError: the relay refused it.
        """
        timer = content_pb2.Content(
            sent_at_ms=self._now_ms(), disappearing_timer=content_pb2.DisappearingTimer(seconds=seconds)
        )
        return await self.send_content(recipient, timer, message_id=message_id)

    async def upload_media(self, blob: bytes, sha256: bytes, *, chunk_size: int = 512 * 1024, attempts: int = 5) -> str:
        """Uploads an encrypted attachment blob through the relay's media proxy, resumably; returns its media id.

        The relay stores each chunk as it arrives, so when the connection drops (UNAVAILABLE, a relay replica
        restarting) the upload goes on from the bytes stored, up to ``attempts`` calls in all.

        Raises:
            grpc.aio.AioRpcError: the relay refused the upload (see ``error_reason``), or it failed ``attempts``
                times.
        """
        created = await self._relay().CreateUpload(
            relay_pb2.CreateUploadRequest(size=len(blob), sha256=sha256), metadata=self._credentials()
        )
        return await self.resume_media_upload(created.upload.upload_id, blob, chunk_size=chunk_size, attempts=attempts)

    async def resume_media_upload(
        self, upload_id: str, blob: bytes, *, chunk_size: int = 512 * 1024, attempts: int = 5
    ) -> str:
        """Sends the rest of resumable upload ``upload_id`` (any device of its user may); returns its media id.

        Raises:
            grpc.aio.AioRpcError: as :meth:`upload_media`.
        """
        # Assertions are single-use (replay-proof): every call gets a fresh one.
        relay = self._relay()
        offset: int | None = None  # unknown at first and after a failure: asked of the relay
        for attempt in range(attempts):
            try:
                if offset is None:
                    status = (
                        await relay.GetUpload(
                            relay_pb2.GetUploadRequest(upload_id=upload_id), metadata=self._credentials()
                        )
                    ).upload
                    if status.complete:
                        return upload_id
                    offset = status.received
                header = relay_pb2.UploadMediaHeader(upload_id=upload_id, offset=offset)
                requests = [relay_pb2.UploadMediaRequest(header=header)] + [
                    relay_pb2.UploadMediaRequest(chunk=blob[start : start + chunk_size])
                    for start in range(offset, len(blob), chunk_size)
                ]
                response: relay_pb2.UploadMediaResponse = await relay.UploadMedia(
                    iter(requests), metadata=self._credentials()
                )
            except grpc.aio.AioRpcError as error:
                resumable = error.code() in _UPLOAD_RESUMABLE or error_reason(error)[0] == "UPLOAD_OFFSET_MISMATCH"
                if not resumable or attempt == attempts - 1:
                    raise
                offset = None
                await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                continue
            if response.media_id:
                return response.media_id
            offset = response.received
        raise RuntimeError(f"upload {upload_id} still incomplete after {attempts} calls")

    async def download_media(self, media_id: str, offset: int = 0) -> bytes:
        """Downloads an encrypted blob (from ``offset``, to resume)."""
        parts = []
        async for part in self._relay().DownloadMedia(
            relay_pb2.DownloadMediaRequest(media_id=media_id, offset=offset), metadata=self._credentials()
        ):
            parts.append(part.chunk)
        return b"".join(parts)

    def connect(self) -> RelayConnection:
        """The device's relay stream (``async with device.connect() as connection: ...``)."""
        return RelayConnection(self._relay(), self._credentials())

    def decrypt(self, message: Message) -> Decrypted:
        """Decrypts this device's payload of ``message`` (no rules applied; :meth:`process` applies them).

        Raises:
            NotForThisDeviceError: the message has no payload for this device.
            parley_crypto.CryptoError: the payload does not decrypt (nothing in the store changed).
        """
        plaintext, prekey_message = self._decrypt_payload(message)
        return Decrypted(message, decode_content(plaintext), prekey_message)

    def _decrypt_payload(self, message: Message) -> tuple[bytes, bool]:
        payload = next((p for p in message.payloads if p.device == self.address), None)
        if payload is None:
            raise NotForThisDeviceError(f"{message.id} has no payload for {self.address}")
        sender = message.sender
        assert sender.device is not None
        cipher = SessionCipher(
            self.store, ProtocolAddress(str(sender.user), sender.device), local_address=self._local_address
        )
        plaintext = cipher.decrypt(CiphertextMessage(_TYPE_BY_KIND[payload.kind], payload.ciphertext))
        self.decrypted += 1
        return plaintext, payload.kind is PayloadKind.PREKEY

    async def process(self, incoming: Incoming) -> Received:
        """Decrypts a delivered message and applies the rules of what a user sees; keeps it in ``messages``.

        - A message processed before (a redelivery) is a duplicate and is not decrypted again.
        - A franking commitment must match the content (else the message could not be reported): rejected.
        - An edit or delete counts only from the target's author (its sending user) and within the window this
          device's provider declared, counted between the relay's acceptance times of both; an edit changes text.
        - A delete whose target has not arrived is remembered, and the target, if it comes later (a copy still
          waiting in a mailbox, a redelivery), is suppressed.
        - A disappearing timer sets the chat's; a message carrying a timer starts it when :meth:`mark_read`.

        Acknowledge the delivery after this returns, whatever the outcome.

        Raises:
            TypeError: the stanza is not a message (receipts and typing states need no processing).
            NotForThisDeviceError: the message has no payload for this device.
            parley_crypto.CryptoError: the payload does not decrypt.
            parley_stanza.InvalidContentError: the plaintext is not a valid content message.
        """
        message = incoming.stanza
        if not isinstance(message, Message) or message.recipient is None:
            raise TypeError("only one-to-one messages are processed")
        now_ms = self._now_ms()
        self.messages.purge_expired(now_ms)
        author = message.sender.user
        if self.messages.get(author, message.id) is not None:
            return Received(Outcome.DUPLICATE, message)
        plaintext, prekey_message = self._decrypt_payload(message)
        content = decode_content(plaintext)
        franking = message.franking
        if franking is not None:
            try:
                verify_commitment(plaintext, content.franking_key, franking.commitment)
            except FrankingError:
                return Received(Outcome.REJECTED, message, content, refusal=Refusal.FRANKING_MISMATCH,
                                reason="the franking commitment does not match the content")  # fmt: skip
        own = author == self.user
        timer = content.expire_timer_seconds
        ts = incoming.server_timestamp_ms
        record = StoredMessage(
            message.id,
            message.sender,
            message.recipient.user if own else author,
            ts,
            content,
            outgoing=own,
            expire_timer_s=timer,
            # The sender's own devices count from sending; a recipient's from reading (mark_read).
            expires_at_ms=ts + timer * 1000 if own and timer else None,
            plaintext=plaintext,
            franking_key=content.franking_key,
            commitment=franking.commitment if franking else b"",
            stamp=franking.stamp or b"" if franking else b"",
        )
        self.messages.put(record)
        body = content.WhichOneof("body")
        if body in ("edit", "delete"):
            return await self._apply_received_change(message, record, content, prekey_message)
        tombstone = self.messages.tombstone(author, message.id)
        if tombstone is not None and await self._within(tombstone.server_timestamp_ms - ts, "delete"):
            self._apply_delete(author, message.id)
            return Received(Outcome.SUPPRESSED, message, content, prekey_message=prekey_message)
        if body == "disappearing_timer":
            self.messages.set_chat_timer(record.chat, content.disappearing_timer.seconds)
            return Received(Outcome.TIMER_CHANGED, message, content, prekey_message=prekey_message)
        return Received(Outcome.NEW, message, content, prekey_message=prekey_message)

    async def _within(self, elapsed_ms: int, kind: str) -> bool:
        """Whether ``elapsed_ms`` is inside this device's provider's edit or delete window."""
        own = await self.provider_info(self.address.provider)
        window_s = 0 if own is None else own.edit_window_s if kind == "edit" else own.delete_window_s
        return elapsed_ms <= window_s * 1000

    async def _apply_received_change(
        self, stanza: Message, record: StoredMessage, content: content_pb2.Content, prekey_message: bool
    ) -> Received:
        """Applies a received edit or delete (already stored itself, so that a redelivery is a duplicate)."""
        is_edit = content.WhichOneof("body") == "edit"
        target_id = content.edit.target_message_id if is_edit else content.delete.target_message_id
        author = record.author
        target = self.messages.get(author, target_id)
        refusal = await self._change_refusal(record, target_id, target, is_edit=is_edit)
        if refusal is not None:
            return Received(Outcome.REJECTED, stanza, content, refusal=refusal[0], reason=refusal[1],
                            prekey_message=prekey_message)  # fmt: skip
        if is_edit:
            updated = self._apply_edit(author, target_id, content.edit.text)
            return Received(Outcome.EDITED, stanza, content, target=updated, prekey_message=prekey_message)
        if target is None:
            # The target may still be on its way (a copy waiting in a mailbox): it is suppressed when it comes.
            self.messages.put_tombstone(author, target_id, Tombstone(record.server_timestamp_ms))
        else:
            target = self._apply_delete(author, target_id)
        return Received(Outcome.DELETED, stanza, content, target=target, prekey_message=prekey_message)

    async def _change_refusal(
        self, change: StoredMessage, target_id: str, target: StoredMessage | None, *, is_edit: bool
    ) -> tuple[Refusal, str] | None:
        """Why a received edit or delete does not count, or None when it does."""
        author = change.author
        if target is None and any(other != author for other in self.messages.authors_of(target_id)):
            return Refusal.NOT_AUTHOR, f"{author} cannot change a message another user sent"
        if is_edit and (target is None or target.content is None or target.content.WhichOneof("body") != "text"):
            return Refusal.UNKNOWN_TARGET, f"no text message {target_id} from {author} to edit"
        kind = "edit" if is_edit else "delete"
        if target is not None and not await self._within(change.server_timestamp_ms - target.server_timestamp_ms, kind):
            return Refusal.WINDOW_PASSED, f"the {kind} came after the window this provider honours"
        return None

    def mark_read(self, author: Address, message_id: str) -> StoredMessage | None:
        """Marks a received message read: its disappearing timer, if it has one, starts now.

        Returns:
            The message as stored now, or None when it is unknown or gone.
        """
        message = self.messages.get(author.user, message_id)
        if message is None or message.content is None:
            return None
        if message.expire_timer_s and message.expires_at_ms is None:
            message = dataclasses.replace(message, expires_at_ms=self._now_ms() + message.expire_timer_s * 1000)
            self.messages.put(message)
        return message

    def message(self, author: Address, message_id: str) -> StoredMessage | None:
        """A message as the user sees it now (disappeared ones are gone), or None when unknown."""
        self.messages.purge_expired(self._now_ms())
        return self.messages.get(author.user, message_id)

    async def report(self, author: Address, message_id: str, category: str) -> mod_pb.ReportMessageResponse:
        """Reports a received message to moderation in one call, revealing only that message: its plaintext and
        franking key, the commitment and the relay's stamp kept when it arrived.

        Args:
            author: the sending user (or device).
            message_id: the message's id.
            category: the reporter's category (spam, abuse, ...).

        Returns:
            The report's id and whether franking verified it.

        Raises:
            ValueError: the message is unknown, gone (deleted, disappeared), this user's own, or was not franked
                and stamped.
            grpc.aio.AioRpcError: moderation refused the report.
        """
        if self.backend.moderation is None:
            raise RuntimeError("the provider backend was created without a moderation_target")
        message = self.messages.get(author.user, message_id)
        if message is None or message.content is None or message.outgoing:
            raise ValueError(f"no received message {message_id} from {author.user} to report")
        if not (message.commitment and message.stamp):
            raise ValueError(f"message {message_id} was not franked and stamped; it cannot be verified")
        response: mod_pb.ReportMessageResponse = await self.backend.moderation.ReportMessage(
            mod_pb.ReportMessageRequest(
                message_id=message_id,
                sender=str(message.sender),
                plaintext=message.plaintext,
                franking_key=message.franking_key,
                commitment=message.commitment,
                server_tag=message.stamp,
                server_timestamp_ms=message.server_timestamp_ms,
                category=category,
            ),
            metadata=self._credentials(),
        )
        return response

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


def _mute_target(peer: Address | None, provider: str | None) -> dict[str, str]:
    """The ``target`` oneof of a mute request."""
    if (peer is None) == (provider is None):
        raise ValueError("name exactly one of peer and provider")
    return {"peer": str(peer.user)} if peer is not None else {"provider_id": str(provider)}


def bundle_from_proto(bundle: kd_pb.PreKeyBundle) -> PreKeyBundle:
    """The crypto library's bundle from the key directory's message."""
    has_one_time = bundle.HasField("one_time_prekey")
    has_pq = bundle.HasField("pq_prekey")
    return PreKeyBundle(
        registration_id=bundle.registration_id,
        device_id=bundle.device_id,
        identity_key=PublicKey.deserialize(bundle.identity_key),
        signed_prekey_id=bundle.signed_prekey.key_id,
        signed_prekey=PublicKey.deserialize(bundle.signed_prekey.public_key),
        signed_prekey_signature=bundle.signed_prekey.signature,
        prekey_id=bundle.one_time_prekey.key_id if has_one_time else None,
        prekey=PublicKey.deserialize(bundle.one_time_prekey.public_key) if has_one_time else None,
        kyber_prekey_id=bundle.pq_prekey.key_id if has_pq else None,
        kyber_prekey=KemPublicKey.deserialize(bundle.pq_prekey.public_key) if has_pq else None,
        kyber_prekey_signature=bundle.pq_prekey.signature if has_pq else None,
    )
