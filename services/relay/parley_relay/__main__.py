"""``python -m parley_relay``: runs the edge relay until SIGTERM."""

from parley_relay.app import RelaySettings, build_relay
from parley_runtime.server import run_service

if __name__ == "__main__":
    run_service("relay", RelaySettings, build_relay)
