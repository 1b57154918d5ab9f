"""Steady cross-provider traffic under injected faults, with every message accounted for at its recipients.

Senders encrypt each message once and send the same stanza until the relay acknowledges it (retrying on the other
replica after UNAVAILABLE, DEADLINE_EXCEEDED or a dead connection), so a retry is the at-least-once resend the
relay de-duplicates by message id. Receivers keep a stream to one replica, move to the other when it fails, record
each delivery before acknowledging it, and decrypt each message id once (the app's exactly-once).

The ledger's verdicts:

- **lost**: a target device of an acknowledged send never received it (must be 0);
- **duplicated**: a device received one message id under two different delivery ids, i.e. it was stored twice,
  which the app would see twice (must be 0); redelivery of the same delivery id after a crash is at-least-once
  and only counted;
- **undecryptable**: a first delivery that did not decrypt (must be 0);
- **refused**: sends given up, by reason (a suspended provider's, say): not acknowledged, so not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from parley.content.v1 import content_pb2
from parley.identity.v1 import identity_pb2 as id_pb
from parley.relay.v1 import relay_pb2 as relay_pb
from parley.relay.v1 import relay_pb2_grpc
from parley_sdk import DeviceClient, ProviderBackend, RelayConnection, StreamClosedError, error_reason
from parley_soak._stack import LocalStack
from parley_stanza import Address, Message, encode

PROVIDERS = ("gatekeeper", "birdy", "chirp")
FAULTS = ("relay_kill", "relay_term", "redis_restart", "redis_pause", "provider_suspend")
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
_SEND_BUDGET_S = 45.0


@dataclass(frozen=True)
class SoakConfig:
    """What one soak does.

    Attributes:
        seconds: how long traffic and faults run (then the soak waits for every acknowledged send to arrive).
        seed: the seed of every random choice (fault times and kinds, who sends to whom).
        rate: messages per second, all senders together.
        fault_gap_s: the range of seconds between two faults.
        drain_s: the longest wait, after traffic stops, for acknowledged sends to arrive.
    """

    seconds: float = 600.0
    seed: int = 0
    rate: float = 20.0
    fault_gap_s: tuple[float, float] = (6.0, 14.0)
    drain_s: float = 60.0


@dataclass
class SoakReport:
    """What a soak measured."""

    seed: int
    seconds: float
    sent: int = 0
    acknowledged: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    redelivered: int = 0
    undecryptable: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    faults: list[tuple[float, str, str]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Nothing acknowledged was lost, nothing was seen twice, everything decrypted."""
        return self.lost == 0 and self.duplicated == 0 and self.undecryptable == 0 and self.delivered > 0

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "seed": self.seed,
            "seconds": self.seconds,
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "redelivered": self.redelivered,
            "undecryptable": self.undecryptable,
            "refused": dict(self.refused),
            "retries": self.retries,
            "faults": [{"at_s": round(at, 1), "kind": kind, "target": target} for at, kind, target in self.faults],
            "latency_ms": self.latency_ms,
            "ok": self.ok,
        }


@dataclass
class _Ledger:
    """Every acknowledged send's target devices, and what each device received."""

    sent_at: dict[str, float] = field(default_factory=dict)
    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    received: dict[tuple[str, str], float] = field(default_factory=dict)
    delivery_ids: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def missing(self) -> list[tuple[str, str]]:
        return [(d, m) for m, devices in self.targets.items() for d in devices if (d, m) not in self.received]


class Soak:
    """One soak run against a :class:`LocalStack` (see :func:`run_soak`)."""

    def __init__(self, stack: LocalStack, config: SoakConfig, progress: Callable[[str], None]) -> None:
        self._stack = stack
        self._config = config
        self._progress = progress
        self._rng = random.Random(config.seed)  # noqa: S311  # a repeatable schedule from a printed seed, no secret
        self._report = SoakReport(config.seed, config.seconds)
        self._ledger = _Ledger()
        self._started = time.monotonic()
        self._devices: list[DeviceClient] = []
        self._backends: list[ProviderBackend] = []
        self._channels = [grpc.aio.insecure_channel(stack.services[name].target) for name in stack.relay_names]
        self._relays = [relay_pb2_grpc.RelayServiceStub(channel) for channel in self._channels]
        self._users: dict[str, list[Address]] = {}

    async def run(self) -> SoakReport:
        """Sets up the cast, runs traffic and faults for the configured time, drains, and reports.

        Raises:
            Exception: whatever broke a sender or the fault injector (the soak stops at once).
        """
        await self._set_up()
        stop = asyncio.Event()
        receivers = [asyncio.create_task(self._receive(device, index)) for index, device in enumerate(self._devices)]
        try:
            workers = [
                *(
                    asyncio.create_task(self._send_loop(index, device, stop))
                    for index, device in enumerate(self._devices)
                ),
                asyncio.create_task(self._inject(stop)),
            ]
            timer = asyncio.create_task(asyncio.sleep(self._config.seconds))
            # Workers run until told to stop, so the first to finish is the timer or one that broke.
            await asyncio.wait([timer, *workers], return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            timer.cancel()
            await asyncio.gather(*workers)
            self._progress(f"traffic stopped; waiting up to {self._config.drain_s:.0f} s for every acknowledged send")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.drain_s):
                    while self._ledger.missing():
                        self._ledger.all_in.clear()
                        await self._ledger.all_in.wait()
        finally:
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
            await self._close()
        return self._finish()

    async def _set_up(self) -> None:
        """Three providers, each with a one-device user and a two-device user, all opted in to one another."""
        backends = {}
        for provider in PROVIDERS:
            backends[provider] = ProviderBackend(
                provider,
                await self._stack.enlist(provider),
                identity_target=self._stack.services["identity"].target,
                keydir_target=self._stack.services["keydir"].target,
                relay_target=self._stack.services[self._stack.relay_names[0]].target,
            )
        self._backends = list(backends.values())
        for provider, backend in backends.items():
            others = [p for p in PROVIDERS if p != provider]
            for name, devices in (("solo", 1), ("duo", 2)):
                user = Address.parse(f"username:{name}-{provider}@{provider}")
                for index in range(devices):
                    device = await DeviceClient.register(backend, user, new_user=index == 0)
                    await device.publish_keys(100)
                    self._devices.append(device)
                await self._devices[-1].enable_third_party_chats(others)
                self._users.setdefault(provider, []).append(user)
        self._progress(f"{len(self._devices)} devices of {sum(map(len, self._users.values()))} users registered")

    async def _send_loop(self, index: int, device: DeviceClient, stop: asyncio.Event) -> None:
        interval = len(self._devices) / self._config.rate
        others = [u for p, users in self._users.items() if p != device.user.provider for u in users]
        rng = random.Random(f"{self._config.seed}/{device.address}")  # noqa: S311  # likewise
        for number in itertools.count():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rng.uniform(0.5, 1.5) * interval):
                    await stop.wait()
            if stop.is_set():
                return
            recipient = rng.choice(others)
            await self._send_one(device, recipient, f"soak-d{index}-{number}")

    async def _send_one(self, device: DeviceClient, recipient: Address, message_id: str) -> None:
        started = time.monotonic()
        self._report.sent += 1
        content = content_pb2.Content(sent_at_ms=int(time.time() * 1000), text=content_pb2.Text(body=message_id))
        stanza: bytes | None = None
        message: Message | None = None
        replica = self._rng.randrange(len(self._relays))
        while True:
            try:
                if message is None:
                    message = await device.encrypt(recipient, content, message_id=message_id)
                    stanza = encode(message)
                assert stanza is not None
                await self._relays[replica].Send(
                    relay_pb.SendRequest(stanza=stanza),
                    metadata=device.backend.credentials(str(device.user), device.device_id),
                    timeout=5.0,
                )
                break
            except grpc.aio.AioRpcError as error:
                if error.code() not in _RETRYABLE or time.monotonic() - started > _SEND_BUDGET_S:
                    reason = error_reason(error)[0] if error.code() not in _RETRYABLE else error.code().name
                    self._report.refused[reason] += 1
                    return
                self._report.retries += 1
                replica = (replica + 1) % len(self._relays)
                await asyncio.sleep(0.2)
        assert message is not None
        self._report.acknowledged += 1
        self._ledger.sent_at[message_id] = started
        self._ledger.targets[message_id] = tuple(str(payload.device) for payload in message.payloads)

    async def _receive(self, device: DeviceClient, index: int) -> None:
        """Streams the device's deliveries from one replica, moving to the next whenever the stream fails."""
        metadata = device.backend.credentials
        address = str(device.address)
        for attempt in itertools.count(index):
            stub = self._relays[attempt % len(self._relays)]
            try:
                async with RelayConnection(stub, metadata(str(device.user), device.device_id)) as stream:
                    async for incoming in stream:
                        if isinstance(incoming.stanza, Message):
                            self._record(device, address, incoming.stanza, incoming.delivery_id)
                        await stream.ack(incoming.delivery_id)
            except (grpc.aio.AioRpcError, StreamClosedError, EOFError):
                pass
            await asyncio.sleep(0.2)

    def _record(self, device: DeviceClient, address: str, message: Message, delivery_id: str) -> None:
        key = (address, message.id)
        seen = self._ledger.delivery_ids.setdefault(key, set())
        if key in self._ledger.received:
            if delivery_id in seen:
                self._report.redelivered += 1
            else:
                self._report.duplicated += 1
            seen.add(delivery_id)
            return
        seen.add(delivery_id)
        try:
            device.decrypt(message)
        except Exception:  # any failure to read a first delivery is what this counts
            self._report.undecryptable += 1
        self._ledger.received[key] = time.monotonic()
        self._ledger.all_in.set()

    async def _inject(self, stop: asyncio.Event) -> None:
        """Faults at seeded random times, every kind once per round in a seeded random order."""
        low, high = self._config.fault_gap_s
        while not stop.is_set():
            deck = list(FAULTS)
            self._rng.shuffle(deck)
            for kind in deck:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._rng.uniform(low, high)):
                        await stop.wait()
                if stop.is_set():
                    return
                target = await self._fault(kind)
                at = time.monotonic() - self._started
                self._report.faults.append((at, kind, target))
                self._progress(f"{at:6.1f} s  fault {kind} ({target}); sent {self._report.sent}")

    async def _fault(self, kind: str) -> str:
        stack = self._stack
        if kind in ("relay_kill", "relay_term"):
            name = self._rng.choice(stack.relay_names)
            await stack.restart(name, kill=kind == "relay_kill")
            return name
        if kind == "redis_restart":
            await asyncio.to_thread(stack.redis.restart)
            return "redis"
        if kind == "redis_pause":
            pause = self._rng.uniform(1.0, 3.0)
            stack.redis.pause()
            await asyncio.sleep(pause)
            stack.redis.resume()
            return f"redis for {pause:.1f} s"
        provider = self._rng.choice(PROVIDERS)
        identity = stack.identity()
        await identity.SuspendProvider(id_pb.SuspendProviderRequest(provider_id=provider), metadata=stack.admin)
        await asyncio.sleep(self._rng.uniform(1.0, 3.0))
        await identity.ApproveProvider(id_pb.ApproveProviderRequest(provider_id=provider), metadata=stack.admin)
        return provider

    def _finish(self) -> SoakReport:
        report, ledger = self._report, self._ledger
        report.lost = len(ledger.missing())
        report.delivered = len(ledger.received)
        latencies = sorted(
            (at - ledger.sent_at[message_id]) * 1000
            for (_, message_id), at in ledger.received.items()
            if message_id in ledger.sent_at
        )
        report.latency_ms = _percentiles(latencies)
        return report

    async def _close(self) -> None:
        for channel in self._channels:
            await channel.close()
        for backend in self._backends:
            await backend.close()
        await self._stack.close_channels()


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    pick = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}
    return {name: round(values[min(len(values) - 1, int(q * len(values)))], 1) for name, q in pick.items()}
