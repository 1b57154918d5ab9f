"""docker-compose.yml brought up for real: the image built from the Dockerfile, the whole stack healthy, a
cross-provider conversation from this host through the published relay ports, and one relay replica restarted
mid-conversation without losing a message.

It needs root (its own dockerd; apt-get for docker.io and debootstrap when missing) and is skipped, saying why,
where that is not so. See tests/support/docker_engine.py for how it gets an engine and images without a registry.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support.conversation import Endpoints, converse
from support.docker_engine import (
    REPO,
    DockerEngine,
    compose_logs_on_failure,
    install_missing_packages,
    why_not_runnable,
)

from parley_runtime.credentials import deployment_variables, new_credentials
from parley_runtime.healthcheck import is_serving
from parley_runtime.testing import free_port

_REASON = why_not_runnable()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_REASON is not None, reason=f"compose test cannot run here: {_REASON}"),
]

_IMAGE = "parley:compose-test"
_BASE_IMAGE = "parley-base:compose-test"
_PARLEY_SERVICES = ("identity", "keydir", "moderation", "notification", "relay-1", "relay-2")


@dataclass
class Stack:
    """A running compose project and how to reach it from the host."""

    engine: DockerEngine
    project: str
    env: dict[str, str]
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 300) -> str:
        return self.engine.compose(REPO, self.project, self.env, *args, timeout=timeout)

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The compose stack on a private engine, torn down (containers, network, volumes, engine) afterwards."""
    install_missing_packages()
    with DockerEngine() as engine:
        engine.import_base_image(_BASE_IMAGE)
        engine.build_image(_IMAGE, _BASE_IMAGE)
        ports = {service: free_port() for service in ("identity", "keydir", "moderation", "notification")}
        ports |= {"relay-1": free_port(), "relay-2": free_port()}
        env = {
            "PARLEY_IMAGE": _IMAGE,
            # The local base carries redis-server; compose's default is the official Redis image.
            "PARLEY_REDIS_IMAGE": _BASE_IMAGE,
            "PARLEY_ADMIN_TOKEN": secrets.token_urlsafe(24),
            **deployment_variables(new_credentials()),
            "PARLEY_FRANKING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            **{f"{service.upper().replace('-', '_')}_PUBLISHED_PORT": str(port) for service, port in ports.items()},
        }
        stack = Stack(engine, f"parley-test-{secrets.token_hex(3)}", env, ports)
        try:
            with compose_logs_on_failure(engine, REPO, stack.project, env):
                stack.compose("up", "--detach", "--no-build", "--wait", "--wait-timeout", "180", timeout=240)
            yield stack
        finally:
            stack.compose("down", "--volumes", "--timeout", "20", timeout=120)


@pytest.mark.timeout(600)
def test_stack_is_healthy_hardened_and_published_on_loopback_only(stack: Stack) -> None:
    listing = [json.loads(line) for line in stack.compose("ps", "--format", "json").splitlines() if line.strip()]
    by_service = {entry["Service"]: entry for entry in listing}
    assert set(by_service) == {"redis", *_PARLEY_SERVICES}
    assert all(entry["Health"] == "healthy" for entry in by_service.values()), listing
    for service in _PARLEY_SERVICES:
        assert is_serving(stack.target(service)), service
        inspected = json.loads(stack.engine.docker("inspect", by_service[service]["ID"]))[0]
        assert inspected["Config"]["User"] == "10001:10001"
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert inspected["HostConfig"]["CapDrop"] == ["ALL"]
        published = [binding for bindings in inspected["HostConfig"]["PortBindings"].values() for binding in bindings]
        assert [binding["HostIp"] for binding in published] == ["127.0.0.1"]
        # PID 1 is the init, which forwards SIGTERM to the service so that it drains.
        assert inspected["Path"] == "dumb-init"
    assert not json.loads(stack.engine.docker("inspect", by_service["redis"]["ID"]))[0]["HostConfig"]["PortBindings"]


@pytest.mark.timeout(600)
def test_conversation_through_the_published_relays_survives_a_relay_restart(stack: Stack) -> None:
    async def restart_bens_relay() -> None:
        # `compose restart` sends SIGTERM (the relay drains and ends its streams), then starts it again.
        await asyncio.to_thread(stack.compose, "restart", "relay-2")
        # Health is polled: nothing else tells the host when the container's service is up again.
        async with asyncio.timeout(60):
            while not await asyncio.to_thread(is_serving, stack.target("relay-2")):  # noqa: ASYNC110
                await asyncio.sleep(0.2)

    endpoints = Endpoints(stack.target("identity"), stack.target("keydir"), stack.env["PARLEY_ADMIN_TOKEN"])
    with compose_logs_on_failure(stack.engine, REPO, stack.project, stack.env):
        tally = asyncio.run(
            converse(
                endpoints,
                ana_relay=stack.target("relay-1"),
                ben_relay=stack.target("relay-2"),
                messages=40,
                meanwhile=restart_bens_relay,
            )
        )
    # Every message arrived, each read once, in the order sent (order is kept per sender-recipient pair).
    assert tally.ben.read == tally.sent_to_ben
    assert tally.ana.read == tally.sent_to_ana
    assert len(tally.sent_to_ben) == len(tally.sent_to_ana) == 40
    # The restart really cut Ben's stream, and his inbox took it up again.
    assert tally.ben.reconnects >= 1
