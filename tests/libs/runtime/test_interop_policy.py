"""The interop policy's evaluation: regions from phone numbers, the EU group, the primary device."""

from __future__ import annotations

import pytest

from parley.identity.v1.identity_pb2 import InteropPolicy
from parley_runtime.interop_policy import (
    EU_MEMBER_STATES,
    RULE_PRIMARY_DEVICE,
    RULE_REGION,
    UNLIMITED,
    InvalidRegionError,
    Policy,
    normalize_regions,
    user_region,
)
from parley_stanza import Address


@pytest.mark.parametrize(
    ("user", "region"),
    [
        ("phone:+4915112345678@gatekeeper", "DE"),
        ("phone:+33612345678@gatekeeper", "FR"),
        ("phone:+12025550123@gatekeeper", "US"),
        ("phone:+41791234567@gatekeeper", "CH"),
        ("username:nemo@gatekeeper", None),
        ("email:nemo@example.com@gatekeeper", None),
    ],
)
def test_a_users_region_is_its_phone_numbers(user: str, region: str | None) -> None:
    assert user_region(Address.parse(user)) == region


def test_eu_stands_for_the_member_states() -> None:
    policy = Policy.from_proto(InteropPolicy(allowed_regions=["EU", "CH"]))
    assert policy.regions == EU_MEMBER_STATES | {"CH"}
    assert len(EU_MEMBER_STATES) == 27
    assert policy.refusal(Address.parse("phone:+4915112345678@gk"), 2) is None
    assert policy.refusal(Address.parse("phone:+41791234567@gk"), None) is None
    assert policy.refusal(Address.parse("phone:+12025550123@gk"), 1) == RULE_REGION
    assert policy.refusal(Address.parse("username:nemo@gk"), 1) == RULE_REGION


def test_primary_device_only() -> None:
    policy = Policy.from_proto(InteropPolicy(primary_device_only=True))
    user = Address.parse("username:nemo@gk")
    assert policy.refusal(user, 1) is None
    assert policy.refusal(user, 2) == RULE_PRIMARY_DEVICE
    # The user as a whole (no device known) is not refused by a device rule.
    assert policy.refusal(user, None) is None
    assert UNLIMITED.refusal(user, 7) is None


def test_regions_are_normalized_and_checked() -> None:
    assert normalize_regions([" de", "EU", "eu", "FR"]) == ["DE", "EU", "FR"]
    with pytest.raises(InvalidRegionError):
        normalize_regions(["Europe"])
    with pytest.raises(InvalidRegionError):
        normalize_regions(["XX"])
