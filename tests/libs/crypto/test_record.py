"""Session records: versioned serialization, with golden files of every format version ever written.

golden/state_v<N>.json holds records saved by format version N together with messages that were still in flight
when they were saved. A later format must keep reading them: these tests then exercise the migration path.
Version 2 added the SPQR state; its PQXDH record was saved mid-epoch (Bob sending his header chunks, one epoch
complete) and its in-flight messages arrive newest first, so both ratchets use skipped keys.
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
GOLDEN_V2 = json.loads((Path(__file__).parent / "golden" / "state_v2.json").read_text())
CURRENT_FORMAT = 2
ALICE = ProtocolAddress("alice", 1)


@pytest.mark.parametrize(("version", "name"), [(1, "x3dh"), (1, "pqxdh"), (2, "x3dh"), (2, "pqxdh")], ids=str)
def test_golden_record_still_decrypts_in_flight_messages(version: int, name: str) -> None:
    golden: dict[str, Any] = (GOLDEN if version == 1 else GOLDEN_V2)[name]
    raw = bytes.fromhex(golden["record"])
    assert raw[0] == version
    record = SessionRecord.deserialize(raw)
    assert record.current is not None
    # Format 1 predates SPQR; format 2's PQXDH session runs it.
    assert bool(record.current.pq_ratchet_state) == (version == 2 and name == "pqxdh")
    if version == CURRENT_FORMAT:
        assert record.serialize() == raw, "reading and writing the current format is lossless"
    else:
        rewritten = record.serialize()
        assert rewritten[0] == CURRENT_FORMAT
        assert SessionRecord.deserialize(rewritten).serialize() == rewritten, "migration is lossless"
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


@pytest.mark.parametrize("data", [b"", b"\x03", b"\x63", b"\x01\x0a\xff", b"\x01\x0a\x02\x08\x03"])
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
