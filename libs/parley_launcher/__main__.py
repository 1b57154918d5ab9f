"""``python -m parley_launcher up|down|status``: the local stack from the command line (the Makefile's targets)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parley_launcher._stack import LaunchError, Stack, balanced_target


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m parley_launcher", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=Path(".run"), help="state, logs and data (default: .run)")
    parser.add_argument("--relays", type=int, default=2, help="relay replicas for `up` (default: 2)")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports instead of 7100-7104, 7110, ...")
    args = parser.parse_args(argv)
    stack = Stack(args.run_dir.resolve())
    if args.command == "up":
        try:
            processes = stack.up(args.relays, free_ports=args.free_ports)
        except LaunchError as error:
            print(f"parley: {error}", file=sys.stderr)
            return 1
        for process in processes:
            metrics = f"metrics :{process.metrics_port}" if process.metrics_port else ""
            print(f"{process.name:<13} {process.target:<16} pid {process.pid:<8} {metrics:<14} log {process.log}")
        print(f"relays, balanced by the SDK: {balanced_target(processes)}")
        print(f"secrets (admin token, ...): {stack.run_dir / 'secrets.env'}")
        return 0
    if args.command == "down":
        stopped = stack.down()
        print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    rows = list(stack.status())
    if not rows:
        print("nothing was started (make up)")
        return 1
    for process, state in rows:
        print(f"{process.name:<13} {process.target:<16} {state:<8} pid {process.pid}")
    return 0 if all(state == "serving" for _, state in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
