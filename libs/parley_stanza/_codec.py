"""The stanza codec: untrusted bytes to typed stanzas and back, safely and fast.

Decoding defends in layers, cheapest first, so hostile input is refused before it costs memory:

1. the size bound, checked on ``len(data)`` before anything is parsed;
2. a byte scan that refuses every ``<!`` (DOCTYPE, hence entity declarations, billion laughs and XXE;
   comments; CDATA) and every ``<?`` (processing instructions) except one leading XML declaration;
3. for a message that is byte for byte the canonical encoding ``encode`` writes (what relays see nearly
   always), a recognizer of exactly that form, which checks every value and bound and builds the message
   without a parser; it declines everything else, which goes on to
4. libxml2 through lxml with DTD loading, entity resolution and network access off, the document encoding
   forced to UTF-8 (so a UTF-16 document cannot slip markup past the byte scan) and its own hard depth
   limit of 256, which stops a 10,000-deep nesting early;
5. the configured bounds on depth, attributes, children and text, then a hand-written check of the
   structure while the typed objects are built.

Validating against the XSD is not on this path: it costs several times the parse itself, and the hand
check accepts exactly the documents the schema accepts (the tests check both on the same inputs).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs; lxml-stubs lags lxml 6

from parley_stanza._address import Address, address_cache
from parley_stanza._address import _parse_cached as _parse_address
from parley_stanza._errors import (
    ForbiddenMarkupError,
    InvalidAddressError,
    InvalidStanzaError,
    LimitExceededError,
    StanzaParseError,
)
from parley_stanza._stanza import (
    _BASE64_ALPHABET,
    GROUP_ID_PATTERN,
    ID_PATTERN,
    MAX_TIMESTAMP,
    NAMESPACE,
    CallAction,
    CallSignal,
    ChatState,
    ChatStateKind,
    ErrorCode,
    ErrorStanza,
    Franking,
    GroupAction,
    GroupControl,
    Message,
    MessageType,
    Payload,
    PayloadKind,
    Receipt,
    ReceiptType,
    Stanza,
    is_base64,
)

# libxml2's own nesting limit without XML_PARSE_HUGE; documents deeper than this never finish parsing.
LIBXML2_MAX_DEPTH = 256


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds a decoded document must stay within; exceeding one raises ``LimitExceededError``.

    Attributes:
        max_bytes: size of the encoded document.
        max_depth: element nesting, the root element being depth 1 (valid stanzas need 2).
        max_attributes: attributes on any one element.
        max_children: child elements of the root (payloads, receipt ids, members).
        max_text_length: characters in any one text node (a base64 ciphertext, an error text).
    """

    max_bytes: int = 256 * 1024
    max_depth: int = 4
    max_attributes: int = 16
    max_children: int = 1024
    max_text_length: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_attributes", "max_children", "max_text_length"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int")
        if type(self.max_depth) is not int or self.max_depth < 2:
            raise ValueError("max_depth must be an int of at least 2: every stanza nests that deep")


DEFAULT_LIMITS = Limits()

# One parser for the process: lxml documents sharing a parser between threads as harmless (each thread gets its
# own libxml2 context), and building one per call would cost more than parsing a typical stanza.
_PARSER = etree.XMLParser(
    encoding="utf-8",
    resolve_entities=False,
    load_dtd=False,
    dtd_validation=False,
    no_network=True,
    huge_tree=False,
    collect_ids=False,
    remove_blank_text=False,
)
_MARKUP = re.compile(rb"<[!?]")
_XML_DECLARATION = re.compile(
    rb"<\?xml[ \t\r\n]+version=([\"'])1\.0\1([ \t\r\n]+encoding=([\"'])(?i:utf-8)\3)?[ \t\r\n]*\?>"
)

_NS = "{" + NAMESPACE + "}"
_MESSAGE = _NS + "message"
_PAYLOAD = _NS + "payload"
_FRANKING = _NS + "franking"
_RECEIPT = _NS + "receipt"
_REF = _NS + "ref"
_CHATSTATE = _NS + "chatstate"
_ERROR = _NS + "error"
_GROUP_CONTROL = _NS + "group-control"
_MEMBER = _NS + "member"
_CALL = _NS + "call"

_a2b = binascii.a2b_base64
_b2a = binascii.b2a_base64


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Stanza:
    """Parses and validates one stanza.

    Args:
        data: the encoded stanza, UTF-8 XML in the ``urn:parley:stanza:1`` namespace (bytes-like).
        limits: the bounds to enforce; ``DEFAULT_LIMITS`` unless the caller needs other ones.

    Returns:
        The typed stanza.

    Raises:
        LimitExceededError: the document exceeds one of ``limits``.
        ForbiddenMarkupError: the document has a DOCTYPE, entity declaration, processing instruction,
            comment or CDATA section.
        StanzaParseError: the bytes are not well-formed XML.
        InvalidAddressError: an address attribute is invalid.
        InvalidStanzaError: the XML is not a valid stanza.
    """
    if type(data) is not bytes:
        data = bytes(data)  # bytearray or memoryview; a str is a caller's bug and raises TypeError
    if len(data) > limits.max_bytes:
        raise LimitExceededError("max_bytes", limits.max_bytes, len(data))
    # Two memchr scans for '!' and '?' are ~10x cheaper than searching for '<!' and '<?' directly, and
    # neither character occurs in a typical stanza, so the regex runs only when one does.
    if (b"!" in data or b"?" in data) and _MARKUP.search(data):
        _refuse_markup(data)
    if data.startswith(b"<message "):
        message = _decode_canonical_message(data, limits)
        if message is not None:
            return message
    return _decode_tree(data, limits)


def _decode_tree(data: bytes, limits: Limits) -> Stanza:
    """Parses any stanza with libxml2 and checks it while reading the tree; the general path of ``decode``."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        if "Excessive depth" in str(exc):
            raise LimitExceededError("max_depth", limits.max_depth, LIBXML2_MAX_DEPTH + 1) from None
        raise StanzaParseError(f"not well-formed XML: {str(exc)[:200]}") from None
    decoder = _DECODERS.get(root.tag)
    if decoder is None:
        raise InvalidStanzaError(f"unknown stanza element {str(root.tag)[:80]!r}")
    return decoder(root, limits)


def _refuse_markup(data: bytes) -> None:
    declaration = _XML_DECLARATION.match(data)
    rest = data[declaration.end() :] if declaration else data
    if b"<!" in rest:
        raise ForbiddenMarkupError("DOCTYPE, comments and CDATA sections are not allowed in stanzas")
    if b"<?" in rest:
        raise ForbiddenMarkupError("processing instructions are not allowed in stanzas")


def _check_root(root: Any, limits: Limits, attributes: int) -> int:
    """Checks the root's attribute count and text, and returns its number of children."""
    count = len(root.attrib)
    if count > limits.max_attributes:
        raise LimitExceededError("max_attributes", limits.max_attributes, count)
    if count != attributes:
        raise InvalidStanzaError(f"missing or unknown attribute on <{_local(root)}>")
    text = root.text
    if text is not None and not text.isspace():
        raise InvalidStanzaError(f"unexpected text in <{_local(root)}>")
    children = len(root)
    if children > limits.max_children:
        raise LimitExceededError("max_children", limits.max_children, children)
    return children


def _check_leaf(child: Any, limits: Limits, attributes: int) -> None:
    """Checks a child of the root: no children of its own, its attribute count, no text after it."""
    if len(child):
        _refuse_nesting(child, limits)
    count = len(child.attrib)
    if count > limits.max_attributes:
        raise LimitExceededError("max_attributes", limits.max_attributes, count)
    if count != attributes:
        raise InvalidStanzaError(f"missing or unknown attribute on <{_local(child)}>")
    tail = child.tail
    if tail is not None and not tail.isspace():
        raise InvalidStanzaError("unexpected text between elements")


def _refuse_nesting(child: Any, limits: Limits) -> None:
    # Only reached on invalid input, so the walk may be slow; it stops as soon as the bound is passed.
    depth_of = {child: 2}
    for element in child.iterdescendants():
        depth = depth_of[element.getparent()] + 1
        if depth > limits.max_depth:
            raise LimitExceededError("max_depth", limits.max_depth, depth)
        depth_of[element] = depth
    raise InvalidStanzaError(f"<{_local(child)}> must not have child elements")


def _local(element: Any) -> str:
    # Not etree.QName: it raises ValueError on the tag libxml2 leaves for an undeclared prefix ("p:name").
    return str(element.tag).rpartition("}")[2][:40]


def _required(value: str | None, what: str) -> str:
    if value is None:
        raise InvalidStanzaError(f"missing attribute {what!r}")
    return value


def _address(value: str | None, what: str) -> Address:
    if value is None:
        raise InvalidStanzaError(f"missing attribute {what!r}")
    try:
        return Address.parse(value)
    except InvalidAddressError as exc:
        raise InvalidAddressError(f"{what}: {exc}") from None


def _ts(value: str | None) -> int:
    # isdigit alone accepts non-ASCII digits that int() would also take; stanzas only use ASCII.
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        raise InvalidStanzaError(f"ts must be decimal milliseconds: {str(value)[:24]!r}")
    ts = int(value)
    if ts > MAX_TIMESTAMP:
        raise InvalidStanzaError(f"ts is beyond 2^63-1: {value!r}")
    return ts


def _enum(lookup: dict[str, Any], value: str | None, what: str) -> Any:
    member = lookup.get(value) if value is not None else None
    if member is None:
        raise InvalidStanzaError(f"{what} must be one of {sorted(lookup)}: {str(value)[:24]!r}")
    return member


def _base64(text: str | None, limits: Limits, what: str) -> bytes:
    if text is None:
        raise InvalidStanzaError(f"empty {what}")
    if len(text) > limits.max_text_length:
        raise LimitExceededError("max_text_length", limits.max_text_length, len(text))
    if not is_base64(text):
        raise InvalidStanzaError(f"{what} is not standard, padded base64")
    return _a2b(text)


_MESSAGE_TYPES = {m.value: m for m in MessageType}
_PAYLOAD_KINDS = {m.value: m for m in PayloadKind}
_RECEIPT_TYPES = {m.value: m for m in ReceiptType}
_CHAT_STATES = {m.value: m for m in ChatStateKind}
_ERROR_CODES = {m.value: m for m in ErrorCode}
_GROUP_ACTIONS = {m.value: m for m in GroupAction}
_CALL_ACTIONS = {m.value: m for m in CallAction}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


# The hot path builds Message and Payload without their constructors: a frozen dataclass's __init__ costs
# ~150 ns a field through object.__setattr__, more than the rest of the decoding together. The decoder makes
# the same checks as the constructors' __post_init__ (the fuzz tests rebuild every decoded stanza through its
# constructor to prove it), and assigns the slots directly.
_new = object.__new__
_set_device, _set_kind, _set_ciphertext = (
    Payload.__dict__[name].__set__ for name in ("device", "kind", "ciphertext_b64")
)
(
    _set_id,
    _set_sender,
    _set_recipient,
    _set_ts,
    _set_type,
    _set_payloads,
    _set_group,
    _set_franking,
    _set_receipt_requested,
) = (
    Message.__dict__[name].__set__
    for name in ("id", "sender", "recipient", "ts", "type", "payloads", "group", "franking", "receipt_requested")
)
_set_commitment, _set_stamp = (Franking.__dict__[name].__set__ for name in ("commitment", "stamp"))
_id_match = ID_PATTERN.fullmatch
_group_match = GROUP_ID_PATTERN.fullmatch


def _payloads(children: Any, limits: Limits) -> tuple[Payload, ...]:
    max_text = limits.max_text_length
    cache_get = address_cache.get
    payloads = []
    devices = set()
    for child in children:
        if child.tag != _PAYLOAD:
            raise InvalidStanzaError(f"unexpected element <{_local(child)}> where <payload> belongs")
        if len(child):
            _refuse_nesting(child, limits)
        items = child.items()
        if len(items) != 2:
            if len(items) > limits.max_attributes:
                raise LimitExceededError("max_attributes", limits.max_attributes, len(items))
            raise InvalidStanzaError("<payload> has exactly the attributes device and kind")
        (first_name, device_text), (second_name, kind_text) = items
        if first_name != "device" or second_name != "kind":
            device_text, kind_text = _payload_attributes(items)
        tail = child.tail
        if tail is not None and not tail.isspace():
            raise InvalidStanzaError("unexpected text between elements")
        device = cache_get(device_text) or _parse_address(device_text)
        if device.device is None:
            raise InvalidStanzaError(f"payload device has no /device: {device_text[:64]!r}")
        kind = _PAYLOAD_KINDS.get(kind_text)
        if kind is None:
            raise InvalidStanzaError(f"payload kind must be one of {sorted(_PAYLOAD_KINDS)}")
        text = child.text
        # is_base64, inlined: this loop is the codec's hottest.
        length = len(text) if text is not None else 0
        if not length or length % 4 or length > max_text or not text.isascii():
            _base64(text, limits, "payload")  # raises the precise error
        core = text.rstrip("=") if text[-1] == "=" else text
        if length - len(core) > 2 or core.encode("ascii").translate(None, _BASE64_ALPHABET):
            raise InvalidStanzaError("payload is not standard, padded base64")
        payload = _new(Payload)
        _set_device(payload, device)
        _set_kind(payload, kind)
        _set_ciphertext(payload, text)
        payloads.append(payload)
        devices.add(device._text)  # canonical text: other spellings of one device collide here too
    if len(devices) != len(payloads):
        raise InvalidStanzaError("two payloads for the same device")
    return tuple(payloads)


def _payload_attributes(items: list[tuple[str, str]]) -> tuple[str, str]:
    """The device and kind of a payload whose two attributes are not in the canonical order."""
    attributes = dict(items)
    if attributes.keys() != {"device", "kind"}:
        raise InvalidStanzaError("<payload> has exactly the attributes device and kind")
    return attributes["device"], attributes["kind"]


def _decode_message(root: Any, limits: Limits) -> Message:
    # One get() per attribute plus len(attrib) measured faster than items(), or keys() and values() into a dict.
    get = root.get
    message_id = get("id")
    sender_text = get("from")
    recipient_text = get("to")
    group = get("group")
    receipt = get("receipt")
    count = len(root.attrib)
    if count > limits.max_attributes:
        raise LimitExceededError("max_attributes", limits.max_attributes, count)
    if count != 4 + (recipient_text is not None) + (group is not None) + (receipt is not None):
        raise InvalidStanzaError("missing or unknown attribute on <message>")
    if not _children(root, limits):
        raise InvalidStanzaError("a message needs at least one payload")
    if message_id is None or not _id_match(message_id):
        raise InvalidStanzaError(f"id must match {ID_PATTERN.pattern}: {str(message_id)[:64]!r}")
    sender = address_cache.get(sender_text) or _address(sender_text, "from")
    if sender.device is None:
        raise InvalidStanzaError("sender must be the Address of a device (with /device)")
    message_type = _MESSAGE_TYPES.get(get("type"))
    if message_type is None:
        raise InvalidStanzaError(f"type must be one of {sorted(_MESSAGE_TYPES)}")
    recipient = _message_recipient(message_type, recipient_text, group)
    elements = iter(root)
    franking = None
    first = root[0]
    if first.tag == _FRANKING:
        next(elements)
        franking = _franking(first, limits)
    payloads = _payloads(elements, limits)
    if not payloads:
        raise InvalidStanzaError("a message needs at least one payload")
    message = _new(Message)
    _set_id(message, message_id)
    _set_sender(message, sender)
    _set_recipient(message, recipient)
    _set_ts(message, _ts(get("ts")))
    _set_type(message, message_type)
    _set_payloads(message, payloads)
    _set_group(message, group)
    _set_franking(message, franking)
    _set_receipt_requested(message, False if receipt is None else _enum(_BOOLEANS, receipt, "receipt"))
    return message


def _children(root: Any, limits: Limits) -> int:
    """Checks that the root of an element-only stanza has no text and not too many children; counts them."""
    text = root.text
    if text is not None and not text.isspace():
        raise InvalidStanzaError(f"unexpected text in <{_local(root)}>")
    children = len(root)
    if children > limits.max_children:
        raise LimitExceededError("max_children", limits.max_children, children)
    return children


def _message_recipient(message_type: MessageType, recipient_text: str | None, group: str | None) -> Address | None:
    """The recipient of a message, after checking that group messages have a group and the others a 'to'."""
    if message_type is MessageType.GROUP:
        if recipient_text is not None or group is None or not _group_match(group):
            raise InvalidStanzaError("a group message has a valid group attribute and no 'to'")
        return None
    if group is not None:
        raise InvalidStanzaError(f"a {message_type.value} message has 'to', not 'group'")
    return address_cache.get(recipient_text) or _address(recipient_text, "to")  # type: ignore[arg-type]  # a None key finds nothing


def _franking(element: Any, limits: Limits) -> Franking:
    if len(element):
        _refuse_nesting(element, limits)
    stamp = element.get("stamp")
    count = len(element.attrib)
    if count > limits.max_attributes:
        raise LimitExceededError("max_attributes", limits.max_attributes, count)
    if count != 1 + (stamp is not None) or element.text is not None:
        raise InvalidStanzaError("<franking> is empty and has a commitment and an optional stamp")
    tail = element.tail
    if tail is not None and not tail.isspace():
        raise InvalidStanzaError("unexpected text between elements")
    franking = _new(Franking)
    _set_commitment(franking, _base64(element.get("commitment"), limits, "franking commitment"))
    _set_stamp(franking, None if stamp is None else _base64(stamp, limits, "franking stamp"))
    return franking


def _decode_receipt(root: Any, limits: Limits) -> Receipt:
    get = root.get
    _check_root(root, limits, 5)
    message_ids = []
    for child in root:
        if child.tag != _REF:
            raise InvalidStanzaError(f"unexpected element <{_local(child)}> where <ref> belongs")
        _check_leaf(child, limits, 1)
        if child.text is not None:
            raise InvalidStanzaError("<ref> is empty")
        message_ids.append(_required(child.get("id"), "id"))
    return Receipt(
        _required(get("id"), "id"),
        _address(get("from"), "from"),
        _address(get("to"), "to"),
        _ts(get("ts")),
        _enum(_RECEIPT_TYPES, get("type"), "type"),
        tuple(message_ids),
    )


def _decode_chatstate(root: Any, limits: Limits) -> ChatState:
    get = root.get
    recipient = get("to")
    group = get("group")
    if _check_root(root, limits, 4 + (recipient is not None) + (group is not None)) or root.text is not None:
        raise InvalidStanzaError("<chatstate> is empty")
    return ChatState(
        _required(get("id"), "id"),
        _address(get("from"), "from"),
        None if recipient is None else _address(recipient, "to"),
        _ts(get("ts")),
        _enum(_CHAT_STATES, get("state"), "state"),
        group,
    )


def _decode_error(root: Any, limits: Limits) -> ErrorStanza:
    get = root.get
    sender = get("from")
    count = len(root.attrib)
    if count > limits.max_attributes:
        raise LimitExceededError("max_attributes", limits.max_attributes, count)
    if count != 5 + (sender is not None):
        raise InvalidStanzaError("unknown attribute on <error>")
    if len(root):
        raise InvalidStanzaError("<error> has text, not child elements")
    text = root.text
    if text is not None and len(text) > limits.max_text_length:
        raise LimitExceededError("max_text_length", limits.max_text_length, len(text))
    return ErrorStanza(
        _required(get("id"), "id"),
        _address(get("to"), "to"),
        _ts(get("ts")),
        _required(get("ref"), "ref"),
        _enum(_ERROR_CODES, get("code"), "code"),
        text or None,
        None if sender is None else _address(sender, "from"),
    )


def _decode_group_control(root: Any, limits: Limits) -> GroupControl:
    get = root.get
    _check_root(root, limits, 5)
    members = []
    for child in root:
        if child.tag != _MEMBER:
            raise InvalidStanzaError(f"unexpected element <{_local(child)}> where <member> belongs")
        _check_leaf(child, limits, 1)
        if child.text is not None:
            raise InvalidStanzaError("<member> is empty")
        members.append(_address(child.get("address"), "address"))
    return GroupControl(
        _required(get("id"), "id"),
        _address(get("from"), "from"),
        _ts(get("ts")),
        _required(get("group"), "group"),
        _enum(_GROUP_ACTIONS, get("action"), "action"),
        tuple(members),
    )


def _decode_call(root: Any, limits: Limits) -> CallSignal:
    get = root.get
    if not _check_root(root, limits, 6):
        raise InvalidStanzaError("a call signal needs at least one payload")
    return CallSignal(
        _required(get("id"), "id"),
        _address(get("from"), "from"),
        _address(get("to"), "to"),
        _ts(get("ts")),
        _required(get("call-id"), "call-id"),
        _enum(_CALL_ACTIONS, get("action"), "action"),
        _payloads(root, limits),
    )


# The canonical fast path. Nearly every message a relay handles was written by ``encode``, and reading those
# bytes through libxml2 and lxml's element proxies costs several times what the floor does (see docs/stanza.md,
# Performance). So ``decode`` first tries to read the document as exactly the canonical encoding of a message:
# the attributes in canonical order, no whitespace, no references, every address in its canonical spelling.
# Every value is checked against the same strict alphabet as on the general path, so a document this path
# accepts is, byte for byte, ``encode`` of the message it returns (the tests check that, and that the general
# path returns the same message); such a document has no markup for a parser to be attacked through. Anything
# else (another spelling, an address not yet in the cache, a value or bound to refuse) returns None and goes
# to libxml2, which then also raises the precise typed error.
_CANONICAL_MESSAGE_HEAD = re.compile(
    f'<message xmlns="{re.escape(NAMESPACE)}" id="({ID_PATTERN.pattern})" from="([^"]*)"'
    f'(?: to="([^"]*)")?(?: group="({GROUP_ID_PATTERN.pattern})")? ts="(0|[1-9][0-9]{{0,18}})"'
    f' type="({"|".join(re.escape(kind.value) for kind in MessageType)})"( receipt="true")?>'
    '(?:<franking commitment="([A-Za-z0-9+/]+={0,2})"(?: stamp="([A-Za-z0-9+/]+={0,2})")?/>)?'
)
# [^<]* rather than the base64 alphabet: the regex engine tests a character class per character, several
# times slower than the one translate() over all ciphertexts that checks the alphabet after the split.
_CANONICAL_PAYLOAD = re.compile(
    f'<payload device="([^"]*)" kind="({"|".join(re.escape(kind.value) for kind in PayloadKind)})">([^<]*)</payload>'
)


def _decode_canonical_message(data: bytes, limits: Limits) -> Message | None:
    """The message ``data`` is the canonical encoding of, or None if it is not exactly that (or is invalid)."""
    text = data.decode("ascii") if data.isascii() else ""  # canonical encodings are ASCII
    head = _CANONICAL_MESSAGE_HEAD.match(text)
    if head is None or not text.endswith("</message>"):
        return None
    message_id, sender_text, recipient_text, group, ts_text, type_text, receipt, commitment, stamp = head.groups()
    ts = int(ts_text)
    attributes = 4 + (recipient_text is not None) + (group is not None) + (receipt is not None)
    if ts > MAX_TIMESTAMP or attributes > limits.max_attributes:
        return None
    message_type = _MESSAGE_TYPES[type_text]
    parties = _canonical_parties(sender_text, recipient_text, group, message_type)
    if parties is None:
        return None
    franking = None if commitment is None else _canonical_franking(commitment, stamp, limits)
    if franking is None and commitment is not None:
        return None
    payloads = _canonical_payloads(text[head.end() : -10], limits, limits.max_children - (franking is not None))
    if payloads is None:
        return None
    message = _new(Message)
    _set_id(message, message_id)
    _set_sender(message, parties[0])
    _set_recipient(message, parties[1])
    _set_ts(message, ts)
    _set_type(message, message_type)
    _set_payloads(message, payloads)
    _set_group(message, group)
    _set_franking(message, franking)
    _set_receipt_requested(message, receipt is not None)
    return message


def _canonical_parties(
    sender_text: str, recipient_text: str | None, group: str | None, message_type: MessageType
) -> tuple[Address, Address | None] | None:
    """The sender and recipient of a canonical message, or None unless both are canonical and fit the type."""
    # An address counts as canonical only when its text is the cached address's own canonical text, which
    # has no character XML would escape or normalize: the raw attribute is then its value.
    sender = address_cache.get(sender_text)
    if sender is None or sender._text != sender_text or sender.device is None:
        return None
    if message_type is MessageType.GROUP:
        return None if recipient_text is not None or group is None else (sender, None)
    if group is not None or recipient_text is None:
        return None
    recipient = address_cache.get(recipient_text)
    if recipient is None or recipient._text != recipient_text:
        return None
    return sender, recipient


def _canonical_payloads(body: str, limits: Limits, max_payloads: int) -> tuple[Payload, ...] | None:
    """The payloads of a canonical message's body, or None unless it is nothing but canonical payloads."""
    # split() leaves [gap, device, kind, ciphertext, gap, ...]: canonical means every gap is empty.
    pieces = _CANONICAL_PAYLOAD.split(body)
    device_texts = pieces[1::4]
    ciphertexts = pieces[3::4]
    count = len(ciphertexts)
    if not count or count > max_payloads or any(pieces[::4]) or len(set(device_texts)) != count:
        return None  # (the device texts are canonical below, so equal devices have equal texts)
    cache_get = address_cache.get
    max_text = limits.max_text_length
    kinds = _PAYLOAD_KINDS
    payloads = []
    padding = 0
    for device_text, kind_text, ciphertext in zip(device_texts, pieces[2::4], ciphertexts, strict=True):
        device = cache_get(device_text)
        length = len(ciphertext)
        if (
            device is None
            or device._text != device_text
            or device.device is None
            or not length
            or length % 4
            or length > max_text
        ):
            return None
        padding += (ciphertext[-1] == "=") + (ciphertext[-2:] == "==")
        payload = _new(Payload)
        _set_device(payload, device)
        _set_kind(payload, kinds[kind_text])
        _set_ciphertext(payload, ciphertext)
        payloads.append(payload)
    # is_base64 for all ciphertexts at once: deleting the alphabet must leave exactly the trailing '=' counted
    # above (at most two each, and each length is a multiple of four), nothing else.
    if "".join(ciphertexts).encode("ascii").translate(None, _BASE64_ALPHABET) != b"=" * padding:
        return None
    return tuple(payloads)


def _canonical_franking(commitment: str, stamp: str | None, limits: Limits) -> Franking | None:
    """The franking of a canonical message, or None unless both attributes are canonical base64 within bounds."""
    values = []
    for text in (commitment, stamp):
        # The head's pattern has checked the alphabet and the padding; is_base64 adds the length. Base64 whose
        # unused bits are set decodes all the same, but encode() would not write it, so it is not canonical.
        if text is not None:
            if len(text) % 4 or len(text) > limits.max_text_length:
                return None
            value = _a2b(text)
            if _b64(value) != text:
                return None
            values.append(value)
    franking = _new(Franking)
    _set_commitment(franking, values[0])
    _set_stamp(franking, values[1] if stamp is not None else None)
    return franking


_DECODERS: dict[str, Callable[[Any, Limits], Stanza]] = {
    _MESSAGE: _decode_message,
    _RECEIPT: _decode_receipt,
    _CHATSTATE: _decode_chatstate,
    _ERROR: _decode_error,
    _GROUP_CONTROL: _decode_group_control,
    _CALL: _decode_call,
}


def encode(stanza: Stanza) -> bytes:
    """Serializes a stanza to its canonical bytes.

    The canonical form is UTF-8 without an XML declaration, the namespace declared once on the root, the
    attributes in the order of docs/stanza.md, no whitespace between elements and standard padded base64.
    Equal stanzas always encode to equal bytes.

    Args:
        stanza: any stanza; its constructor has already checked it, so encoding cannot fail.

    Returns:
        The canonical encoding.
    """
    return _ENCODERS[type(stanza)](stanza)


def _b64(data: bytes) -> str:
    return _b2a(data, newline=False).decode("ascii")


_PAYLOAD_KIND_ATTR = {kind: f'" kind="{kind.value}">' for kind in PayloadKind}
_MESSAGE_TYPE_ATTR = {kind: f'" type="{kind.value}"' for kind in MessageType}


def _encode_payloads(parts: list[str], payloads: tuple[Payload, ...]) -> None:
    for payload in payloads:
        parts += (
            '<payload device="',
            payload.device._text,
            _PAYLOAD_KIND_ATTR[payload.kind],
            payload.ciphertext_b64,
            "</payload>",
        )


def _encode_message(message: Message) -> bytes:
    parts = [f'<message xmlns="{NAMESPACE}" id="', message.id, '" from="', message.sender._text]
    if message.recipient is not None:
        parts += ('" to="', message.recipient._text)
    if message.group is not None:
        parts += ('" group="', message.group)
    parts += ('" ts="', str(message.ts), _MESSAGE_TYPE_ATTR[message.type])
    if message.receipt_requested:
        parts.append(' receipt="true"')
    franking = message.franking
    if franking is None:
        parts.append(">")
    elif franking.stamp is None:
        parts.append(f'><franking commitment="{_b64(franking.commitment)}"/>')
    else:
        parts.append(f'><franking commitment="{_b64(franking.commitment)}" stamp="{_b64(franking.stamp)}"/>')
    _encode_payloads(parts, message.payloads)
    parts.append("</message>")
    return "".join(parts).encode()


def _encode_receipt(receipt: Receipt) -> bytes:
    refs = "".join(f'<ref id="{message_id}"/>' for message_id in receipt.message_ids)
    return (
        f'<receipt xmlns="{NAMESPACE}" id="{receipt.id}" from="{receipt.sender._text}"'
        f' to="{receipt.recipient._text}" ts="{receipt.ts}" type="{receipt.type.value}">{refs}</receipt>'
    ).encode()


def _encode_chatstate(state: ChatState) -> bytes:
    target = f' to="{state.recipient._text}"' if state.recipient is not None else f' group="{state.group}"'
    return (
        f'<chatstate xmlns="{NAMESPACE}" id="{state.id}" from="{state.sender._text}"{target}'
        f' ts="{state.ts}" state="{state.state.value}"/>'
    ).encode()


def _escape_text(text: str) -> str:
    # A raw CR would come back as LF after parsing (XML line-end normalization), so it travels as &#13;.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _encode_error(error: ErrorStanza) -> bytes:
    sender = f' from="{error.sender._text}"' if error.sender is not None else ""
    head = (
        f'<error xmlns="{NAMESPACE}" id="{error.id}"{sender} to="{error.recipient._text}" ts="{error.ts}"'
        f' ref="{error.ref}" code="{error.code.value}"'
    )
    if error.text is None:
        return (head + "/>").encode()
    return f"{head}>{_escape_text(error.text)}</error>".encode()


def _encode_group_control(control: GroupControl) -> bytes:
    head = (
        f'<group-control xmlns="{NAMESPACE}" id="{control.id}" from="{control.sender._text}"'
        f' ts="{control.ts}" group="{control.group}" action="{control.action.value}"'
    )
    if not control.members:
        return (head + "/>").encode()
    members = "".join(f'<member address="{member._text}"/>' for member in control.members)
    return f"{head}>{members}</group-control>".encode()


def _encode_call(call: CallSignal) -> bytes:
    parts = [
        f'<call xmlns="{NAMESPACE}" id="{call.id}" from="{call.sender._text}" to="{call.recipient._text}"'
        f' ts="{call.ts}" call-id="{call.call_id}" action="{call.action.value}">'
    ]
    _encode_payloads(parts, call.payloads)
    parts.append("</call>")
    return "".join(parts).encode()


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    Message: _encode_message,
    Receipt: _encode_receipt,
    ChatState: _encode_chatstate,
    ErrorStanza: _encode_error,
    GroupControl: _encode_group_control,
    CallSignal: _encode_call,
}
