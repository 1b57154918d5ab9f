"""Tests for parley_stanza._downgrade: every (content feature, missing feature) pair, fallbacks, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley.content.v1 import content_pb2
from parley_stanza import (
    CORRECTION_PREFIX,
    Adaptation,
    Adapted,
    Feature,
    InvalidContentError,
    Refused,
    downgrade,
    required_features,
)

ALL = frozenset(Feature)
_QUOTE = content_pb2.Quote(message_id="m-1", author="phone:+4915112345678@gatekeeper", snippet="Lunch?")


def _media(kind: content_pb2.MediaKind.ValueType) -> content_pb2.Content:
    return content_pb2.Content(
        media=content_pb2.Media(
            kind=kind,
            pointer="https://media.gatekeeper.example/v1/att/7f3a",
            key=bytes(32),
            digest=bytes(32),
            size=1000,
            mime_type="application/octet-stream",
            caption="look",
        )
    )


def _text(body: str, **fields: object) -> content_pb2.Content:
    return content_pb2.Content(text=content_pb2.Text(body=body), **fields)


# One content per feature: what a provider needs that feature (and, for replies and groups, text) to show.
SAMPLES: dict[Feature, content_pb2.Content] = {
    Feature.TEXT: _text("Sure"),
    Feature.MEDIA_IMAGE: _media(content_pb2.MEDIA_KIND_IMAGE),
    Feature.MEDIA_VIDEO: _media(content_pb2.MEDIA_KIND_VIDEO),
    Feature.MEDIA_AUDIO: _media(content_pb2.MEDIA_KIND_AUDIO),
    Feature.MEDIA_VOICE: _media(content_pb2.MEDIA_KIND_VOICE),
    Feature.MEDIA_DOCUMENT: _media(content_pb2.MEDIA_KIND_DOCUMENT),
    Feature.MEDIA_STICKER: _media(content_pb2.MEDIA_KIND_STICKER),
    Feature.REACTIONS: content_pb2.Content(
        reaction=content_pb2.Reaction(target_message_id="m-1", target_author="username:bob@birdy", emoji="👍")
    ),
    Feature.REPLIES: _text("Sure", quote=_QUOTE),
    Feature.EDITS: content_pb2.Content(edit=content_pb2.Edit(target_message_id="m-1", text="Lunch at 1?")),
    Feature.DELETES: content_pb2.Content(delete=content_pb2.Delete(target_message_id="m-1")),
    Feature.RECEIPTS: content_pb2.Content(
        receipt=content_pb2.Receipt(type=content_pb2.RECEIPT_TYPE_READ, message_ids=["m-1", "m-2"])
    ),
    Feature.TYPING: content_pb2.Content(typing=content_pb2.Typing(state=content_pb2.TYPING_STATE_STARTED)),
    Feature.DISAPPEARING: content_pb2.Content(disappearing_timer=content_pb2.DisappearingTimer(seconds=3600)),
    Feature.GROUPS: _text("Sure", group_id="hiking-club_2025"),
}


# The outcome when the recipient lacks exactly one feature, for every pair where it is not "unchanged".
_EXPECTED: dict[tuple[Feature, Feature], Refused | tuple[content_pb2.Content, tuple[Adaptation, ...]]] = {
    (Feature.TEXT, Feature.TEXT): Refused(Feature.TEXT, ""),
    (Feature.MEDIA_IMAGE, Feature.MEDIA_IMAGE): (
        _media(content_pb2.MEDIA_KIND_DOCUMENT),
        (Adaptation.MEDIA_AS_OTHER_KIND,),
    ),
    (Feature.MEDIA_VIDEO, Feature.MEDIA_VIDEO): (
        _media(content_pb2.MEDIA_KIND_DOCUMENT),
        (Adaptation.MEDIA_AS_OTHER_KIND,),
    ),
    (Feature.MEDIA_AUDIO, Feature.MEDIA_AUDIO): (
        _media(content_pb2.MEDIA_KIND_DOCUMENT),
        (Adaptation.MEDIA_AS_OTHER_KIND,),
    ),
    (Feature.MEDIA_VOICE, Feature.MEDIA_VOICE): (
        _media(content_pb2.MEDIA_KIND_AUDIO),
        (Adaptation.MEDIA_AS_OTHER_KIND,),
    ),
    (Feature.MEDIA_DOCUMENT, Feature.MEDIA_DOCUMENT): Refused(Feature.MEDIA_DOCUMENT, ""),
    (Feature.MEDIA_STICKER, Feature.MEDIA_STICKER): (
        _media(content_pb2.MEDIA_KIND_IMAGE),
        (Adaptation.STICKER_AS_IMAGE,),
    ),
    (Feature.REACTIONS, Feature.REACTIONS): (
        _text("Reacted 👍 to a message", quote=content_pb2.Quote(message_id="m-1", author="username:bob@birdy")),
        (Adaptation.REACTION_AS_TEXT,),
    ),
    (Feature.REPLIES, Feature.REPLIES): (_text("> Lunch?\nSure"), (Adaptation.QUOTE_INLINED,)),
    (Feature.REPLIES, Feature.TEXT): Refused(Feature.TEXT, ""),
    (Feature.EDITS, Feature.EDITS): (
        _text(CORRECTION_PREFIX + "Lunch at 1?", correction_of="m-1"),
        (Adaptation.EDIT_AS_CORRECTION,),
    ),
    (Feature.DELETES, Feature.DELETES): Refused(Feature.DELETES, ""),
    (Feature.RECEIPTS, Feature.RECEIPTS): Refused(Feature.RECEIPTS, ""),
    (Feature.TYPING, Feature.TYPING): Refused(Feature.TYPING, ""),
    (Feature.DISAPPEARING, Feature.DISAPPEARING): Refused(Feature.DISAPPEARING, ""),
    (Feature.GROUPS, Feature.GROUPS): Refused(Feature.GROUPS, ""),
    (Feature.GROUPS, Feature.TEXT): Refused(Feature.TEXT, ""),
}

# Every feature some content needs (calls are a stanza kind, needed by no content), without each feature in turn.
_PAIRS = [(content_feature, missing) for content_feature in SAMPLES for missing in Feature]


@pytest.mark.parametrize(("content_feature", "missing"), _PAIRS, ids=[f"{a}-without-{b}" for a, b in _PAIRS])
def test_every_feature_pair(content_feature: Feature, missing: Feature) -> None:
    content = SAMPLES[content_feature]
    original = content.SerializeToString(deterministic=True)
    result = downgrade(content, ALL - {missing})
    expected = _EXPECTED.get((content_feature, missing), (content, ()))
    if isinstance(expected, Refused):
        assert isinstance(result, Refused)
        assert result.feature is expected.feature
        assert result.reason  # a sentence the sender's UI can show
    else:
        assert isinstance(result, Adapted)
        assert result.content == expected[0]
        assert result.changes == expected[1]
    assert content.SerializeToString(deterministic=True) == original  # the input is never modified


@pytest.mark.parametrize("feature", list(SAMPLES))
def test_samples_need_their_feature(feature: Feature) -> None:
    needed = required_features(SAMPLES[feature])
    assert feature in needed
    assert needed <= {feature, Feature.TEXT}
    assert downgrade(SAMPLES[feature], needed) == Adapted(SAMPLES[feature])


@pytest.mark.parametrize(
    ("content", "features", "expected"),
    [
        # fallbacks further down the chain
        (SAMPLES[Feature.MEDIA_STICKER], ALL - {Feature.MEDIA_STICKER, Feature.MEDIA_IMAGE}, Feature.MEDIA_STICKER),
        (SAMPLES[Feature.MEDIA_VOICE], {Feature.MEDIA_DOCUMENT}, content_pb2.MEDIA_KIND_DOCUMENT),
        (SAMPLES[Feature.MEDIA_VOICE], {Feature.TEXT}, Feature.MEDIA_VOICE),
        (SAMPLES[Feature.REACTIONS], ALL - {Feature.REACTIONS, Feature.TEXT}, Feature.TEXT),
        (SAMPLES[Feature.EDITS], ALL - {Feature.EDITS, Feature.TEXT}, Feature.TEXT),
        (_text("hi", expire_timer_seconds=30), ALL - {Feature.DISAPPEARING}, Feature.DISAPPEARING),
        (SAMPLES[Feature.GROUPS], set(), Feature.GROUPS),
    ],
)
def test_chained_fallbacks(
    content: content_pb2.Content,
    features: set[Feature],
    expected: Feature | content_pb2.MediaKind.ValueType,
) -> None:
    result = downgrade(content, features)
    if isinstance(expected, Feature):
        assert isinstance(result, Refused)
        assert result.feature is expected
    else:
        assert isinstance(result, Adapted)
        assert result.content.media.kind == expected


def test_reaction_without_replies_is_plain_text() -> None:
    result = downgrade(SAMPLES[Feature.REACTIONS], {Feature.TEXT})
    assert result == Adapted(_text("Reacted 👍 to a message"), (Adaptation.REACTION_AS_TEXT,))


def test_reaction_removal_as_text() -> None:
    removal = content_pb2.Content()
    removal.CopyFrom(SAMPLES[Feature.REACTIONS])
    removal.reaction.remove = True
    result = downgrade(removal, {Feature.TEXT})
    assert isinstance(result, Adapted)
    assert result.content.text.body == "Removed the reaction 👍 to a message"


def test_media_reply_inlines_the_quote_into_the_caption() -> None:
    reply = content_pb2.Content()
    reply.CopyFrom(SAMPLES[Feature.MEDIA_IMAGE])
    reply.quote.CopyFrom(_QUOTE)
    result = downgrade(reply, {Feature.MEDIA_IMAGE})
    assert isinstance(result, Adapted)
    assert result.content.media.caption == "> Lunch?\nlook"
    assert not result.content.HasField("quote")


def test_invalid_content_is_an_error_not_a_refusal() -> None:
    with pytest.raises(InvalidContentError):
        downgrade(content_pb2.Content(), ALL)


@given(st.sampled_from(list(SAMPLES.values())), st.sets(st.sampled_from(list(Feature))))
def test_adapted_content_only_needs_supported_features(content: content_pb2.Content, features: set[Feature]) -> None:
    result = downgrade(content, features)
    if isinstance(result, Adapted):
        assert required_features(result.content) <= features
    else:
        assert result.feature not in features
