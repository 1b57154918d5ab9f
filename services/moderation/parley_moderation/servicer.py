"""gRPC face of moderation: requests to handler calls, handler results to responses."""

from __future__ import annotations

import grpc.aio

from parley.common.v1.common_pb2 import ErrorReason, PageResponse
from parley.moderation.v1 import moderation_pb2 as pb
from parley.moderation.v1 import moderation_pb2_grpc
from parley_moderation.handler import ModerationHandler, ReportSubmission, SendRequest
from parley_moderation.model import Decision, Report
from parley_runtime.auth import Access, UserPrincipal
from parley_runtime.errors import permission_denied
from parley_runtime.interceptors import current_principal
from parley_stanza import Address

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModerationService"].full_name

_ACCESS_BY_METHOD: dict[str, Access] = {
    "CheckSend": Access.INTERNAL,
    "CheckSendBatch": Access.INTERNAL,
    "Block": Access.USER,
    "Unblock": Access.USER,
    "ListBlocks": Access.USER,
    "ReportMessage": Access.USER,
    "ListReports": Access.ADMIN,
    "ResolveReport": Access.ADMIN,
}
ACCESS = {f"/{SERVICE_NAME}/{method}": access for method, access in _ACCESS_BY_METHOD.items()}
"""Full method name -> accepted principals, for the auth interceptor."""

INTERNAL_CALLERS = {f"/{SERVICE_NAME}/{method}": frozenset({"relay"}) for method in ("CheckSend", "CheckSendBatch")}
"""Internal method -> the services (by credential name) it serves: only the relay asks for send decisions."""


def _user() -> Address:
    principal = current_principal()
    if not isinstance(principal, UserPrincipal):
        raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a user assertion")
    return principal.user


def _decision_pb(decision: Decision) -> pb.CheckSendResponse:
    return pb.CheckSendResponse(
        verdict=decision.verdict,
        reason=decision.reason,
        retry_after_ms=decision.retry_after_ms,
        limit=decision.limit,
    )


def _report_pb(report: Report) -> pb.Report:
    return pb.Report(
        report_id=report.report_id,
        reporter=report.reporter,
        sender=report.sender,
        message_id=report.message_id,
        verified=report.verified,
        category=report.category,
        outcome=report.outcome,
        created_at_ms=report.created_at_ms,
        audit=[pb.AuditEntry(at_ms=e.at_ms, actor=e.actor, action=e.action) for e in report.audit],
        plaintext=report.plaintext,
        sent_at_ms=report.sent_at_ms,
    )


class ModerationServicer(moderation_pb2_grpc.ModerationServiceServicer):
    """Implements ``parley.moderation.v1.ModerationService``."""

    def __init__(self, handler: ModerationHandler) -> None:
        self._handler = handler

    async def CheckSend(self, request: pb.CheckSendRequest, context: grpc.aio.ServicerContext) -> pb.CheckSendResponse:
        return _decision_pb(await self._handler.check_send(request.sender, request.recipient, request.fan_out))

    async def CheckSendBatch(
        self, request: pb.CheckSendBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckSendBatchResponse:
        decisions = await self._handler.check_send_batch(
            [SendRequest(check.sender, check.recipient, check.fan_out) for check in request.checks]
        )
        return pb.CheckSendBatchResponse(decisions=[_decision_pb(decision) for decision in decisions])

    async def Block(self, request: pb.BlockRequest, context: grpc.aio.ServicerContext) -> pb.BlockResponse:
        await self._handler.block(_user(), request.address)
        return pb.BlockResponse()

    async def Unblock(self, request: pb.UnblockRequest, context: grpc.aio.ServicerContext) -> pb.UnblockResponse:
        await self._handler.unblock(_user(), request.address)
        return pb.UnblockResponse()

    async def ListBlocks(
        self, request: pb.ListBlocksRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBlocksResponse:
        addresses, next_token = await self._handler.list_blocks(
            _user(), request.page.page_size, request.page.page_token
        )
        return pb.ListBlocksResponse(addresses=addresses, page=PageResponse(next_page_token=next_token))

    async def ReportMessage(
        self, request: pb.ReportMessageRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportMessageResponse:
        report_id, verified = await self._handler.report_message(
            _user(),
            ReportSubmission(
                message_id=request.message_id,
                sender=request.sender,
                plaintext=request.plaintext,
                franking_key=request.franking_key,
                commitment=request.commitment,
                server_tag=request.server_tag,
                server_timestamp_ms=request.server_timestamp_ms,
                category=request.category,
            ),
        )
        return pb.ReportMessageResponse(report_id=report_id, verified=verified)

    async def ListReports(
        self, request: pb.ListReportsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListReportsResponse:
        reports, next_token = await self._handler.list_reports(
            open_only=request.open_only, page_size=request.page.page_size, page_token=request.page.page_token
        )
        return pb.ListReportsResponse(
            reports=[_report_pb(report) for report in reports], page=PageResponse(next_page_token=next_token)
        )

    async def ResolveReport(
        self, request: pb.ResolveReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveReportResponse:
        report = await self._handler.resolve_report(request.report_id, request.outcome, request.note)
        return pb.ResolveReportResponse(report=_report_pb(report))
