"""``make demo``: a cross-provider, end-to-end encrypted conversation on this machine.

Starts a private Redis and the identity and key-directory services as separate processes, enlists two
providers (the gatekeeper's own app and a third-party app called "birdy"), and plays a scripted conversation
between Ana (gatekeeper, a phone and a laptop) and Ben (birdy): opt-in, key publication, discovery, first contact
with PQXDH, replies, a reaction, an image, and what the server side can and cannot see.

Until the relay service lands, stanzas travel from sender to recipients through this script rather than through
the relay; everything else (services, keys, sessions, stanzas) is the real thing.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from dataclasses import dataclass

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import Feature, IdentifierKind
from parley.content.v1 import content_pb2
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley_crypto import Fingerprint, decrypt_attachment, encrypt_attachment
from parley_runtime.testing import RedisServer, ServiceProcess
from parley_sdk import DeviceClient, ProviderBackend
from parley_stanza import Address, Message, decode, encode

_BOLD = "\033[1m" if sys.stdout.isatty() else ""
_DIM = "\033[2m" if sys.stdout.isatty() else ""
_RESET = "\033[0m" if sys.stdout.isatty() else ""


def _step(title: str) -> None:
    print(f"\n{_BOLD}== {title}{_RESET}")


def _say(text: str) -> None:
    print(f"   {text}")


def _wire(message: Message) -> bytes:
    """Serializes a stanza, as a provider hands it to the relay; shows what the server side sees."""
    data = encode(message)
    kinds = ", ".join(f"{p.device} ({p.kind.value})" for p in message.payloads)
    _say(f"{_DIM}stanza {message.id}: {len(data)} bytes of XML, payloads for {kinds}{_RESET}")
    return data


def _describe(content: content_pb2.Content) -> str:
    body = content.WhichOneof("body")
    if body == "text":
        quote = f' (replying to "{content.quote.snippet}")' if content.HasField("quote") else ""
        return f'"{content.text.body}"{quote}'
    if body == "reaction":
        return f"reacted {content.reaction.emoji} to {content.reaction.target_message_id}"
    if body == "media":
        return (
            f"{content.media.mime_type} {content.media.width}x{content.media.height}, caption {content.media.caption!r}"
        )
    return body or "empty"


def _deliver(data: bytes, devices: list[DeviceClient]) -> None:
    """Hands stanza bytes to each recipient device, which parses them safely and decrypts its own payload."""
    message = decode(data)
    assert isinstance(message, Message)
    for device in devices:
        seen = device.decrypt(message)
        first = " [prekey message: session not yet answered]" if seen.prekey_message else ""
        _say(f"{device.address} decrypted: {_describe(seen.content)}{first}")


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
            features=[Feature.FEATURE_TEXT, Feature.FEATURE_MEDIA_IMAGE, Feature.FEATURE_REACTIONS,
                      Feature.FEATURE_REPLIES, Feature.FEATURE_RECEIPTS],
        ),
        metadata=metadata,
    )  # fmt: skip
    await admin.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider_id), metadata=metadata)
    _say(f"enlisted and approved provider {provider_id!r} ({name}); its Ed25519 key signs its users' calls")
    return key


async def run() -> int:
    """Runs the scenario; returns the process exit status."""
    admin_token = secrets.token_urlsafe(24)
    env = {
        "PARLEY_ADMIN_TOKEN": admin_token,
        "PARLEY_INTERNAL_TOKEN": secrets.token_urlsafe(24),
        "PARLEY_LOG_LEVEL": "WARNING",
    }
    _step("Starting Redis, identity and key directory as separate processes")
    with RedisServer() as redis_server:
        env["PARLEY_REDIS_URL"] = redis_server.url
        identity_service = ServiceProcess("parley_identity", env)
        identity_service.start()
        keydir_service = ServiceProcess("parley_keydir", {**env, "PARLEY_IDENTITY_TARGET": identity_service.target})
        keydir_service.start()
        _say(f"redis {redis_server.url}, identity {identity_service.target}, key directory {keydir_service.target}")
        try:
            return await _conversation(admin_token, identity_service.target, keydir_service.target)
        finally:
            keydir_service.stop()
            identity_service.stop()


@dataclass
class _Cast:
    """The people of the scenario and their providers."""

    gatekeeper: ProviderBackend
    birdy: ProviderBackend
    lurker: ProviderBackend
    ana_phone: DeviceClient
    ana_laptop: DeviceClient
    ben_phone: DeviceClient

    @property
    def devices(self) -> tuple[DeviceClient, ...]:
        return (self.ana_phone, self.ana_laptop, self.ben_phone)


async def _conversation(admin_token: str, identity_target: str, keydir_target: str) -> int:
    started = time.perf_counter()
    cast = await _set_up(admin_token, identity_target, keydir_target)
    await _discover(cast, admin_token, identity_target)
    await _chat(cast)
    await _photo(cast)
    ok = _summary(cast)
    _say(f"({time.perf_counter() - started:.1f} s)")
    for backend in (cast.gatekeeper, cast.birdy, cast.lurker):
        await backend.close()
    return 0 if ok else 1


async def _set_up(admin_token: str, identity_target: str, keydir_target: str) -> _Cast:
    _step("The gatekeeper enlists two providers")
    async with grpc.aio.insecure_channel(identity_target) as channel:
        admin = identity_pb2_grpc.IdentityServiceStub(channel)
        keys = {
            provider_id: await _enlist(admin, admin_token, provider_id, name)
            for provider_id, name in (("gatekeeper", "Gatekeeper Messenger"), ("birdy", "Birdy"), ("lurker", "Lurker"))
        }
    backends = {
        provider_id: ProviderBackend(provider_id, key, identity_target=identity_target, keydir_target=keydir_target)
        for provider_id, key in keys.items()
    }

    _step("Users register their devices and opt in to third-party chats (off by default)")
    ana = Address.for_user("gatekeeper", "phone", "+49 151 2345 6789")
    ben = Address.for_user("birdy", "username", "Ben")
    cast = _Cast(
        gatekeeper=backends["gatekeeper"],
        birdy=backends["birdy"],
        lurker=backends["lurker"],
        ana_phone=await DeviceClient.register(backends["gatekeeper"], ana, new_user=True),
        ana_laptop=await DeviceClient.register(backends["gatekeeper"], ana, new_user=False),
        ben_phone=await DeviceClient.register(backends["birdy"], ben, new_user=True),
    )
    await cast.ana_phone.enable_third_party_chats(["birdy"], merged_inbox=True)
    await cast.ben_phone.enable_third_party_chats(["gatekeeper"])
    _say(f"Ana: {cast.ana_phone.address} and {cast.ana_laptop.address}; allows birdy, merged inbox")
    _say(f"Ben: {cast.ben_phone.address}; allows gatekeeper")

    _step("Every device publishes its keys (identity, signed prekey, ML-KEM-1024 last resort, one-time prekeys)")
    for device in cast.devices:
        count = await device.publish_keys(20)
        _say(f"{device.address}: {count} one-time prekeys in the directory")
    return cast


async def _discover(cast: _Cast, admin_token: str, identity_target: str) -> None:
    _step("Ben looks Ana up by the number she gave him, typed his own way")
    found = await cast.ben_phone.lookup("phone:+4915123456789@gatekeeper")
    _say(f"found {found.address} with {len(found.devices)} devices")
    eve = await DeviceClient.register(cast.lurker, Address.for_user("lurker", "username", "eve"), new_user=True)
    try:
        await eve.lookup(str(cast.ana_phone.user))
    except grpc.aio.AioRpcError as error:
        _say(f"a 'lurker' user, whose provider Ana did not allow, gets: {error.code().name} {error.details()!r}")


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _chat(cast: _Cast) -> None:
    ana, ben = cast.ana_phone.user, cast.ben_phone.user
    _step("Ben writes first: bundles are claimed, sessions start with PQXDH, one stanza carries every ciphertext")
    hello = content_pb2.Content(sent_at_ms=_now_ms(), text=content_pb2.Text(body="Hi Ana, it's Ben!"))
    _deliver(_wire(await cast.ben_phone.encrypt(ana, hello, message_id="m1")), [cast.ana_phone, cast.ana_laptop])

    _step("Ana answers from her phone; her laptop gets a copy (the sender's other devices are recipients too)")
    reply = content_pb2.Content(
        sent_at_ms=_now_ms(),
        text=content_pb2.Text(body="Hi Ben! Good to hear from you across apps."),
        quote=content_pb2.Quote(message_id="m1", author=str(ben), snippet="Hi Ana, it's Ben!"),
    )
    _deliver(_wire(await cast.ana_phone.encrypt(ben, reply, message_id="m2")), [cast.ben_phone, cast.ana_laptop])

    _step("Ben reacts")
    reaction = content_pb2.Content(
        sent_at_ms=_now_ms(),
        reaction=content_pb2.Reaction(target_message_id="m2", target_author=str(ana), emoji="👍"),
    )
    _deliver(_wire(await cast.ben_phone.encrypt(ana, reaction, message_id="m3")), [cast.ana_phone, cast.ana_laptop])


async def _photo(cast: _Cast) -> None:
    _step("Ben sends a photo: the image is encrypted apart, its key and digest travel inside the message")
    attachment = encrypt_attachment(os.urandom(48_000))
    picture = content_pb2.Content(
        sent_at_ms=_now_ms(),
        media=content_pb2.Media(
            kind=content_pb2.MEDIA_KIND_IMAGE,
            pointer="demo-blob-1",
            key=attachment.media_key,
            digest=attachment.digest,
            size=len(attachment.blob),
            mime_type="image/jpeg",
            width=640,
            height=480,
            caption="view from the office",
        ),
    )
    message = decode(_wire(await cast.ben_phone.encrypt(cast.ana_phone.user, picture, message_id="m4")))
    assert isinstance(message, Message)
    for device in (cast.ana_phone, cast.ana_laptop):
        seen = device.decrypt(message).content
        image = decrypt_attachment(attachment.blob, seen.media.key, seen.media.digest)
        _say(f"{device.address} decrypted: {_describe(seen)}; blob verified and opened ({len(image)} bytes)")


def _summary(cast: _Cast) -> bool:
    _step("Safety number: Ana and Ben can compare these 60 digits to rule out a man in the middle")
    digits = Fingerprint.create(
        local_id=str(cast.ana_phone.user).encode(),
        local_key=cast.ana_phone.identity_key,
        remote_id=str(cast.ben_phone.user).encode(),
        remote_key=cast.ben_phone.identity_key,
    ).display
    _say(" ".join(digits[i : i + 5] for i in range(0, len(digits), 5)))

    _step("Summary")
    for device in cast.devices:
        _say(f"{device.address}: sent {device.sent}, decrypted {device.decrypted}")
    expected = {cast.ana_phone: 3, cast.ana_laptop: 4, cast.ben_phone: 1}
    ok = all(device.decrypted == count for device, count in expected.items())
    _say("the services stored public keys and saw only ciphertext and addresses: no plaintext, no names")
    _say("every message decrypted exactly once on every intended device" if ok else "MISMATCH: see above")
    return ok


def main() -> None:
    """Entry point of ``python -m parley_sdk.demo``."""
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
