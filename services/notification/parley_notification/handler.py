"""Notification rules for the RPCs: webhook and push-target registration, notices, dead letters. No gRPC here.

Everything is checked before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from parley.common.v1.common_pb2 import ErrorReason
from parley_notification.model import DeadLetter, Notice, Webhook
from parley_notification.notices import NoticeHub, TooManyWatchersError
from parley_notification.store import DeadLetterMissingError, NotificationStore
from parley_runtime.errors import Code, ParleyError, dependency_unavailable, invalid_field, missing_field, not_found
from parley_stanza import Address

SECRET_BYTES = 32
MAX_URL_LENGTH = 2048
MAX_PUSH_TOKEN_LENGTH = 4096
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_REDRIVE_IDS = 500
_SCAN_CHUNK = 500
_SCAN_CHUNKS_PER_PAGE = 20
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class DeviceStatus(enum.Enum):
    """What identity says about a device that asks to be registered for pushes."""

    REGISTERED = "registered"
    """The user exists and has this device."""
    USER_NOT_FOUND = "user_not_found"
    """The user is not registered."""
    DEVICE_NOT_FOUND = "device_not_found"
    """The user exists but has no such device (never registered, or removed)."""
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    """Identity does not vouch for the device's provider: its status changed after this replica authenticated
    the call."""


class DeviceRegistry(Protocol):
    """Identity's list of devices, as push-target registration needs it (see ``identity_client``)."""

    async def device_status(self, device: Address) -> DeviceStatus:
        """Whether ``device`` (an address with a device part) is registered."""


@dataclass(frozen=True, slots=True)
class HandlerLimits:
    """Configurable rules.

    Attributes:
        allow_loopback_http: accept ``http://`` webhooks on loopback hosts (development and tests only).
    """

    allow_loopback_http: bool = False


def _too_large(field: str, limit: int) -> ParleyError:
    return ParleyError(
        Code.INVALID_ARGUMENT, ErrorReason.ERROR_REASON_TOO_LARGE, f"{field} exceeds {limit}", field=field, limit=limit
    )


def check_webhook_url(url: str, *, allow_loopback_http: bool) -> str:
    """Validates a webhook URL and returns it.

    HTTPS is required. Hosts written as IP addresses must be public: a provider must not point the gatekeeper's
    requests at its internal network. Loopback is accepted, over HTTP too, only with ``allow_loopback_http``.

    Raises:
        ParleyError: INVALID_ARGUMENT / MISSING_FIELD, TOO_LARGE or INVALID_FIELD (field ``url``).
    """
    if not url:
        raise missing_field("url")
    if len(url) > MAX_URL_LENGTH:
        raise _too_large("url", MAX_URL_LENGTH)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise invalid_field("url", "not a URL") from None
    host = (parts.hostname or "").lower()
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise invalid_field("url", "needs a host, and no credentials or fragment")
    if port == 0 or not url.isascii() or any(ch.isspace() for ch in url):
        raise invalid_field("url", "not a valid URL")
    loopback = host in _LOOPBACK_NAMES
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        loopback = ip.is_loopback
        if not loopback and not ip.is_global:
            raise invalid_field("url", "the host must be a public address")
    if loopback and not allow_loopback_http:
        raise invalid_field("url", "loopback hosts are not allowed")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise invalid_field("url", "must be https")
    return url


def _check_page_token(token: str) -> str:
    if token and not _ENTRY_ID.fullmatch(token):
        raise invalid_field("page.page_token", "not a page token from this API")
    return token


class NotificationHandler:
    """The notification service's RPC logic.

    Args:
        store: webhooks, push targets, dead letters.
        hub: notices for watchers.
        devices: identity's devices, checked before a push target is stored.
        limits: configurable rules.
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: NotificationStore,
        hub: NoticeHub,
        devices: DeviceRegistry,
        limits: HandlerLimits,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hub = hub
        self._devices = devices
        self._limits = limits
        self._clock = clock

    async def register_webhook(self, provider_id: str, url: str) -> bytes:
        """Registers or replaces the provider's webhook with a fresh signing secret.

        Args:
            provider_id: the asserted provider.
            url: the endpoint.

        Returns:
            The secret that signs deliveries from now on (the previous one stops working at once).

        Raises:
            ParleyError: INVALID_ARGUMENT for a bad URL.
        """
        url = check_webhook_url(url, allow_loopback_http=self._limits.allow_loopback_http)
        secret = secrets.token_bytes(SECRET_BYTES)
        await self._store.set_webhook(provider_id, Webhook(url=url, secret=secret), int(self._clock() * 1000))
        return secret

    async def register_push_target(self, device: Address, push_token: str) -> None:
        """Registers or replaces the push token of the asserted device.

        The device must be registered with identity: an assertion's ``dev`` claim is the provider's word only,
        and a token stored for a device that does not exist would never be used nor cleaned up.

        Args:
            device: the asserted device.
            push_token: the provider's token for waking it, echoed in its deliveries.

        Raises:
            ParleyError: INVALID_ARGUMENT / MISSING_FIELD, TOO_LARGE or INVALID_FIELD (field ``push_token``);
                NOT_FOUND / USER_NOT_FOUND or DEVICE_NOT_FOUND when identity does not know the user or device;
                UNAVAILABLE / DEPENDENCY_UNAVAILABLE when identity no longer vouches for the device's provider.
        """
        if not push_token:
            raise missing_field("push_token")
        if len(push_token) > MAX_PUSH_TOKEN_LENGTH:
            raise _too_large("push_token", MAX_PUSH_TOKEN_LENGTH)
        if not push_token.isprintable() or not push_token.isascii():
            raise invalid_field("push_token", "must be printable ASCII")
        assert device.device is not None
        status = await self._devices.device_status(device)
        if status is DeviceStatus.USER_NOT_FOUND:
            raise not_found(ErrorReason.ERROR_REASON_USER_NOT_FOUND, "register the user first")
        if status is DeviceStatus.DEVICE_NOT_FOUND:
            raise not_found(ErrorReason.ERROR_REASON_DEVICE_NOT_FOUND, f"device {device} is not registered")
        if status is DeviceStatus.PROVIDER_UNAVAILABLE:
            # This replica's provider list lags identity's by up to a second. A retry is authenticated against
            # the new status and gets its exact refusal (or passes, if the provider was approved again).
            raise dependency_unavailable("the provider's status is changing; retry")
        await self._store.set_push_token(str(device.user), device.device, push_token)

    async def watch_notices(self, user: Address) -> AsyncIterator[Notice]:
        """The user's notices as they happen, until the caller stops.

        Raises:
            ParleyError: RESOURCE_EXHAUSTED / OVERLOADED when the replica serves its maximum of watchers.
        """
        try:
            async with self._hub.watch(str(user.user)) as queue:
                while True:
                    yield await queue.get()
        except TooManyWatchersError:
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED, ErrorReason.ERROR_REASON_OVERLOADED, "too many notice watchers; retry later"
            ) from None

    async def list_dead_letters(
        self, provider_id: str, page_size: int, page_token: str
    ) -> tuple[list[DeadLetter], str]:
        """Dead letters, oldest first, optionally of one provider.

        Args:
            provider_id: only this provider's, or "" for all.
            page_size: 0 for the default; capped.
            page_token: "" for the first page, else a previous ``next_page_token``.

        Returns:
            The page and the next page's token ("" at the end).

        Raises:
            ParleyError: INVALID_ARGUMENT / INVALID_FIELD for a bad page token.
        """
        after = _check_page_token(page_token)
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page: list[DeadLetter] = []
        # A provider filter may skip many entries: the scan is bounded per call, and the token resumes it.
        for _ in range(_SCAN_CHUNKS_PER_PAGE):
            chunk = await self._store.dead_letters(after, _SCAN_CHUNK if provider_id else size - len(page))
            for letter in chunk:
                after = letter.dead_letter_id
                if not provider_id or letter.provider_id == provider_id:
                    page.append(letter)
                    if len(page) == size:
                        return page, after
            if len(chunk) < (_SCAN_CHUNK if provider_id else size):
                return page, ""
        return page, after

    async def redrive_dead_letters(self, dead_letter_ids: Sequence[str], provider_id: str) -> int:
        """Queues dead letters again (attempts reset, idempotency keys unchanged).

        Args:
            dead_letter_ids: the entries; or empty, with ``provider_id``, for all of that provider's.
            provider_id: see above; must be empty when ids are given.

        Returns:
            How many were queued again.

        Raises:
            ParleyError: INVALID_ARGUMENT (MISSING_FIELD, INVALID_FIELD, BATCH_TOO_LARGE); NOT_FOUND / NOT_FOUND
                when an id is unknown (then nothing is redriven).
        """
        if dead_letter_ids:
            if provider_id:
                raise invalid_field("provider_id", "give dead_letter_ids or provider_id, not both")
            if len(dead_letter_ids) > MAX_REDRIVE_IDS:
                raise ParleyError(
                    Code.INVALID_ARGUMENT,
                    ErrorReason.ERROR_REASON_BATCH_TOO_LARGE,
                    f"at most {MAX_REDRIVE_IDS} ids per call",
                    limit=MAX_REDRIVE_IDS,
                )
            unique = list(dict.fromkeys(dead_letter_ids))
            for entry_id in unique:
                if not _ENTRY_ID.fullmatch(entry_id):
                    raise invalid_field("dead_letter_ids", "not a dead-letter id")
            try:
                return await self._store.redrive(unique, strict=True, now_ms=int(self._clock() * 1000))
            except DeadLetterMissingError as exc:
                raise not_found(
                    ErrorReason.ERROR_REASON_NOT_FOUND, "no such dead letter", dead_letter_id=unique[exc.index]
                ) from None
        if not provider_id:
            raise missing_field("dead_letter_ids")
        redriven = 0
        after = ""
        while True:
            chunk = await self._store.dead_letters(after, _SCAN_CHUNK)
            ids = [letter.dead_letter_id for letter in chunk if letter.provider_id == provider_id]
            if ids:
                redriven += await self._store.redrive(ids, strict=False, now_ms=int(self._clock() * 1000))
            if len(chunk) < _SCAN_CHUNK:
                return redriven
            after = chunk[-1].dead_letter_id
