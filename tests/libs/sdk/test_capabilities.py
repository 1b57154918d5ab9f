"""Capability downgrade in the path: a sender's SDK fits every kind of content to each recipient's provider before
encrypting, or refuses it with a reason before anything is sent; what arrives is exactly what was fitted.

Three providers through real services (identity, key directory, relay): gatekeeper (every feature), birdy (text,
images, audio, documents, reactions, replies, edits, receipts and typing) and plain (text only). Ana
(gatekeeper) sends every content kind to Gus (gatekeeper), Ben (birdy) and Pia (plain); each recipient's device
counts and checks every message it gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from support.cluster import ALL_FEATURES, Cluster

from parley.common.v1.common_pb2 import Feature as FeatureProto
from parley.content.v1 import content_pb2
from parley_relay.app import RelaySettings, build_relay
from parley_sdk import ContentRefusedError, DeviceClient, Outcome, ProviderBackend, Received, Refusal
from parley_sdk import features_from_proto as to_features
from parley_stanza import Adaptation, Address, Refused, downgrade

_PROVIDERS: dict[str, list[FeatureProto.ValueType]] = {
    "gatekeeper": ALL_FEATURES,
    "birdy": [
        FeatureProto.FEATURE_TEXT, FeatureProto.FEATURE_MEDIA_IMAGE, FeatureProto.FEATURE_MEDIA_AUDIO,
        FeatureProto.FEATURE_MEDIA_DOCUMENT, FeatureProto.FEATURE_REACTIONS, FeatureProto.FEATURE_REPLIES,
        FeatureProto.FEATURE_EDITS, FeatureProto.FEATURE_RECEIPTS, FeatureProto.FEATURE_TYPING,
    ],
    "plain": [FeatureProto.FEATURE_TEXT],
}  # fmt: skip
_TARGET = "t0"
"""The message of Ana's that edits and deletes target, sent to each recipient first."""


def _media(kind: content_pb2.MediaKind.ValueType) -> content_pb2.Content:
    return content_pb2.Content(
        sent_at_ms=2,
        media=content_pb2.Media(kind=kind, pointer="media-1", key=bytes(range(32)), digest=bytes(32), size=1000,
                                mime_type="image/webp", width=512, height=512, caption="look"),
    )  # fmt: skip


def _content(**fields: object) -> content_pb2.Content:
    return content_pb2.Content(sent_at_ms=2, **fields)


# Every kind of content, in the order Ana sends it (the timer last: it applies to what follows).
_KINDS: dict[str, Callable[[Address], content_pb2.Content]] = {
    "text": lambda peer: _content(text=content_pb2.Text(body="hello")),
    "image": lambda peer: _media(content_pb2.MEDIA_KIND_IMAGE),
    "video": lambda peer: _media(content_pb2.MEDIA_KIND_VIDEO),
    "audio": lambda peer: _media(content_pb2.MEDIA_KIND_AUDIO),
    "voice": lambda peer: _media(content_pb2.MEDIA_KIND_VOICE),
    "document": lambda peer: _media(content_pb2.MEDIA_KIND_DOCUMENT),
    "sticker": lambda peer: _media(content_pb2.MEDIA_KIND_STICKER),
    "reaction": lambda peer: _content(
        reaction=content_pb2.Reaction(target_message_id=_TARGET, target_author=str(peer), emoji="👍")
    ),
    "reply": lambda peer: _content(
        text=content_pb2.Text(body="yes"), quote=content_pb2.Quote(message_id=_TARGET, snippet="lunch?")
    ),
    "edit": lambda peer: _content(edit=content_pb2.Edit(target_message_id=_TARGET, text="lunch at one?")),
    "receipt": lambda peer: _content(
        receipt=content_pb2.Receipt(type=content_pb2.RECEIPT_TYPE_READ, message_ids=[_TARGET])
    ),
    "typing": lambda peer: _content(typing=content_pb2.Typing(state=content_pb2.TYPING_STATE_STARTED)),
    "group": lambda peer: _content(text=content_pb2.Text(body="hi all"), group_id="hikers"),
    "delete": lambda peer: _content(delete=content_pb2.Delete(target_message_id=_TARGET)),
    "disappearing": lambda peer: _content(disappearing_timer=content_pb2.DisappearingTimer(seconds=3600)),
}


async def _start(cluster: Cluster) -> tuple[DeviceClient, dict[str, DeviceClient], list[ProviderBackend]]:
    await cluster.start_identity()
    keys = {name: await cluster.enlist(name, features=features) for name, features in _PROVIDERS.items()}
    await cluster.start_keydir()
    await cluster.start("relay", RelaySettings, build_relay, replica="relay-0")
    backends = {
        name: ProviderBackend(name, provider.signing_key, identity_target=cluster.target("identity"),
                              keydir_target=cluster.target("keydir"), relay_target=cluster.target("relay"))
        for name, provider in keys.items()
    }  # fmt: skip
    devices = {}
    for user, provider in (("ana", "gatekeeper"), ("gus", "gatekeeper"), ("ben", "birdy"), ("pia", "plain")):
        device = await DeviceClient.register(
            backends[provider], Address.parse(f"username:{user}@{provider}"), new_user=True
        )
        await device.enable_third_party_chats([p for p in _PROVIDERS if p != provider])
        await device.publish_keys(5)
        devices[user] = device
    ana = devices.pop("ana")
    return ana, devices, list(backends.values())


async def _receive(device: DeviceClient, count: int) -> list[Received]:
    """Processes the next ``count`` messages on a fresh stream, acknowledging each."""
    processed: list[Received] = []
    async with device.connect() as connection:
        while len(processed) < count:
            async with asyncio.timeout(10):
                incoming = await connection.receive()
            processed.append(await device.process(incoming))
            await connection.ack(incoming.delivery_id)
    return processed


def _without_franking(content: content_pb2.Content | None) -> content_pb2.Content:
    assert content is not None
    copy = content_pb2.Content()
    copy.CopyFrom(content)
    copy.ClearField("franking_key")
    return copy


_OUTCOMES = {"edit": Outcome.EDITED, "delete": Outcome.DELETED, "disappearing_timer": Outcome.TIMER_CHANGED}
"""What processing a fitted body does (an edit fitted as a correction is a new message)."""


async def test_every_content_kind_reaches_each_provider_fitted_or_is_refused_before_sending(cluster: Cluster) -> None:
    ana, recipients, backends = await _start(cluster)
    for name, recipient in recipients.items():
        features = to_features(_PROVIDERS[recipient.address.provider])
        await ana.send_content(recipient.user, _content(text=content_pb2.Text(body="lunch?")), message_id=_TARGET)
        expected: list[tuple[str, content_pb2.Content]] = [("target", _content(text=content_pb2.Text(body="lunch?")))]
        refused: dict[str, Refusal] = {}
        for kind, build in _KINDS.items():
            content = build(recipient.user)
            fit = downgrade(content, features)
            if isinstance(fit, Refused):
                with pytest.raises(ContentRefusedError) as error:
                    await ana.send_content(recipient.user, content, message_id=f"{name}-{kind}")
                assert (error.value.feature, error.value.reason) == (fit.feature, fit.reason)
                assert error.value.provider == recipient.address.provider
                refused[kind] = error.value.refusal
            else:
                await ana.send_content(recipient.user, content, message_id=f"{name}-{kind}")
                expected.append((kind, fit.content))
        received = await _receive(recipient, len(expected))
        # Every message arrived once, in order, exactly as fitted for its provider.
        assert [r.message.id for r in received] == [_TARGET] + [f"{name}-{kind}" for kind, _ in expected[1:]]
        for (kind, content), got in zip(expected, received, strict=True):
            assert _without_franking(got.content) == content, (name, kind)
            assert got.outcome == _OUTCOMES.get(content.WhichOneof("body") or "", Outcome.NEW), (name, kind)
        assert set(refused.values()) <= {Refusal.FEATURE_MISSING}
        assert sorted(refused) == {
            "gus": [],
            "ben": ["delete", "disappearing", "group"],
            "pia": ["audio", "delete", "disappearing", "document", "group", "image", "receipt", "sticker",
                    "typing", "video", "voice"],
        }[name]  # fmt: skip
    for backend in backends:
        await backend.close()


async def test_a_sticker_reaches_a_provider_without_stickers_as_an_image(cluster: Cluster) -> None:
    ana, recipients, backends = await _start(cluster)
    ben = recipients["ben"]
    sticker = _media(content_pb2.MEDIA_KIND_STICKER)
    preview = await ana.fit_content(ben.user, sticker)
    assert preview.changes == (Adaptation.STICKER_AS_IMAGE,)
    await ana.send_content(ben.user, sticker)
    (got,) = await _receive(ben, 1)
    assert got.content is not None
    assert got.content.media.kind == content_pb2.MEDIA_KIND_IMAGE
    # Ana's own view is what was sent.
    kept = ana.message(ana.user, got.message.id)
    assert kept is not None
    assert kept.content is not None
    assert kept.content.media.kind == content_pb2.MEDIA_KIND_IMAGE
    for backend in backends:
        await backend.close()


async def test_an_unknown_provider_is_asked_again_and_a_refusal_sends_nothing(cluster: Cluster) -> None:
    ana, recipients, backends = await _start(cluster)
    pia = recipients["pia"]
    sent = ana.sent
    with pytest.raises(ContentRefusedError) as error:
        await ana.send_delete(pia.user, "no-such-message")
    assert error.value.refusal is Refusal.FEATURE_MISSING
    assert error.value.reason == "The recipient's app cannot delete messages for everyone."
    assert ana.sent == sent  # nothing was encrypted
    assert await ana.provider_info("nobody") is None
    for backend in backends:
        await backend.close()
