"""Test helpers for Parley and for integrators' own tests: real Redis and service processes, free ports.

Tests run against real ``redis-server`` processes on free loopback ports (never 6379), each in its own temporary
directory, so they never touch a machine's own Redis.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from parley_runtime.credentials import credential_env
from parley_runtime.healthcheck import is_serving

_LISTEN_PORTS = range(20_000, 32_768)
"""Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999 by default), from which the kernel
picks the local port of every outgoing connection, so a port chosen here is not taken by some client's connection
between being chosen and being bound by the server it was chosen for (a test flake seen under load)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, outside the kernel's range for outgoing connections."""
    for port in random.sample(_LISTEN_PORTS, 64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A ``redis-server`` process on a free port, optionally with append-only persistence.

    Use as a context manager, or call :meth:`start` / :meth:`stop`; :meth:`restart` keeps the data directory,
    so with ``appendonly=True`` data survives like a production restart.

    Args:
        appendonly: enable AOF persistence (fsync every write, for fault tests).
        binary: the redis-server binary (found on PATH by default).
        args: more ``redis-server`` arguments (e.g. ``("--cluster-enabled", "yes")``).
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        binary: str | None = None,
        args: Sequence[str] = (),
        cluster_bus: bool = False,
    ) -> None:
        found = binary or shutil.which("redis-server")
        if found is None:
            raise RuntimeError("redis-server not found on PATH; run `make setup` (it installs it)")
        self._binary = found
        self._appendonly = appendonly
        self._args = tuple(args)
        self._dir = Path(tempfile.mkdtemp(prefix="parley-redis-"))
        self.port = free_port()
        # The bus port defaults to the port + 10000, which may fall in the kernel's range for outgoing connections.
        self.bus_port = free_port() if cluster_bus else None
        self._started = False
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process was started and not stopped."""
        return self._process is not None

    @property
    def pid(self) -> int:
        """The server's process id (benchmarks read its CPU time); 0 when not running."""
        return self._process.pid if self._process is not None else 0

    def start(self, timeout: float = 10.0) -> None:
        """Starts the server and waits until it answers PING.

        A free port can be taken by someone else between choosing it and binding it; a first start that fails
        tries again on new ports (a restart keeps its ports: a cluster knows its nodes by them).
        """
        for attempt in range(3):
            try:
                self._start_once(timeout)
            except _PortTaken:
                if self._started or attempt == 2:
                    raise
                self.port = free_port()
                self.bus_port = free_port() if self.bus_port is not None else None
            else:
                self._started = True
                return

    def _start_once(self, timeout: float) -> None:
        bus = ("--cluster-port", str(self.bus_port)) if self.bus_port is not None else ()
        args = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self._dir),
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "always",
            "--protected-mode", "yes",
            *self._args,
            *bus,
        ]  # fmt: skip
        # The arguments are built above from a resolved binary path and integers, not from outside input.
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    exited = self._process.poll() is not None
                    if exited or time.monotonic() > deadline:
                        self.stop()
                        error = _PortTaken if exited else RuntimeError
                        raise error(f"redis-server did not start on port {self.port}: {' '.join(args)}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, *, kill: bool = False) -> None:
        """Stops the server (SIGKILL when ``kill``), keeping its data directory."""
        if self._process is None:
            return
        self.resume()  # a paused server would not act on SIGTERM
        if kill:
            self._process.kill()
        else:
            self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def pause(self) -> None:
        """Freezes the server (SIGSTOP): connections stay open but nothing is answered, as in a long GC pause or a
        partition, until :meth:`resume`."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Lets a paused server go on (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stops and starts again on the same port and data directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes its data directory."""
        self.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(self._dir)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _PortTaken(RuntimeError):
    """redis-server exited at start-up: most often a port it was given is in use."""


_SLOTS = 16384
_MANUAL_FAILOVER_S = 6.0
"""A little over Redis's own limit for a manual failover (5 s), after which it gives up."""


class RedisClusterServers:
    """A real Redis Cluster of ``redis-server`` processes on free ports: ``masters`` masters, each with
    ``replicas`` replicas, slots split evenly. Use as a context manager, or :meth:`start` / :meth:`close`.

    Args:
        masters: number of masters (slot owners).
        replicas: replicas per master.
        node_timeout_ms: ``cluster-node-timeout``: how long a silent master takes to be failed over.
    """

    def __init__(self, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        args = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(node_timeout_ms),
            # Replicas stay with their master: tests fail over a named shard.
            "--cluster-allow-replica-migration", "no",
            # A new replica's first sync starts at once instead of waiting 5 s for more replicas to share it.
            "--repl-diskless-sync-delay", "0",
        )  # fmt: skip
        self._masters = masters
        self._replicas = replicas
        self.nodes = [RedisServer(args=args, cluster_bus=True) for _ in range(masters * (1 + replicas))]

    @property
    def url(self) -> str:
        """A seed URL (a running node); the cluster client discovers the others from it."""
        return next(node for node in self.nodes if node.running).url

    def start(self, timeout: float = 30.0) -> None:
        """Starts every node, assigns slots, joins the nodes, attaches replicas and waits until the cluster is ok
        on every node with every replica in sync."""
        for node in self.nodes:
            node.start()
        clients = [self._client(node.port) for node in self.nodes]
        try:
            ids = [str(_command(client, "CLUSTER", "MYID")) for client in clients]
            for index in range(self._masters):
                first, last = index * _SLOTS // self._masters, (index + 1) * _SLOTS // self._masters - 1
                _command(clients[index], "CLUSTER", "ADDSLOTSRANGE", first, last)
            for client in clients[1:]:
                _command(client, "CLUSTER", "MEET", "127.0.0.1", self.nodes[0].port, self.nodes[0].bus_port or 0)
            self._wait(lambda: all(len(_nodes(client)) == len(self.nodes) for client in clients), timeout, "join")
            for offset, client in enumerate(clients[self._masters :]):
                _command(client, "CLUSTER", "REPLICATE", ids[offset % self._masters])
            self._wait(self.stable, timeout, "become ok")
        finally:
            for client in clients:
                client.close()

    def stable(self) -> bool:
        """Whether every running node reports the cluster ok, sees ``masters`` masters holding slots, has its
        cluster-bus links to every other running node up with none of them suspected, and, as a replica, has its
        replication link up.

        The bus links matter: a node paused past half the node timeout drops them, and until they are back a
        manual failover is refused or silently lost (its request goes over the bus)."""
        running = {f"127.0.0.1:{node.port}" for node in self.nodes if node.running}
        for node in self.nodes:
            if node.running:
                with self._client(node.port) as client:
                    info = _command(client, "CLUSTER", "INFO")
                    if "cluster_state:ok" not in str(info):
                        return False
                    # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> [<slots>...]
                    view = [line.split() for line in _nodes(client)]
                    if sum("master" in f[2] and "fail" not in f[2] and len(f) > 8 for f in view) != self._masters:
                        return False
                    peers = [f for f in view if f[1].split("@")[0] in running and "myself" not in f[2]]
                    if any("fail" in f[2] or f[7] != "connected" for f in peers):
                        return False
                    replication = client.info("replication")
                    if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                        return False
        return True

    def masters(self) -> list[RedisServer]:
        """The running nodes that are masters now."""
        result = []
        for node in self.nodes:
            if node.running:
                with self._client(node.port) as client:
                    if client.info("replication")["role"] == "master":
                        result.append(node)
        return result

    def masters_now(self, master: RedisServer, *, not_master: RedisServer) -> bool:
        """Whether ``master`` is a master, ``not_master`` is not, and the cluster is :meth:`stable`."""
        masters = self.masters()
        return master in masters and not_master not in masters and self.stable()

    def replica_of(self, master: RedisServer) -> RedisServer:
        """A running replica of ``master``."""
        with self._client(master.port) as client:
            info = client.info("replication")
        ports = {int(value["port"]) for key, value in info.items() if key.startswith("slave") and key[5:].isdigit()}
        return next(node for node in self.nodes if node.port in ports and node.running)

    def failover(self, master: RedisServer, timeout: float = 30.0) -> RedisServer:
        """Promotes a replica of ``master`` with ``CLUSTER FAILOVER`` (the manual failover: the replica first
        catches up with the master, so no acknowledged write is lost) and waits until every node agrees.

        Returns:
            The new master.
        """
        replica = self.replica_of(master)
        deadline = time.monotonic() + timeout
        with self._client(replica.port) as client:
            while True:
                self._wait(self.stable, max(deadline - time.monotonic(), 0.0), "settle before a failover")
                # A manual failover the replica could not complete (its request to the master goes over the
                # bus, and a link that dropped just then loses it) times out after 5 s; then ask again.
                if not _failover_started(client):
                    time.sleep(0.05)  # the refusal comes at once: do not hammer the replica until the link is back
                elif _within(lambda: self.masters_now(replica, not_master=master), _MANUAL_FAILOVER_S):
                    return replica
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster did not fail over within {timeout} s")

    def flush(self, timeout: float = 30.0) -> None:
        """Empties every master (the replicas follow), once the cluster is :meth:`stable` with ``masters`` masters
        (a failover a test caused may still be settling: a demoted master refuses writes)."""
        self._wait(lambda: self.stable() and len(self.masters()) == self._masters, timeout, "settle")
        for node in self.masters():
            with self._client(node.port) as client:
                client.flushall()

    def close(self) -> None:
        """Stops every node and removes their data directories."""
        for node in self.nodes:
            node.close()

    @staticmethod
    def _client(port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, decode_responses=True)

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        if not _within(condition, timeout):
            raise RuntimeError(f"the Redis Cluster did not {what} within {timeout} s")

    def __enter__(self) -> RedisClusterServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _command(client: redis.Redis, *args: str | int) -> Any:
    """Runs a command redis-py has no typed method for (``CLUSTER ...``)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated


def _within(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition`` became true within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _failover_started(replica: redis.Redis) -> bool:
    """Asks ``replica`` for a manual failover; False while it answers that its master's link is down."""
    try:
        _command(replica, "CLUSTER", "FAILOVER")
    except redis.ResponseError as error:
        if "Master is down" not in str(error):
            raise
        return False
    return True


def _nodes(client: redis.Redis) -> list[str]:
    """The lines of ``CLUSTER NODES`` as seen by ``client``'s node."""
    return [line for line in str(_command(client, "CLUSTER", "NODES")).splitlines() if line]


class ServiceProcess:
    """A Parley service run as its own process (``python -m <module>``), as in production.

    Args:
        module: e.g. ``"parley_identity"``.
        env: ``PARLEY_*`` settings; ``PARLEY_PORT`` is set to a free port unless given.
        credentials: every service's credential (``parley_runtime.credentials.new_credentials``): the process
            presents its service's and accepts them all as peers.
        log_path: where the process's stderr goes (JSON logs); a temporary file by default.
    """

    def __init__(
        self,
        module: str,
        env: dict[str, str],
        *,
        credentials: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.module = module
        self.port = int(env.get("PARLEY_PORT") or free_port())
        own = credential_env(module.removeprefix("parley_"), credentials) if credentials else {}
        self._env = {**os.environ, **env, **own, "PARLEY_PORT": str(self.port)}
        self.log_path = log_path or Path(tempfile.mkstemp(prefix=f"parley-{module}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Starts the process and waits until its gRPC health check says SERVING.

        Raises:
            RuntimeError: the process exited or did not become healthy in time (its log is in the message).
        """
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 -- runs this interpreter on a module name we chose
                [sys.executable, "-m", self.module], env=self._env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if is_serving(self.target):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.module} did not become healthy:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, *, kill: bool = False, timeout: float = 15.0) -> int | None:
        """Sends SIGTERM (SIGKILL when ``kill``) and returns the exit status."""
        if self.process is None:
            return None
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.process = None
        return status
