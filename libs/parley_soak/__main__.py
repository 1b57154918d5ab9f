"""``python -m parley_soak [--minutes M] [--seed S] [--rate R] [--report FILE]``: exits 1 on any loss."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path

from parley_soak import SoakConfig, run_soak


def main() -> int:
    """Runs the soak from the command line and prints its summary."""
    parser = argparse.ArgumentParser(prog="python -m parley_soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long traffic and faults run (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice (printed; default random)")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second, all senders (default 20)")
    parser.add_argument("--report", type=Path, default=None, help="also write the summary as JSON to this file")
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60 or not 0 < args.rate <= 1000:
        parser.error("--minutes must be in (0, 1440] and --rate in (0, 1000]")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    report = asyncio.run(run_soak(SoakConfig(seconds=args.minutes * 60, seed=seed, rate=args.rate)))
    summary = report.as_dict()
    if args.report is not None:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"seed {seed}  {args.minutes:g} min at {args.rate:g} msg/s")
    for name in ("sent", "acknowledged", "delivered", "lost", "duplicated", "redelivered", "undecryptable", "retries"):
        print(f"  {name:<13} {summary[name]}")
    print(f"  refused       {summary['refused'] or 'none'}")
    print(f"  latency ms    {summary['latency_ms']}")
    print(f"  faults        {len(summary['faults'])}: " + ", ".join(f["kind"] for f in summary["faults"]))
    print("OK: nothing acknowledged was lost or seen twice" if report.ok else "FAILED: see lost/duplicated above")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
