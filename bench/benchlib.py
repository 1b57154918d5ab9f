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
