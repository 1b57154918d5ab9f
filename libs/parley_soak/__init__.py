"""A bounded fault soak of a whole local Parley: steady cross-provider traffic while a fault injector kills and
restarts relay replicas, restarts and pauses Redis, and suspends and re-approves providers, at seeded random times.

``make soak`` (or ``python -m parley_soak --minutes 10``) prints progress, then a summary: sent, acknowledged,
delivered, lost (must be 0), duplicated as the app would see it (must be 0), refused by reason, latency
percentiles and the faults injected; it exits non-zero on any loss. See :mod:`parley_soak._soak` for the ledger.
"""

from parley_soak._run import run_soak
from parley_soak._soak import FAULTS, SoakConfig, SoakReport
from parley_soak._stack import LocalStack

__all__ = ["FAULTS", "LocalStack", "SoakConfig", "SoakReport", "run_soak"]
