"""The gatekeeper's interop policy of one provider: which of its users and devices may take part in third-party
chats (chats with users of other providers).

Identity stores the policy with the provider (``parley.identity.v1.InteropPolicy``) and applies it at opt-in and on
every resolve; the provider feed carries it to every service, so the relay can close the streams it no longer
allows within the second the kill switch takes. The evaluation lives here, once, for both.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

from parley.identity.v1.identity_pb2 import InteropPolicy
from parley_stanza import Address, AddressKind

PRIMARY_DEVICE_ID = 1
"""The primary device: the one a user registered with (identity gives out device ids from 1, never reused)."""

EU = "EU"
"""The region group standing for the European Union's member states."""

_EU_CODES = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"
EU_MEMBER_STATES = frozenset(_EU_CODES.split())
"""ISO 3166-1 alpha-2 codes of the EU's 27 member states."""

RULE_REGION = "region"
"""Refusal rule: the user's region is not one the policy allows."""
RULE_PRIMARY_DEVICE = "primary_device"
"""Refusal rule: the device is not the user's primary device."""


class InvalidRegionError(ValueError):
    """A region is neither an ISO 3166-1 alpha-2 code phone numbers use nor ``EU``."""


def normalize_regions(regions: Iterable[str]) -> list[str]:
    """The policy's regions as stored: upper-case, sorted, without repeats.

    Raises:
        InvalidRegionError: naming the first region that is not a known code or ``EU``.
    """
    normalized = set()
    for region in regions:
        code = region.strip().upper()
        if code != EU and code not in phonenumbers.SUPPORTED_REGIONS:
            raise InvalidRegionError(region)
        normalized.add(code)
    return sorted(normalized)


@dataclass(frozen=True, slots=True)
class Policy:
    """A provider's interop policy, ready to evaluate.

    Attributes:
        regions: the ISO codes whose users may take part (``EU`` expanded); empty for every region.
        primary_device_only: whether only device 1 of a user may take part.
    """

    regions: frozenset[str] = frozenset()
    primary_device_only: bool = False

    @classmethod
    def from_proto(cls, policy: InteropPolicy) -> Policy:
        """The evaluable form of a stored ``InteropPolicy``."""
        regions: set[str] = set()
        for region in policy.allowed_regions:
            regions |= EU_MEMBER_STATES if region == EU else {region}
        return cls(frozenset(regions), policy.primary_device_only)

    def refusal(self, user: Address, device_id: int | None) -> str | None:
        """The rule keeping ``user`` (acting on ``device_id``, when known) out of third-party chats, or None.

        Args:
            user: a user of the policy's provider (a device part is ignored).
            device_id: the device acting, or None when no device is known (the user as a whole).
        """
        if self.regions and user_region(user) not in self.regions:
            return RULE_REGION
        if self.primary_device_only and device_id is not None and device_id != PRIMARY_DEVICE_ID:
            return RULE_PRIMARY_DEVICE
        return None


UNLIMITED = Policy()
"""The policy of a provider the gatekeeper set none for."""


def user_region(user: Address) -> str | None:
    """The ISO region of a user's phone number, or None for users known otherwise (or numbers of no region)."""
    if user.kind is not AddressKind.PHONE:
        return None
    return _phone_region(user.identifier)


@functools.lru_cache(maxsize=65_536)
def _phone_region(e164: str) -> str | None:
    # The same senders come back on every message; phonenumbers costs tens of microseconds a parse.
    region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    return region if region and region != phonenumbers.UNKNOWN_REGION else None
