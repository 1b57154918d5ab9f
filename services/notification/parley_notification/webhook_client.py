"""Posting one signed delivery to a provider's webhook over HTTP (aiohttp), and classifying the outcome.

Redirects are not followed (a webhook that redirects is misconfigured, and following would let a registered URL
point the gatekeeper at another host). Host names are resolved on every new connection and only public addresses
are connected to, so a name that resolves (or is later re-pointed) to the gatekeeper's internal network cannot
turn webhooks into requests against it; registration already refuses such IP literals. The response body is
ignored. Outcomes:

* 2xx: delivered.
* 408, 425, 429, 5xx, a timeout or a transport error: worth retrying.
* any other status (3xx, most 4xx): refused for good, dead-lettered at once; retrying would change nothing.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

_RETRYABLE_4XX = frozenset({408, 425, 429})


class Outcome(enum.Enum):
    """How one attempt ended."""

    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt's outcome, its HTTP status (0 when there was none) and a short error text."""

    outcome: Outcome
    status: int = 0
    error: str = ""


def classify(status: int) -> Outcome:
    """The outcome an HTTP status means."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if status >= 500 or status in _RETRYABLE_4XX:
        return Outcome.RETRY
    return Outcome.REFUSED


class PublicAddressResolver(AbstractResolver):
    """Resolves webhook host names to their public addresses only (loopback too when allowed, for development).

    Args:
        allow_loopback: whether loopback addresses may be connected to.
        resolver: the resolver asked first (aiohttp's default when None).
    """

    def __init__(self, *, allow_loopback: bool, resolver: AbstractResolver | None = None) -> None:
        self._allow_loopback = allow_loopback
        self._resolver = resolver if resolver is not None else aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The public addresses of ``host``.

        Raises:
            OSError: when it has none (aiohttp reports a connection error; the attempt is retried later).
        """
        results = await self._resolver.resolve(host, port, family)
        allowed = [result for result in results if self._allowed(result["host"])]
        if not allowed:
            raise OSError(f"webhook host {host!r} resolves to no public address")
        return allowed

    def _allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return ip.is_global or (self._allow_loopback and ip.is_loopback)

    async def close(self) -> None:
        """Closes the underlying resolver."""
        await self._resolver.close()


class WebhookClient:
    """One pooled aiohttp session for every webhook call of the process.

    Args:
        timeout_s: total time one attempt may take (connect, send, response headers and body).
        max_connections: connections open at once across all providers.
        allow_loopback: whether webhook hosts may resolve to loopback addresses (development and tests only).
    """

    def __init__(self, *, timeout_s: float, max_connections: int, allow_loopback: bool = False) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._allow_loopback = allow_loopback
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop, as aiohttp requires.
        if self._session is None:
            resolver = PublicAddressResolver(allow_loopback=self._allow_loopback)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, resolver=resolver),
                timeout=self._timeout,
                headers={"User-Agent": "parley-notification/1"},
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """POSTs ``body`` to ``url`` with ``headers``; never raises for network trouble.

        Returns:
            The attempt's outcome.
        """
        try:
            async with self._open().post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            return AttemptResult(Outcome.RETRY, error="timeout")
        except aiohttp.ClientError as exc:
            return AttemptResult(Outcome.RETRY, error=f"transport: {type(exc).__name__}")
        outcome = classify(status)
        return AttemptResult(outcome, status, "" if outcome is Outcome.DELIVERED else f"http {status}")

    async def close(self) -> None:
        """Closes the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
            # aiohttp closes TLS transports on the next loop iterations; give them one so none leaks a warning.
            await asyncio.sleep(0)
