"""Following identity's provider list at start-up."""

from __future__ import annotations

import asyncio

import pytest

from parley_runtime.config import IdentityPeerSettings, load_settings
from parley_runtime.providers import follow_identity
from parley_runtime.telemetry import Telemetry
from parley_runtime.testing import free_port


async def test_a_start_that_never_hears_identity_times_out_and_leaves_no_watch_behind(telemetry: Telemetry) -> None:
    # Nothing listens on the port: identity never answers.
    settings = load_settings(
        IdentityPeerSettings,
        identity_target=f"127.0.0.1:{free_port()}",
        startup_timeout_s=0.3,
        internal_token="test-internal-token",
    )
    before = asyncio.all_tasks()
    with pytest.raises(TimeoutError):
        await follow_identity(settings, telemetry)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
