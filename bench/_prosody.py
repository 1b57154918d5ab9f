"""Prosody, Debian's XMPP server, as a peer of bench/relay.py: the same chat traffic through a server people run.

:class:`Prosody` starts a private instance (its own config, data and port under a temporary directory, on
127.0.0.1 only): plain client-to-server streams, no TLS, no server-to-server, no offline storage, no rate limits,
and two users. :func:`flood` logs both in over raw sockets (SASL PLAIN, resource binding) and has one send chat
messages of a given size to the other's full JID, as fast as the receiver takes them with at most ``window`` in
flight; every message is counted where it arrives. Prosody keeps nothing: a message to an online resource is
routed from memory, so this is a relay that stores nothing durably.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HOST = "localhost"
PASSWORD = "bench-password"  # noqa: S105 -- a throwaway account of a private, loopback-only instance
_STREAM_OPEN = (
    f"<?xml version='1.0'?><stream:stream to='{HOST}' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
_MESSAGE_END = b"</message>"


def available() -> bool:
    """Whether Prosody (``prosody`` and ``prosodyctl``) is installed."""
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


@dataclass(frozen=True)
class FloodResult:
    """One flood: messages counted at the receiver over the time from the first send to the last arrival."""

    messages: int
    seconds: float
    cpu_s: float
    """Prosody's CPU time (user + system) over the flood."""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds else 0.0


class Prosody:
    """A private Prosody on ``127.0.0.1:port`` with users ``alice`` and ``bob``: ``with Prosody(port) as server``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._dir = Path(tempfile.mkdtemp(prefix="parley-prosody-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Prosody:
        config = self._dir / "prosody.cfg.lua"
        data = self._dir / "data"
        data.mkdir()
        config.write_text(
            f"""
run_as_root = true
daemonize = false
pidfile = "{self._dir / "prosody.pid"}"
data_path = "{data}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
modules_enabled = {{ "roster", "saslauth", "ping" }}
modules_disabled = {{ "s2s", "s2s_auth_certs", "offline", "tls" }}
log = {{ error = "{self._dir / "prosody.err"}" }}
VirtualHost "{HOST}"
"""
        )
        env = {**os.environ, "PROSODY_CONFIG": str(config)}
        for user in ("alice", "bob"):
            subprocess.run(  # noqa: S603 -- Debian's prosodyctl on our own config
                ["prosodyctl", "--config", str(config), "register", user, HOST, PASSWORD],  # noqa: S607
                check=True,
                capture_output=True,
                env=env,
            )
        self._process = subprocess.Popen(  # noqa: S603
            ["prosody", "--config", str(config)],  # noqa: S607
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


class _Session:
    """One logged-in client stream (plain TCP) with a bound resource."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, jid: str) -> None:
        self.reader = reader
        self.writer = writer
        self.jid = jid

    @classmethod
    async def login(cls, port: int, user: str) -> _Session:
        """Connects, authenticates with SASL PLAIN and binds resource ``bench``."""
        for _ in range(100):  # the server may still be starting
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"prosody did not listen on port {port}")
        buffer = b""

        async def until(marker: bytes) -> None:
            nonlocal buffer
            while marker not in buffer:
                chunk = await reader.read(65536)
                if not chunk:
                    raise RuntimeError(f"prosody closed the stream waiting for {marker!r}: {buffer[-300:]!r}")
                buffer += chunk
            buffer = buffer[buffer.index(marker) + len(marker) :]

        writer.write(_STREAM_OPEN.encode())
        await until(b"</stream:features>")
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        writer.write(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>".encode())
        await until(b"<success")
        writer.write(_STREAM_OPEN.encode())
        await until(b"</stream:features>")
        writer.write(
            b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            b"<resource>bench</resource></bind></iq>"
        )
        await until(b"</iq>")
        return cls(reader, writer, f"{user}@{HOST}/bench")

    async def close(self) -> None:
        """Ends the stream."""
        with contextlib.suppress(OSError):
            self.writer.write(b"</stream:stream>")
            self.writer.close()
            await self.writer.wait_closed()


def _message(recipient: str, number: int, size: int) -> bytes:
    head = f"<message to='{recipient}' type='chat' id='p{number:019d}'><body>"
    tail = "</body></message>"
    body_chars = max(4, size - len(head) - len(tail))
    return (head + "A" * body_chars + tail).encode()


class _Arrivals:
    """Counts the messages arriving on the receiver's stream and opens the sender's window as they do."""

    def __init__(self, session: _Session, window: int) -> None:
        self.sent = 0
        self.arrived = 0
        self.last_arrival = 0.0
        self.sending = True
        self.room = asyncio.Event()
        self.room.set()
        self.done = asyncio.Event()
        self._session = session
        self._window = window

    def add_sent(self, count: int) -> None:
        """Counts ``count`` messages written; closes the window when it is full."""
        self.sent += count
        if self.sent - self.arrived >= self._window:
            self.room.clear()

    def finish(self) -> None:
        """No more sends: done once everything sent arrived."""
        self.sending = False
        if self.arrived >= self.sent:
            self.done.set()

    async def receive(self) -> None:
        """Reads the receiver's stream until it ends."""
        tail = b""
        while chunk := await self._session.reader.read(1 << 20):
            data = tail + chunk
            self.arrived += data.count(_MESSAGE_END)
            # A closing tag split across reads is counted once its end arrives.
            tail = data[-(len(_MESSAGE_END) - 1) :]
            self.last_arrival = time.perf_counter()
            if self.sent - self.arrived < self._window:
                self.room.set()
            if not self.sending and self.arrived >= self.sent:
                self.done.set()


async def flood(
    server: Prosody, *, seconds: float, size: int, batch: int, window: int, cpu: Callable[[], float]
) -> FloodResult:
    """Alice sends ``size``-byte chat messages to Bob in writes of ``batch``, at most ``window`` unarrived, for
    ``seconds``; returns what arrived.

    Args:
        server: the running instance.
        seconds: how long to send.
        size: bytes per message stanza, as written.
        batch: messages per socket write.
        window: messages written but not yet counted at Bob.
        cpu: the server's CPU seconds so far.

    Raises:
        RuntimeError: a message did not arrive within 20 s of the last send.
    """
    alice = await _Session.login(server.port, "alice")
    bob = await _Session.login(server.port, "bob")
    arrivals = _Arrivals(bob, window)
    receiver = asyncio.create_task(arrivals.receive())
    # The same frame of messages each time: the client's own work stays out of the way.
    payload = b"".join(_message(bob.jid, number, size) for number in range(batch))
    cpu_before = cpu()
    start = time.perf_counter()
    deadline = start + seconds
    try:
        while time.perf_counter() < deadline:
            await arrivals.room.wait()
            alice.writer.write(payload)
            arrivals.add_sent(batch)
            await alice.writer.drain()
        arrivals.finish()
        async with asyncio.timeout(20):
            await arrivals.done.wait()
    except TimeoutError:
        raise RuntimeError(f"prosody: {arrivals.sent - arrivals.arrived} of {arrivals.sent} never arrived") from None
    finally:
        cpu_used = cpu() - cpu_before
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        await alice.close()
        await bob.close()
    return FloodResult(messages=arrivals.arrived, seconds=arrivals.last_arrival - start, cpu_s=cpu_used)
