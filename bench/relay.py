"""End-to-end messages per second through the relay, beside the bare transport and the bare Redis work.

Ours: ``PAIRS`` sender devices (users of the provider "birdy") each push ~600-byte message stanzas to their own
recipient device (a user of "gatekeeper") in ``SendBatch`` frames of ``BATCH`` stanzas on their ``Connect``
streams, with ``WINDOW`` frames in flight per stream; the recipients hold ``Connect`` streams and acknowledge
every ``Deliveries`` frame. Everything is real: identity, moderation and relay run as processes over real gRPC,
with a real Redis; the relay asks moderation about every frame (one ``CheckSendBatch``), with limits set high
enough that the load never meets them. Each recipient has written to its sender once before the load, so the
traffic is a conversation's, not a first contact per message. The stanzas carry placeholder ciphertexts (the
relay never decrypts), so the client spends nothing on crypto. Every accepted stanza is counted at its
recipient; a stanza that never arrives fails the run. Telemetry is off in every process (no trace sampled).

The floor of ``end_to_end``, the bare Redis work: per message an XADD to a mailbox stream with the relay's
fields, a PUBLISH of the hint and the XDEL of the ack, pipelined per batch from this process at the same
concurrency. ``transport``: the same client, frames and concurrency against ``_echo_relay.py``, a do-nothing
``grpc.aio`` servicer with the relay's RPC shapes. ``prosody_peer`` (when Debian's ``prosody`` is installed):
the same stanza size flooded through a private Prosody (``_prosody.py``) in the same run, its messages/s and
server CPU per message beside the relay's.

Offline recipients (the common case in real life): the same senders push frames to devices without a stream,
so every stanza is stored and announced (``message_waiting``), beside the bare Redis work of that (mailbox XADD,
hint PUBLISH, event XADD, pipelined per frame); every accepted stanza is counted in the mailboxes and the events.

Also measured in the same run: latency percentiles from the write of a frame to the arrival of each stanza at
its recipient at half the maximum sustained rate; relay, moderation and Redis CPU per message, with
moderation's share of the Redis CPU measured by calling it alone with the same checks, and Redis's commands per
message (INFO COMMANDSTATS; EVALSHA's time includes the commands its scripts run, listed again by name); a
py-spy profile of the relay by layer (RELAY_LAYERS), on the stream and on unary ``Send``; unary ``Send``
beside the echo floor, at full and at half load, twice: ``unary_send`` with a fresh one-time assertion on every
call, ``unary_send_session`` with the providers' sessions as the SDK sends them (``CreateSession`` once per
provider, then the session token and the acting user and device on every call); and the relay's resident memory
per idle connected device.

Ours (``end_to_end_production_telemetry``): the same stream load through a second relay process running
telemetry as in production (traces sampled parent-based at 1 %, traces and metrics exported over OTLP to the
bench's collector, bench/benchtelemetry.py), beside the main relay's rate (telemetry off) in the same run: the
ratio is what telemetry leaves of the throughput (target: at most 10 % overhead).

Writes bench/results/relay.json.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _prosody
import grpc.aio
import redis.asyncio as aioredis
from benchlib import Figure, parse_args, profile_layers, write_results
from benchtelemetry import OtlpSink, production_telemetry
from benchworld import CREDENTIALS, enlist, service_env
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parley.events.v1.events_pb2 import Event, MessageWaiting
from parley.identity.v1 import identity_pb2 as id_pb
from parley.identity.v1 import identity_pb2_grpc
from parley.moderation.v1 import moderation_pb2, moderation_pb2_grpc
from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_runtime import redis_keys
from parley_runtime.auth import DEVICE_METADATA, USER_METADATA, mint_assertion
from parley_runtime.testing import RedisServer, ServiceProcess, free_port
from parley_stanza import Address, Message, MessageType, Payload, PayloadKind, encode

PAIRS = 16
BATCH = 50
WINDOW = 4
STANZA_BYTES = 600
# Placeholder of the message id in the stanza template; every stanza gets its own id of the same length.
ID_TEMPLATE = "m" * 20
STREAMS_PER_CHANNEL = 100
DRAIN_TIMEOUT_S = 20.0
# Generous: the machine is shared, and once in a few runs 500 streams closing at once took over 10 s.
CLOSE_TIMEOUT_S = 30.0
RETENTION_MS = 30 * 86_400_000
"""The relay's default retention, as the floors trim mailboxes with it."""
# Moderation's buckets hold this many tokens and refill a tenth of it per second: the load never meets a limit.
UNLIMITED = 100_000_000
LIMITS = ("SEND", "FIRST_CONTACT", "PROVIDER", "PROVIDER_FIRST_CONTACT")

Metadata = tuple[tuple[str, str], ...]


def _progress(text: str) -> None:
    print(f"[relay bench] {text}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Device:
    """One simulated device and the metadata of its calls."""

    address: Address
    key: Ed25519PrivateKey
    peer: Address | None = None
    session: str = ""
    """Its provider's session token (identity's ``CreateSession``); empty: every call carries a fresh assertion."""

    def metadata(self) -> Metadata:
        """The call's credentials, plus the routing hints the echo floor reads (the relay ignores them).

        With a session, what the SDK sends: the provider's session token and the acting user and device; else a
        fresh one-time assertion."""
        hints = (("x-bench-device", str(self.address)), ("x-bench-peer", str(self.peer or "")))
        if self.session:
            return (
                ("authorization", f"Bearer {self.session}"),
                (USER_METADATA, str(self.address.user)),
                (DEVICE_METADATA, str(self.address.device)),
                *hints,
            )
        token = mint_assertion(
            self.key, provider_id=self.address.provider, subject=str(self.address.user), device_id=self.address.device
        )
        return (("authorization", f"Bearer {token}"), *hints)


@dataclass
class Tally:
    """What one load phase sent and what arrived, keyed by message id."""

    sent_at: dict[bytes, float] = field(default_factory=dict)
    arrived: set[bytes] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    last_arrival: float = 0.0
    refused: list[str] = field(default_factory=list)
    everything_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    sending_done: bool = False

    def arrive(self, message_id: bytes, now: float) -> None:
        """Counts one delivery at its recipient."""
        if message_id in self.arrived:
            self.duplicates += 1  # at-least-once: a redelivery is not a loss, but it is reported
            return
        sent = self.sent_at.get(message_id)
        if sent is None:
            raise AssertionError(f"a stanza nobody sent arrived: {message_id!r}")
        self.arrived.add(message_id)
        self.latencies.append(now - sent)
        self.last_arrival = now
        self._check_complete()

    def _check_complete(self) -> None:
        if self.sending_done and len(self.arrived) == len(self.sent_at):
            self.everything_arrived.set()

    def finish_sending(self) -> None:
        """No more sends; the phase ends when everything sent has arrived."""
        self.sending_done = True
        self._check_complete()


@dataclass(frozen=True)
class PhaseResult:
    """Outcome of one load phase."""

    messages: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        """Messages per second, from the first send to the last arrival."""
        return self.messages / self.seconds if self.seconds else 0.0


def _message_id(stanza: bytes) -> bytes:
    # The relay forwards the sender's bytes unchanged (no franking key here), so the id sits at a known attribute;
    # finding it costs far less than parsing, and the echo floor pays exactly the same.
    start = stanza.index(b' id="') + 5
    return stanza[start : stanza.index(b'"', start)]


def _stanza_template(sender: Address, recipient: Address) -> bytes:
    """A ~STANZA_BYTES message stanza from ``sender`` to ``recipient``'s one device, id = ``ID_TEMPLATE``."""

    def build(ciphertext_bytes: int) -> bytes:
        message = Message(
            id=ID_TEMPLATE,
            sender=sender,
            recipient=recipient.user,
            ts=int(time.time() * 1000),
            type=MessageType.CHAT,
            payloads=(Payload.of(recipient, PayloadKind.MESSAGE, os.urandom(ciphertext_bytes)),),
        )
        return encode(message)

    overhead = len(build(3)) - 4  # three bytes are four base64 characters
    return build(max(3, (STANZA_BYTES - overhead) * 3 // 4))


class Client:
    """The load client: the same code drives the relay and the echo floor."""

    def __init__(self, target: str) -> None:
        self._target = target
        self._channels: list[grpc.aio.Channel] = []
        self._streams = 0

    def stub(self) -> relay_pb2_grpc.RelayServiceStub:
        """A stub on a channel with room for another stream (HTTP/2 connections get STREAMS_PER_CHANNEL each)."""
        if self._streams % STREAMS_PER_CHANNEL == 0:
            # A distinct option keeps grpc from sharing one subchannel between the channels.
            options = [("grpc.bench_channel", len(self._channels))]
            self._channels.append(grpc.aio.insecure_channel(self._target, options=options))
        self._streams += 1
        return relay_pb2_grpc.RelayServiceStub(self._channels[-1])

    async def close(self) -> None:
        """Closes every channel."""
        for channel in self._channels:
            await channel.close()


class _Stream:
    """A device's ``Connect`` stream read by a task of its own."""

    _call: Any
    _task: asyncio.Task[None]
    drained: asyncio.Event
    """Set once the stream has delivered its backlog."""

    async def close(self) -> None:
        """Half-closes the stream and waits for the server to end it (so the last frames are processed)."""
        await self._call.done_writing()
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await self._task

    def failed(self) -> BaseException | None:
        """The stream's error, if it broke."""
        return self._task.exception() if self._task.done() else None


class Receiver(_Stream):
    """A connected recipient device that acknowledges every frame of deliveries."""

    def __init__(self, client: Client, device: Device) -> None:
        self._call = client.stub().Connect(metadata=device.metadata())
        self.drained = asyncio.Event()
        self.tally: Tally | None = None
        self._task = asyncio.create_task(self._run(), name=f"receiver {device.address}")

    async def _run(self) -> None:
        async for frame in self._call:
            kind = frame.WhichOneof("frame")
            if kind == "deliveries":
                now = time.perf_counter()
                ids = []
                for delivery in frame.deliveries.deliveries:
                    if self.tally is None:
                        raise AssertionError("a delivery arrived outside a load phase")
                    self.tally.arrive(_message_id(delivery.stanza), now)
                    ids.append(delivery.delivery_id)
                await self._call.write(pb.ConnectRequest(ack=pb.Ack(delivery_ids=ids)))
            elif kind == "queue_drained":
                self.drained.set()


class Sender(_Stream):
    """A connected sender device pushing ``BATCH``-stanza frames, at most ``WINDOW`` unanswered, or unary sends."""

    def __init__(self, client: Client, device: Device, template: bytes, prefix: str) -> None:
        self._device = device
        self._stub = client.stub()
        self._call = self._stub.Connect(metadata=device.metadata())
        self._template = template
        self._prefix = prefix
        self._sequence = 0
        self._frames = 0
        self._window = asyncio.Semaphore(WINDOW)
        self._pending: dict[int, Tally] = {}
        self.drained = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name=f"sender {device.address}")

    async def _read(self) -> None:
        async for frame in self._call:
            kind = frame.WhichOneof("frame")
            if kind == "deliveries":
                # The recipient's one reply from set-up (see _converse): acknowledged, as a device would.
                ids = [delivery.delivery_id for delivery in frame.deliveries.deliveries]
                await self._call.write(pb.ConnectRequest(ack=pb.Ack(delivery_ids=ids)))
            elif kind == "send_results":
                tally = self._pending.pop(frame.send_results.batch_id)
                for result in frame.send_results.results:
                    if result.code:
                        tally.refused.append(f"{result.reason}: {result.message}")
                self._window.release()
            elif kind == "queue_drained":
                self.drained.set()

    def _next_id(self) -> bytes:
        self._sequence += 1
        return f"{self._prefix}{self._sequence:0{len(ID_TEMPLATE) - len(self._prefix)}d}".encode()

    async def send_batch(self, tally: Tally) -> None:
        """Writes one frame of ``BATCH`` fresh stanzas, once the window has room."""
        await self._window.acquire()
        ids = [self._next_id() for _ in range(BATCH)]
        template, placeholder = self._template, ID_TEMPLATE.encode()
        stanzas = [template.replace(placeholder, message_id, 1) for message_id in ids]
        self._frames += 1
        batch_id = self._frames
        self._pending[batch_id] = tally
        now = time.perf_counter()
        for message_id in ids:
            tally.sent_at[message_id] = now
        await self._call.write(pb.ConnectRequest(send=pb.SendBatch(batch_id=batch_id, stanzas=stanzas)))

    async def send_unary(self, tally: Tally) -> None:
        """Sends one fresh stanza with unary ``Send``, with the device's credentials (a fresh one-time assertion, or
        its provider's session)."""
        message_id = self._next_id()
        stanza = self._template.replace(ID_TEMPLATE.encode(), message_id, 1)
        tally.sent_at[message_id] = time.perf_counter()
        try:
            await self._stub.Send(pb.SendRequest(stanza=stanza), metadata=self._device.metadata())
        except grpc.aio.AioRpcError as error:
            tally.refused.append(f"{error.code().name}: {error.details()}")

    async def settle(self) -> None:
        """Waits until every frame written has been answered."""
        for _ in range(WINDOW):
            await self._window.acquire()
        for _ in range(WINDOW):
            self._window.release()


@dataclass
class Fleet:
    """The connected senders and receivers of one server (relay or echo floor)."""

    client: Client
    senders: list[Sender]
    receivers: list[Receiver]

    @classmethod
    async def connect(cls, target: str, pairs: Sequence[tuple[Device, Device]], prefix: str) -> Fleet:
        """Opens every stream and waits until each has drained its (empty) backlog."""
        client = Client(target)
        receivers = [Receiver(client, recipient) for _, recipient in pairs]
        senders = [
            Sender(client, sender, _stanza_template(sender.address, recipient.address), f"{prefix}{index}x")
            for index, (sender, recipient) in enumerate(pairs)
        ]
        streams: list[_Stream] = [*receivers, *senders]
        async with asyncio.timeout(30):
            await asyncio.gather(*(stream.drained.wait() for stream in streams))
        return cls(client, senders, receivers)

    async def drive(self, *, seconds: float, rate: float | None = None, unary: bool = False) -> PhaseResult:
        """Sends for ``seconds`` (closed loop, or paced at ``rate`` messages/s) and waits for every arrival.

        With ``unary``, each sender keeps ``WINDOW`` unary ``Send`` calls in flight instead of frames.

        Raises:
            SystemExit: a stanza was refused, or did not arrive within DRAIN_TIMEOUT_S.
        """
        tally = Tally()
        for receiver in self.receivers:
            receiver.tally = tally
        # Bounded in count as well as in time: no sender writes more frames than the fastest plausible rate needs.
        max_frames = int(seconds * 100_000 / BATCH / len(self.senders)) + 1
        start = time.perf_counter()
        deadline = start + seconds
        interval = BATCH * len(self.senders) / rate if rate else 0.0
        # Paced unary calls: each of the senders' WINDOW callers sends one call per call_interval.
        call_interval = WINDOW * len(self.senders) / rate if rate else 0.0

        async def call(index: int, sender: Sender) -> None:
            offset = start + call_interval * index / (WINDOW * len(self.senders))
            for number in range(max_frames * BATCH // WINDOW + 1):
                if call_interval:
                    await asyncio.sleep(max(0.0, offset + number * call_interval - time.perf_counter()))
                if time.perf_counter() >= deadline:
                    break
                await sender.send_unary(tally)

        async def push(index: int, sender: Sender) -> None:
            if unary:
                await asyncio.gather(*(call(index * WINDOW + slot, sender) for slot in range(WINDOW)))
                return
            offset = start + interval * index / len(self.senders)
            for frame in range(max_frames):
                if interval:
                    await asyncio.sleep(max(0.0, offset + frame * interval - time.perf_counter()))
                if time.perf_counter() >= deadline:
                    break
                await sender.send_batch(tally)
            await sender.settle()

        await asyncio.gather(*(push(index, sender) for index, sender in enumerate(self.senders)))
        tally.finish_sending()
        if tally.refused:
            raise SystemExit(f"FAILED: {len(tally.refused)} stanzas refused, e.g. {tally.refused[0]}")
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await tally.everything_arrived.wait()
        except TimeoutError:
            broken = [error for stream in self._streams() if (error := stream.failed())]
            raise SystemExit(
                f"FAILED: {len(tally.sent_at) - len(tally.arrived)} of {len(tally.sent_at)} accepted stanzas "
                f"never arrived; broken streams: {broken[:3]}"
            ) from None
        if tally.duplicates:
            _progress(f"  {tally.duplicates} redeliveries (at-least-once), not counted twice")
        return PhaseResult(len(tally.arrived), tally.last_arrival - start, tally.latencies)

    async def close(self) -> None:
        """Closes every stream and channel."""
        await asyncio.gather(*(stream.close() for stream in self._streams()))
        await self.client.close()

    def _streams(self) -> list[_Stream]:
        return [*self.senders, *self.receivers]


async def _pipelined_rate(
    url: str, seconds: float, frame: Callable[[aioredis.Redis, int, int], Awaitable[None]]
) -> float:
    """Messages/s of ``frame(client, worker, number)``, BATCH messages' Redis work each, from PAIRS workers."""
    client = aioredis.Redis.from_url(url)
    max_frames = int(seconds * 200_000 / BATCH / PAIRS) + 1
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(index: int) -> int:
        count = 0
        for number in range(max_frames):
            if time.perf_counter() >= deadline:
                break
            await frame(client, index, number)
            count += BATCH
        return count

    total = sum(await asyncio.gather(*(worker(index) for index in range(PAIRS))))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return total / elapsed


async def _redis_floor(url: str, template: bytes, seconds: float, *, offline: bool = False) -> float:
    """Messages/s of the bare per-message Redis work, pipelined per BATCH: an XADD to the mailbox with the relay's
    fields and a PUBLISH of the hint, then the XDEL of the device's acknowledgement; or, ``offline``, the XADD of
    the ``message_waiting`` event instead (nothing is acknowledged)."""
    event = Event(message_waiting=MessageWaiting(address="username:floor@gatekeeper/1", pending=1))
    announced = {"type": "message_waiting", "event": event.SerializeToString()}
    events = redis_keys.event_stream("floor")

    async def frame(client: aioredis.Redis, index: int, number: int) -> None:
        user = f"username:{'offline-' if offline else ''}floor{index}@gatekeeper"
        mailbox, channel = redis_keys.mailbox(user, 1), redis_keys.mailbox_channel(user, 1)
        ts = int(time.time() * 1000)
        pipe = client.pipeline(transaction=False)
        for offset in range(BATCH):
            entry = {"s": template, "t": ts, "m": f"f{number}x{offset}", "f": f"username:s{index}@birdy/1", "r": "1"}
            pipe.xadd(mailbox, entry, minid=ts - RETENTION_MS, approximate=True)  # type: ignore[arg-type]
            pipe.publish(channel, b"")
            if offline:
                pipe.xadd(events, announced, maxlen=1_000_000, approximate=True)  # type: ignore[arg-type]
        stored = await pipe.execute()
        if not offline:
            await client.xdel(mailbox, *stored[0::2])

    return await _pipelined_rate(url, seconds, frame)


async def _offline(
    relay_target: str, redis_url: str, pairs: Sequence[tuple[Device, Device]], idlers: Sequence[Device], seconds: float
) -> Figure:
    """Messages/s the relay accepts for devices without a stream (stored and announced), beside its Redis floor.

    The senders push frames to idle devices whose streams are closed; every accepted stanza is then counted where
    it waits (its recipient's mailbox) and in the ``message_waiting`` events, or the run fails.
    """
    _progress("offline recipients")
    targets = [(sender, idler) for (sender, _), idler in zip(pairs, idlers, strict=False)]
    await _converse(relay_target, targets)
    client = Client(relay_target)
    senders = [
        Sender(client, sender, _stanza_template(sender.address, idler.address), f"o{index}x")
        for index, (sender, idler) in enumerate(targets)
    ]
    async with asyncio.timeout(30):
        await asyncio.gather(*(sender.drained.wait() for sender in senders))
    redis_client = aioredis.Redis.from_url(redis_url)
    events_before = await redis_client.xlen(redis_keys.event_stream("relay"))
    tally = Tally()
    max_frames = int(seconds * 100_000 / BATCH / len(senders)) + 1
    start = time.perf_counter()
    deadline = start + seconds

    async def push(sender: Sender) -> None:
        for _ in range(max_frames):
            if time.perf_counter() >= deadline:
                break
            await sender.send_batch(tally)
        await sender.settle()

    await asyncio.gather(*(push(sender) for sender in senders))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(sender.close() for sender in senders))
    await client.close()
    if tally.refused:
        raise SystemExit(f"FAILED: {len(tally.refused)} stanzas refused, e.g. {tally.refused[0]}")
    accepted = len(tally.sent_at)
    stored = 0
    for _, idler in targets:
        assert idler.address.device is not None
        stored += await redis_client.xlen(redis_keys.mailbox(str(idler.address.user), idler.address.device))
    announced = await redis_client.xlen(redis_keys.event_stream("relay")) - events_before
    await redis_client.aclose()
    if stored != accepted or announced != accepted:
        raise SystemExit(f"FAILED: {accepted} accepted, {stored} stored, {announced} announced")
    ours = accepted / elapsed
    template = _stanza_template(targets[0][0].address, targets[0][1].address)
    floor = await _redis_floor(redis_url, template, seconds, offline=True)
    _progress(f"  relay {ours:,.0f} messages/s for offline devices, bare Redis work {floor:,.0f} messages/s")
    return Figure(
        unit="messages/s",
        ours=round(ours, 1),
        floor=round(floor, 1),
        extra={
            "pairs": len(targets),
            "stanzas_per_frame": BATCH,
            "frames_in_flight": WINDOW,
            "counted": accepted,
            "floor_desc": "XADD to the mailbox + PUBLISH + XADD of the message_waiting event, pipelined per frame",
        },
    )


# Where a sampled stack of the relay goes: the innermost frame belonging to one of these names it (checked in this
# order for each frame, leaf first), so a Redis command the store sends counts as "redis_client", a metric the
# parity recorder records as "telemetry". Frames of none (grpc's C core, the event loop) are "grpc_and_event_loop".
RELAY_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("telemetry", ("opentelemetry/", "parley_runtime/telemetry.py")),
    ("redis_client", ("redis/", "hiredis", "parley_runtime/redis_client.py")),
    ("auth", ("parley_runtime/auth.py", "jwt/", "cryptography/", "parley_runtime/providers.py")),
    ("identity_cache", ("parley_runtime/recipients.py",)),
    ("interceptors", ("parley_runtime/interceptors.py", "parley_runtime/deadlines.py", "grpc_status/")),
    ("stanza_codec", ("parley_stanza/",)),
    ("moderation_call", ("parley_relay/moderation_client.py", "parley_runtime/clients.py")),
    ("parity_counts", ("parley_relay/parity.py",)),
    ("store", ("parley_relay/store.py",)),
    ("handler", ("parley_relay/handler.py",)),
    ("stream_and_hub", ("parley_relay/connection.py", "parley_relay/hub.py", "parley_relay/servicer.py")),
    ("protobuf", ("google/protobuf/",)),
)


async def _profile(pid: int, seconds: float) -> dict[str, float] | str:
    """Each layer's share of the relay's busy samples over ``seconds`` (see RELAY_LAYERS), or why there is none."""
    return await asyncio.to_thread(profile_layers, pid, seconds, RELAY_LAYERS)


async def _command_usec(client: aioredis.Redis) -> dict[str, tuple[int, float]]:
    """Redis's per-command (calls, CPU microseconds) so far, from INFO COMMANDSTATS."""
    stats: dict[str, Any] = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(value["calls"]), float(value["usec"]))
        for name, value in stats.items()
        if name.startswith("cmdstat_")
    }


def _per_message(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]], messages: int
) -> dict[str, dict[str, float]]:
    """Per command, calls and Redis CPU microseconds per message between two COMMANDSTATS readings."""
    out = {}
    for name, (calls, usec) in after.items():
        calls_before, usec_before = before.get(name, (0, 0.0))
        if calls > calls_before and name not in ("info", "config|resetstat"):
            out[name] = {
                "calls_per_message": round((calls - calls_before) / messages, 3),
                "us_per_message": round((usec - usec_before) / messages, 2),
            }
    return dict(sorted(out.items(), key=lambda item: -item[1]["us_per_message"]))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def _redis_cpu_seconds(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _percentile_ms(sorted_latencies: Sequence[float], fraction: float) -> float:
    index = min(len(sorted_latencies) - 1, int(len(sorted_latencies) * fraction))
    return round(sorted_latencies[index] * 1000, 2)


async def _register(
    identity: identity_pb2_grpc.IdentityServiceStub, key: Ed25519PrivateKey, user: Address, allow: str
) -> Device:
    """Registers ``user`` with one device and opts it in to chats with provider ``allow``."""

    def auth() -> Metadata:
        token = mint_assertion(key, provider_id=user.provider, subject=str(user))
        return (("authorization", f"Bearer {token}"),)

    await identity.RegisterUser(id_pb.RegisterUserRequest(), metadata=auth())
    response = await identity.RegisterDevice(id_pb.RegisterDeviceRequest(registration_id=7), metadata=auth())
    await identity.EnableThirdPartyChats(id_pb.EnableThirdPartyChatsRequest(allowed_providers=[allow]), metadata=auth())
    return Device(Address.parse(response.address), key)


async def _register_all(
    identity: identity_pb2_grpc.IdentityServiceStub,
    keys: dict[str, Ed25519PrivateKey],
    idle: int,
) -> tuple[list[tuple[Device, Device]], list[Device]]:
    """The sender/recipient pairs and the idle devices, registered with identity."""
    gate = asyncio.Semaphore(32)

    async def register(name: str, provider: str, allow: str) -> Device:
        async with gate:
            return await _register(identity, keys[provider], Address.parse(f"username:{name}@{provider}"), allow)

    senders = await asyncio.gather(*(register(f"s{i}", "birdy", "gatekeeper") for i in range(PAIRS)))
    recipients = await asyncio.gather(*(register(f"r{i}", "gatekeeper", "birdy") for i in range(PAIRS)))
    idlers = await asyncio.gather(*(register(f"idle{i}", "gatekeeper", "birdy") for i in range(idle)))
    pairs = [
        (Device(sender.address, sender.key, recipient.address), Device(recipient.address, recipient.key))
        for sender, recipient in zip(senders, recipients, strict=True)
    ]
    return pairs, list(idlers)


async def _converse(relay_target: str, pairs: Sequence[tuple[Device, Device]]) -> None:
    """Each recipient writes once to its sender, so the load is steady traffic between users in a conversation.

    Moderation treats a message to someone who never wrote back as a first contact, which takes a token from the
    sender's provider's first-contact bucket in a round trip of its own; the relay is measured on the common case.
    """
    async with grpc.aio.insecure_channel(relay_target) as channel:
        stub = relay_pb2_grpc.RelayServiceStub(channel)
        for sender, recipient in pairs:
            reply = _stanza_template(recipient.address, sender.address).replace(ID_TEMPLATE.encode(), b"h" * 20, 1)
            await stub.Send(pb.SendRequest(stanza=reply), metadata=recipient.metadata())


async def _idle_kib_per_device(target: str, relay_pid: int, idlers: list[Device]) -> float:
    """Relay RSS growth per idle connected device: open the streams, wait until each is live, divide."""
    before = _rss_kib(relay_pid)
    client = Client(target)
    receivers = [Receiver(client, device) for device in idlers]
    async with asyncio.timeout(60):
        await asyncio.gather(*(receiver.drained.wait() for receiver in receivers))
    await asyncio.sleep(1.0)  # let the streams' first poll and presence writes settle
    after = _rss_kib(relay_pid)
    await asyncio.gather(*(receiver.close() for receiver in receivers))
    await client.close()
    return (after - before) / len(idlers)


async def main() -> None:
    args = parse_args(__doc__ or "")
    seconds = 2.0 if args.quick else 8.0
    rounds = 1 if args.quick else 3
    idle = 100 if args.quick else 500
    async with OtlpSink() as sink:
        with RedisServer() as redis_server:
            env = {
                **service_env(redis_server.url),
                "PARLEY_MAX_INFLIGHT_CALLS": "100000",
            }
            identity_process = ServiceProcess("parley_identity", env, credentials=CREDENTIALS)
            moderation_process = None
            relay_process = None
            traced_process = None
            echo_port = free_port()
            echo = await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).with_name("_echo_relay.py")), str(echo_port)
            )
            try:
                _progress("starting identity, moderation and relay")
                identity_process.start()
                peers = {**env, "PARLEY_IDENTITY_TARGET": identity_process.target}
                franking_key = base64.b64encode(secrets.token_bytes(32)).decode()
                moderation_process = ServiceProcess(
                    "parley_moderation",
                    {
                        **peers,
                        "PARLEY_FRANKING_KEY": franking_key,
                        **{f"PARLEY_{name}_BURST": str(UNLIMITED) for name in LIMITS},
                        **{f"PARLEY_{name}_PER_SECOND": str(UNLIMITED // 10) for name in LIMITS},
                    },
                    credentials=CREDENTIALS,
                )
                moderation_process.start()
                relay_process = ServiceProcess(
                    "parley_relay",
                    {
                        **peers,
                        "PARLEY_MODERATION_TARGET": moderation_process.target,
                        "PARLEY_FRANKING_KEY": franking_key,
                    },
                    credentials=CREDENTIALS,
                )
                relay_process.start()
                # A second relay with telemetry as in production (the services' default sampler, 1 % parent-based,
                # overriding the bench's always_off; traces and metrics exported to the bench's collector).
                traced_process = ServiceProcess(
                    "parley_relay",
                    {
                        **peers,
                        "PARLEY_MODERATION_TARGET": moderation_process.target,
                        "PARLEY_FRANKING_KEY": franking_key,
                        **production_telemetry(sink.port),
                        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": "0.01",
                    },
                    credentials=CREDENTIALS,
                )
                traced_process.start()
                assert relay_process.process is not None
                assert moderation_process.process is not None
                assert traced_process.process is not None
                async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as channel:
                    await asyncio.wait_for(channel.channel_ready(), 10)
                world = World(
                    redis_url=redis_server.url,
                    identity_target=identity_process.target,
                    moderation_target=moderation_process.target,
                    moderation_pid=moderation_process.process.pid,
                    relay_target=relay_process.target,
                    relay_pid=relay_process.process.pid,
                    echo_target=f"127.0.0.1:{echo_port}",
                    echo_pid=echo.pid,
                    traced_relay_target=traced_process.target,
                    traced_relay_pid=traced_process.process.pid,
                    sink=sink,
                )
                figures = await _measure(world, seconds=seconds, rounds=rounds, idle=idle)
            finally:
                echo.terminate()
                await echo.wait()
                if traced_process is not None:
                    traced_process.stop()
                if relay_process is not None:
                    relay_process.stop()
                if moderation_process is not None:
                    moderation_process.stop()
                identity_process.stop()
    write_results("relay", figures, quick=args.quick, out=args.out)


async def _with_sessions(
    identity: identity_pb2_grpc.IdentityServiceStub,
    keys: dict[str, Ed25519PrivateKey],
    pairs: Sequence[tuple[Device, Device]],
) -> list[tuple[Device, Device]]:
    """The same pairs, each device calling with its provider's session (one ``CreateSession`` per provider, made
    with one provider assertion), as the SDK does by default."""
    sessions = {}
    for provider, key in keys.items():
        token = mint_assertion(key, provider_id=provider, subject=provider)
        response = await identity.CreateSession(
            id_pb.CreateSessionRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
        sessions[provider] = response.session_token
    return [
        (
            replace(sender, session=sessions[sender.address.provider]),
            replace(recipient, session=sessions[recipient.address.provider]),
        )
        for sender, recipient in pairs
    ]


async def _unary_send(
    relay: Fleet, floor: Fleet, relay_pid: int, seconds: float, profile_s: float, *, credentials: str
) -> Figure:
    """Unary ``Send`` through the relay beside the echo floor, same calls in flight; then its latency at half
    that rate, and a profile of the relay at full rate (what share authentication takes)."""
    _progress(f"unary Send ({credentials})")
    cpu_before = _cpu_seconds(relay_pid)
    unary = await relay.drive(seconds=seconds, unary=True)
    cpu_per_message = (_cpu_seconds(relay_pid) - cpu_before) / unary.messages
    unary_floor = await floor.drive(seconds=seconds, unary=True)
    _progress(f"  relay {unary.rate:,.0f} messages/s, bare transport {unary_floor.rate:,.0f} messages/s")
    paced = await relay.drive(seconds=profile_s * 2, rate=unary.rate / 2, unary=True)
    profile, _ = await asyncio.gather(_profile(relay_pid, profile_s), relay.drive(seconds=profile_s, unary=True))
    latencies, half_latencies = sorted(unary.latencies), sorted(paced.latencies)
    return Figure(
        unit="messages/s",
        ours=round(unary.rate, 1),
        floor=round(unary_floor.rate, 1),
        target=0.4,
        extra={
            "calls_in_flight": PAIRS * WINDOW,
            "relay_cpu_us_per_message": round(cpu_per_message * 1e6, 1),
            "p50_ms_at_max_load": _percentile_ms(latencies, 0.50),
            "p99_ms_at_max_load": _percentile_ms(latencies, 0.99),
            "half_load_messages_per_s": round(paced.rate, 1),
            "p50_ms_at_half_load": _percentile_ms(half_latencies, 0.50),
            "p99_ms_at_half_load": _percentile_ms(half_latencies, 0.99),
            "relay_profile": profile,
            "floor_desc": "the same calls to bench/_echo_relay.py, which pushes each stanza to the peer's stream",
            "note": f"{credentials}; latency from the call's start to the stanza's arrival",
        },
    )


async def _unary_send_session(
    world: World, session_pairs: Sequence[tuple[Device, Device]], seconds: float, profile_s: float
) -> Figure:
    """:func:`_unary_send` with the devices calling over their providers' sessions."""
    # The same devices as the assertion figure's, whose streams must be closed first: the echo floor routes by
    # device, so two fleets of the same devices cannot be open at once.
    relay = await Fleet.connect(world.relay_target, session_pairs, "s")
    floor = await Fleet.connect(world.echo_target, session_pairs, "f")
    figure = await _unary_send(
        relay,
        floor,
        world.relay_pid,
        seconds,
        profile_s,
        credentials="each call carries its provider's session token and the acting user and device (the SDK's "
        "default): one HMAC, checked once per token and cached, no Redis",
    )
    await relay.close()
    await floor.close()
    return figure


@dataclass(frozen=True)
class World:
    """Where the bench's servers listen and which processes to measure."""

    redis_url: str
    identity_target: str
    moderation_target: str
    moderation_pid: int
    relay_target: str
    relay_pid: int
    echo_target: str
    echo_pid: int
    traced_relay_target: str
    traced_relay_pid: int
    sink: OtlpSink


async def _moderation_redis_us(world: World, pairs: Sequence[tuple[Device, Device]], seconds: float) -> float:
    """Redis CPU microseconds per decision of moderation's ``CheckSendBatch``, called directly with the checks the
    relay sends for the load's frames (``BATCH`` per call, ``PAIRS`` calls in flight): moderation's share of the
    Redis CPU measured per relayed message."""
    internal = (("authorization", f"Bearer {CREDENTIALS['relay']}"),)
    redis_client = aioredis.Redis.from_url(world.redis_url)
    async with grpc.aio.insecure_channel(world.moderation_target) as channel:
        stub = moderation_pb2_grpc.ModerationServiceStub(channel)
        requests = [
            moderation_pb2.CheckSendBatchRequest(
                checks=[
                    moderation_pb2.CheckSendRequest(
                        sender=str(sender.address), recipient=str(recipient.address.user), fan_out=1
                    )
                ]
                * BATCH
            )
            for sender, recipient in pairs
        ]
        decisions = 0
        deadline = time.perf_counter() + seconds

        async def worker(request: moderation_pb2.CheckSendBatchRequest) -> None:
            nonlocal decisions
            while time.perf_counter() < deadline:
                await stub.CheckSendBatch(request, metadata=internal)
                decisions += BATCH

        before = await _redis_cpu_seconds(redis_client)
        await asyncio.gather(*(worker(request) for request in requests))
        used = await _redis_cpu_seconds(redis_client) - before
    await redis_client.aclose()
    return used / decisions * 1e6


async def _prosody_peer(seconds: float, rounds: int, stanza_bytes: int) -> tuple[float, float] | str:
    """Prosody's messages/s (median of ``rounds``) and CPU microseconds per message under the same flood, or why
    it was not measured."""
    if not _prosody.available():
        return "prosody is not installed (Debian: apt-get install prosody)"
    with _prosody.Prosody(free_port()) as server:
        results = []
        for round_number in range(1, rounds + 1):
            result = await _prosody.flood(
                server,
                seconds=seconds,
                size=stanza_bytes,
                batch=BATCH,
                window=PAIRS * BATCH * WINDOW,
                cpu=lambda: _cpu_seconds(server.pid),
            )
            results.append(result)
            _progress(f"round {round_number}/{rounds}: prosody {result.rate:,.0f} messages/s")
    rate = statistics.median(result.rate for result in results)
    cpu_us = sum(result.cpu_s for result in results) / sum(result.messages for result in results) * 1e6
    return rate, cpu_us


@dataclass
class Rounds:
    """What the alternating rounds of relay, bare transport and bare Redis work measured."""

    ours_rates: list[float] = field(default_factory=list)
    floor_rates: list[float] = field(default_factory=list)
    redis_rates: list[float] = field(default_factory=list)
    relay_cpu: float = 0.0
    moderation_cpu: float = 0.0
    redis_cpu: float = 0.0
    relay_messages: int = 0
    floor_redis_cpu: float = 0.0
    floor_redis_messages: int = 0
    commands: dict[str, dict[str, float]] = field(default_factory=dict)
    """Redis commands per relayed message, in the first round."""


async def _rounds(
    world: World,
    relay: Fleet,
    floor: Fleet,
    redis_client: aioredis.Redis,
    template: bytes,
    *,
    seconds: float,
    rounds: int,
) -> Rounds:
    """Alternates the relay, the bare transport and the bare Redis work, ``rounds`` times each."""
    load = Rounds()
    for round_number in range(1, rounds + 1):
        commands_before = await _command_usec(redis_client)
        cpu_before, redis_before = _cpu_seconds(world.relay_pid), await _redis_cpu_seconds(redis_client)
        moderation_before = _cpu_seconds(world.moderation_pid)
        result = await relay.drive(seconds=seconds)
        load.relay_cpu += _cpu_seconds(world.relay_pid) - cpu_before
        load.moderation_cpu += _cpu_seconds(world.moderation_pid) - moderation_before
        load.redis_cpu += await _redis_cpu_seconds(redis_client) - redis_before
        load.relay_messages += result.messages
        load.ours_rates.append(result.rate)
        if round_number == 1:
            load.commands = _per_message(commands_before, await _command_usec(redis_client), result.messages)
        _progress(f"round {round_number}/{rounds}: relay {result.rate:,.0f} messages/s ({result.messages} counted)")
        result = await floor.drive(seconds=seconds)
        load.floor_rates.append(result.rate)
        _progress(f"round {round_number}/{rounds}: bare transport {result.rate:,.0f} messages/s")
        floor_redis_before = await _redis_cpu_seconds(redis_client)
        load.redis_rates.append(await _redis_floor(world.redis_url, template, seconds))
        load.floor_redis_cpu += await _redis_cpu_seconds(redis_client) - floor_redis_before
        load.floor_redis_messages += round(load.redis_rates[-1] * seconds)
        _progress(f"round {round_number}/{rounds}: bare Redis work {load.redis_rates[-1]:,.0f} messages/s")
    return load


async def _with_production_telemetry(
    world: World, pairs: Sequence[tuple[Device, Device]], *, seconds: float, rounds: int, ours: float
) -> Figure:
    """The stream's rate through the relay with production telemetry, beside the main relay's (``ours``, telemetry
    off) in the same run: the ratio is what telemetry leaves of the throughput."""
    _progress("production telemetry: the same load through the traced relay")
    spans_before, exports_before = world.sink.spans, world.sink.metric_exports
    traced = await Fleet.connect(world.traced_relay_target, pairs, "t")
    await traced.drive(seconds=min(1.0, seconds / 4))
    cpu_before = _cpu_seconds(world.traced_relay_pid)
    rates, messages = [], 0
    for round_number in range(1, rounds + 1):
        result = await traced.drive(seconds=seconds)
        rates.append(result.rate)
        messages += result.messages
        _progress(f"round {round_number}/{rounds}: traced relay {result.rate:,.0f} messages/s")
    cpu_us = (_cpu_seconds(world.traced_relay_pid) - cpu_before) / max(messages, 1) * 1e6
    await traced.close()
    return Figure(
        unit="messages/s",
        ours=round(statistics.median(rates), 1),
        floor=round(ours, 1),
        target=0.9,
        extra={
            "relay_cpu_us_per_message": round(cpu_us, 1),
            "spans_exported": world.sink.spans - spans_before,
            "metric_exports": world.sink.metric_exports - exports_before,
            "floor_desc": "the end_to_end figure's relay (telemetry off), same load, same run",
            "ours_desc": "a second relay process with traces sampled parent-based at 1 %, traces and metrics "
            "exported over OTLP to the bench's collector",
        },
    )


async def _measure(world: World, *, seconds: float, rounds: int, idle: int) -> dict[str, Figure]:
    identity_channel = grpc.aio.insecure_channel(world.identity_target)
    identity = identity_pb2_grpc.IdentityServiceStub(identity_channel)
    keys = {provider: await enlist(identity, provider) for provider in ("gatekeeper", "birdy")}
    _progress(f"registering {PAIRS} senders, {PAIRS} recipients and {idle} idle devices")
    pairs, idlers = await _register_all(identity, keys, idle)
    session_pairs = await _with_sessions(identity, keys, pairs)
    await identity_channel.close()
    # The relay hears of the providers through identity's watch; give it a moment before the first stream.
    await asyncio.sleep(0.5)

    _progress(f"memory: opening {idle} idle streams")
    kib_per_idle = await _idle_kib_per_device(world.relay_target, world.relay_pid, idlers)
    floor_kib_per_idle = await _idle_kib_per_device(world.echo_target, world.echo_pid, idlers)
    _progress(f"  {kib_per_idle:.1f} KiB per idle device ({floor_kib_per_idle:.1f} KiB on the bare transport)")

    await _converse(world.relay_target, pairs)
    relay = await Fleet.connect(world.relay_target, pairs, "r")
    floor = await Fleet.connect(world.echo_target, pairs, "e")
    redis_client = aioredis.Redis.from_url(world.redis_url)
    template = _stanza_template(pairs[0][0].address, pairs[0][1].address)
    _progress("warming up")
    await relay.drive(seconds=1.0)
    await floor.drive(seconds=1.0)

    load = await _rounds(world, relay, floor, redis_client, template, seconds=seconds, rounds=rounds)
    prosody = await _prosody_peer(seconds, rounds, len(template))

    # Shorter than the rounds: a profile needs a few hundred samples, and --quick must stay under a minute.
    profile_s = min(seconds / 2, 2.0)
    _progress("profiling the relay under the same load")
    profile, _ = await asyncio.gather(_profile(world.relay_pid, profile_s), relay.drive(seconds=profile_s))
    moderation_redis_us = await _moderation_redis_us(world, pairs, profile_s)

    unary_figure = await _unary_send(
        relay,
        floor,
        world.relay_pid,
        seconds,
        profile_s,
        credentials="each call carries a fresh one-time assertion, minted here and verified and recorded by the relay "
        "(auth and interceptors in the profile)",
    )

    ours = statistics.median(load.ours_rates)
    half = ours / 2
    _progress(f"latency at half load ({half:,.0f} messages/s)")
    paced = await relay.drive(seconds=seconds * 2, rate=half)
    paced_floor = await floor.drive(seconds=seconds * 2, rate=half)
    await relay.close()
    await floor.close()
    session_figure = await _unary_send_session(world, session_pairs, seconds, profile_s)
    await redis_client.aclose()
    offline_figure = await _offline(world.relay_target, world.redis_url, pairs, idlers, seconds)
    telemetry_figure = await _with_production_telemetry(world, pairs, seconds=seconds, rounds=rounds, ours=ours)

    latencies = sorted(paced.latencies)
    floor_latencies = sorted(paced_floor.latencies)
    cpu_us = load.relay_cpu / load.relay_messages * 1e6
    redis_us = load.redis_cpu / load.relay_messages * 1e6
    shape: dict[str, float | int | str] = {"pairs": PAIRS, "stanzas_per_frame": BATCH, "frames_in_flight": WINDOW}
    figures = {
        "end_to_end": Figure(
            unit="messages/s",
            ours=round(ours, 1),
            floor=round(statistics.median(load.redis_rates), 1),
            target=0.5,
            extra={
                **shape,
                "stanza_bytes": len(template),
                "relay_cpu_us_per_message": round(cpu_us, 1),
                "relay_cpu_us_target": 60,
                "moderation_cpu_us_per_message": round(load.moderation_cpu / load.relay_messages * 1e6, 1),
                "redis_cpu_us_per_message": round(redis_us, 1),
                "redis_cpu_us_target": 12,
                "redis_cpu_us_per_message_moderation": round(moderation_redis_us, 1),
                "redis_cpu_us_per_message_relay": round(redis_us - moderation_redis_us, 1),
                "floor_redis_cpu_us_per_message": round(load.floor_redis_cpu / load.floor_redis_messages * 1e6, 1),
                "redis_commands_per_message": load.commands,
                "relay_profile": profile,
                "half_load_messages_per_s": round(paced.rate, 1),
                "p50_ms": _percentile_ms(latencies, 0.50),
                "p95_ms": _percentile_ms(latencies, 0.95),
                "p99_ms": _percentile_ms(latencies, 0.99),
                "floor_p50_ms": _percentile_ms(floor_latencies, 0.50),
                "floor_p99_ms": _percentile_ms(floor_latencies, 0.99),
                "idle_devices": idle,
                "kib_per_idle_device": round(kib_per_idle, 1),
                "floor_kib_per_idle_device": round(floor_kib_per_idle, 1),
                "floor_desc": "the bare Redis work: XADD (relay's fields) + PUBLISH, then XDEL, pipelined per frame",
                "note": "Redis CPU is the whole server's: moderation's decisions (measured alone, _moderation) "
                "and the relay's own commands; latency percentiles at half load are beside the bare transport's",
            },
        ),
        "transport": Figure(
            unit="messages/s",
            ours=round(ours, 1),
            floor=round(statistics.median(load.floor_rates), 1),
            extra={
                **shape,
                "floor_desc": "do-nothing grpc.aio RelayService (bench/_echo_relay.py), same client and frames",
            },
        ),
        "unary_send": unary_figure,
        "unary_send_session": session_figure,
        "offline_recipients": offline_figure,
        "end_to_end_production_telemetry": telemetry_figure,
    }
    if isinstance(prosody, str):
        _progress(f"no Prosody peer: {prosody}")
    else:
        prosody_rate, prosody_cpu_us = prosody
        figures["prosody_peer"] = Figure(
            unit="messages/s",
            ours=round(ours, 1),
            floor=round(prosody_rate, 1),
            target=1.0,
            extra={
                "relay_cpu_us_per_message": round(cpu_us, 1),
                "prosody_cpu_us_per_message": round(prosody_cpu_us, 1),
                "cpu_per_message_within_prosodys": cpu_us <= prosody_cpu_us,
                "floor_desc": "Debian's Prosody on loopback (bench/_prosody.py): plain c2s, two users, chat "
                f"stanzas of {len(template)} bytes flooded from a raw socket in writes of {BATCH}, at most "
                f"{PAIRS * BATCH * WINDOW} in flight, counted at the receiver; it stores nothing",
                "note": "one relay process beside one Prosody process; the relay stores every message durably "
                "(Redis) and checks it with moderation",
            },
        )
    return figures


if __name__ == "__main__":
    # Telemetry off for every process, as the other benches run their main figures: no trace sampled or exported.
    os.environ.setdefault("OTEL_TRACES_SAMPLER", "always_off")
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "none")
    asyncio.run(main())
