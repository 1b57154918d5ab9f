"""The local stack: Redis and every service as processes of this machine, wired like docker-compose.yml wires them.

Settings: the shared ones come from deploy/parley.env (the compose file's env file), then each service gets the
same per-service wiring as in compose (identity target, moderation target, franking key, replica name), with
loopback addresses and ports instead of container names. Secrets are generated once into ``<run dir>/secrets.env``
(mode 0600) and reused, so a restarted stack keeps its admin token. Everything a stack writes (Redis' append-only
file, one log per process, ``state.json`` with each process's pid and port) is in the run directory.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from parley_runtime.credentials import deployment_variables, new_credentials
from parley_runtime.healthcheck import is_serving
from parley_runtime.testing import free_port

_REPO = Path(__file__).resolve().parents[2]
SHARED_ENV_FILE = _REPO / "deploy" / "parley.env"
# The services' default ports (their settings classes); relay replica n listens on 7100 + 10 * n.
_PORTS = {"identity": 7101, "keydir": 7102, "moderation": 7103, "notification": 7104}
_RELAY_PORT, _RELAY_PORT_STEP = 7100, 10
_REDIS_PORT = 7179
# A service's /metrics port is its gRPC port plus this (identity 9101, relay-1 9100, ...).
_METRICS_OFFSET = 2000
# Where the compose file names its containers, the launcher uses loopback.
_LOCAL_OVERRIDES = {"PARLEY_HOST": "127.0.0.1", "OTEL_TRACES_EXPORTER": "none"}


class LaunchError(RuntimeError):
    """The stack could not be started (a port taken, a process that did not become healthy)."""


@dataclass
class Process:
    """One started process: its name, module (or ``redis-server``), port, pid, log and Prometheus port (0: none)."""

    name: str
    module: str
    port: int
    pid: int
    log: str
    metrics_port: int = 0

    @property
    def target(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        """Whether the pid still runs this process (not a later process that reused the pid)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.module.encode() in cmdline


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped), as compose reads them."""
    values = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition("=")
            values[name.strip()] = value.strip()
    return values


def service_environments(
    ports: Mapping[str, int], metrics_ports: Mapping[str, int], redis_url: str, secret_values: Mapping[str, str]
) -> dict[str, tuple[str, dict[str, str]]]:
    """Process name -> (module, environment) for every service: compose's settings with local addresses.

    Args:
        ports: process name (``identity``, ..., ``relay-1``, ``relay-2``, ...) -> gRPC port.
        metrics_ports: process name -> Prometheus port (in containers all use one; here they share a host).
        redis_url: the local Redis.
        secret_values: the secrets as compose reads them: ``PARLEY_ADMIN_TOKEN``, ``PARLEY_FRANKING_KEY``,
            ``PARLEY_<SERVICE>_CREDENTIAL`` per service and ``PARLEY_INTERNAL_PEERS``.
    """
    shared = {**read_env_file(SHARED_ENV_FILE), **_LOCAL_OVERRIDES, "PARLEY_REDIS_URL": redis_url}

    def tokens(service: str) -> dict[str, str]:
        return {
            "PARLEY_ADMIN_TOKEN": secret_values["PARLEY_ADMIN_TOKEN"],
            "PARLEY_INTERNAL_TOKEN": secret_values[f"PARLEY_{service.upper()}_CREDENTIAL"],
            "PARLEY_INTERNAL_PEERS": secret_values["PARLEY_INTERNAL_PEERS"],
            # Provider sessions are off where no key is given (docs/auth.md).
            "PARLEY_SESSION_KEY": secret_values.get("PARLEY_SESSION_KEY", ""),
            "PARLEY_SESSION_PREVIOUS_KEY": secret_values.get("PARLEY_SESSION_PREVIOUS_KEY", ""),
        }

    identity = {"PARLEY_IDENTITY_TARGET": f"127.0.0.1:{ports['identity']}"}
    franking = {"PARLEY_FRANKING_KEY": secret_values["PARLEY_FRANKING_KEY"]}
    environments = {
        "identity": ("parley_identity", tokens("identity")),
        "keydir": ("parley_keydir", {**tokens("keydir"), **identity}),
        "moderation": ("parley_moderation", {**tokens("moderation"), **identity, **franking}),
        "notification": ("parley_notification", {**tokens("notification"), **identity}),
    }
    for name in sorted(name for name in ports if name.startswith("relay-")):
        moderation = {
            "PARLEY_MODERATION_TARGET": f"127.0.0.1:{ports['moderation']}",
            "PARLEY_REPLICA": name,
            "PARLEY_NATIVE_PROVIDER": "gatekeeper",
        }
        environments[name] = ("parley_relay", {**tokens("relay"), **identity, **franking, **moderation})
    return {
        name: (
            module,
            {**shared, **own, "PARLEY_PORT": str(ports[name]), "PARLEY_METRICS_PORT": str(metrics_ports[name])},
        )
        for name, (module, own) in environments.items()
    }


class Stack:
    """The local stack in one run directory.

    Args:
        run_dir: where state, logs, secrets and Redis data live.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._state = run_dir / "state.json"

    @property
    def processes(self) -> list[Process]:
        """The processes the last :meth:`up` started, in start order (empty when none)."""
        if not self._state.exists():
            return []
        return [Process(**entry) for entry in json.loads(self._state.read_text())]

    def _secrets(self) -> dict[str, str]:
        path = self.run_dir / "secrets.env"
        if not path.exists():
            values = {
                "PARLEY_ADMIN_TOKEN": secrets.token_urlsafe(24),
                "PARLEY_FRANKING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                "PARLEY_SESSION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                **deployment_variables(new_credentials()),
            }
            path.touch(mode=0o600)
            path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
        return read_env_file(path)

    @property
    def admin_token(self) -> str:
        """The stack's admin token (identity's admin RPCs)."""
        return self._secrets()["PARLEY_ADMIN_TOKEN"]

    def up(
        self,
        relays: int = 2,
        *,
        free_ports: bool = False,
        extra_env: Mapping[str, Mapping[str, str]] | None = None,
        log_level: str | None = None,
        timeout: float = 60.0,
    ) -> list[Process]:
        """Starts Redis and every service (``relays`` relay replicas), waits until each is healthy.

        Args:
            relays: relay replicas, each on its own port.
            free_ports: pick free ports instead of the fixed defaults (tests; several stacks on one machine).
            extra_env: process name -> settings added to that process's environment (the demo's webhook options).
            log_level: ``PARLEY_LOG_LEVEL`` of every service instead of deploy/parley.env's.
            timeout: seconds each process may take to become healthy.

        Returns:
            The processes; when a stack already runs in this directory, its processes, untouched.

        Raises:
            LaunchError: a port is taken or a process did not become healthy (what started is stopped again).
        """
        running = [process for process in self.processes if process.alive()]
        if running:
            return running
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        names = ["redis", *_PORTS, *(f"relay-{n}" for n in range(1, relays + 1))]
        defaults = {"redis": _REDIS_PORT, **_PORTS}
        defaults |= {f"relay-{n}": _RELAY_PORT + _RELAY_PORT_STEP * (n - 1) for n in range(1, relays + 1)}
        ports = {name: free_port() if free_ports else defaults[name] for name in names}
        taken = [f"{name} ({port})" for name, port in ports.items() if not _port_free(port)]
        if taken:
            raise LaunchError(f"ports in use: {', '.join(taken)}; stop what uses them or run with free ports")
        started: list[Process] = []
        try:
            started.append(self._start_redis(ports["redis"], timeout))
            self._save(started)
            redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
            services = [name for name in names if name != "redis"]
            metrics = {name: free_port() if free_ports else ports[name] + _METRICS_OFFSET for name in services}
            environments = service_environments(ports, metrics, redis_url, self._secrets())
            # Identity first: the others wait at start for its provider list; relays last, as compose orders them.
            for name, (module, environment) in environments.items():
                environment.update((extra_env or {}).get(name, {}))
                if log_level is not None:
                    environment["PARLEY_LOG_LEVEL"] = log_level
                started.append(self._start_service(name, module, environment, timeout))
                self._save(started)
        except BaseException:
            self.down()
            raise
        return started

    def _start_redis(self, port: int, timeout: float) -> Process:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LaunchError("redis-server not found on PATH (make setup installs it)")
        data = self.run_dir / "redis"
        data.mkdir(exist_ok=True)
        args = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
        ]  # fmt: skip
        process, child = self._spawn("redis", "redis-server", port, args, dict(os.environ))
        deadline = time.monotonic() + timeout
        import redis  # noqa: PLC0415 -- only the launcher's Redis check needs the sync client

        client = redis.Redis(port=port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline and child.poll() is None:
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return process
                time.sleep(0.05)
        finally:
            client.close()
        raise LaunchError(f"redis-server did not start on port {port}; see {process.log}")

    def _start_service(self, name: str, module: str, environment: dict[str, str], timeout: float) -> Process:
        process, child = self._spawn(name, module, int(environment["PARLEY_PORT"]), [sys.executable, "-m", module],
                                     {**os.environ, **environment})  # fmt: skip
        process.metrics_port = int(environment.get("PARLEY_METRICS_PORT") or 0)
        deadline = time.monotonic() + timeout
        # Popen.poll, not Process.alive: until the child has exec'd, /proc shows this interpreter's command line.
        while time.monotonic() < deadline and child.poll() is None:
            if is_serving(process.target):
                return process
            time.sleep(0.1)
        raise LaunchError(f"{name} did not become healthy; see {process.log}")

    def _spawn(
        self, name: str, module: str, port: int, args: list[str], env: dict[str, str]
    ) -> tuple[Process, subprocess.Popen[bytes]]:
        log = self.run_dir / "logs" / f"{name}.log"
        with log.open("ab") as out:
            # Its own session, so the process outlives `make up` and a Ctrl-C in that terminal does not reach it.
            child = subprocess.Popen(  # noqa: S603 -- this interpreter or redis-server, arguments built here
                args, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return Process(name, module, port, child.pid, str(log)), child

    def _save(self, processes: list[Process]) -> None:
        self._state.write_text(json.dumps([asdict(process) for process in processes], indent=2))

    def down(self, timeout: float = 30.0) -> list[str]:
        """Stops every process of the stack (SIGTERM, so services drain and Redis writes its file; SIGKILL after
        ``timeout``), relays first and Redis last. Returns the names of the processes it stopped."""
        stopped = []
        for process in reversed(self.processes):
            if process.alive():
                os.kill(process.pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while process.alive() and time.monotonic() < deadline:
                    _reap(process.pid)
                    time.sleep(0.05)
                if process.alive():
                    os.kill(process.pid, signal.SIGKILL)
                _reap(process.pid)
                stopped.append(process.name)
        self._state.unlink(missing_ok=True)
        return stopped

    def status(self) -> Iterator[tuple[Process, str]]:
        """Each process with ``serving``, ``running`` (alive, not healthy) or ``stopped``."""
        for process in self.processes:
            if not process.alive():
                yield process, "stopped"
            elif process.module == "redis-server" or is_serving(process.target):
                yield process, "serving"
            else:
                yield process, "running"


def balanced_target(processes: list[Process]) -> str:
    """A gRPC target naming every relay replica, for the SDK's client-side round_robin balancing."""
    return "ipv4:" + ",".join(process.target for process in processes if process.module == "parley_relay")


def _port_free(port: int) -> bool:
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reap(pid: int) -> None:
    # A process this interpreter started (the in-process use by the demo and tests) stays a zombie, and so
    # "alive" by /proc, until it is waited for; processes of an earlier `make up` are not our children.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
