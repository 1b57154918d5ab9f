"""Shared scaffolding for Parley's benchmarks.

Every benchmark measures a hot path ("ours") beside its floor (the bare library calls it cannot beat), in the
same process and the same run, because the machines are shared and noisy. Each figure is a rate (higher is
better) and carries ``ours``, ``floor`` and ``ratio`` (ours / floor). Results go to ``bench/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Figure:
    """One measured rate of our code beside its floor.

    Attributes:
        unit: what one unit of the rate is, e.g. ``"round trips/s"``.
        ours: the rate our code achieved.
        floor: the rate of the bare library calls the same work needs.
        target: the ratio the issue asks for, when there is one.
        extra: any other numbers that explain the figure (latency percentiles, CPU seconds, ...).
    """

    unit: str
    ours: float
    floor: float
    target: float | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """ours / floor as rates; 1.0 means no overhead over the floor."""
        return self.ours / self.floor if self.floor else 0.0

    def as_json(self) -> dict[str, object]:
        """The figure as written to the results file."""
        data = asdict(self)
        data["ratio"] = round(self.ratio, 4)
        data["meets_target"] = None if self.target is None else self.ratio >= self.target
        return data


def parse_args(description: str) -> argparse.Namespace:
    """The command line every benchmark shares: ``--quick`` for a run under a minute."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="short run (under a minute) for smoke checks")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/<name>.json)")
    return parser.parse_args()


def rate(fn: Callable[[], object], *, seconds: float, repeats: int = 3, batch: int = 1) -> float:
    """Calls ``fn`` in a loop for about ``seconds`` per repeat and returns the best rate in calls/s.

    The best of several repeats is the least disturbed by other load on a shared machine.

    Args:
        fn: the operation; each call counts as ``batch`` units.
        seconds: time budget of one repeat.
        repeats: number of repeats; the fastest is reported.
        batch: units of work done by one call of ``fn``.

    Returns:
        Units of work per second.
    """
    best = 0.0
    for _ in range(repeats):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            fn()
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count * batch / (now - start))
    return best


def interleaved(
    ours: Callable[[], object], floor: Callable[[], object], *, seconds: float, rounds: int = 3, batch: int = 1
) -> tuple[float, float]:
    """Measures ``ours`` and ``floor`` in alternating rounds and returns the median rate of each.

    Alternating keeps both sides exposed to the same background load, so their ratio stays meaningful
    even when the absolute numbers drift.
    """
    ours_rates, floor_rates = [], []
    for _ in range(rounds):
        ours_rates.append(rate(ours, seconds=seconds, repeats=1, batch=batch))
        floor_rates.append(rate(floor, seconds=seconds, repeats=1, batch=batch))
    return statistics.median(ours_rates), statistics.median(floor_rates)


def write_results(name: str, figures: dict[str, Figure], *, quick: bool, out: Path | None = None) -> Path:
    """Writes ``bench/results/<name>.json`` and prints a short table.

    Returns:
        The path written.
    """
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "quick": quick,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "figures": {key: fig.as_json() for key, fig in figures.items()},
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    width = max(len(k) for k in figures) if figures else 10
    print(f"{'figure':<{width}}  {'ours':>12}  {'floor':>12}  {'ratio':>6}  unit")
    for key, fig in figures.items():
        print(f"{key:<{width}}  {fig.ours:>12,.1f}  {fig.floor:>12,.1f}  {fig.ratio:>6.3f}  {fig.unit}")
    print(f"wrote {path}")
    return path


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far, from ``/proc`` (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3 of stat(5), utime and stime fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class CpuMeter:
    """CPU time of several processes over a stretch of work, e.g. per call: ``{"keydir": pid, ...}``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._used = dict.fromkeys(pids, 0.0)
        self._started: dict[str, float] = {}

    def start(self) -> None:
        """Starts counting (again); what was counted so far is kept."""
        self._started = {name: cpu_seconds(pid) for name, pid in self._pids.items()}

    def stop(self) -> None:
        """Adds the time since :meth:`start`."""
        for name, pid in self._pids.items():
            self._used[name] += cpu_seconds(pid) - self._started[name]

    def per_unit_us(self, units: int) -> dict[str, float]:
        """Microseconds of CPU per unit of work, by process name."""
        return {f"{name}_cpu_us": round(used * 1e6 / max(units, 1), 1) for name, used in self._used.items()}


# Where a sampled stack's time goes: the innermost frame that belongs to one of these layers names it (checked in
# this order for each frame, leaf first), so a Redis command issued by the replay guard counts as Redis, and a
# histogram recorded by an interceptor as telemetry. Frames of none of them (grpc's C core, the event loop) are
# "grpc_and_event_loop".
PROFILE_LAYERS = (
    ("telemetry", ("opentelemetry/", "parley_runtime/telemetry.py")),
    ("redis", ("redis/", "hiredis", "parley_runtime/redis_client.py", "parley_runtime/ratelimit.py")),
    ("auth", ("parley_runtime/auth.py", "jwt/", "cryptography/", "parley_runtime/providers.py")),
    ("identity_cache", ("parley_runtime/recipients.py",)),
    ("interceptors", ("parley_runtime/interceptors.py", "parley_runtime/deadlines.py", "grpc_status/")),
    ("servicer_and_handler", ("parley_keydir/", "parley_moderation/", "parley_notification/", "parley_relay/")),
    ("protobuf", ("google/protobuf/",)),
    ("http_client", ("aiohttp/", "yarl/", "multidict/")),
)


Layers = tuple[tuple[str, tuple[str, ...]], ...]
"""(layer, frame markers) pairs, checked in order for each frame, leaf first."""


def profile_layers(pid: int, seconds: float, layers: Layers = PROFILE_LAYERS) -> dict[str, float] | str:
    """Samples ``pid`` with py-spy for ``seconds`` and returns each layer's share of its busy samples (by
    ``layers``, :data:`PROFILE_LAYERS` unless a bench names finer ones), or why it could not (py-spy missing or
    not permitted)."""
    import shutil  # noqa: PLC0415 -- only benches that profile
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "py-spy not installed"
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        done = subprocess.run(  # noqa: S603 -- py-spy on a process this bench started
            [spy, "record", "-p", str(pid), "-d", str(max(1, round(seconds))), "-r", "250", "--format", "raw",
             "--nonblocking", "--full-filenames", "-o", out.name],
            capture_output=True,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return f"py-spy failed: {done.stderr.decode(errors='replace').strip()[-200:]}"
        lines = Path(out.name).read_text().splitlines()
    counts: dict[str, int] = {}
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        layer = _layer(stack.split(";"), layers)
        counts[layer] = counts.get(layer, 0) + count
    if not total:
        return "no samples"
    return {layer: round(count / total, 3) for layer, count in sorted(counts.items(), key=lambda kv: -kv[1])}


_NOT_A_LAYER = ("__main__.py", "/app.py", "parley_runtime/server.py")
"""Frames under which everything in a service runs; they name no layer."""


def _layer(frames: list[str], layers: Layers) -> str:
    for frame in reversed(frames):
        if any(marker in frame for marker in _NOT_A_LAYER):
            continue
        for layer, markers in layers:
            if any(marker in frame for marker in markers):
                return layer
    return "grpc_and_event_loop"
