"""A gRPC health probe: ``python -m parley_runtime.healthcheck --port 7101`` exits 0 when the service is SERVING.

Container runtimes without native gRPC probes (docker-compose's ``healthcheck``) run it inside the service's
container; the launcher and the test helpers call :func:`is_serving` to wait for a process. It asks the standard
``grpc.health.v1.Health/Check`` for the overall status (``""``) unless a service name is given. It speaks
plaintext only: where a service serves TLS, probe it from a sidecar or with Kubernetes' native probe.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(target: str, service: str = "", timeout: float = 0.5) -> bool:
    """Whether the server at ``target`` answers SERVING for ``service``.

    Args:
        target: ``host:port``.
        service: a full gRPC service name, or ``""`` for the server as a whole.
        timeout: seconds to wait for the answer.

    Returns:
        True when it answered SERVING; False when it answered anything else or could not be reached.
    """
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 0 when SERVING, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m parley_runtime.healthcheck", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to probe (default: 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PARLEY_PORT") or 0),
        help="gRPC port (default: $PARLEY_PORT)",
    )
    parser.add_argument("--service", default="", help="gRPC service name; default: the whole server")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    if not args.port:
        parser.error("no port: pass --port or set PARLEY_PORT")
    if is_serving(f"{args.host}:{args.port}", args.service, args.timeout):
        return 0
    print(f"{args.host}:{args.port} is not SERVING", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
