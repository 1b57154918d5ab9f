"""A device's messages as its user sees them: what was said, edited, deleted, when it disappears, and what a report
of it needs. The relay never sees any of this; the SDK keeps it beside the Signal-protocol state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from parley.content.v1 import content_pb2
from parley_sdk._errors import Refusal
from parley_stanza import Address, Message


@dataclass(frozen=True)
class StoredMessage:
    """One message of a chat, sent or received.

    Attributes:
        message_id: the sender's id for it.
        sender: the sending device.
        chat: the other user of the one-to-one chat.
        server_timestamp_ms: when the relay accepted it (edit and delete windows count from here).
        content: what it says now (after edits); None once deleted or disappeared.
        outgoing: sent by this device's own user (from this or another of its devices).
        edited: an edit replaced its text.
        expire_timer_s: seconds it lives once read (sent messages: once sent); 0 keeps it.
        expires_at_ms: when it disappears; None while its timer has not started.
        plaintext: the decrypted content bytes exactly as the commitment covers them (received messages only).
        franking_key: the franking key its content carried.
        commitment: the franking commitment outside the ciphertext.
        stamp: the relay's franking stamp.
    """

    message_id: str
    sender: Address
    chat: Address
    server_timestamp_ms: int
    content: content_pb2.Content | None
    outgoing: bool
    edited: bool = False
    expire_timer_s: int = 0
    expires_at_ms: int | None = None
    plaintext: bytes = b""
    franking_key: bytes = b""
    commitment: bytes = b""
    stamp: bytes = b""

    @property
    def author(self) -> Address:
        """The sending user: the only one whose edits and deletes of this message count."""
        return self.sender.user

    @property
    def deleted(self) -> bool:
        """Deleted for everyone, or disappeared."""
        return self.content is None


@dataclass(frozen=True)
class Tombstone:
    """A delete for everyone whose target has not arrived (yet); the target is suppressed if it comes later.

    Attributes:
        server_timestamp_ms: when the relay accepted the delete (the target's window is checked against it).
    """

    server_timestamp_ms: int


class MessageStore(Protocol):
    """Where a device keeps its messages; ``InMemoryMessageStore`` is the SDK's, a real client persists them.

    Messages are keyed by their author (the sending user) and id: ids are unique per sender only.
    """

    def get(self, author: Address, message_id: str) -> StoredMessage | None:
        """The message ``author`` sent with this id, or None."""

    def authors_of(self, message_id: str) -> list[Address]:
        """Every author with a message of this id (an edit naming another author's id is refused, not ignored)."""

    def put(self, message: StoredMessage) -> None:
        """Stores or replaces a message."""

    def tombstone(self, author: Address, message_id: str) -> Tombstone | None:
        """The delete waiting for this message, or None."""

    def put_tombstone(self, author: Address, message_id: str, tombstone: Tombstone) -> None:
        """Remembers a delete whose target has not arrived."""

    def chat_timer(self, chat: Address) -> int:
        """The chat's disappearing-message timer in seconds (0: off)."""

    def set_chat_timer(self, chat: Address, seconds: int) -> None:
        """Sets the chat's disappearing-message timer."""

    def purge_expired(self, now_ms: int) -> list[StoredMessage]:
        """Drops the content of every message whose timer ran out by ``now_ms``; returns them as they were."""


class InMemoryMessageStore:
    """A ``MessageStore`` in memory (tests, demos, and the default of ``DeviceClient.register``)."""

    def __init__(self) -> None:
        self._messages: dict[tuple[Address, str], StoredMessage] = {}
        self._tombstones: dict[tuple[Address, str], Tombstone] = {}
        self._timers: dict[Address, int] = {}

    def get(self, author: Address, message_id: str) -> StoredMessage | None:
        """The message ``author`` sent with this id, or None."""
        return self._messages.get((author, message_id))

    def authors_of(self, message_id: str) -> list[Address]:
        """Every author with a message of this id."""
        return [author for author, known in self._messages if known == message_id]

    def put(self, message: StoredMessage) -> None:
        """Stores or replaces a message."""
        self._messages[(message.author, message.message_id)] = message

    def tombstone(self, author: Address, message_id: str) -> Tombstone | None:
        """The delete waiting for this message, or None."""
        return self._tombstones.get((author, message_id))

    def put_tombstone(self, author: Address, message_id: str, tombstone: Tombstone) -> None:
        """Remembers a delete whose target has not arrived."""
        self._tombstones[(author, message_id)] = tombstone

    def chat_timer(self, chat: Address) -> int:
        """The chat's disappearing-message timer in seconds (0: off)."""
        return self._timers.get(chat, 0)

    def set_chat_timer(self, chat: Address, seconds: int) -> None:
        """Sets the chat's disappearing-message timer."""
        self._timers[chat] = seconds

    def purge_expired(self, now_ms: int) -> list[StoredMessage]:
        """Drops the content of every message whose timer ran out by ``now_ms``; returns them as they were."""
        expired = [
            m
            for m in self._messages.values()
            if m.content is not None and m.expires_at_ms is not None and m.expires_at_ms <= now_ms
        ]
        for message in expired:
            # The record stays (content, plaintext and franking material gone) so a late copy is a duplicate.
            self.put(StoredMessage(message.message_id, message.sender, message.chat, message.server_timestamp_ms,
                                   None, message.outgoing, expire_timer_s=message.expire_timer_s,
                                   expires_at_ms=message.expires_at_ms))  # fmt: skip
        return expired


class Outcome(StrEnum):
    """What processing one received message did."""

    NEW = "new"
    """A new message to show (its ``content``)."""
    EDITED = "edited"
    """An edit replaced the text of an earlier message (``target``, as it is now)."""
    DELETED = "deleted"
    """A delete for everyone removed an earlier message (``target``), or will suppress it if it comes later."""
    TIMER_CHANGED = "timer_changed"
    """The chat's disappearing-message timer changed."""
    DUPLICATE = "duplicate"
    """Processed before (a redelivery): acknowledge it and show nothing."""
    SUPPRESSED = "suppressed"
    """Its sender deleted it for everyone before it arrived: acknowledge it and show nothing."""
    REJECTED = "rejected"
    """It broke a rule (``refusal``, ``reason``): acknowledge it and show nothing."""


@dataclass(frozen=True)
class Received:
    """The outcome of processing one received message.

    Attributes:
        outcome: what happened.
        message: the stanza.
        content: the decrypted content (None for a duplicate, which is not decrypted again).
        target: for an edit or delete, the message it changed as stored now.
        refusal: for ``Outcome.REJECTED``, the rule broken.
        reason: for ``Outcome.REJECTED``, a sentence for logs or the UI.
        prekey_message: the sender's session is new or not yet answered by this device.
    """

    outcome: Outcome
    message: Message
    content: content_pb2.Content | None = None
    target: StoredMessage | None = None
    refusal: Refusal | None = None
    reason: str = ""
    prekey_message: bool = False
