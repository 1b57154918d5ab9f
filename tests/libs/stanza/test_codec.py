"""Tests for parley_stanza._codec: canonical round trips, golden bytes, the schema and safe parsing."""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs

from parley_stanza import (
    Address,
    AddressKind,
    CallAction,
    CallSignal,
    ChatState,
    ChatStateKind,
    ErrorCode,
    ErrorStanza,
    ForbiddenMarkupError,
    Franking,
    GroupAction,
    GroupControl,
    InvalidAddressError,
    InvalidStanzaError,
    LimitExceededError,
    Limits,
    Message,
    MessageType,
    Payload,
    PayloadKind,
    Receipt,
    ReceiptType,
    Stanza,
    StanzaError,
    StanzaParseError,
    decode,
    encode,
)
from parley_stanza._codec import DEFAULT_LIMITS, _decode_canonical_message, _decode_tree
from parley_stanza._stanza import is_base64
from parley_stanza.testing import sample_message, sample_stanzas

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = etree.XMLSchema(etree.parse(str(ROOT / "protos/stanza/v1/stanza.xsd")))
EXAMPLES = ROOT / "protos/stanza/v1/examples"
GOLDEN = Path(__file__).resolve().parent / "golden"
NS = 'xmlns="urn:parley:stanza:1"'


def schema_accepts(data: bytes) -> bool:
    return bool(SCHEMA.validate(etree.fromstring(data)))


# --- golden files and examples ---


@pytest.mark.parametrize(("name", "stanza"), sorted(sample_stanzas().items()))
def test_golden_canonical_bytes(name: str, stanza: Stanza) -> None:
    golden = (GOLDEN / f"{name}.xml").read_bytes()
    assert encode(stanza) == golden
    assert decode(golden) == stanza


@pytest.mark.parametrize(("name", "stanza"), sorted(sample_stanzas().items()))
def test_examples_are_schema_valid_and_decode(name: str, stanza: Stanza) -> None:
    data = (EXAMPLES / f"{name}.xml").read_bytes()
    assert schema_accepts(data), SCHEMA.error_log
    assert decode(data) == stanza


def test_every_golden_file_has_a_sample() -> None:
    assert {path.stem for path in GOLDEN.glob("*.xml")} == set(sample_stanzas())
    assert {path.stem for path in EXAMPLES.glob("*.xml")} == set(sample_stanzas())


# --- property tests: every stanza form round-trips canonically and satisfies the schema ---

_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)
_groups = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
_providers = st.from_regex(r"[a-z][a-z0-9-]{1,31}", fullmatch=True)
_users = st.one_of(
    st.builds(Address, st.just(AddressKind.USERNAME), st.from_regex(r"[a-z0-9._-]{1,64}", fullmatch=True), _providers),
    st.builds(
        Address,
        st.just(AddressKind.PHONE),
        st.sampled_from(["+4915112345678", "+14155552671", "+447911123456", "+33612345678"]),
        _providers,
    ),
    st.builds(
        lambda local, domain, provider: Address.for_user(provider, "email", f"{local}@{domain}.example"),
        st.from_regex(r"[a-z0-9.+_-]{1,20}", fullmatch=True),
        st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True),
        _providers,
    ),
)
_devices = st.builds(lambda user, device: user.with_device(device), _users, st.integers(1, 2**31 - 1))
_ts = st.integers(0, 2**63 - 1)
_payloads = st.lists(
    st.builds(Payload.of, _devices, st.sampled_from(PayloadKind), st.binary(min_size=1, max_size=64)),
    min_size=1,
    max_size=4,
    unique_by=lambda payload: payload.device,
).map(tuple)
_frankings = st.none() | st.builds(
    Franking, st.binary(min_size=1, max_size=40), st.none() | st.binary(min_size=1, max_size=40)
)
_xml_text = st.text(st.characters(exclude_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r"), min_size=1, max_size=40)

_messages = st.one_of(
    st.builds(
        Message,
        id=_ids,
        sender=_devices,
        recipient=_users | _devices,
        ts=_ts,
        type=st.sampled_from([MessageType.CHAT, MessageType.SYSTEM]),
        payloads=_payloads,
        franking=_frankings,
        receipt_requested=st.booleans(),
    ),
    st.builds(
        Message,
        id=_ids,
        sender=_devices,
        recipient=st.none(),
        ts=_ts,
        type=st.just(MessageType.GROUP),
        payloads=_payloads,
        group=_groups,
        franking=_frankings,
        receipt_requested=st.booleans(),
    ),
)
_stanzas = st.one_of(
    _messages,
    st.builds(
        Receipt,
        _ids,
        _devices,
        _users,
        _ts,
        st.sampled_from(ReceiptType),
        st.lists(_ids, min_size=1, max_size=5, unique=True).map(tuple),
    ),
    st.builds(ChatState, _ids, _devices, _users, _ts, st.sampled_from(ChatStateKind)),
    st.builds(ChatState, _ids, _devices, st.none(), _ts, st.sampled_from(ChatStateKind), _groups),
    st.builds(
        ErrorStanza,
        _ids,
        _users | _devices,
        _ts,
        _ids,
        st.sampled_from(ErrorCode),
        st.none() | _xml_text,
        st.none() | _users,
    ),
    st.builds(
        GroupControl,
        _ids,
        _devices,
        _ts,
        _groups,
        st.sampled_from(GroupAction),
        st.lists(_users, max_size=4, unique=True).map(tuple),
    ),
    st.builds(CallSignal, _ids, _devices, _users, _ts, _ids, st.sampled_from(CallAction), _payloads),
)


@settings(max_examples=300, deadline=None)
@given(_stanzas)
def test_round_trip_is_canonical_and_schema_valid(stanza: Stanza) -> None:
    data = encode(stanza)
    assert decode(data) == stanza
    assert encode(decode(data)) == data
    assert schema_accepts(data), SCHEMA.error_log


# --- the canonical fast path: it reads exactly encode()'s output, and agrees with the tree path ---


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_canonical_messages_take_the_fast_path(message: Message) -> None:
    data = encode(message)
    assert decode(data) == message  # the first decode puts the addresses in the cache
    assert _decode_canonical_message(data, DEFAULT_LIMITS) == message


@settings(max_examples=200, deadline=None)
@given(
    _messages,
    st.builds(
        Limits,
        max_attributes=st.integers(1, 8),
        max_children=st.integers(1, 6),
        max_text_length=st.integers(1, 120),
    ),
)
def test_fast_path_agrees_with_the_tree_under_any_limits(message: Message, limits: Limits) -> None:
    data = encode(message)
    decode(data)
    fast = _decode_canonical_message(data, limits)
    try:
        expected = _decode_tree(data, limits)
    except StanzaError:
        assert fast is None
    else:
        assert fast == expected


@pytest.mark.parametrize(
    ("case", "old", "new"),
    [
        ("non-canonical recipient spelling", 'to="phone:+4915112345678@', 'to="phone:+49 151 12345678@'),
        ("non-canonical device spelling", 'device="phone:+4915112345678@', 'device="phone:+49 151 12345678@'),
        ("whitespace between elements", "><payload", ">\n<payload"),
        ("attributes in another order", 'ts="1763788800123" type="chat"', 'type="chat" ts="1763788800123"'),
        ("receipt spelled 1", 'receipt="true"', 'receipt="1"'),
        ("ts with a leading zero", 'ts="1763788800123"', 'ts="01763788800123"'),
        ("a character reference", 'id="0b6f', 'id="&#48;b6f'),
        ("an XML declaration", "<message", '<?xml version="1.0"?><message'),
    ],
)
def test_fast_path_declines_other_spellings_and_the_tree_decodes_them(case: str, old: str, new: str) -> None:
    data = _message(old, new)
    assert decode(data) == sample_message(2)  # which also puts any other spelling of an address in the cache
    assert _decode_canonical_message(data, DEFAULT_LIMITS) is None, case


def test_fast_path_declines_a_franking_with_unused_bits_set() -> None:
    message = sample_message(2, franked=True)
    data = encode(message)
    assert _decode_canonical_message(data, DEFAULT_LIMITS) == message
    commitment = message.franking.commitment if message.franking else b""
    end = data.index(b'="/>')  # the last data character of the commitment: its two low bits are unused
    altered = data[: end - 1] + bytes([data[end - 1] ^ 1]) + data[end:]
    assert _decode_canonical_message(altered, DEFAULT_LIMITS) is None  # encode() would not write it
    assert decode(altered).franking == Franking(commitment)  # same bytes: the tree path accepts it


@settings(max_examples=300, deadline=None)
@given(st.text("AB+/=", min_size=1, max_size=12).filter(lambda text: len(text) % 4 == 0))
def test_fast_path_accepts_exactly_the_ciphertexts_is_base64_accepts(ciphertext: str) -> None:
    canonical = encode(sample_message(2))
    decode(canonical)
    first = sample_message(2).payloads[0].ciphertext_b64
    data = canonical.replace(first.encode(), ciphertext.encode(), 1)
    fast = _decode_canonical_message(data, DEFAULT_LIMITS)
    if is_base64(ciphertext):
        assert fast is not None
        assert fast.payloads[0].ciphertext_b64 == ciphertext
    else:
        assert fast is None
        with pytest.raises(InvalidStanzaError):
            decode(data)


@pytest.mark.parametrize("ciphertext", ["AA=A", "A=A=", "A===", "====", "A=AA"])
def test_fast_path_declines_misplaced_padding(ciphertext: str) -> None:
    first = sample_message(2).payloads[0].ciphertext_b64
    data = encode(sample_message(2)).replace(first.encode(), ciphertext.encode(), 1)
    decode(encode(sample_message(2)))
    assert _decode_canonical_message(data, DEFAULT_LIMITS) is None
    with pytest.raises(InvalidStanzaError):
        decode(data)


def test_fast_path_declines_addresses_it_has_not_seen() -> None:
    message = sample_message(2)
    data = encode(message).replace(b"username:alice@birdy/1", b"username:never-seen-before@birdy/1")
    assert _decode_canonical_message(data, DEFAULT_LIMITS) is None
    assert decode(data).sender == Address.parse("username:never-seen-before@birdy/1")
    assert _decode_canonical_message(data, DEFAULT_LIMITS) == decode(data)  # cached now


# --- accepted non-canonical spellings ---


@pytest.mark.parametrize(
    "data",
    [
        # attributes in another order, whitespace between elements, an XML declaration
        b'<?xml version="1.0" encoding="utf-8"?>\n<chatstate state="typing" ts="1763788800123" '
        b'to="username:alice@birdy" from="phone:+4915112345678@gatekeeper/1" id="cs-1" ' + NS.encode() + b"/>",
        # a prefixed namespace instead of the default one; a non-canonical address spelling
        b'<p:chatstate xmlns:p="urn:parley:stanza:1" id="cs-1" from="phone:+49 151 12345678@gatekeeper/1" '
        b'to="username:Alice@birdy" ts="1763788800123" state="typing"/>',
    ],
)
def test_non_canonical_input_decodes_to_the_canonical_stanza(data: bytes) -> None:
    stanza = decode(data)
    assert encode(stanza) == (GOLDEN / "chatstate-typing.xml").read_bytes()


def test_pretty_printed_message_with_reordered_payload_attributes() -> None:
    canonical = encode(sample_message(2))
    shuffled = re.sub(rb'<payload device="([^"]*)" kind="([^"]*)">', rb'<payload kind="\2" device="\1">', canonical)
    assert shuffled != canonical
    shuffled = shuffled.replace(b"><payload", b">\n  <payload").replace(b"</message>", b"\n</message>")
    assert decode(shuffled) == decode(canonical)


def test_accepts_bytearray_and_memoryview() -> None:
    data = encode(sample_message(2))
    assert decode(bytearray(data)) == decode(memoryview(data)) == sample_message(2)


# --- rejected documents: the codec's typed error, and the schema agrees wherever XSD 1.0 can say it ---

_MESSAGE = encode(sample_message(2)).decode()
_AB = 'from="username:a@birdy/1" to="username:b@birdy"'
_PAYLOAD_OPEN = '<payload device="username:alice@birdy/2" kind="prekey">'


def _message(old: str, new: str) -> bytes:
    assert old in _MESSAGE
    return _MESSAGE.replace(old, new, 1).encode()


_INVALID: list[tuple[str, bytes, type[StanzaError], bool]] = [
    # (case, document, error, whether XSD 1.0 rejects it too)
    ("unknown root", f"<presence {NS}/>".encode(), InvalidStanzaError, True),
    (
        "wrong namespace",
        _MESSAGE.replace("urn:parley:stanza:1", "urn:parley:stanza:2").encode(),
        InvalidStanzaError,
        False,
    ),
    ("bad id", _message('id="0b6f', 'id="0 b6f'), InvalidStanzaError, True),
    ("missing id", _message('id="0b6f7c1e-5d0a-4a55-9a43-3f2d1c9e8b10" ', ""), InvalidStanzaError, True),
    (
        "sender without device",
        _message('from="username:alice@birdy/1"', 'from="username:alice@birdy"'),
        InvalidStanzaError,
        True,
    ),
    ("bad sender", _message('from="username:alice@birdy/1"', 'from="username:alice@B/1"'), InvalidAddressError, True),
    ("non-canonical ts", _message('ts="1763788800123"', 'ts="+1763788800123"'), InvalidStanzaError, True),
    ("ts beyond 2^63-1", _message('ts="1763788800123"', 'ts="9999999999999999999"'), InvalidStanzaError, False),
    ("unknown type", _message('type="chat"', 'type="broadcast"'), InvalidStanzaError, True),
    ("chat with a group", _message('type="chat"', 'type="chat" group="g1"'), InvalidStanzaError, False),
    ("group with a recipient", _message('type="chat"', 'type="group" group="g1"'), InvalidStanzaError, False),
    ("bad receipt flag", _message('receipt="true"', 'receipt="yes"'), InvalidStanzaError, True),
    ("unknown attribute", _message('type="chat"', 'type="chat" priority="high"'), InvalidStanzaError, True),
    ("text in message", _message("><payload", ">hello<payload"), InvalidStanzaError, True),
    ("text between payloads", _message("</payload><payload", "</payload>x<payload"), InvalidStanzaError, True),
    (
        "no payload",
        f'<message {NS} id="m" {_AB} ts="1" type="chat"/>'.encode(),
        InvalidStanzaError,
        True,
    ),
    ("unknown child", _message("<payload", "<body/><payload"), InvalidStanzaError, True),
    ("undeclared prefix on a child", _message("<payload", "<x:payload/><payload"), StanzaParseError, False),
    ("undeclared prefix on the root", _MESSAGE.replace("<message", "<x:message").encode(), StanzaParseError, False),
    (
        "franking after payload",
        _message("</message>", '<franking commitment="AAAA"/></message>'),
        InvalidStanzaError,
        True,
    ),
    ("payload kind", _message('kind="prekey"', 'kind="plaintext"'), InvalidStanzaError, True),
    ("payload without device", _message(_PAYLOAD_OPEN, '<payload kind="prekey">'), InvalidStanzaError, True),
    ("payload device without /n", _message("username:alice@birdy/2", "username:alice@birdy"), InvalidStanzaError, True),
    ("payload extra attribute", _message('kind="prekey"', 'kind="prekey" x="1"'), InvalidStanzaError, True),
    ("payload not base64", _message(_PAYLOAD_OPEN, _PAYLOAD_OPEN + "*"), InvalidStanzaError, True),
    ("payload with whitespace", _message(_PAYLOAD_OPEN, _PAYLOAD_OPEN + "\n"), InvalidStanzaError, True),
    (
        "empty payload",
        _message(_PAYLOAD_OPEN, _PAYLOAD_OPEN + "</payload><payload kind='prekey' device='username:x@birdy/9'>"),
        InvalidStanzaError,
        True,
    ),
    (
        "duplicate device",
        _message("phone:+4915112345678@gatekeeper/1", "username:alice@birdy/2"),
        InvalidStanzaError,
        False,
    ),
    ("nested element in payload", _message(_PAYLOAD_OPEN, _PAYLOAD_OPEN + "<x/>"), InvalidStanzaError, True),
    (
        "franking with text",
        _message("<payload", '<franking commitment="AAAA">x</franking><payload'),
        InvalidStanzaError,
        True,
    ),
    (
        "receipt without ids",
        f'<receipt {NS} id="r" {_AB} ts="1" type="read"/>'.encode(),
        InvalidStanzaError,
        True,
    ),
    (
        "receipt duplicate ids",
        f'<receipt {NS} id="r" {_AB} ts="1" type="read"><ref id="m"/><ref id="m"/></receipt>'.encode(),
        InvalidStanzaError,
        False,
    ),
    (
        "chatstate with text",
        f'<chatstate {NS} id="c" {_AB} ts="1" state="typing"> </chatstate>'.encode(),
        InvalidStanzaError,
        True,
    ),
    (
        "chatstate with to and group",
        f'<chatstate {NS} id="c" {_AB} group="g" ts="1" state="typing"/>'.encode(),
        InvalidStanzaError,
        False,
    ),
    (
        "error code",
        f'<error {NS} id="e" to="username:b@birdy" ts="1" ref="m" code="oops"/>'.encode(),
        InvalidStanzaError,
        True,
    ),
    (
        "error with child",
        f'<error {NS} id="e" to="username:b@birdy" ts="1" ref="m" code="internal"><x/></error>'.encode(),
        InvalidStanzaError,
        True,
    ),
    (
        "group-control member",
        f'<group-control {NS} id="g" from="username:a@birdy/1" ts="1" group="g" action="add">'
        '<member address="x"/></group-control>'.encode(),
        InvalidAddressError,
        True,
    ),
    (
        "call without payload",
        f'<call {NS} id="c" {_AB} ts="1" call-id="k" action="offer"/>'.encode(),
        InvalidStanzaError,
        True,
    ),
]


@pytest.mark.parametrize(("case", "data", "error", "schema_rejects"), _INVALID, ids=[c[0] for c in _INVALID])
def test_invalid_documents_are_rejected(case: str, data: bytes, error: type[StanzaError], schema_rejects: bool) -> None:
    with pytest.raises(error):
        decode(data)
    if schema_rejects:
        assert not schema_accepts(data), case


# --- safe parsing ---

_BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<error xmlns="urn:parley:stanza:1" id="e" to="username:b@birdy" ts="1" ref="m" code="internal">&lol9;</error>"""

_XXE = b"""<!DOCTYPE error [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<error xmlns="urn:parley:stanza:1" id="e" to="username:b@birdy" ts="1" ref="m" code="internal">&xxe;</error>"""

_XXE_NETWORK = b"""<!DOCTYPE error SYSTEM "http://127.0.0.1:9/evil.dtd">
<error xmlns="urn:parley:stanza:1" id="e" to="username:b@birdy" ts="1" ref="m" code="internal">&xxe;</error>"""

_ERROR = b'<error xmlns="urn:parley:stanza:1" id="e" to="username:b@birdy" ts="1" ref="m" code="internal">'


def _peak_bytes_while(data: bytes, error: type[StanzaError]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(error):
            decode(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_BILLION_LAUGHS, ForbiddenMarkupError),
        (_XXE, ForbiddenMarkupError),
        (_XXE_NETWORK, ForbiddenMarkupError),
        (_ERROR + b"<!-- hi -->x</error>", ForbiddenMarkupError),
        (_ERROR + b"<![CDATA[x]]></error>", ForbiddenMarkupError),
        (_ERROR + b"<?php evil() ?></error>", ForbiddenMarkupError),
        (b'<?xml-stylesheet href="x"?>' + _ERROR + b"x</error>", ForbiddenMarkupError),
        (b'<?xml version="1.0"?><?xml version="1.0"?>' + _ERROR + b"x</error>", ForbiddenMarkupError),
        (_ERROR + b"&undefined;</error>", StanzaParseError),
        (b"", StanzaParseError),
        (b"<error", StanzaParseError),
        (_ERROR + b"</error><error/>", StanzaParseError),
        (b"\xff\xfe" + "<!DOCTYPE x>".encode("utf-16-le"), StanzaParseError),  # UTF-16 is not parsed
    ],
)
def test_dangerous_markup_is_refused_with_little_memory(data: bytes, error: type[StanzaError]) -> None:
    assert _peak_bytes_while(data, error) < 256 * 1024


def test_50_megabyte_stanza_is_refused_before_parsing() -> None:
    data = _ERROR + b"A" * (50 * 1024 * 1024) + b"</error>"
    tracemalloc.start()
    try:
        with pytest.raises(LimitExceededError) as caught:
            decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.limit == "max_bytes"
    assert caught.value.actual == len(data)
    assert peak < 64 * 1024


def test_10000_deep_nesting_is_refused_with_little_memory() -> None:
    data = _ERROR.replace(b">", b"><a>" * 1, 1) + b"<a>" * 10_000 + b"</a>" * 10_001 + b"</error>"
    with pytest.raises(LimitExceededError) as caught:
        decode(data)
    assert caught.value.limit == "max_depth"
    assert _peak_bytes_while(data, LimitExceededError) < 1024 * 1024


def test_depth_limit_applies_below_libxml2s_own() -> None:
    payload = _PAYLOAD_OPEN + "<a>" * 5 + "</a>" * 5
    with pytest.raises(LimitExceededError) as caught:
        decode(_message(_PAYLOAD_OPEN, payload))
    assert (caught.value.limit, caught.value.maximum) == ("max_depth", 4)
    with pytest.raises(InvalidStanzaError):  # within the bound, but still not a valid payload
        decode(_message(_PAYLOAD_OPEN, payload), Limits(max_depth=10))


def test_configurable_limits() -> None:
    data = encode(sample_message(5))
    assert decode(data, Limits(max_bytes=len(data), max_children=5)) == sample_message(5)
    cases = [
        (Limits(max_bytes=len(data) - 1), "max_bytes"),
        (Limits(max_children=4), "max_children"),
        (Limits(max_attributes=5), "max_attributes"),
        (Limits(max_text_length=100), "max_text_length"),
    ]
    for limits, name in cases:
        with pytest.raises(LimitExceededError) as caught:
            decode(data, limits)
        assert caught.value.limit == name


def test_error_text_length_limit() -> None:
    with pytest.raises(LimitExceededError):
        decode(_ERROR + b"x" * 101 + b"</error>", Limits(max_text_length=100))


@pytest.mark.parametrize("field", ["max_bytes", "max_attributes", "max_children", "max_text_length"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: 0})


def test_limits_depth_must_allow_a_stanza() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=1)
