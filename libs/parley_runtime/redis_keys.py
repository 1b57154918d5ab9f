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


def user_mutes(address: str) -> str:
    """HASH: what the user muted (``user:<address>`` or ``provider:<id>``) -> ``"<until ms, 0 = for ever>:<set at
    ms>"``; ended mutes are dropped when the next one is set."""
    return f"user:{{{address}}}:mutes"


# --- key directory ----------------------------------------------------------------------------------------


def device_keys(address: str, device_id: int) -> str:
    """HASH: a device's registration id, identity key, signed prekey and PQ last-resort prekey."""
    return f"keys:{{{address}}}:{device_id}"


def device_one_time_prekeys(address: str, device_id: int) -> str:
    """LIST: unclaimed one-time prekeys, oldest first; each entry is a 4-byte big-endian id + 33-byte key."""
    return f"keys:{{{address}}}:{device_id}:otpk"


def device_one_time_pq_prekeys(address: str, device_id: int) -> str:
    """LIST: unclaimed one-time PQ (KEM) prekeys, oldest first; each entry is a 4-byte big-endian id + the
    1569-byte serialized KEM key as published + its 64-byte signature."""
    return f"keys:{{{address}}}:{device_id}:pq_otpk"


def device_claims(address: str, device_id: int) -> str:
    """STRING counter with TTL = the drain-guard window: one-time prekeys claimed from the device in the window."""
    return f"keys:{{{address}}}:{device_id}:claims"


def user_key_devices(address: str) -> str:
    """SET: ids of the user's devices that have published keys."""
    return f"keys:{{{address}}}:devices"


def user_key_requesters(address: str) -> str:
    """ZSET: users who fetched this user's keys, scored by time (for identity-change notices); TTL'd."""
    return f"keys:{{{address}}}:requesters"


# --- relay -------------------------------------------------------------------------------------------------


def mailbox(address: str, device_id: int) -> str:
    """STREAM: stanzas waiting for one device, in acceptance order; entry ids are delivery ids; trimmed by age."""
    return f"mbox:{{{address}}}:{device_id}"


def mailbox_channel(address: str, device_id: int) -> str:
    """Pub/sub channel: a hint that the device's mailbox grew, or an ephemeral stanza (typing) for it."""
    return f"mbox:{{{address}}}:{device_id}:hint"


def replica_channel(replica: str) -> str:
    """Pub/sub channel of one relay replica, subscribed for the replica's life so its hint connection is set up
    once, before any stream registers (nothing is published to it yet)."""
    return f"relay:{{{replica}}}:replica"


def accepted(address: str, sender: str, message_id: str) -> str:
    """STRING with TTL (the mailbox retention): ``sender``'s message ``message_id`` was stored for ``address``."""
    return f"seen:{{{address}}}:{sender}:{message_id}"


def presence(address: str, device_id: int) -> str:
    """STRING with a short TTL refreshed while the device holds a stream: the relay replica serving it."""
    return f"presence:{{{address}}}:{device_id}"


def media(media_id: str) -> str:
    """HASH ``size``, ``sha256``, ``provider``, ``user``, ``complete``: a blob's metadata; TTL = media retention
    (complete), or the resume window (an upload in progress)."""
    return f"media:{{{media_id}}}"


def media_data(media_id: str) -> str:
    """STRING: a blob's bytes (encrypted by the sender), stored so far; TTL = the metadata's."""
    return f"media:{{{media_id}}}:data"


def media_quota(provider_id: str) -> str:
    """STRING with a daily TTL: bytes of media a provider uploaded today."""
    return f"mediaquota:{{{provider_id}}}"


def parity(provider_id: str, minute: int) -> str:
    """HASH: a provider's treatment in one minute (Unix ms // 60000): ``accepted``, ``refused:<REASON>``,
    ``delivered``, ``latency_sum_ms``, ``le:<bucket>``; TTL = the parity retention."""
    return f"parity:{{{provider_id}}}:{minute}"


def media_user_quota(address: str) -> str:
    """STRING with a daily TTL: bytes of media a user uploaded today (all of the user's devices)."""
    return f"mediaquota:{{{address}}}:user"


# --- moderation -------------------------------------------------------------------------------------------


def blocks(address: str) -> str:
    """ZSET (all scores 0, ordered by member): the user addresses this user blocked."""
    return f"mod:{{{address}}}:blocks"


def contacts(address: str) -> str:
    """ZSET: users who sent to this user, scored by the last send (Unix ms); bounded, with TTL."""
    return f"mod:{{{address}}}:contacts"


def sender_restriction(address: str) -> str:
    """STRING with TTL: the user may not send until it expires; the value says why."""
    return f"mod:{{{address}}}:restricted"


def verified_reporters(address: str) -> str:
    """ZSET: users whose reports against this user verified, scored by report time (Unix ms); TTL'd."""
    return f"mod:{{{address}}}:reporters"


def provider_quota(provider_id: str) -> str:
    """HASH ``window`` (index of the current quota window), ``used`` (device copies sent in it); TTL'd."""
    return f"mod:{{{provider_id}}}:quota"


def provider_breaker(provider_id: str) -> str:
    """HASH ``since``, ``failures``, ``open_until`` (Unix ms): a provider's circuit breaker; TTL'd."""
    return f"mod:{{{provider_id}}}:breaker"


# Reports are few next to messages and reviewed as one queue: they share the `{reports}` slot, so that storing
# one with its indexes and audit trail is one script.


def report(report_id: str) -> str:
    """HASH: one report (``reporter``, ``sender``, ``message_id``, ``verified``, ``outcome``, ...); no TTL (audit)."""
    return f"mod:{{reports}}:{report_id}"


def report_audit(report_id: str) -> str:
    """LIST: a report's audit entries, oldest first (JSON ``at_ms``, ``actor``, ``action``)."""
    return f"mod:{{reports}}:{report_id}:audit"


REPORT_INDEX = "mod:{reports}:all"
"""ZSET (all scores 0): every report as ``<created at, Unix ms, 13 digits>:<report id>``, so members sort by time."""

OPEN_REPORT_INDEX = "mod:{reports}:open"
"""ZSET (all scores 0): reports awaiting review, members as in :data:`REPORT_INDEX`."""


# --- shared -------------------------------------------------------------------------------------------------


def assertion_id(provider_id: str, jti: str) -> str:
    """STRING with TTL until the assertion's expiry: marks a used assertion id."""
    return f"jti:{{{provider_id}:{jti}}}"


def rate_limit(subject: str, bucket: str) -> str:
    """HASH ``tokens``/``ts`` with TTL: a token bucket for ``subject`` (an address or provider id)."""
    return f"rl:{{{subject}}}:{bucket}"


def grouped_rate_limit(group: str, subject: str, bucket: str) -> str:
    """HASH ``tokens``/``ts`` with TTL: a token bucket for ``subject`` kept in ``group``'s slot (e.g. a provider's),
    so that buckets of one group can be taken together atomically (``RateLimiter.take_together``)."""
    return f"rl:{{{group}}}:{bucket}:{subject}"


def event_stream(domain: str) -> str:
    """STREAM: events a service emits (``identity``, ``keys``, ``relay``, ``moderation``); capped in length."""
    return f"events:{{{domain}}}"


# --- notification -------------------------------------------------------------------------------------------


def webhook(provider_id: str) -> str:
    """HASH ``url``, ``secret``, ``registered_at_ms``: a provider's webhook and the secret that signs deliveries."""
    return f"webhook:{{{provider_id}}}"


def push_targets(address: str) -> str:
    """HASH: device id -> the push token the user's provider registered for that device."""
    return f"push:{{{address}}}"


# The delivery queue is one slot, so that taking an event in (de-duplication, coalescing, queueing, notices)
# is one atomic script. Notification traffic is one webhook call per event and provider, far below one slot's
# capacity; the growth path is a slot per provider.
NOTIFY_DUE = "notify:{queue}:due"
"""ZSET: delivery id -> Unix ms when it is due (first attempt, retry, or lease expiry of an attempt in flight)."""

NOTIFY_DEPTH = "notify:{queue}:depth"
"""HASH: provider id -> deliveries queued for it (scheduled or in flight)."""

NOTIFY_DEAD_LETTERS = "notify:{queue}:dead"
"""STREAM: dead-lettered deliveries, with everything needed to redrive them."""

NOTIFY_NOTICES = "notify:{queue}:notices"
"""STREAM: notices for users (``user`` empty for every user), tailed by each replica for ``WatchNotices``."""


def notify_delivery(delivery_id: str) -> str:
    """HASH: one queued delivery (``provider``, ``type``, ``data``, ``occurred_at_ms``, ``attempts``, ...)."""
    return f"notify:{{queue}}:d:{delivery_id}"


def notify_seen(event_id: str) -> str:
    """STRING with TTL: the event was taken in (consumers get events at least once)."""
    return f"notify:{{queue}}:seen:{event_id}"


def notify_wake(device: str) -> str:
    """HASH with TTL ``until``, ``trailing``, ``trailing_due``: the coalescing window of one device's wake-ups."""
    return f"notify:{{queue}}:wake:{device}"
