"""Who may call what: CheckSend and CheckSendBatch are internal, blocks and reports users', review the operator's."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from support.cluster import ADMIN, INTERNAL, Cluster, ProviderKeys, error_reason
from support.moderation import franked_report, start_moderation

from parley.moderation.v1 import moderation_pb2 as pb

BOB = "phone:+4915112345678@gatekeeper"
ALICE_PHONE = "username:alice@birdy/1"

Credential = Callable[[ProviderKeys], tuple[tuple[str, str], ...]]

_NONE: Credential = lambda keys: ()  # noqa: E731 -- a table of credentials reads best as one-liners
_ADMIN: Credential = lambda keys: ADMIN  # noqa: E731
_INTERNAL: Credential = lambda keys: INTERNAL  # noqa: E731
_USER: Credential = lambda keys: keys.auth(BOB)  # noqa: E731
_DEVICE: Credential = lambda keys: keys.auth(BOB, 1)  # noqa: E731
_PROVIDER: Credential = lambda keys: keys.auth("gatekeeper")  # noqa: E731

_REQUESTS = {
    "CheckSend": pb.CheckSendRequest(sender=ALICE_PHONE, recipient=BOB, fan_out=1),
    "CheckSendBatch": pb.CheckSendBatchRequest(checks=[pb.CheckSendRequest(sender=ALICE_PHONE, recipient=BOB)]),
    "Block": pb.BlockRequest(address=ALICE_PHONE),
    "Unblock": pb.UnblockRequest(address=ALICE_PHONE),
    "ListBlocks": pb.ListBlocksRequest(),
    "ReportMessage": franked_report(b"hi", ALICE_PHONE, BOB),
    "ListReports": pb.ListReportsRequest(),
    "ResolveReport": pb.ResolveReportRequest(report_id="0" * 24, outcome=pb.REPORT_OUTCOME_DISMISSED),
}

_OK = (grpc.StatusCode.OK, "")
_DENIED = grpc.StatusCode.PERMISSION_DENIED
_MISSING = (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")


@pytest.mark.parametrize(
    ("method", "credential", "expected"),
    [
        ("CheckSend", _INTERNAL, _OK),
        ("CheckSend", _NONE, _MISSING),
        ("CheckSend", _USER, (_DENIED, "INTERNAL_ONLY")),
        ("CheckSend", _ADMIN, (_DENIED, "TOKEN_INVALID")),
        ("CheckSendBatch", _INTERNAL, _OK),
        ("CheckSendBatch", _NONE, _MISSING),
        ("CheckSendBatch", _USER, (_DENIED, "INTERNAL_ONLY")),
        ("CheckSendBatch", _PROVIDER, (_DENIED, "INTERNAL_ONLY")),
        ("CheckSendBatch", _ADMIN, (_DENIED, "TOKEN_INVALID")),
        ("Block", _USER, _OK),
        ("Block", _DEVICE, _OK),
        ("Block", _NONE, _MISSING),
        ("Block", _PROVIDER, (_DENIED, "TOKEN_INVALID")),
        ("Block", _INTERNAL, (_DENIED, "TOKEN_INVALID")),
        ("Block", _ADMIN, (_DENIED, "TOKEN_INVALID")),
        ("Unblock", _USER, _OK),
        ("Unblock", _INTERNAL, (_DENIED, "TOKEN_INVALID")),
        ("ListBlocks", _USER, _OK),
        ("ListBlocks", _ADMIN, (_DENIED, "TOKEN_INVALID")),
        ("ReportMessage", _USER, _OK),
        ("ReportMessage", _PROVIDER, (_DENIED, "TOKEN_INVALID")),
        ("ReportMessage", _INTERNAL, (_DENIED, "TOKEN_INVALID")),
        ("ListReports", _ADMIN, _OK),
        ("ListReports", _USER, (_DENIED, "ADMIN_REQUIRED")),
        ("ListReports", _INTERNAL, (_DENIED, "TOKEN_INVALID")),
        ("ResolveReport", _ADMIN, (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")),
        ("ResolveReport", _USER, (_DENIED, "ADMIN_REQUIRED")),
        ("ResolveReport", _NONE, _MISSING),
    ],
)
async def test_access_policy(
    cluster: Cluster, method: str, credential: Credential, expected: tuple[grpc.StatusCode, str]
) -> None:
    await cluster.start_identity()
    gatekeeper = await cluster.enlist("gatekeeper")
    await cluster.enlist("birdy")
    moderation = await start_moderation(cluster)
    call = getattr(moderation, method)
    if expected == _OK:
        await call(_REQUESTS[method], metadata=credential(gatekeeper))
        return
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(_REQUESTS[method], metadata=credential(gatekeeper))
    assert (error.value.code(), error_reason(error.value)) == expected
