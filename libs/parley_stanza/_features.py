"""What a provider can display: the Python twin of the ``parley.common.v1.Feature`` proto enum.

Services map the proto enum to this one (``FEATURE_MEDIA_IMAGE`` <-> ``Feature.MEDIA_IMAGE``) so that the
downgrade logic here stays pure and independent of generated code.
"""

from __future__ import annotations

from enum import StrEnum


class Feature(StrEnum):
    """One capability a provider declares when it enlists."""

    TEXT = "text"
    MEDIA_IMAGE = "media_image"
    MEDIA_VIDEO = "media_video"
    MEDIA_AUDIO = "media_audio"
    MEDIA_VOICE = "media_voice"
    MEDIA_DOCUMENT = "media_document"
    MEDIA_STICKER = "media_sticker"
    REACTIONS = "reactions"
    REPLIES = "replies"
    EDITS = "edits"
    DELETES = "deletes"
    RECEIPTS = "receipts"
    TYPING = "typing"
    DISAPPEARING = "disappearing"
    GROUPS = "groups"
    CALLS = "calls"
    """Call signalling: a stanza kind the relay checks, never needed by content (``downgrade`` ignores it)."""
