"""Addresses: the one way Parley names a user or one of their devices across providers.

The text form is ``kind:identifier@provider[/device]``, for example ``phone:+4915112345678@gatekeeper/1``,
``username:bob@birdy`` or ``email:bob@example.com@birdy/2``. The provider is split off at the *last* ``@``
because an email identifier contains one itself. Parsing normalizes the identifier (E.164 phone numbers,
lower-case usernames and emails), so two spellings of one user compare equal and ``str()`` always gives the
same canonical text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from enum import StrEnum

import phonenumbers

from parley_stanza._errors import InvalidAddressError

MAX_DEVICE_ID = 2**31 - 1

_PROVIDER = re.compile(r"[a-z][a-z0-9-]{1,31}")
_USERNAME = re.compile(r"[a-z0-9._-]{1,64}")
# Deliberately narrower than RFC 5321: no whitespace, no '/', and none of the characters XML would have to
# escape, so that an address can be written into an attribute as it is.
_EMAIL_LOCAL = re.compile(r"[a-z0-9!#$%*+=?^_`{|}~.-]{1,64}")
_EMAIL_DOMAIN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")
_DEVICE = re.compile(r"[1-9][0-9]{0,9}")
_MAX_EMAIL = 254


class AddressKind(StrEnum):
    """The kinds of identifier a user can be reached by."""

    PHONE = "phone"
    USERNAME = "username"
    EMAIL = "email"


@functools.lru_cache(maxsize=16384)
def _normalize_phone(identifier: str) -> str:
    # phonenumbers costs ~10 us a call and the same numbers recur on every message, hence the cache.
    if not identifier.startswith("+"):
        raise InvalidAddressError("a phone identifier must start with '+' and a country code")
    try:
        number = phonenumbers.parse(identifier, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidAddressError(f"not a phone number: {identifier[:32]!r}") from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidAddressError(f"not a possible phone number: {identifier[:32]!r}")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _normalize_identifier(kind: AddressKind, identifier: str) -> str:
    if kind is AddressKind.PHONE:
        return _normalize_phone(identifier)
    # ASCII first: str.lower() maps some non-ASCII letters into ASCII (the Kelvin sign to "k"), and a second
    # spelling of a name is not something to accept silently.
    if not identifier.isascii():
        raise InvalidAddressError(f"{kind.value} identifiers are ASCII: {identifier[:64]!r}")
    lowered = identifier.lower()
    if kind is AddressKind.USERNAME:
        if not _USERNAME.fullmatch(lowered):
            raise InvalidAddressError(f"not a valid username: {identifier[:64]!r}")
        return lowered
    local, at, domain = lowered.rpartition("@")
    if len(lowered) > _MAX_EMAIL or not at or not _EMAIL_LOCAL.fullmatch(local):
        raise InvalidAddressError(f"not a valid email address: {identifier[:64]!r}")
    if not _EMAIL_DOMAIN.fullmatch(domain):
        raise InvalidAddressError(f"not a valid email domain: {identifier[:64]!r}")
    return lowered


def _to_kind(kind: AddressKind | str) -> AddressKind:
    try:
        return AddressKind(kind)
    except ValueError:
        raise InvalidAddressError(f"unknown address kind: {str(kind)[:16]!r}") from None


@dataclass(frozen=True, slots=True)
class Address:
    """A user (``device`` is None) or one of the user's devices at a provider.

    Build addresses with ``Address.parse`` or ``Address.for_user``; the constructor only accepts parts that
    are already canonical and raises ``InvalidAddressError`` otherwise.

    Attributes:
        kind: the kind of identifier.
        identifier: the normalized identifier (E.164 phone number, lower-case username or email).
        provider: the id of the provider the user is registered with.
        device: the device id, or None for the user as a whole.
    """

    kind: AddressKind
    identifier: str
    provider: str
    device: int | None = None
    # The canonical text, built once: the codec writes addresses into every stanza it encodes.
    _text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind = _to_kind(self.kind)
        if kind is not self.kind:
            object.__setattr__(self, "kind", kind)
        if not isinstance(self.provider, str) or not _PROVIDER.fullmatch(self.provider):
            raise InvalidAddressError(f"not a valid provider id: {str(self.provider)[:32]!r}")
        identifier = self.identifier
        if not isinstance(identifier, str) or _normalize_identifier(kind, identifier) != identifier:
            raise InvalidAddressError(f"identifier is not canonical: {str(self.identifier)[:64]!r}")
        device = self.device
        if device is not None and (
            type(device) is not int or not 1 <= device <= MAX_DEVICE_ID  # bool is an int: refuse it
        ):
            raise InvalidAddressError(f"device id must be an int in 1..{MAX_DEVICE_ID}: {device!r}")
        text = f"{kind.value}:{identifier}@{self.provider}"
        object.__setattr__(self, "_text", text if device is None else f"{text}/{device}")

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parses and normalizes an address.

        Args:
            text: ``kind:identifier@provider[/device]``.

        Returns:
            The address; ``str()`` of it is the canonical text, which may differ from ``text`` in case or
            phone-number formatting.

        Raises:
            InvalidAddressError: if any part is missing or invalid.
        """
        return _parse_cached(text)

    @classmethod
    def for_user(cls, provider: str, kind: AddressKind | str, identifier: str) -> Address:
        """Builds a user address from its parts, normalizing the identifier.

        Args:
            provider: the provider id, e.g. ``"birdy"``.
            kind: ``AddressKind`` or its value (``"phone"``, ``"username"``, ``"email"``).
            identifier: the identifier in any accepted spelling.

        Returns:
            The user's address (no device).

        Raises:
            InvalidAddressError: if any part is invalid.
        """
        checked_kind = _to_kind(kind)
        if not isinstance(identifier, str):
            raise InvalidAddressError("identifier must be a string")
        return cls(checked_kind, _normalize_identifier(checked_kind, identifier), provider)

    @property
    def user(self) -> Address:
        """This address without its device."""
        if self.device is None:
            return self
        # Through the parse cache: relays ask every stanza's sender for its user, and building (and checking)
        # a new Address each time costs several times a dict lookup.
        return _parse_cached(self._text.rpartition("/")[0])

    def with_device(self, device: int) -> Address:
        """The address of one of this user's devices.

        Raises:
            InvalidAddressError: if ``device`` is not in 1..2^31-1.
        """
        if type(device) is not int:  # bool is an int, and "True" must not reach the parser as a device
            raise InvalidAddressError(f"device id must be an int in 1..{MAX_DEVICE_ID}: {device!r}")
        return _parse_cached(f"{self.user._text}/{device}")

    def __str__(self) -> str:
        return self._text


# Stanzas name the same few addresses over and over; parsing is pure and Address immutable, so sharing one
# parsed instance per text is safe and takes address checks off the codec's hot path. A plain dict (emptied
# when full) rather than functools.lru_cache, because the codec looks it up inline: a dict.get is about half
# the cost of a call through the lru_cache wrapper.
ADDRESS_CACHE_SIZE = 16384
address_cache: dict[str, Address] = {}


def _parse_cached(text: str) -> Address:
    address = address_cache.get(text) if type(text) is str else None
    if address is None:
        address = _parse(text)
        if len(address_cache) >= ADDRESS_CACHE_SIZE:
            address_cache.clear()
        address_cache[text] = address
    return address


def _parse(text: str) -> Address:
    if not isinstance(text, str):
        raise InvalidAddressError("an address must be a string")
    kind_text, colon, rest = text.partition(":")
    if not colon:
        raise InvalidAddressError(f"missing 'kind:' in address {text[:64]!r}")
    kind = _to_kind(kind_text)
    head, slash, device_text = rest.rpartition("/") if "/" in rest else (rest, "", "")
    device: int | None = None
    if slash:
        if not _DEVICE.fullmatch(device_text):
            raise InvalidAddressError(f"not a valid device id in address {text[:64]!r}")
        device = int(device_text)
    identifier, at, provider = head.rpartition("@")
    if not at or not identifier:
        raise InvalidAddressError(f"missing '@provider' in address {text[:64]!r}")
    return Address(kind, _normalize_identifier(kind, identifier), provider, device)
