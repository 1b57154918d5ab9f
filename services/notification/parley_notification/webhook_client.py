"""Posting one signed delivery to a provider's webhook over HTTP (aiohttp), and classifying the outcome.

Redirects are not followed (a webhook that redirects is misconfigured, and following would let a registered URL
point the gatekeeper at another host). The response body is ignored. Outcomes:

* 2xx: delivered.
* 408, 425, 429, 5xx, a timeout or a transport error: worth retrying.
* any other status (3xx, most 4xx): refused for good, dead-lettered at once; retrying would change nothing.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

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


class WebhookClient:
    """One pooled aiohttp session for every webhook call of the process.

    Args:
        timeout_s: total time one attempt may take (connect, send, response headers and body).
        max_connections: connections open at once across all providers.
    """

    def __init__(self, *, timeout_s: float, max_connections: int) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
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
