"""The content message: the protobuf plaintext inside each Signal ciphertext, padded to hide its length.

``encode_content`` checks, serializes deterministically and pads; ``decode_content`` reverses it and refuses
anything malformed with ``InvalidContentError``. The padding is Signal's (PushTransportDetails): a 0x80 byte,
then zeros up to one byte short of the next multiple of 160 bytes. The byte short is for the cipher: AES-CBC
with PKCS7 then adds exactly one byte, so every ciphertext body is a whole number of 160-byte blocks and
reveals the length of its content only in those steps.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError

from parley.content.v1 import content_pb2
from parley_stanza._errors import InvalidContentError

PADDING_BLOCK = 160
_TERMINATOR = 0x80

# Bounds that keep one content message well inside one stanza payload (see Limits.max_text_length).
MAX_TEXT_BYTES = 16 * 1024
MAX_THUMBNAIL_BYTES = 8 * 1024
MAX_EMOJI_CHARS = 16
MAX_SNIPPET_CHARS = 512
MEDIA_KEY_BYTES = 32  # the random key parley_crypto expands with HKDF into AES-256, HMAC-SHA256 and IV
MEDIA_DIGEST_BYTES = 32  # SHA-256


def pad(plaintext: bytes) -> bytes:
    """Pads ``plaintext`` with 0x80 and zeros to one byte short of a multiple of ``PADDING_BLOCK`` bytes.

    Args:
        plaintext: any bytes, possibly empty.

    Returns:
        The padded bytes, ``PADDING_BLOCK * k - 1`` long for the smallest k that fits the terminator.
    """
    blocks = (len(plaintext) + 2 + PADDING_BLOCK - 1) // PADDING_BLOCK  # room for 0x80 and the cipher's byte
    return plaintext + b"\x80" + bytes(blocks * PADDING_BLOCK - 1 - len(plaintext) - 1)


def unpad(padded: bytes) -> bytes:
    """Removes the padding ``pad`` added.

    Like Signal, any length is accepted (clients with another block size interoperate); the padding itself
    must be well-formed.

    Raises:
        InvalidContentError: the bytes do not end in 0x80 followed by zeros.
    """
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != _TERMINATOR:
        raise InvalidContentError("padding does not end in 0x80 followed by zeros")
    return stripped[:-1]


def encode_content(content: content_pb2.Content) -> bytes:
    """Checks, serializes and pads a content message, ready for encryption.

    Args:
        content: the content message.

    Returns:
        The padded, deterministic serialization.

    Raises:
        InvalidContentError: the content breaks one of the rules ``check_content`` enforces.
    """
    check_content(content)
    return pad(content.SerializeToString(deterministic=True))


def decode_content(padded: bytes) -> content_pb2.Content:
    """Unpads, parses and checks decrypted content.

    Args:
        padded: the plaintext a Signal session decrypted.

    Returns:
        The content message.

    Raises:
        InvalidContentError: the padding, the protobuf or the content itself is malformed.
    """
    content = content_pb2.Content()
    try:
        content.ParseFromString(unpad(padded))
    except DecodeError as exc:
        raise InvalidContentError(f"not a content message: {exc}") from None
    check_content(content)
    return content


def check_content(content: content_pb2.Content) -> None:
    """Checks the rules the proto types cannot express.

    Exactly one body; enums set; message ids present where one is referred to; media keys and digests of the
    right size; text, snippets, emoji and thumbnails within bounds.

    Raises:
        InvalidContentError: naming the first rule broken.
    """
    body = content.WhichOneof("body")
    if body is None:
        raise InvalidContentError("content has no body")
    _BODY_CHECKS[body](content)
    if content.HasField("quote"):
        if body not in ("text", "media"):
            raise InvalidContentError(f"a quote goes with a text or media body, not {body}")
        _require(content.quote.message_id, "quote message_id")
        if len(content.quote.snippet) > MAX_SNIPPET_CHARS:
            raise InvalidContentError("quote snippet is too long")


def _check_reaction(content: content_pb2.Content) -> None:
    _require(content.reaction.target_message_id, "reaction target_message_id")
    _require(content.reaction.emoji, "reaction emoji")
    if len(content.reaction.emoji) > MAX_EMOJI_CHARS:
        raise InvalidContentError("reaction emoji is too long")


def _check_edit(content: content_pb2.Content) -> None:
    _require(content.edit.target_message_id, "edit target_message_id")
    _check_text(content.edit.text, "edit text")


def _check_receipt(content: content_pb2.Content) -> None:
    if content.receipt.type == content_pb2.RECEIPT_TYPE_UNSPECIFIED:
        raise InvalidContentError("receipt type is unspecified")
    if not content.receipt.message_ids or not all(content.receipt.message_ids):
        raise InvalidContentError("a receipt names at least one message id, none empty")


def _check_typing(content: content_pb2.Content) -> None:
    if content.typing.state == content_pb2.TYPING_STATE_UNSPECIFIED:
        raise InvalidContentError("typing state is unspecified")


def _require(value: str, what: str) -> None:
    if not value:
        raise InvalidContentError(f"{what} is empty")


def _check_text(text: str, what: str) -> None:
    _require(text, what)
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise InvalidContentError(f"{what} is over {MAX_TEXT_BYTES} bytes")


def _check_media(content: content_pb2.Content) -> None:
    media = content.media
    if media.kind == content_pb2.MEDIA_KIND_UNSPECIFIED:
        raise InvalidContentError("media kind is unspecified")
    _require(media.pointer, "media pointer")
    _require(media.mime_type, "media mime_type")
    if len(media.key) != MEDIA_KEY_BYTES:
        raise InvalidContentError(f"media key must be {MEDIA_KEY_BYTES} bytes")
    if len(media.digest) != MEDIA_DIGEST_BYTES:
        raise InvalidContentError(f"media digest must be {MEDIA_DIGEST_BYTES} bytes")
    if len(media.thumbnail) > MAX_THUMBNAIL_BYTES:
        raise InvalidContentError(f"media thumbnail is over {MAX_THUMBNAIL_BYTES} bytes")
    if len(media.caption.encode()) > MAX_TEXT_BYTES:
        raise InvalidContentError(f"media caption is over {MAX_TEXT_BYTES} bytes")


_BODY_CHECKS: dict[str, Callable[[content_pb2.Content], None]] = {
    "text": lambda content: _check_text(content.text.body, "text"),
    "media": _check_media,
    "reaction": _check_reaction,
    "edit": _check_edit,
    "delete": lambda content: _require(content.delete.target_message_id, "delete target_message_id"),
    "disappearing_timer": lambda content: None,  # any number of seconds is valid, 0 turning it off
    "receipt": _check_receipt,
    "typing": _check_typing,
}
