"""Identity state: the :class:`IdentityStore` protocol and its Redis implementation.

Key layout (see ``parley_runtime.redis_keys`` and docs/redis.md): providers share the ``{providers}`` slot; each
user's record, allowed providers and devices share the user's ``{address}`` slot. Every multi-step write is one
of the Lua scripts in ``lua/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from parley.identity.v1.identity_pb2 import ConsentState, InboxMode, Provider
from parley_identity.model import (
    ConsentRecord,
    DeviceRecord,
    MuteRecord,
    MuteTarget,
    StoredProvider,
    UserView,
    mute_field,
)
from parley_runtime import redis_keys
from parley_runtime.redis_client import Redis, load_script

REGISTER_USER_EXISTS = -1
"""``register_device`` result: the user does not exist."""
REGISTER_TOO_MANY = -2
"""``register_device`` result: the user has the maximum number of devices."""
MUTE_NO_USER = -1
"""``set_mute`` result: the user does not exist."""
MUTE_TOO_MANY = -2
"""``set_mute`` result: the user holds the maximum number of other mutes."""


class ConsentConflictError(Exception):
    """The consent change is not allowed in the user's current state."""

    def __init__(self, state: ConsentState.ValueType) -> None:
        super().__init__(f"not allowed in consent state {state}")
        self.state = state


class IdentityStore(Protocol):
    """Storage of providers, users, devices and consent."""

    async def get_provider(self, provider_id: str) -> StoredProvider | None:
        """The provider with its version, or None."""

    async def get_providers(self, provider_ids: Sequence[str]) -> list[Provider]:
        """The providers that exist among ``provider_ids``, in the given order."""

    async def list_provider_ids(self) -> list[str]:
        """Every provider id, sorted."""

    async def save_provider(self, provider: Provider, expected_version: int) -> bool:
        """Writes ``provider`` if its stored version is still ``expected_version`` (0 = create); announces it."""

    async def create_user(self, address: str, now_ms: int) -> bool:
        """Creates a user with consent OFF; False when the user exists."""

    async def register_device(self, address: str, registration_id: int, now_ms: int, max_devices: int) -> int:
        """The new device id, or ``REGISTER_USER_EXISTS`` / ``REGISTER_TOO_MANY``."""

    async def remove_device(self, address: str, device_id: int) -> bool:
        """False when there was no such device."""

    async def list_devices(self, address: str) -> list[DeviceRecord]:
        """The user's devices, ordered by id."""

    async def get_consent(self, address: str) -> ConsentRecord | None:
        """The user's consent, or None for an unknown user."""

    async def set_consent(
        self,
        address: str,
        operation: str,
        *,
        inbox_mode: InboxMode.ValueType,
        allowed_providers: Iterable[str] | None,
        now_ms: int,
    ) -> ConsentRecord | None:
        """Applies ``enable``/``update``/``disable``; None for an unknown user.

        Raises:
            ConsentConflictError: the operation is not allowed in the current state.
        """

    async def resolve_user(self, address: str, asking_provider: str, asking_user: str) -> UserView:
        """Everything a reachability decision needs, in one round trip (``asking_user``'s mutes included)."""

    async def set_mute(self, address: str, mute: MuteRecord, max_mutes: int, now_ms: int) -> int:
        """Sets or replaces one mute; 1, or ``MUTE_NO_USER`` / ``MUTE_TOO_MANY``."""

    async def clear_mute(self, address: str, target: MuteTarget, subject: str) -> MuteRecord | None:
        """Removes one mute; the removed mute, or None when there was none."""

    async def list_mutes(self, address: str) -> list[MuteRecord]:
        """Every stored mute of the user, ended ones included."""


def _device(device_id: bytes | int, value: bytes) -> DeviceRecord:
    registration_id, _, created = value.partition(b":")
    return DeviceRecord(int(device_id), int(registration_id), int(created))


class RedisIdentityStore:
    """:class:`IdentityStore` on Redis."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._save_provider = load_script(client, "parley_identity", "save_provider")
        self._create_user = load_script(client, "parley_identity", "create_user")
        self._register_device = load_script(client, "parley_identity", "register_device")
        self._set_consent = load_script(client, "parley_identity", "set_consent")
        self._resolve_user = load_script(client, "parley_identity", "resolve_user")
        self._set_mute = load_script(client, "parley_identity", "set_mute")

    async def get_provider(self, provider_id: str) -> StoredProvider | None:
        # redis-py types replies as bytes | str; this client never decodes, so they are bytes.
        blob: Any
        version: Any
        blob, version = await self._client.hmget(redis_keys.provider(provider_id), ["blob", "version"])
        if blob is None:
            return None
        return StoredProvider(Provider.FromString(blob), int(version))

    async def get_providers(self, provider_ids: Sequence[str]) -> list[Provider]:
        if not provider_ids:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for provider_id in provider_ids:
                pipe.hget(redis_keys.provider(provider_id), "blob")
            blobs = await pipe.execute()
        return [Provider.FromString(blob) for blob in blobs if blob is not None]

    async def list_provider_ids(self) -> list[str]:
        members: set[Any] = await self._client.smembers(redis_keys.PROVIDER_INDEX)
        return sorted(member.decode() for member in members)

    async def save_provider(self, provider: Provider, expected_version: int) -> bool:
        version = await self._save_provider(
            keys=[redis_keys.provider(provider.provider_id), redis_keys.PROVIDER_INDEX],
            args=[
                expected_version,
                provider.SerializeToString(),
                provider.provider_id,
                redis_keys.PROVIDER_CHANGES_CHANNEL,
            ],
        )
        return int(version) > 0

    async def create_user(self, address: str, now_ms: int) -> bool:
        created = await self._create_user(
            keys=[redis_keys.user(address)],
            args=[now_ms, ConsentState.CONSENT_STATE_OFF, InboxMode.INBOX_MODE_SEPARATE],
        )
        return bool(created)

    async def register_device(self, address: str, registration_id: int, now_ms: int, max_devices: int) -> int:
        result = await self._register_device(
            keys=[redis_keys.user(address), redis_keys.user_devices(address)],
            args=[max_devices, f"{registration_id}:{now_ms}"],
        )
        return int(result)

    async def remove_device(self, address: str, device_id: int) -> bool:
        return bool(await self._client.hdel(redis_keys.user_devices(address), str(device_id)))

    async def list_devices(self, address: str) -> list[DeviceRecord]:
        raw: dict[Any, Any] = await self._client.hgetall(redis_keys.user_devices(address))
        return sorted((_device(key, value) for key, value in raw.items()), key=lambda d: d.device_id)

    async def get_consent(self, address: str) -> ConsentRecord | None:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hmget(redis_keys.user(address), ["created_at_ms", "consent", "inbox", "consent_at_ms"])
            pipe.smembers(redis_keys.user_allowed_providers(address))
            (created, consent, inbox, consent_at), allowed = await pipe.execute()
        if created is None:
            return None
        return ConsentRecord(
            state=int(consent or ConsentState.CONSENT_STATE_OFF),  # type: ignore[arg-type]
            inbox_mode=int(inbox or InboxMode.INBOX_MODE_SEPARATE),  # type: ignore[arg-type]
            allowed_providers=frozenset(member.decode() for member in allowed),
            updated_at_ms=int(consent_at or created),
        )

    async def set_consent(
        self,
        address: str,
        operation: str,
        *,
        inbox_mode: InboxMode.ValueType,
        allowed_providers: Iterable[str] | None,
        now_ms: int,
    ) -> ConsentRecord | None:
        allowed = list(allowed_providers or ())
        result = await self._set_consent(
            keys=[redis_keys.user(address), redis_keys.user_allowed_providers(address)],
            args=[
                operation,
                "" if inbox_mode == InboxMode.INBOX_MODE_UNSPECIFIED else int(inbox_mode),
                "1" if allowed_providers is not None else "0",
                now_ms,
                *allowed,
            ],
        )
        status = int(result[0])
        if status == -1:
            return None
        if status == -2:
            raise ConsentConflictError(int(result[1]))  # type: ignore[arg-type]
        return ConsentRecord(
            state=int(result[1]),  # type: ignore[arg-type]
            inbox_mode=int(result[2] or InboxMode.INBOX_MODE_SEPARATE),  # type: ignore[arg-type]
            allowed_providers=frozenset(member.decode() for member in result[3:]),
            updated_at_ms=now_ms,
        )

    async def resolve_user(self, address: str, asking_provider: str, asking_user: str) -> UserView:
        result = await self._resolve_user(
            keys=[
                redis_keys.user(address),
                redis_keys.user_allowed_providers(address),
                redis_keys.user_devices(address),
                redis_keys.user_mutes(address),
            ],
            args=[
                asking_provider,
                mute_field(MuteTarget.PEER, asking_user),
                mute_field(MuteTarget.PROVIDER, asking_provider),
            ],
        )
        pairs = result[6:]
        devices = sorted((_device(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)), key=lambda d: d.device_id)
        return UserView(
            exists=bool(result[0]),
            consent=int(result[1]) or ConsentState.CONSENT_STATE_OFF,  # type: ignore[arg-type]
            inbox_mode=int(result[2]) or InboxMode.INBOX_MODE_SEPARATE,  # type: ignore[arg-type]
            asking_provider_allowed=bool(result[3]),
            devices=tuple(devices),
            mutes_until_ms=tuple(_mute_times(value)[0] for value in result[4:6] if value),
        )

    async def set_mute(self, address: str, mute: MuteRecord, max_mutes: int, now_ms: int) -> int:
        result = await self._set_mute(
            keys=[redis_keys.user(address), redis_keys.user_mutes(address)],
            args=[mute.field, f"{mute.until_ms}:{mute.created_at_ms}", max_mutes, now_ms],
        )
        return int(result)

    async def clear_mute(self, address: str, target: MuteTarget, subject: str) -> MuteRecord | None:
        key = redis_keys.user_mutes(address)
        field = mute_field(target, subject)
        # HGET then HDEL in one transaction: the answer names the mute that was removed, ended or not.
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hget(key, field)
            pipe.hdel(key, field)
            value, _ = await pipe.execute()
        if value is None:
            return None
        until_ms, created_at_ms = _mute_times(value)
        return MuteRecord(target, subject, until_ms, created_at_ms)

    async def list_mutes(self, address: str) -> list[MuteRecord]:
        raw: dict[Any, Any] = await self._client.hgetall(redis_keys.user_mutes(address))
        mutes = []
        for field, value in raw.items():
            kind, _, subject = field.decode().partition(":")
            until_ms, created_at_ms = _mute_times(value)
            mutes.append(MuteRecord(MuteTarget(kind), subject, until_ms, created_at_ms))
        return mutes


def _mute_times(value: bytes) -> tuple[int, int]:
    """(until ms, created ms) of a stored mute value."""
    until_ms, _, created_at_ms = value.partition(b":")
    return int(until_ms), int(created_at_ms)
