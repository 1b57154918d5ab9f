"""Fixtures of the runtime's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.probe import Probe, ProbeFactory, start_probe_server

from parley_runtime.telemetry import Telemetry


@pytest.fixture
async def start_probe(telemetry: Telemetry) -> AsyncIterator[ProbeFactory]:
    """Starts probe servers (see ``support.probe``); stops them after the test."""
    started: list[Probe] = []

    async def start(**overrides: object) -> Probe:
        probe = await start_probe_server(telemetry, **overrides)
        started.append(probe)
        return probe

    yield start
    for probe in started:
        probe.release.set()
        await probe.close()
