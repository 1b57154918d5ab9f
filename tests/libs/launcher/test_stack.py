"""The launcher's stack: every process starts healthy with the compose settings, a conversation runs through
relays balanced by the SDK while one relay replica drains and stops, and `down` stops everything it started."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.conversation import Endpoints, converse

from parley_launcher import Stack, balanced_target
from parley_runtime.healthcheck import is_serving


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_three_relays_one_drained_mid_conversation_loses_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        processes = {process.name: process for process in stack.up(relays=3, free_ports=True)}
        assert set(processes) == {
            "redis",
            "identity",
            "keydir",
            "moderation",
            "notification",
            "relay-1",
            "relay-2",
            "relay-3",
        }
        assert all(state == "serving" for _, state in stack.status())
        relays = balanced_target(list(processes.values()))
        assert relays.count(",") == 2

        async def drain_relay_2() -> None:
            # SIGTERM: the replica answers NOT_SERVING, ends its streams within its grace, and exits; the streams
            # it served come back on the other replicas (round_robin skips the one that left).
            os.kill(processes["relay-2"].pid, signal.SIGTERM)
            async with asyncio.timeout(60):
                while processes["relay-2"].alive():  # noqa: ASYNC110 -- nothing signals another process's exit
                    await asyncio.sleep(0.1)

        endpoints = Endpoints(processes["identity"].target, processes["keydir"].target, stack.admin_token)
        tally = asyncio.run(
            converse(endpoints, ana_relay=relays, ben_relay=relays, messages=40, meanwhile=drain_relay_2)
        )
        assert tally.ben.read == tally.sent_to_ben
        assert tally.ana.read == tally.sent_to_ana
        assert len(tally.sent_to_ben) == len(tally.sent_to_ana) == 40
        assert not is_serving(processes["relay-2"].target)
    finally:
        stopped = stack.down()
    assert "redis" in stopped
    assert not any(process.alive() for process in processes.values())
    assert (tmp_path / "logs" / "relay-1.log").stat().st_size > 0


@pytest.mark.timeout(120)
def test_command_line_up_status_down(tmp_path: Path) -> None:
    def launcher(*args: str) -> subprocess.CompletedProcess[str]:
        # This interpreter on the launcher module, with arguments of the test's own.
        return subprocess.run(  # noqa: S603
            [sys.executable, "-m", "parley_launcher", *args, "--run-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    assert launcher("status").returncode == 1
    try:
        up = launcher("up", "--relays", "2", "--free-ports")
        assert up.returncode == 0, up.stderr
        assert "relays, balanced by the SDK: ipv4:127.0.0.1:" in up.stdout
        status = launcher("status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("serving") == 7
        # A second `up` finds the running stack and starts nothing.
        again = launcher("up", "--relays", "2", "--free-ports")
        assert again.stdout.splitlines()[:7] == up.stdout.splitlines()[:7]
    finally:
        down = launcher("down")
    assert down.returncode == 0
    assert "stopped relay-2, relay-1, notification, moderation, keydir, identity, redis" in down.stdout
    assert launcher("status").returncode == 1
