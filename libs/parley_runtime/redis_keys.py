"""Every Redis key Parley uses, built in one place.

Keys that belong to one user carry the user's canonical address as a ``{hash tag}``, so that all of a user's
keys (identity record, devices, prekeys, mailboxes) land in one Redis Cluster slot and multi-key Lua scripts
over them stay legal in a cluster. Keys not tied to a user carry their own tag. The table in docs/redis.md
lists them with their types and TTLs; keep the two in step.
"""

from __future__ import annotations

# --- identity ---------------------------------------------------------------------------------------------


# Providers are few (tens to hundreds) and change rarely: all of them share one slot, so that creating one can
# update the index atomically in a script.


def provider(provider_id: str) -> str:
    """HASH ``blob`` (serialized ``parley.identity.v1.Provider``) and ``version`` (optimistic concurrency)."""
    return f"{{providers}}:{provider_id}"


PROVIDER_INDEX = "{providers}:index"
"""SET of all enlisted provider ids."""

PROVIDER_CHANGES_CHANNEL = "providers:changed"
"""Pub/sub channel: a provider id is published after each change of that provider."""


def user(address: str) -> str:
    """HASH: a user's record (``created_at_ms``, ``consent``, ``inbox``, ``consent_at_ms``, ``next_device``)."""
    return f"user:{{{address}}}"


def user_allowed_providers(address: str) -> str:
    """SET: providers the user allows to reach them."""
    return f"user:{{{address}}}:allowed"


def user_devices(address: str) -> str:
    """HASH: device id -> ``"<registration id>:<created at, Unix ms>"``."""
    return f"user:{{{address}}}:devices"


# --- key directory ----------------------------------------------------------------------------------------


def device_keys(address: str, device_id: int) -> str:
    """HASH: a device's registration id, identity key, signed prekey and PQ last-resort prekey."""
    return f"keys:{{{address}}}:{device_id}"


def device_one_time_prekeys(address: str, device_id: int) -> str:
    """LIST: unclaimed one-time prekeys, oldest first; each entry is a 4-byte big-endian id + 33-byte key."""
    return f"keys:{{{address}}}:{device_id}:otpk"


def user_key_devices(address: str) -> str:
    """SET: ids of the user's devices that have published keys."""
    return f"keys:{{{address}}}:devices"


def user_key_requesters(address: str) -> str:
    """ZSET: users who fetched this user's keys, scored by time (for identity-change notices); TTL'd."""
    return f"keys:{{{address}}}:requesters"


# --- shared -------------------------------------------------------------------------------------------------


def assertion_id(provider_id: str, jti: str) -> str:
    """STRING with TTL until the assertion's expiry: marks a used assertion id."""
    return f"jti:{{{provider_id}:{jti}}}"


def rate_limit(subject: str, bucket: str) -> str:
    """HASH ``tokens``/``ts`` with TTL: a token bucket for ``subject`` (an address or provider id)."""
    return f"rl:{{{subject}}}:{bucket}"


def event_stream(domain: str) -> str:
    """STREAM: events a service emits (``identity``, ``keys``, ``relay``, ``moderation``); capped in length."""
    return f"events:{{{domain}}}"
