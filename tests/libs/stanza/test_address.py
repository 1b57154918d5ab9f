"""Tests for parley_stanza._address: parsing, normalization and the canonical text form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parley_stanza import Address, AddressKind, InvalidAddressError


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("phone:+4915112345678@gatekeeper/1", "phone:+4915112345678@gatekeeper/1"),
        ("phone:+49 151 1234-5678@gatekeeper", "phone:+4915112345678@gatekeeper"),
        ("username:Bob@birdy", "username:bob@birdy"),
        ("username:bob.smith_2-x@birdy/2147483647", "username:bob.smith_2-x@birdy/2147483647"),
        ("email:Bob@Example.COM@birdy/2", "email:bob@example.com@birdy/2"),
        ("email:a.b+tag@mail.example.org@p-2", "email:a.b+tag@mail.example.org@p-2"),
    ],
)
def test_parse_normalizes_to_canonical_text(text: str, canonical: str) -> None:
    address = Address.parse(text)
    assert str(address) == canonical
    assert Address.parse(canonical) == address


def test_parts_and_device_helpers() -> None:
    address = Address.parse("email:bob@example.com@birdy/2")
    assert address.kind is AddressKind.EMAIL
    assert address.identifier == "bob@example.com"
    assert address.provider == "birdy"
    assert address.device == 2
    assert str(address.user) == "email:bob@example.com@birdy"
    user = address.user
    assert user.user is user
    assert address.user.with_device(7) == Address.parse("email:bob@example.com@birdy/7")
    assert address.with_device(9) == Address.parse("email:bob@example.com@birdy/9")


@pytest.mark.parametrize("device", [0, -1, 2**31, True, "3", 2.0])
def test_with_device_refuses_what_is_not_a_device_id(device: object) -> None:
    with pytest.raises(InvalidAddressError):
        Address.parse("username:ann@birdy").with_device(device)


def test_for_user_normalizes() -> None:
    address = Address.for_user("gatekeeper", "phone", "+49 (151) 12345678")
    assert str(address) == "phone:+4915112345678@gatekeeper"
    assert Address.for_user("birdy", AddressKind.USERNAME, "ALICE") == Address.parse("username:alice@birdy")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bob@birdy",
        "fax:+4915112345678@gatekeeper",
        "phone:4915112345678@gatekeeper",  # no '+' and country code
        "phone:+12@gatekeeper",
        "phone:+49abc@gatekeeper",
        "username:bob@Birdy",  # provider ids are lower-case
        "username:bob@b",  # provider id too short
        "username:bob@" + "p" * 33,
        "username:bob@9birdy",
        "username:@birdy",
        "username:bob",
        "username:bo b@birdy",
        "username:" + "b" * 65 + "@birdy",
        "username:\u212aate@birdy",  # the Kelvin sign lower-cases to "k"
        "email:b\u00f6b@example.com@birdy",
        "username:bob@birdy/0",
        "username:bob@birdy/01",
        "username:bob@birdy/-1",
        "username:bob@birdy/2147483648",
        "username:bob@birdy/",
        "username:bob@birdy/1/2",
        "email:bob@birdy",  # no domain in the identifier
        "email:bob@localhost@birdy",
        "email:b/ob@example.com@birdy",
        "email:b<b@example.com@birdy",
        "email:@example.com@birdy",
        "email:" + "a" * 64 + "@" + "b" * 190 + ".com@birdy",
    ],
)
def test_parse_rejects_invalid(text: str) -> None:
    with pytest.raises(InvalidAddressError):
        Address.parse(text)


@pytest.mark.parametrize(
    ("kind", "identifier", "provider", "device"),
    [
        (AddressKind.USERNAME, "Bob", "birdy", None),  # not canonical
        (AddressKind.PHONE, "+49 151 12345678", "gatekeeper", None),
        (AddressKind.USERNAME, "bob", "birdy", 0),
        (AddressKind.USERNAME, "bob", "birdy", True),
        ("nope", "bob", "birdy", None),
    ],
)
def test_constructor_requires_canonical_parts(
    kind: AddressKind, identifier: str, provider: str, device: int | None
) -> None:
    with pytest.raises(InvalidAddressError):
        Address(kind, identifier, provider, device)


def test_non_string_input_is_a_typed_error() -> None:
    with pytest.raises(InvalidAddressError):
        Address.parse(42)  # callers decoding JSON can hand anything in


_usernames = st.from_regex(r"[a-z0-9._-]{1,64}", fullmatch=True)
_providers = st.from_regex(r"[a-z][a-z0-9-]{1,31}", fullmatch=True)
_devices = st.none() | st.integers(min_value=1, max_value=2**31 - 1)


@given(_usernames, _providers, _devices)
def test_username_round_trip(identifier: str, provider: str, device: int | None) -> None:
    address = Address(AddressKind.USERNAME, identifier, provider, device)
    assert Address.parse(str(address)) == address


@given(st.text(max_size=80))
def test_parse_only_raises_typed_errors(text: str) -> None:
    try:
        address = Address.parse(text)
    except InvalidAddressError:
        return
    assert Address.parse(str(address)) == address
