"""Key-directory state: the :class:`KeyStore` protocol and its Redis implementation.

All of a user's keys share the user's ``{address}`` slot; publication and claims are the Lua scripts in
``lua/`` (their headers document KEYS and ARGV).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from parley_keydir.model import Bundle, DrainGuard, OneTimeKey, PqPreKeyKind, PreKeyCounts, PublishResult, SignedKey
from parley_runtime import redis_keys
from parley_runtime.redis_batching import CommandBatcher
from parley_runtime.redis_client import Redis, load_script

STALE_IDENTITY = -1
"""``publish`` outcome: the identity key changed since it was read."""
INCOMPLETE_FIRST_PUBLICATION = -2
"""``publish`` outcome: the first publication lacks the identity key, registration id or signed prekey."""
IDENTITY_WITHOUT_SIGNED_PREKEY = -3
"""``publish`` outcome: a new identity key came without a new signed prekey."""
TOO_MANY_ONE_TIME_PREKEYS = -4
"""``publish`` outcome: the one-time prekeys would exceed the maximum."""
TOO_MANY_ONE_TIME_PQ_PREKEYS = -5
"""``publish`` outcome: the one-time PQ prekeys would exceed the maximum."""

_FIELDS_PER_DEVICE = 14


class PublishRefusedError(Exception):
    """The store refused a publication; ``code`` is one of the module's outcome constants."""

    def __init__(self, code: int) -> None:
        super().__init__(f"publication refused ({code})")
        self.code = code


class KeyStore(Protocol):
    """Storage of device keys."""

    async def identity_key(self, address: str, device_id: int) -> bytes:
        """The device's stored identity key, or b"" when it has published none."""

    async def publish(
        self,
        address: str,
        device_id: int,
        *,
        verified_identity_key: bytes,
        read_identity_key: bytes,
        registration_id: int | None,
        signed_prekey: SignedKey | None,
        pq_prekey: SignedKey | None,
        one_time_prekeys: Sequence[OneTimeKey],
        one_time_pq_prekeys: Sequence[SignedKey],
        max_one_time_prekeys: int,
        max_one_time_pq_prekeys: int,
        now_ms: int,
    ) -> PublishResult:
        """Stores keys atomically; ``pq_prekey`` is the last-resort PQ prekey, ``one_time_pq_prekeys`` are appended.

        Raises:
            PublishRefusedError: with one of the outcome constants; nothing was written.
        """

    async def count(self, address: str, device_id: int) -> PreKeyCounts:
        """Unclaimed one-time prekeys and one-time PQ prekeys, and whether a last-resort PQ prekey is published."""

    async def claim(
        self,
        address: str,
        device_ids: Sequence[int],
        requester: str,
        *,
        now_ms: int,
        max_requesters: int,
        requester_ttl_ms: int,
        guard: DrainGuard,
    ) -> list[Bundle]:
        """Claims one bundle per device that has keys, in ``device_ids`` order, each with the device's oldest
        one-time prekey and oldest one-time PQ prekey (else its last-resort PQ prekey); a device past its drain
        ``guard`` gives its bundle without a one-time prekey and with the last-resort PQ prekey."""

    async def recent_requesters(self, address: str, limit: int) -> list[str]:
        """Users who recently fetched ``address``'s keys, newest first."""


class RedisKeyStore:
    """:class:`KeyStore` on Redis.

    Args:
        client: the Redis client.
        batcher: when given, claims share pipelines with concurrent calls' commands (each claim is still one
            atomic script; only the round trip is shared).
    """

    def __init__(self, client: Redis, batcher: CommandBatcher | None = None) -> None:
        self._client = client
        self._batcher = batcher
        self._publish = load_script(client, "parley_keydir", "publish_keys")
        self._claim = load_script(client, "parley_keydir", "claim_bundles")

    async def identity_key(self, address: str, device_id: int) -> bytes:
        key: Any = await self._client.hget(redis_keys.device_keys(address, device_id), "ik")
        return key or b""

    async def publish(
        self,
        address: str,
        device_id: int,
        *,
        verified_identity_key: bytes,
        read_identity_key: bytes,
        registration_id: int | None,
        signed_prekey: SignedKey | None,
        pq_prekey: SignedKey | None,
        one_time_prekeys: Sequence[OneTimeKey],
        one_time_pq_prekeys: Sequence[SignedKey],
        max_one_time_prekeys: int,
        max_one_time_pq_prekeys: int,
        now_ms: int,
    ) -> PublishResult:
        spk = (signed_prekey.key_id, signed_prekey.public_key, signed_prekey.signature) if signed_prekey else ("",) * 3
        pq = (pq_prekey.key_id, pq_prekey.public_key, pq_prekey.signature) if pq_prekey else ("",) * 3
        result: list[Any] = await self._publish(
            keys=[
                redis_keys.device_keys(address, device_id),
                redis_keys.device_one_time_prekeys(address, device_id),
                redis_keys.user_key_devices(address),
                redis_keys.device_one_time_pq_prekeys(address, device_id),
            ],
            args=[
                device_id,
                verified_identity_key,
                read_identity_key,
                "" if registration_id is None else registration_id,
                *spk,
                *pq,
                max_one_time_prekeys,
                now_ms,
                max_one_time_pq_prekeys,
                len(one_time_prekeys),
                *(key.pack() for key in one_time_prekeys),
                *(key.pack() for key in one_time_pq_prekeys),
            ],
        )
        if int(result[0]) != 0:
            raise PublishRefusedError(int(result[0]))
        return PublishResult(
            one_time_prekey_count=int(result[2]),
            identity_key_changed=bool(result[1]),
            one_time_pq_prekey_count=int(result[3]),
        )

    async def count(self, address: str, device_id: int) -> PreKeyCounts:
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.llen(redis_keys.device_one_time_prekeys(address, device_id))
            pipe.llen(redis_keys.device_one_time_pq_prekeys(address, device_id))
            pipe.hexists(redis_keys.device_keys(address, device_id), "pq")
            count, pq_count, has_pq = await pipe.execute()
        return PreKeyCounts(
            one_time_prekeys=int(count), one_time_pq_prekeys=int(pq_count), has_last_resort_pq_prekey=bool(has_pq)
        )

    async def claim(
        self,
        address: str,
        device_ids: Sequence[int],
        requester: str,
        *,
        now_ms: int,
        max_requesters: int,
        requester_ttl_ms: int,
        guard: DrainGuard,
    ) -> list[Bundle]:
        keys = [redis_keys.user_key_requesters(address)]
        for device_id in device_ids:
            keys += [
                redis_keys.device_keys(address, device_id),
                redis_keys.device_one_time_prekeys(address, device_id),
                redis_keys.device_one_time_pq_prekeys(address, device_id),
                redis_keys.device_claims(address, device_id),
            ]
        args: list[str | int] = [requester, now_ms, max_requesters, requester_ttl_ms, guard.max_claims, guard.window_ms]
        raw: list[Any]
        if self._batcher is not None:
            raw = await self._batcher.run_script(self._claim, keys, args)
        else:
            raw = await self._claim(keys=keys, args=args)
        bundles = []
        for index, device_id in enumerate(device_ids):
            found, reg, ik, spk_id, spk, spk_sig, pq_otpk, pq_id, pq, pq_sig, otpk, left, pq_left, claims = raw[
                index * _FIELDS_PER_DEVICE : (index + 1) * _FIELDS_PER_DEVICE
            ]
            if not int(found):
                continue
            pq_prekey, pq_kind = None, None
            if pq_otpk:
                pq_prekey, pq_kind = SignedKey.unpack(pq_otpk), PqPreKeyKind.ONE_TIME
            elif pq:
                pq_prekey, pq_kind = SignedKey(int(pq_id), pq, pq_sig), PqPreKeyKind.LAST_RESORT
            bundles.append(
                Bundle(
                    device_id=device_id,
                    registration_id=int(reg),
                    identity_key=ik,
                    signed_prekey=SignedKey(int(spk_id), spk, spk_sig),
                    one_time_prekey=OneTimeKey.unpack(otpk) if otpk else None,
                    pq_prekey=pq_prekey,
                    remaining_one_time_prekeys=int(left),
                    pq_prekey_kind=pq_kind,
                    remaining_one_time_pq_prekeys=int(pq_left),
                    claims_in_window=int(claims),
                )
            )
        return bundles

    async def recent_requesters(self, address: str, limit: int) -> list[str]:
        members: list[Any] = await self._client.zrevrange(redis_keys.user_key_requesters(address), 0, limit - 1)
        return [member.decode() for member in members]
