"""The README's signature example against what the service signs, URL rules and retry backoff, as pure functions."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from parley_notification.delivery import DeliveryPolicy
from parley_notification.handler import check_webhook_url
from parley_notification.webhook_client import Outcome, classify
from parley_runtime.errors import ParleyError
from parley_sdk import webhooks

SECRET = bytes(range(32))
BODY = b'{"id":"k","type":"message_waiting"}'
README = Path(__file__).parents[3] / "services" / "notification" / "README.md"


def _readme_verify() -> Callable[[bytes, dict[str, str], bytes], bool]:
    """The ``verify`` the README gives integrators, run as they would copy it."""
    [snippet] = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 -- the README's own example, which integrators copy as it is
    verify = namespace["verify"]
    assert callable(verify)
    return verify


def test_the_readme_example_verifies_what_the_service_signs() -> None:
    verify = _readme_verify()
    timestamp = int(time.time())
    headers = {"Parley-Timestamp": str(timestamp), "Parley-Signature": webhooks.sign(SECRET, timestamp, BODY)}
    assert verify(SECRET, headers, BODY)
    assert not verify(SECRET, headers, BODY + b" ")
    assert not verify(bytes(32), headers, BODY)
    stale = timestamp - 3600
    replayed = {"Parley-Timestamp": str(stale), "Parley-Signature": webhooks.sign(SECRET, stale, BODY)}
    assert not verify(SECRET, replayed, BODY)


@pytest.mark.parametrize(
    ("url", "loopback_ok"),
    [
        ("https://birdy.example/hooks/parley", False),
        ("https://93.184.216.34:8443/hook", False),
        ("https://[2606:4700::1111]/hook", False),
        ("http://127.0.0.1:8080/hook", True),
        ("http://localhost/hook", True),
        ("https://[::1]/hook", True),
    ],
)
def test_good_webhook_urls(url: str, loopback_ok: bool) -> None:
    assert check_webhook_url(url, allow_loopback_http=loopback_ok) == url


@pytest.mark.parametrize(
    "url",
    ["http://birdy.example/hook", "https://192.168.1.4/hook", "https://[fe80::1]/hook", "https://0.0.0.0/", "x"],
)
def test_bad_webhook_urls_even_with_loopback_allowed(url: str) -> None:
    with pytest.raises(ParleyError):
        check_webhook_url(url, allow_loopback_http=True)


def test_statuses_are_classified() -> None:
    assert [classify(status) for status in (200, 204, 429, 408, 500, 503, 301, 400, 404, 410)] == [
        Outcome.DELIVERED,
        Outcome.DELIVERED,
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.REFUSED,
        Outcome.REFUSED,
        Outcome.REFUSED,
        Outcome.REFUSED,
    ]


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    policy = DeliveryPolicy(backoff_base_ms=1000, backoff_max_ms=60_000)
    assert [policy.backoff_ms(attempt, 0.0) for attempt in (1, 2, 3, 4)] == [500, 1000, 2000, 4000]
    assert [policy.backoff_ms(attempt, 0.999999) for attempt in (1, 2, 3)] == [999, 1999, 3999]
    assert policy.backoff_ms(30, 0.0) == 30_000
    assert policy.backoff_ms(1000, 0.5) == 45_000
