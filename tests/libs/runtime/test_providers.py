"""Following identity's provider list at start-up."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from parley.common.v1.common_pb2 import ProviderStatus
from parley.identity.v1.identity_pb2 import Provider
from parley_runtime.config import IdentityPeerSettings, load_settings
from parley_runtime.providers import ProviderCache, follow_identity
from parley_runtime.telemetry import Telemetry
from parley_runtime.testing import free_port


async def test_a_start_that_never_hears_identity_times_out_and_leaves_no_watch_behind(telemetry: Telemetry) -> None:
    # Nothing listens on the port: identity never answers.
    settings = load_settings(
        IdentityPeerSettings,
        identity_target=f"127.0.0.1:{free_port()}",
        startup_timeout_s=0.3,
        internal_token="keydir:test-credential-of-the-keydir",
    )
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await follow_identity(settings, telemetry)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before


def _provider(provider_id: str, status: ProviderStatus.ValueType) -> Provider:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Provider(provider_id=provider_id, status=status, signing_public_key=key)


def test_listeners_hear_which_provider_changed_or_that_everything_may_have() -> None:
    cache = ProviderCache()
    heard: list[str | None] = []
    cache.on_change(heard.append)
    cache.replace_all([_provider("birdy", ProviderStatus.PROVIDER_STATUS_APPROVED)])
    cache.put(_provider("birdy", ProviderStatus.PROVIDER_STATUS_SUSPENDED))
    assert heard == [None, "birdy"]
    record = cache.get("birdy")
    assert record is not None
    assert record.status == ProviderStatus.PROVIDER_STATUS_SUSPENDED
