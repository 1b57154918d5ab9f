"""Capability downgrade: fit content to what the recipient's provider can display, or refuse it with a reason.

Providers enlist with the features they support. Before encrypting for the devices of a user at another
provider, the sender's client calls ``downgrade`` with that provider's features: content the provider
supports passes unchanged; content it does not is mapped to the nearest thing it does support (a sticker
becomes an image, a reaction a short text, an edit a new message marked as a correction, a reply an inline
quote); content with no honest mapping (a delete, a disappearing-message timer, a group message, typing or
receipts) is refused with a reason the sender's UI can show.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from parley.content.v1 import content_pb2
from parley_stanza._content import MAX_SNIPPET_CHARS, check_content
from parley_stanza._features import Feature

CORRECTION_PREFIX = "Correction: "

_MEDIA_FEATURES = {
    content_pb2.MEDIA_KIND_IMAGE: Feature.MEDIA_IMAGE,
    content_pb2.MEDIA_KIND_VIDEO: Feature.MEDIA_VIDEO,
    content_pb2.MEDIA_KIND_AUDIO: Feature.MEDIA_AUDIO,
    content_pb2.MEDIA_KIND_VOICE: Feature.MEDIA_VOICE,
    content_pb2.MEDIA_KIND_DOCUMENT: Feature.MEDIA_DOCUMENT,
    content_pb2.MEDIA_KIND_STICKER: Feature.MEDIA_STICKER,
}

# What each media kind may be shown as instead, best first. Every attachment is a file, so most can fall
# back to a document; a sticker is only ever worth showing as the image it is.
_MEDIA_FALLBACKS: dict[content_pb2.MediaKind.ValueType, tuple[content_pb2.MediaKind.ValueType, ...]] = {
    content_pb2.MEDIA_KIND_STICKER: (content_pb2.MEDIA_KIND_IMAGE,),
    content_pb2.MEDIA_KIND_VOICE: (content_pb2.MEDIA_KIND_AUDIO, content_pb2.MEDIA_KIND_DOCUMENT),
    content_pb2.MEDIA_KIND_AUDIO: (content_pb2.MEDIA_KIND_DOCUMENT,),
    content_pb2.MEDIA_KIND_VIDEO: (content_pb2.MEDIA_KIND_DOCUMENT,),
    content_pb2.MEDIA_KIND_IMAGE: (content_pb2.MEDIA_KIND_DOCUMENT,),
    content_pb2.MEDIA_KIND_DOCUMENT: (),
}

# Bodies with no mapping at all when their feature is missing, with the reason shown to the sender.
_REFUSALS = {
    "delete": (Feature.DELETES, "The recipient's app cannot delete messages for everyone."),
    "disappearing_timer": (Feature.DISAPPEARING, "The recipient's app does not support disappearing messages."),
    "receipt": (Feature.RECEIPTS, "The recipient's app does not support receipts."),
    "typing": (Feature.TYPING, "The recipient's app does not support typing indicators."),
}


class Adaptation(StrEnum):
    """One change ``downgrade`` made to content."""

    STICKER_AS_IMAGE = "sticker_as_image"
    MEDIA_AS_OTHER_KIND = "media_as_other_kind"
    REACTION_AS_TEXT = "reaction_as_text"
    EDIT_AS_CORRECTION = "edit_as_correction"
    QUOTE_INLINED = "quote_inlined"


@dataclass(frozen=True, slots=True)
class Adapted:
    """The content to send; ``changes`` is empty when it passed unchanged.

    Attributes:
        content: a new content message (the input is never modified).
        changes: what was changed, in the order applied.
    """

    content: content_pb2.Content
    changes: tuple[Adaptation, ...] = ()


@dataclass(frozen=True, slots=True)
class Refused:
    """The content cannot be delivered to this provider.

    Attributes:
        feature: the missing feature.
        reason: a sentence the sender's UI can show.
    """

    feature: Feature
    reason: str


def required_features(content: content_pb2.Content) -> frozenset[Feature]:
    """The features a provider needs to display ``content`` as it is.

    Args:
        content: a content message.

    Returns:
        The features, empty when the content has no body.
    """
    needed: set[Feature] = set()
    body = content.WhichOneof("body")
    if body == "text":
        needed.add(Feature.TEXT)
    elif body == "media":
        needed.add(_MEDIA_FEATURES.get(content.media.kind, Feature.MEDIA_DOCUMENT))
    elif body == "reaction":
        needed.add(Feature.REACTIONS)
    elif body == "edit":
        needed.add(Feature.EDITS)
    elif body is not None and body in _REFUSALS:
        needed.add(_REFUSALS[body][0])
    if content.HasField("quote"):
        needed.add(Feature.REPLIES)
    if content.expire_timer_seconds:
        needed.add(Feature.DISAPPEARING)
    if content.group_id:
        needed.add(Feature.GROUPS)
    return frozenset(needed)


def downgrade(content: content_pb2.Content, features: Collection[Feature]) -> Adapted | Refused:
    """Maps content to what a provider supports, or refuses it.

    Args:
        content: the content the sender wrote; not modified.
        features: the recipient provider's declared features.

    Returns:
        ``Adapted`` with the content to send (unchanged when the provider supports it all), or ``Refused``
        with the missing feature and a reason for the sender.

    Raises:
        InvalidContentError: ``content`` itself breaks the rules of ``check_content``.
    """
    check_content(content)
    supported = frozenset(features)
    out = content_pb2.Content()
    out.CopyFrom(content)
    changes: list[Adaptation] = []
    body = out.WhichOneof("body")

    if out.group_id and Feature.GROUPS not in supported:
        return Refused(Feature.GROUPS, "The recipient's app does not support group chats.")
    if out.expire_timer_seconds and Feature.DISAPPEARING not in supported:
        return Refused(Feature.DISAPPEARING, "The recipient's app does not support disappearing messages.")
    if body in _REFUSALS:
        feature, reason = _REFUSALS[body]
        return Adapted(out) if feature in supported else Refused(feature, reason)

    if body == "reaction" and Feature.REACTIONS not in supported:
        _reaction_as_text(out, supported)
        changes.append(Adaptation.REACTION_AS_TEXT)
    elif body == "edit" and Feature.EDITS not in supported:
        target = out.edit.target_message_id
        out.text.body = CORRECTION_PREFIX + out.edit.text  # setting text clears the edit in the oneof
        out.correction_of = target
        changes.append(Adaptation.EDIT_AS_CORRECTION)
    elif body == "media":
        refusal = _fit_media(out.media, supported, changes)
        if refusal is not None:
            return refusal

    if out.HasField("quote") and Feature.REPLIES not in supported:
        _inline_quote(out)
        changes.append(Adaptation.QUOTE_INLINED)
    if out.WhichOneof("body") == "text" and Feature.TEXT not in supported:
        return Refused(Feature.TEXT, "The recipient's app cannot display text messages.")
    return Adapted(out, tuple(changes))


def _reaction_as_text(out: content_pb2.Content, supported: frozenset[Feature]) -> None:
    reaction = out.reaction
    verb = "Removed the reaction" if reaction.remove else "Reacted"
    text = f"{verb} {reaction.emoji} to a message"
    target, author = reaction.target_message_id, reaction.target_author
    out.text.body = text  # setting text clears the reaction in the oneof
    # A provider that shows replies can at least point at the message reacted to.
    if Feature.REPLIES in supported:
        out.quote.message_id = target
        out.quote.author = author


def _fit_media(media: content_pb2.Media, supported: frozenset[Feature], changes: list[Adaptation]) -> Refused | None:
    if _MEDIA_FEATURES[media.kind] in supported:
        return None
    for kind in _MEDIA_FALLBACKS[media.kind]:
        if _MEDIA_FEATURES[kind] in supported:
            sticker = media.kind == content_pb2.MEDIA_KIND_STICKER
            media.kind = kind
            changes.append(Adaptation.STICKER_AS_IMAGE if sticker else Adaptation.MEDIA_AS_OTHER_KIND)
            return None
    name = content_pb2.MediaKind.Name(media.kind).removeprefix("MEDIA_KIND_").lower()
    return Refused(_MEDIA_FEATURES[media.kind], f"The recipient's app cannot receive {name} attachments.")


def _inline_quote(out: content_pb2.Content) -> None:
    snippet = out.quote.snippet[:MAX_SNIPPET_CHARS]
    out.ClearField("quote")
    if not snippet:
        return
    quoted = "\n".join(f"> {line}" for line in snippet.splitlines()) + "\n"
    if out.WhichOneof("body") == "text":
        out.text.body = quoted + out.text.body
    else:
        out.media.caption = quoted + out.media.caption
