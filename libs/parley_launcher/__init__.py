"""parley_launcher: the whole of Parley as processes on one machine (``make up`` / ``make down`` / ``make status``).

- ``Stack``: starts Redis and every service (N relay replicas on distinct ports) from a run directory, waits for
  their health, stops them; the same settings as docker-compose.yml (deploy/parley.env) with loopback addresses.
- ``service_environments``: each service's environment, as the launcher gives it (checked against the settings
  classes by tests/deploy/test_manifest_env.py).
- ``balanced_target``: one gRPC target naming every relay replica, for the SDK's client-side balancing.
"""

from parley_launcher._stack import LaunchError, Process, Stack, balanced_target, service_environments

__all__ = ["LaunchError", "Process", "Stack", "balanced_target", "service_environments"]
