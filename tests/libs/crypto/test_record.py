"""Session records: versioned serialization, with golden files of every format version ever written.

golden/state_v1.json holds records saved by format version 1 together with messages that were still in flight
when they were saved. A later format must keep reading them: these tests then exercise the migration path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from parley_crypto import (
    CiphertextMessage,
    DuplicateMessageError,
    IdentityKeyPair,
    InMemoryProtocolStore,
    InvalidStateError,
    MessageType,
    ProtocolAddress,
    SessionCipher,
    SessionRecord,
)

GOLDEN = json.loads((Path(__file__).parent / "golden" / "state_v1.json").read_text())
ALICE = ProtocolAddress("alice", 1)


@pytest.mark.parametrize("name", ["x3dh", "pqxdh"])
def test_golden_v1_record_still_decrypts_in_flight_messages(name: str) -> None:
    golden: dict[str, Any] = GOLDEN[name]
    raw = bytes.fromhex(golden["record"])
    assert raw[0] == 1
    record = SessionRecord.deserialize(raw)
    assert record.serialize() == raw, "reading and writing the current format is lossless"
    identity = IdentityKeyPair.deserialize(bytes.fromhex(golden["identity_key_pair"]))
    store = InMemoryProtocolStore(identity, 1)
    store.store_session(ALICE, record)
    cipher = SessionCipher(store, ALICE)
    with pytest.raises(DuplicateMessageError):
        cipher.decrypt(
            CiphertextMessage(MessageType(golden["duplicate"]["type"]), bytes.fromhex(golden["duplicate"]["body"]))
        )
    for message in golden["messages"]:
        body = CiphertextMessage(MessageType(message["type"]), bytes.fromhex(message["body"]))
        assert cipher.decrypt(body) == message["plaintext"].encode()


def test_round_trip_keeps_archived_sessions() -> None:
    identity = IdentityKeyPair.deserialize(bytes.fromhex(GOLDEN["x3dh"]["identity_key_pair"]))
    assert identity.public_key is not None
    first = SessionRecord.deserialize(bytes.fromhex(GOLDEN["x3dh"]["record"]))
    second = SessionRecord.deserialize(bytes.fromhex(GOLDEN["pqxdh"]["record"]))
    assert second.current is not None
    first.promote(second.current)
    again = SessionRecord.deserialize(first.serialize())
    assert len(again.previous) == 1
    assert again.serialize() == first.serialize()


@pytest.mark.parametrize("data", [b"", b"\x02", b"\x63", b"\x01\x0a\xff", b"\x01\x0a\x02\x08\x03"])
def test_malformed_or_unknown_format_raises_invalid_state(data: bytes) -> None:
    with pytest.raises(InvalidStateError):
        SessionRecord.deserialize(data)


def test_archive_is_bounded() -> None:
    state = SessionRecord.deserialize(bytes.fromhex(GOLDEN["x3dh"]["record"])).current
    assert state is not None
    record = SessionRecord()
    for _ in range(50):
        record.promote(state)
    assert len(record.previous) == 40


def test_corrupted_key_material_is_invalid_state() -> None:
    raw = bytes.fromhex(GOLDEN["x3dh"]["record"])
    record = SessionRecord.deserialize(raw)
    assert record.current is not None
    root_key = record.current.root_key
    with pytest.raises(InvalidStateError):
        SessionRecord.deserialize(raw.replace(b"\x22\x20" + root_key, b"\x22\x1f" + root_key[:31]))
