"""Tests for parley_stanza._content: padding, deterministic encoding and the content rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.content.v1 import content_pb2
from parley_stanza import PADDING_BLOCK, InvalidContentError, check_content, decode_content, encode_content, pad, unpad

GOLDEN = Path(__file__).resolve().parent / "golden"

_texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=60)
_ids = st.text("abcdef0123456789-", min_size=1, max_size=36)


def _media(**fields: object) -> content_pb2.Media:
    defaults: dict[str, object] = {
        "kind": content_pb2.MEDIA_KIND_IMAGE,
        "pointer": "https://media.gatekeeper.example/v1/att/7f3a",
        "key": bytes(range(32)),
        "digest": bytes(32),
        "size": 48213,
        "mime_type": "image/jpeg",
        "width": 1024,
        "height": 768,
    }
    defaults.update(fields)
    return content_pb2.Media(**defaults)


_media_strategy = st.builds(
    lambda kind, size, caption, thumbnail, duration: _media(
        kind=kind, size=size, caption=caption, thumbnail=thumbnail, duration_ms=duration
    ),
    st.sampled_from(
        [
            content_pb2.MEDIA_KIND_IMAGE,
            content_pb2.MEDIA_KIND_VIDEO,
            content_pb2.MEDIA_KIND_AUDIO,
            content_pb2.MEDIA_KIND_VOICE,
            content_pb2.MEDIA_KIND_DOCUMENT,
            content_pb2.MEDIA_KIND_STICKER,
        ]
    ),
    st.integers(0, 2**40),
    st.just("") | _texts,
    st.binary(max_size=200),
    st.integers(0, 2**31),
)
_bodies = st.one_of(
    st.builds(lambda body: content_pb2.Content(text=content_pb2.Text(body=body)), _texts),
    st.builds(lambda media: content_pb2.Content(media=media), _media_strategy),
    st.builds(
        lambda target, emoji, remove: content_pb2.Content(
            reaction=content_pb2.Reaction(target_message_id=target, emoji=emoji, remove=remove)
        ),
        _ids,
        st.sampled_from(["👍", "❤️", "😂", "🏳️‍🌈"]),
        st.booleans(),
    ),
    st.builds(
        lambda target, text: content_pb2.Content(edit=content_pb2.Edit(target_message_id=target, text=text)),
        _ids,
        _texts,
    ),
    st.builds(lambda target: content_pb2.Content(delete=content_pb2.Delete(target_message_id=target)), _ids),
    st.builds(
        lambda seconds: content_pb2.Content(disappearing_timer=content_pb2.DisappearingTimer(seconds=seconds)),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(
        lambda kind, ids: content_pb2.Content(receipt=content_pb2.Receipt(type=kind, message_ids=ids)),
        st.sampled_from([content_pb2.RECEIPT_TYPE_DELIVERY, content_pb2.RECEIPT_TYPE_READ]),
        st.lists(_ids, min_size=1, max_size=5),
    ),
    st.builds(
        lambda state: content_pb2.Content(typing=content_pb2.Typing(state=state)),
        st.sampled_from([content_pb2.TYPING_STATE_STARTED, content_pb2.TYPING_STATE_STOPPED]),
    ),
)


@st.composite
def _contents(draw: st.DrawFn) -> content_pb2.Content:
    content: content_pb2.Content = draw(_bodies)
    content.sent_at_ms = draw(st.integers(0, 2**63))
    if content.WhichOneof("body") in ("text", "media") and draw(st.booleans()):
        content.quote.message_id = draw(_ids)
        content.quote.author = "username:alice@birdy"
        content.quote.snippet = draw(st.just("") | _texts)
    content.expire_timer_seconds = draw(st.sampled_from([0, 0, 30, 604800]))
    content.group_id = draw(st.sampled_from(["", "hiking-club_2025"]))
    content.franking_key = draw(st.sampled_from([b"", bytes(32)]))
    return content


@settings(max_examples=200, deadline=None)
@given(_contents())
def test_content_round_trip(content: content_pb2.Content) -> None:
    padded = encode_content(content)
    assert (len(padded) + 1) % PADDING_BLOCK == 0
    assert decode_content(padded) == content
    assert encode_content(decode_content(padded)) == padded


@given(st.binary(max_size=1000))
def test_pad_unpad(data: bytes) -> None:
    padded = pad(data)
    assert (len(padded) + 1) % PADDING_BLOCK == 0
    assert len(padded) > len(data)
    assert unpad(padded) == data


def test_padding_matches_signals_lengths() -> None:
    # Signal's PushTransportDetails test: 0..158 bytes pad to 159, 159..318 to 319.
    assert {len(pad(bytes(n))) for n in range(159)} == {159}
    assert {len(pad(bytes(n))) for n in range(159, 319)} == {319}
    assert pad(b"hi") == b"hi\x80" + bytes(156)


def test_unpad_accepts_other_block_sizes() -> None:
    assert unpad(b"hi\x80" + bytes(76)) == b"hi"  # Signal's newer 80-byte blocks
    assert unpad(b"\x80") == b""


@pytest.mark.parametrize(
    "padded",
    [
        b"",
        bytes(PADDING_BLOCK),  # no terminator
        b"x" * PADDING_BLOCK,
        b"x\x80\x01" + bytes(PADDING_BLOCK - 4),  # non-zero after the terminator
    ],
)
def test_unpad_rejects_bad_padding(padded: bytes) -> None:
    with pytest.raises(InvalidContentError):
        unpad(padded)


def test_decode_rejects_garbage_protobuf() -> None:
    with pytest.raises(InvalidContentError):
        decode_content(pad(b"\xff\xff\xff\xff"))


def test_golden_content_bytes() -> None:
    content = content_pb2.Content(
        sent_at_ms=1763788800123,
        text=content_pb2.Text(body="Hi Bob 👋"),
        quote=content_pb2.Quote(message_id="m-1", author="phone:+4915112345678@gatekeeper", snippet="Lunch?"),
        franking_key=bytes(range(32)),
    )
    golden = (GOLDEN / "content-text-reply.bin").read_bytes()
    assert encode_content(content) == golden
    assert decode_content(golden) == content


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (content_pb2.Content(), "no body"),
        (content_pb2.Content(text=content_pb2.Text()), "text is empty"),
        (content_pb2.Content(text=content_pb2.Text(body="x" * 20000)), "over"),
        (content_pb2.Content(media=_media(kind=content_pb2.MEDIA_KIND_UNSPECIFIED)), "kind"),
        (content_pb2.Content(media=_media(key=b"short")), "key"),
        (content_pb2.Content(media=_media(digest=b"")), "digest"),
        (content_pb2.Content(media=_media(pointer="")), "pointer"),
        (content_pb2.Content(media=_media(mime_type="")), "mime_type"),
        (content_pb2.Content(media=_media(thumbnail=bytes(9000))), "thumbnail"),
        (content_pb2.Content(reaction=content_pb2.Reaction(emoji="👍")), "target"),
        (content_pb2.Content(reaction=content_pb2.Reaction(target_message_id="m", emoji="")), "emoji"),
        (content_pb2.Content(edit=content_pb2.Edit(target_message_id="m")), "edit text"),
        (content_pb2.Content(delete=content_pb2.Delete()), "delete"),
        (content_pb2.Content(receipt=content_pb2.Receipt(message_ids=["m"])), "receipt type"),
        (content_pb2.Content(receipt=content_pb2.Receipt(type=content_pb2.RECEIPT_TYPE_READ)), "at least one"),
        (content_pb2.Content(typing=content_pb2.Typing()), "typing state"),
        (
            content_pb2.Content(delete=content_pb2.Delete(target_message_id="m"), quote=content_pb2.Quote()),
            "quote goes with",
        ),
        (content_pb2.Content(text=content_pb2.Text(body="x"), quote=content_pb2.Quote()), "quote message_id"),
    ],
)
def test_check_content_rules(content: content_pb2.Content, rule: str) -> None:
    with pytest.raises(InvalidContentError, match=rule):
        check_content(content)
    with pytest.raises(InvalidContentError, match=rule):
        encode_content(content)
