"""Webhook connections go to public addresses only: a host name pointing into the gatekeeper's network is refused."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from support.notification import WebhookReceiver

from parley_notification.webhook_client import Outcome, PublicAddressResolver, WebhookClient


class _Canned(AbstractResolver):
    """Answers every name with fixed addresses, as a DNS server under someone else's control could."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=address, port=port, family=family, proto=0, flags=0)
            for address in self._addresses
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "192.168.1.1", "172.16.0.1", "169.254.169.254", "100.64.0.1", "fd00::1", "127.0.0.1"]
)
async def test_a_name_resolving_only_to_internal_addresses_is_refused(address: str) -> None:
    resolver = PublicAddressResolver(allow_loopback=False, resolver=_Canned(address))
    with pytest.raises(OSError, match="no public address"):
        await resolver.resolve("hooks.birdy.example", 443)


async def test_only_the_public_addresses_of_a_mixed_answer_are_used() -> None:
    resolver = PublicAddressResolver(allow_loopback=False, resolver=_Canned("10.0.0.7", "93.184.216.34"))
    assert [r["host"] for r in await resolver.resolve("hooks.birdy.example", 443)] == ["93.184.216.34"]


async def test_loopback_is_allowed_only_when_asked_for() -> None:
    resolver = PublicAddressResolver(allow_loopback=True, resolver=_Canned("127.0.0.1", "10.0.0.7"))
    assert [r["host"] for r in await resolver.resolve("localhost", 80)] == ["127.0.0.1"]


async def test_a_webhook_named_localhost_is_not_called_unless_loopback_is_allowed() -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    url = f"http://localhost:{receiver.port}/hook"
    strict = WebhookClient(timeout_s=5, max_connections=4, allow_loopback=False)
    refused = await strict.post(url, b"{}", {})
    await strict.close()
    assert refused.outcome is Outcome.RETRY
    assert receiver.received == []
    development = WebhookClient(timeout_s=5, max_connections=4, allow_loopback=True)
    delivered = await development.post(url, b"{}", {})
    await development.close()
    assert delivered.outcome is Outcome.DELIVERED
    assert len(receiver.received) == 1
    await receiver.stop()
