"""Parsers and decryptors facing arbitrary bytes: typed errors only, never another exception, no state change."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_crypto import (
    CiphertextMessage,
    CryptoError,
    IdentityKeyPair,
    InMemoryProtocolStore,
    InvalidMessageError,
    MessageType,
    ProtocolAddress,
    SenderKeyRecord,
    SessionRecord,
    group_decrypt,
    process_sender_key_distribution_message,
)
from parley_crypto._wire import PreKeySignalMessage, SignalMessage, encode_addresses, service_id_binary

from .conftest import pair

TO_BOB, TO_ALICE, ALICE, BOB = pair(pq=False)
FIRST = TO_BOB.encrypt(b"a valid prekey message to mutate")
TO_ALICE.decrypt(FIRST)
VALID = TO_ALICE.encrypt(b"a valid message to mutate")


def _sessions() -> dict[object, bytes]:
    return {address: record.serialize() for address, record in BOB.store.sessions.items()}


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    def mutate(edits: dict[int, int]) -> bytes:
        data = bytearray(valid)
        for position, flip in edits.items():
            data[position] ^= flip
        return bytes(data)

    # Distinct positions and non-zero flips: every mutation really differs from the valid message.
    edits = st.dictionaries(st.integers(0, len(valid) - 1), st.integers(1, 255), min_size=1, max_size=4)
    return edits.map(mutate)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), _mutations(VALID.body), _mutations(FIRST.body)))
def test_parsers_raise_only_typed_errors(data: bytes) -> None:
    for parse in (
        SignalMessage.parse,
        PreKeySignalMessage.parse,
        SessionRecord.deserialize,
        SenderKeyRecord.deserialize,
    ):
        with contextlib.suppress(CryptoError):
            parse(data)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), _mutations(VALID.body)), prekey=st.booleans())
def test_session_decrypt_raises_only_typed_errors_and_changes_nothing(data: bytes, prekey: bool) -> None:
    before = _sessions()
    kind = MessageType.PREKEY if prekey else MessageType.WHISPER
    try:
        TO_BOB.decrypt(CiphertextMessage(kind, data))
    except CryptoError:
        assert _sessions() == before
    else:
        raise AssertionError("a forged message decrypted")


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200))
def test_group_paths_raise_only_typed_errors(data: bytes) -> None:
    store = InMemoryProtocolStore(IdentityKeyPair.generate(), 1)
    sender = ProtocolAddress("mallory", 1)
    for operation in (group_decrypt, process_sender_key_distribution_message):
        with contextlib.suppress(CryptoError):
            operation(store, sender, data)


ACI = "9d0652a3-dcc3-4d11-975f-74d61598733f"
ACI_BYTES = bytes.fromhex("9d0652a3dcc34d11975f74d61598733f")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (ACI, b"\x00" + ACI_BYTES),
        (ACI.upper(), b"\x00" + ACI_BYTES),
        ("PNI:" + ACI, b"\x01" + ACI_BYTES),
        ("pni:" + ACI, None),  # libsignal's prefix is case-sensitive
        (ACI.replace("-", ""), None),  # only the hyphenated form, as libsignal's parser
        ("{" + ACI + "}", None),
        ("urn:uuid:" + ACI, None),
        ("9d0652a3d-cc3-4d11-975f-74d61598733f", None),
        ("9d0652a3-dcc3-4d11-975f-74d6159873_f", None),
        ("alice", None),
    ],
)
def test_service_ids_are_read_as_libsignal_reads_them(name: str, expected: bytes | None) -> None:
    assert service_id_binary(name) == expected


def test_addresses_need_two_service_ids_and_byte_sized_device_ids() -> None:
    assert encode_addresses((ACI, 1), ("PNI:" + ACI, 127)) == b"\x00" + ACI_BYTES + b"\x01\x01" + ACI_BYTES + b"\x7f"
    assert encode_addresses((ACI, 1), ("bob", 1)) is None
    assert encode_addresses((ACI, 256), (ACI, 1)) is None


def test_addresses_of_another_wire_type_are_a_malformed_message() -> None:
    body = VALID.body
    # Field 6 as a varint instead of a byte string, inserted before the MAC.
    with pytest.raises(InvalidMessageError):
        SignalMessage.parse(body[:-8] + b"\x30\x01" + body[-8:])
