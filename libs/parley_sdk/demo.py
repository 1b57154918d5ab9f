"""``make demo``: a cross-provider, end-to-end encrypted conversation on this machine.

Starts a private Redis and the identity, key-directory, moderation and notification services and two relay replicas
as separate processes (the launcher behind ``make up``, in a temporary run directory), enlists two providers (the
gatekeeper's own app and a third-party app called "birdy"), and plays a scripted conversation between Ana
(gatekeeper, a phone and a laptop) and Ben (birdy): opt-in, key publication, discovery, first contact with PQXDH,
typing, replies with delivery receipts, a reaction, a photo through the media proxy, a sticker that reaches Birdy
(which has no stickers) as an image and a delete for everyone Birdy cannot show, refused before sending with its
reason, a block that silently swallows a message, Ben's sleeping phone woken through Birdy's signed webhook, and
Ana's laptop coming online later and catching up. Every stanza goes through the relay; no service sees plaintext.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.content.v1 import content_pb2
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.moderation.v1 import moderation_pb2 as mod_pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley.notification.v1 import notification_pb2 as note_pb
from parley.notification.v1 import notification_pb2_grpc
from parley_crypto import Fingerprint, decrypt_attachment, encrypt_attachment
from parley_launcher import Stack, balanced_target
from parley_sdk import ContentRefusedError, DeviceClient, ProviderBackend, RelayConnection, webhooks
from parley_stanza import Address, ChatState, ChatStateKind, Message, Receipt

_BOLD = "\033[1m" if sys.stdout.isatty() else ""
_DIM = "\033[2m" if sys.stdout.isatty() else ""
_RESET = "\033[0m" if sys.stdout.isatty() else ""


def _step(title: str) -> None:
    print(f"\n{_BOLD}== {title}{_RESET}")


def _say(text: str) -> None:
    print(f"   {text}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _describe(content: content_pb2.Content) -> str:
    body = content.WhichOneof("body")
    if body == "text":
        quote = f' (replying to "{content.quote.snippet}")' if content.HasField("quote") else ""
        return f'"{content.text.body}"{quote}'
    if body == "reaction":
        return f"reacted {content.reaction.emoji} to {content.reaction.target_message_id}"
    if body == "media":
        media = content.media
        return f"{media.mime_type} {media.width}x{media.height}, caption {media.caption!r}"
    return body or "empty"


class _Webhook:
    """Birdy's webhook endpoint: a local HTTP server that checks each delivery's signature and keeps it."""

    def __init__(self) -> None:
        self.secret = b""
        self.received: list[tuple[bool, dict[str, Any]]] = []
        self.arrived = asyncio.Event()
        loop = asyncio.get_running_loop()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                genuine = webhooks.verify(
                    webhook.secret,
                    self.headers.get(webhooks.TIMESTAMP_HEADER, ""),
                    body,
                    self.headers.get(webhooks.SIGNATURE_HEADER, ""),
                    now=time.time(),
                )
                webhook.received.append((genuine, json.loads(body)))
                loop.call_soon_threadsafe(webhook.arrived.set)
                self.send_response(204 if genuine else 401)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/parley"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stops the server."""
        self._server.shutdown()
        self._server.server_close()


@dataclass
class _Cast:
    """The people of the scenario, their providers, and what each device has read."""

    backends: dict[str, ProviderBackend]
    ana_phone: DeviceClient
    ana_laptop: DeviceClient
    ben: DeviceClient
    webhook: _Webhook
    read: dict[DeviceClient, list[str]] = field(default_factory=dict)

    @property
    def devices(self) -> tuple[DeviceClient, ...]:
        return (self.ana_phone, self.ana_laptop, self.ben)


_BASIC_FEATURES = [Feature.FEATURE_TEXT, Feature.FEATURE_MEDIA_IMAGE, Feature.FEATURE_REACTIONS,
                   Feature.FEATURE_REPLIES, Feature.FEATURE_RECEIPTS, Feature.FEATURE_TYPING]  # fmt: skip
# The gatekeeper's app also shows stickers and deletes for everyone; Birdy's does not.
_FEATURES = {
    "gatekeeper": [*_BASIC_FEATURES, Feature.FEATURE_MEDIA_STICKER, Feature.FEATURE_EDITS, Feature.FEATURE_DELETES],
    "birdy": _BASIC_FEATURES,
    "lurker": _BASIC_FEATURES,
}


async def _enlist(
    admin: identity_pb2_grpc.IdentityServiceStub, token: str, provider_id: str, name: str
) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    metadata = (("authorization", f"Bearer {token}"),)
    await admin.EnlistProvider(
        id_pb.EnlistProviderRequest(
            provider_id=provider_id,
            display_name=name,
            signing_public_key=key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            identifier_kinds=[IdentifierKind.IDENTIFIER_KIND_PHONE, IdentifierKind.IDENTIFIER_KIND_USERNAME],
            features=_FEATURES[provider_id],
        ),
        metadata=metadata,
    )  # fmt: skip
    await admin.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=metadata)
    _say(f"enlisted and approved provider {provider_id!r} ({name}); its Ed25519 key signs its users' calls")
    return key


async def run() -> int:
    """Runs the scenario; returns the process exit status."""
    _step(
        "Starting Redis, identity, key directory, moderation, notification and two relay replicas (make up's launcher)"
    )
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as run_dir:
        stack = Stack(Path(run_dir))
        try:
            # Loopback HTTP webhooks are for development only; Birdy's endpoint in this demo is one.
            processes = stack.up(
                relays=2,
                free_ports=True,
                extra_env={
                    "notification": {"PARLEY_WEBHOOK_ALLOW_LOOPBACK_HTTP": "true", "PARLEY_COALESCE_WINDOW_MS": "3000"}
                },
                log_level="WARNING",
            )
            targets = {process.name: process.target for process in processes}
            # Devices reach the relay replicas through one target that the SDK balances across them.
            targets["relay"] = balanced_target(processes)
            _say(", ".join(f"{name} {target}" for name, target in targets.items()))
            return await _conversation(stack.admin_token, targets)
        finally:
            stack.down()


async def _conversation(admin_token: str, targets: dict[str, str]) -> int:
    started = time.perf_counter()
    cast = await _set_up(admin_token, targets)
    await _discover(cast, admin_token, targets["identity"])
    async with cast.ana_phone.connect() as ana, cast.ben.connect() as ben:
        await ana.drained.wait()
        await ben.drained.wait()
        await _chat(cast, ana, ben)
        await _photo(cast, ana)
        await _capabilities(cast, ben)
        await _block(cast, targets["moderation"], ana)
    await _wake_up(cast)
    await _catch_up(cast)
    ok = _summary(cast)
    _say(f"({time.perf_counter() - started:.1f} s)")
    cast.webhook.close()
    for backend in cast.backends.values():
        await backend.close()
    return 0 if ok else 1


async def _set_up(admin_token: str, targets: dict[str, str]) -> _Cast:
    _step("The gatekeeper enlists two providers (and a third one for later)")
    async with grpc.aio.insecure_channel(targets["identity"]) as channel:
        admin = identity_pb2_grpc.IdentityServiceStub(channel)
        keys = {
            provider_id: await _enlist(admin, admin_token, provider_id, name)
            for provider_id, name in (("gatekeeper", "Gatekeeper Messenger"), ("birdy", "Birdy"), ("lurker", "Lurker"))
        }
    backends = {
        provider_id: ProviderBackend(
            provider_id,
            key,
            identity_target=targets["identity"],
            keydir_target=targets["keydir"],
            relay_target=targets["relay"],
        )
        for provider_id, key in keys.items()
    }

    _step("Users register their devices and opt in to third-party chats (off by default)")
    ana = Address.for_user("gatekeeper", "phone", "+49 151 2345 6789")
    ben = Address.for_user("birdy", "username", "Ben")
    cast = _Cast(
        backends=backends,
        ana_phone=await DeviceClient.register(backends["gatekeeper"], ana, new_user=True),
        ana_laptop=await DeviceClient.register(backends["gatekeeper"], ana, new_user=False),
        ben=await DeviceClient.register(backends["birdy"], ben, new_user=True),
        webhook=_Webhook(),
    )
    cast.read = {device: [] for device in cast.devices}
    await cast.ana_phone.enable_third_party_chats(["birdy"], merged_inbox=True)
    await cast.ben.enable_third_party_chats(["gatekeeper"])
    _say(f"Ana: {cast.ana_phone.address} and {cast.ana_laptop.address}; allows birdy, merged inbox")
    _say(f"Ben: {cast.ben.address}; allows gatekeeper")

    _step(
        "Every device publishes its keys (identity, signed prekey, one-time prekeys, Kyber1024 one-time + last resort)"
    )
    for device in cast.devices:
        counts = await device.publish_keys(20)
        _say(f"{device.address}: {counts.one_time} one-time and {counts.one_time_pq} one-time PQ prekeys published")

    _step("Birdy registers its webhook, and Ben's phone its push token, with the notification service")
    async with grpc.aio.insecure_channel(targets["notification"]) as channel:
        notification = notification_pb2_grpc.NotificationServiceStub(channel)
        registered = await notification.RegisterWebhook(
            note_pb.RegisterWebhookRequest(url=cast.webhook.url), metadata=backends["birdy"].credentials("birdy")
        )
        cast.webhook.secret = registered.signing_secret
        await notification.RegisterPushTarget(
            note_pb.RegisterPushTargetRequest(push_token="birdy-push:ben-phone"),  # noqa: S106 -- not a secret
            metadata=backends["birdy"].credentials(str(cast.ben.user), cast.ben.device_id),
        )
    _say(f"webhook {cast.webhook.url}; deliveries are signed with a 32-byte secret only Birdy and Parley hold")
    return cast


async def _discover(cast: _Cast, admin_token: str, identity_target: str) -> None:
    _step("Ben looks Ana up by the number she gave him, typed his own way")
    found = await cast.ben.lookup("phone:+4915123456789@gatekeeper")
    _say(f"found {found.address} with {len(found.devices)} devices")
    eve = await DeviceClient.register(
        cast.backends["lurker"], Address.for_user("lurker", "username", "eve"), new_user=True
    )
    try:
        await eve.lookup(str(cast.ana_phone.user))
    except grpc.aio.AioRpcError as error:
        _say(f"a 'lurker' user, whose provider Ana did not allow, gets: {error.code().name} {error.details()!r}")


async def _read(
    cast: _Cast, device: DeviceClient, connection: RelayConnection, count: int
) -> list[content_pb2.Content]:
    """Receives until ``count`` messages arrived: decrypts them, prints them, acknowledges everything."""
    messages: list[content_pb2.Content] = []
    while len(messages) < count:
        async with asyncio.timeout(15):
            incoming = await connection.receive()
        stanza = incoming.stanza
        if isinstance(stanza, Message):
            seen = device.decrypt(stanza)
            cast.read[device].append(stanza.id)
            note = f" {_DIM}[prekey message]{_RESET}" if seen.prekey_message else ""
            _say(f"{device.address} got {stanza.id} from {stanza.sender}: {_describe(seen.content)}{note}")
            messages.append(seen.content)
        elif isinstance(stanza, Receipt):
            ids = list(stanza.message_ids)
            _say(f"{device.address} got a {stanza.type.value} receipt from {stanza.sender} for {ids}")
        elif isinstance(stanza, ChatState):
            _say(f"{device.address} sees: {stanza.sender.user} is {stanza.state.value}…")
        await connection.ack(incoming.delivery_id)
    return messages


async def _chat(cast: _Cast, ana: RelayConnection, ben: RelayConnection) -> None:
    ana_user, ben_user = cast.ana_phone.user, cast.ben.user
    _step("Ben starts typing, then writes first: bundles are claimed and sessions start with PQXDH")
    await cast.ben.send(ChatState(id="t1", sender=cast.ben.address, recipient=ana_user, ts=_now_ms(),
                                  state=ChatStateKind.TYPING))  # fmt: skip
    hello = content_pb2.Content(sent_at_ms=_now_ms(), text=content_pb2.Text(body="Hi Ana, it's Ben!"))
    accepted = await cast.ben.send_content(ana_user, hello, message_id="m1")
    _say(f"relay accepted m1 at {accepted.server_timestamp_ms}: one stored copy per device of Ana's (laptop offline)")
    await _read(cast, cast.ana_phone, ana, 1)

    _step("Ana answers from her phone; Ben gets it live, and the delivery receipt for his first message")
    reply = content_pb2.Content(
        sent_at_ms=_now_ms(),
        text=content_pb2.Text(body="Hi Ben! Good to hear from you across apps."),
        quote=content_pb2.Quote(message_id="m1", author=str(ben_user), snippet="Hi Ana, it's Ben!"),
    )
    await cast.ana_phone.send_content(ben_user, reply, message_id="m2")
    await _read(cast, cast.ben, ben, 1)

    _step("Ben reacts")
    reaction = content_pb2.Content(
        sent_at_ms=_now_ms(),
        reaction=content_pb2.Reaction(target_message_id="m2", target_author=str(ana_user), emoji="👍"),
    )
    await cast.ben.send_content(ana_user, reaction, message_id="m3")
    await _read(cast, cast.ana_phone, ana, 1)


async def _photo(cast: _Cast, ana: RelayConnection) -> None:
    _step("Ben sends a photo: encrypted on his device, uploaded through the relay's media proxy")
    attachment = encrypt_attachment(os.urandom(48_000))
    media_id = await cast.ben.upload_media(attachment.blob, attachment.digest)
    _say(f"uploaded {len(attachment.blob)} encrypted bytes as media {media_id[:12]}…")
    picture = content_pb2.Content(
        sent_at_ms=_now_ms(),
        media=content_pb2.Media(
            kind=content_pb2.MEDIA_KIND_IMAGE,
            pointer=media_id,
            key=attachment.media_key,
            digest=attachment.digest,
            size=len(attachment.blob),
            mime_type="image/jpeg",
            width=640,
            height=480,
            caption="view from the office",
        ),
    )
    await cast.ben.send_content(cast.ana_phone.user, picture, message_id="m4")
    (content,) = await _read(cast, cast.ana_phone, ana, 1)
    await _open_photo(cast.ana_phone, content.media)


async def _open_photo(device: DeviceClient, media: content_pb2.Media) -> None:
    blob = await device.download_media(media.pointer)
    image = decrypt_attachment(blob, media.key, media.digest)
    _say(f"{device.address} downloaded it, checked SHA-256 {hashlib.sha256(blob).hexdigest()[:12]}… and MAC, "
         f"decrypted {len(image)} bytes")  # fmt: skip


async def _capabilities(cast: _Cast, ben: RelayConnection) -> None:
    _step("Ana sends a sticker; Birdy's app shows no stickers, so her SDK sends it as the image it is")
    attachment = encrypt_attachment(os.urandom(12_000))
    media_id = await cast.ana_phone.upload_media(attachment.blob, attachment.digest)
    sticker = content_pb2.Content(
        sent_at_ms=_now_ms(),
        media=content_pb2.Media(kind=content_pb2.MEDIA_KIND_STICKER, pointer=media_id, key=attachment.media_key,
                                digest=attachment.digest, size=len(attachment.blob), mime_type="image/webp",
                                width=512, height=512),
    )  # fmt: skip
    fitted = await cast.ana_phone.fit_content(cast.ben.user, sticker)
    _say(f"downgrade for birdy: {', '.join(change.value for change in fitted.changes)}")
    await cast.ana_phone.send_content(cast.ben.user, sticker, message_id="s1")
    (content,) = await _read(cast, cast.ben, ben, 1)
    kind = content_pb2.MediaKind.Name(content.media.kind).removeprefix("MEDIA_KIND_").lower()
    _say(f"{cast.ben.address} got the sticker as an {kind}")

    _step("Ana tries to delete her reply for everyone; Birdy's app cannot, so nothing is sent")
    try:
        await cast.ana_phone.send_delete(cast.ben.user, "m2")
    except ContentRefusedError as refused:
        _say(f"refused before sending ({refused.refusal.value}, {refused.feature}): {refused.reason}")


async def _block(cast: _Cast, moderation_target: str, ana: RelayConnection) -> None:
    _step("Ana blocks Ben for a moment: his next message is accepted as usual, and never delivered")
    ana_credentials = cast.backends["gatekeeper"].credentials(str(cast.ana_phone.user))
    async with grpc.aio.insecure_channel(moderation_target) as channel:
        moderation = moderation_pb2_grpc.ModerationServiceStub(channel)
        await moderation.Block(mod_pb.BlockRequest(address=str(cast.ben.user)), metadata=ana_credentials)
        swallowed = content_pb2.Content(sent_at_ms=_now_ms(), text=content_pb2.Text(body="Ana? Hello?"))
        accepted = await cast.ben.send_content(cast.ana_phone.user, swallowed, message_id="m5")
        _say(f"relay accepted m5 at {accepted.server_timestamp_ms}; Ben cannot tell he is blocked")
        await moderation.Unblock(
            mod_pb.UnblockRequest(address=str(cast.ben.user)),
            metadata=cast.backends["gatekeeper"].credentials(str(cast.ana_phone.user)),
        )
    _say("Ana unblocks Ben; m5 stays undelivered, and his next message arrives")
    back = content_pb2.Content(sent_at_ms=_now_ms(), text=content_pb2.Text(body="Talk soon!"))
    await cast.ben.send_content(cast.ana_phone.user, back, message_id="m6")
    await _read(cast, cast.ana_phone, ana, 1)


async def _wake_up(cast: _Cast) -> None:
    _step("Ben's phone sleeps; Ana writes three times; Birdy's server is woken through its signed webhook")
    last_ms = 0
    for number, body in ((7, "Are you coming tonight?"), (8, "We start at 8."), (9, "Bring the photos!")):
        content = content_pb2.Content(sent_at_ms=_now_ms(), text=content_pb2.Text(body=body))
        accepted = await cast.ana_phone.send_content(cast.ben.user, content, message_id=f"m{number}")
        last_ms = accepted.server_timestamp_ms

    def woken_for_last() -> bool:
        return any(e["type"] == "message_waiting" and e["occurred_at_ms"] >= last_ms for _, e in cast.webhook.received)

    async with asyncio.timeout(20):
        # The first event wakes the phone at once; the rest merge into one trailing wake-up at the window's end.
        while not woken_for_last():
            cast.webhook.arrived.clear()
            if not woken_for_last():
                await cast.webhook.arrived.wait()
    for genuine, event in cast.webhook.received:
        data, validity = event["data"], "valid" if genuine else "INVALID"
        if event["type"] == "message_waiting":
            merged = "trailing, coalesced" if event["coalesced"] else "immediate"
            _say(f"webhook: wake {data['address']} (push token {data.get('push_token')!r}), {data['pending']} "
                 f"waiting; {merged}; signature {validity}")  # fmt: skip
        else:
            _say(f"webhook: {event['type']} {data} (signature {validity})")
    wake_ups = sum(event["type"] == "message_waiting" for _, event in cast.webhook.received)
    _say(f"{wake_ups} wake-ups for everything waiting (coalesced); the payloads carry no content and no names")
    async with cast.ben.connect() as ben:
        await _read(cast, cast.ben, ben, 3)


async def _catch_up(cast: _Cast) -> None:
    _step("Ana's laptop comes online: the relay kept everything for it, in order")
    async with cast.ana_laptop.connect() as laptop:
        messages = await _read(cast, cast.ana_laptop, laptop, 9)
        await laptop.drained.wait()
    _say(f"caught up with {len(messages)} messages (Ben's, and Ana's own messages from her phone)")


def _summary(cast: _Cast) -> bool:
    _step("Safety number: Ana and Ben can compare these 60 digits to rule out a man in the middle")
    digits = Fingerprint.create(
        local_id=str(cast.ana_phone.user).encode(),
        local_key=cast.ana_phone.identity_key,
        remote_id=str(cast.ben.user).encode(),
        remote_key=cast.ben.identity_key,
    ).display
    _say(" ".join(digits[i : i + 5] for i in range(0, len(digits), 5)))

    _step("Summary")
    expected = {
        cast.ana_phone: ["m1", "m3", "m4", "m6"],
        cast.ana_laptop: ["m1", "m2", "m3", "m4", "m6", "m7", "m8", "m9", "s1"],
        cast.ben: ["m2", "m7", "m8", "m9", "s1"],
    }
    for device in cast.devices:
        _say(f"{device.address}: sent {device.sent}, read {cast.read[device]}")
    ok = all(sorted(cast.read[device]) == ids for device, ids in expected.items())
    genuine = all(valid for valid, _ in cast.webhook.received)
    ok = ok and genuine and bool(cast.webhook.received)
    _say("the services stored public keys and relayed ciphertext; they saw addresses, never plaintext or names")
    _say("every webhook delivery carried a valid signature" if genuine else "MISMATCH: an unsigned webhook call")
    _say("every message decrypted exactly once on every intended device" if ok else "MISMATCH: see above")
    return ok


def main() -> None:
    """Entry point of ``python -m parley_sdk.demo``."""
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
