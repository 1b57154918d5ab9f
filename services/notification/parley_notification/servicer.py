"""gRPC face of the notification service: requests to handler calls, handler results to responses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from parley.common.v1.common_pb2 import ErrorReason, PageResponse
from parley.notification.v1 import notification_pb2 as pb
from parley.notification.v1 import notification_pb2_grpc
from parley_notification.handler import NotificationHandler
from parley_notification.model import DeadLetter
from parley_runtime.auth import Access, ProviderPrincipal, UserPrincipal
from parley_runtime.errors import permission_denied
from parley_runtime.interceptors import current_principal

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NotificationService"].full_name

ACCESS = {
    f"/{SERVICE_NAME}/RegisterWebhook": Access.PROVIDER,
    f"/{SERVICE_NAME}/RegisterPushTarget": Access.DEVICE,
    f"/{SERVICE_NAME}/WatchNotices": Access.USER,
    f"/{SERVICE_NAME}/ListDeadLetters": Access.ADMIN,
    f"/{SERVICE_NAME}/RedriveDeadLetters": Access.ADMIN,
}
"""Providers register their webhook, devices their push token, users watch notices, the operator handles dead
letters."""


def _user() -> UserPrincipal:
    principal = current_principal()
    if not isinstance(principal, UserPrincipal):
        raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a user assertion")
    return principal


def _dead_letter_pb(letter: DeadLetter) -> pb.DeadLetter:
    return pb.DeadLetter(
        dead_letter_id=letter.dead_letter_id,
        provider_id=letter.provider_id,
        idempotency_key=letter.delivery_id,
        attempts=letter.attempts,
        last_error=letter.last_error,
        at_ms=letter.at_ms,
        type=letter.type,
    )


class NotificationServicer(notification_pb2_grpc.NotificationServiceServicer):
    """Implements ``parley.notification.v1.NotificationService``."""

    def __init__(self, handler: NotificationHandler) -> None:
        self._handler = handler

    async def RegisterWebhook(
        self, request: pb.RegisterWebhookRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterWebhookResponse:
        principal = current_principal()
        if not isinstance(principal, ProviderPrincipal):
            raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a provider assertion")
        secret = await self._handler.register_webhook(principal.provider_id, request.url)
        return pb.RegisterWebhookResponse(signing_secret=secret)

    async def RegisterPushTarget(
        self, request: pb.RegisterPushTargetRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterPushTargetResponse:
        await self._handler.register_push_target(_user().device, request.push_token)
        return pb.RegisterPushTargetResponse()

    async def WatchNotices(
        self, request: pb.WatchNoticesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchNoticesResponse]:
        async for notice in self._handler.watch_notices(_user().user):
            yield pb.WatchNoticesResponse(
                kind=pb.NoticeKind.Value(notice.kind), subject=notice.subject, at_ms=notice.at_ms
            )

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        letters, next_token = await self._handler.list_dead_letters(
            request.provider_id, request.page.page_size, request.page.page_token
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[_dead_letter_pb(letter) for letter in letters],
            page=PageResponse(next_page_token=next_token),
        )

    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> pb.RedriveDeadLettersResponse:
        redriven = await self._handler.redrive_dead_letters(list(request.dead_letter_ids), request.provider_id)
        return pb.RedriveDeadLettersResponse(redriven=redriven)
