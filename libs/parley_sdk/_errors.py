"""Reading Parley's machine-readable error reasons from failed calls (see docs/errors.md)."""

from __future__ import annotations

import grpc.aio
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_reason(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The ``ErrorInfo`` reason and metadata of a refused call, e.g. ``("STALE_DEVICES", {...})``.

    Returns ``("", {})`` when the status carries no ``ErrorInfo`` (e.g. a transport failure).
    """
    status = rpc_status.from_call(error)
    if status is None:
        return "", {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    return "", {}
