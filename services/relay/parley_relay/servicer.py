"""gRPC face of the relay: Send, Connect streams and the media proxy."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable

import grpc.aio
from opentelemetry import propagate

from parley.common.v1.common_pb2 import ErrorReason
from parley.relay.v1 import relay_pb2 as pb
from parley.relay.v1 import relay_pb2_grpc
from parley_relay.connection import DeviceStream, StreamSettings
from parley_relay.handler import RelayHandler
from parley_relay.hub import MailboxHub
from parley_relay.media import MediaHandler, UploadState
from parley_relay.parity import MINUTE_MS, ParityReports
from parley_runtime.auth import Access, UserPrincipal
from parley_runtime.errors import Code, ParleyError, invalid_field, permission_denied
from parley_runtime.interceptors import current_principal
from parley_stanza import Address

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RelayService"].full_name

ACCESS = {
    **{
        f"/{SERVICE_NAME}/{method}": Access.DEVICE
        for method in ("Send", "Connect", "UploadMedia", "CreateUpload", "GetUpload", "DownloadMedia")
    },
    f"/{SERVICE_NAME}/GetParityReport": Access.ADMIN,
}
"""Every relay RPC acts for one device."""


def _principal() -> UserPrincipal:
    principal = current_principal()
    if not isinstance(principal, UserPrincipal) or principal.device_id is None:
        raise permission_denied(ErrorReason.ERROR_REASON_TOKEN_INVALID, "this call needs a device assertion")
    return principal


class RelayServicer(relay_pb2_grpc.RelayServiceServicer):
    """Implements ``parley.relay.v1.RelayService``.

    Args:
        handler: relay rules.
        hub: this replica's mailbox hints.
        media: the media proxy.
        streams: bounds and timings of device streams.
        stream_refusal: why a device may no longer hold a stream (the kill switch, the interop policy), or None.
        max_streams_per_provider: open streams one provider may hold on this replica (backpressure).
    """

    def __init__(
        self,
        handler: RelayHandler,
        hub: MailboxHub,
        media: MediaHandler,
        streams: StreamSettings,
        stream_refusal: Callable[[Address], ParleyError | None],
        max_streams_per_provider: int = 100_000,
        *,
        parity: ParityReports,
    ) -> None:
        self._parity = parity
        self._handler = handler
        self._hub = hub
        self._media = media
        self._streams = streams
        self._stream_refusal = stream_refusal
        self._max_streams = max_streams_per_provider
        self._open_streams: Counter[str] = Counter()

    async def GetParityReport(
        self, request: pb.GetParityReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetParityReportResponse:
        parity = self._parity
        if request.from_ms <= 0:
            raise invalid_field("from_ms", "a Unix time in milliseconds")
        if not request.from_ms < request.to_ms <= request.from_ms + parity.max_window_ms:
            raise invalid_field("to_ms", f"after from_ms, and at most {parity.max_window_ms} ms after it")
        providers = sorted(parity.providers(), key=lambda provider_id: (provider_id != parity.native, provider_id))
        figures = await parity.recorder.report(providers, request.from_ms, request.to_ms)
        response = pb.GetParityReportResponse(
            from_ms=request.from_ms // MINUTE_MS * MINUTE_MS, to_ms=-(-request.to_ms // MINUTE_MS) * MINUTE_MS
        )
        for figure in figures:
            refused = sum(figure.refused.values())
            response.providers.append(
                pb.ProviderParity(
                    provider_id=figure.provider_id,
                    native=figure.provider_id == parity.native,
                    accepted=figure.accepted,
                    refused=figure.refused,
                    refusal_ratio=refused / (refused + figure.accepted) if refused + figure.accepted else 0.0,
                    delivered=figure.delivered,
                    delivery_latency_mean_ms=figure.latency_mean_ms,
                    delivery_latency_p50_ms=figure.latency_quantile_ms(0.5),
                    delivery_latency_p95_ms=figure.latency_quantile_ms(0.95),
                    delivery_latency_p99_ms=figure.latency_quantile_ms(0.99),
                )
            )
        return response

    async def Send(self, request: pb.SendRequest, context: grpc.aio.ServicerContext) -> pb.SendResponse:
        accepted = await self._handler.send(_principal().device, request.stanza)
        return pb.SendResponse(
            message_id=accepted.message_id, server_timestamp_ms=accepted.ts, duplicate=accepted.duplicate
        )

    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectResponse]:
        principal = _principal()
        device: Address = principal.device
        provider = principal.provider_id
        if self._open_streams[provider] >= self._max_streams:
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_QUOTA_EXCEEDED,
                f"provider {provider} holds the maximum of {self._max_streams} streams on this relay",
                limit=self._max_streams,
            )
        # Kept for the stream's life only when the client sent one (an empty context is an object per stream).
        trace_context = propagate.extract(dict(context.invocation_metadata() or ())) or None
        stream = DeviceStream(
            self._handler, self._hub, device, self._streams, self._stream_refusal, trace_context=trace_context
        )
        self._open_streams[provider] += 1
        try:
            async for frame in stream.run(request_iterator):
                yield frame
        finally:
            self._open_streams[provider] -= 1

    async def UploadMedia(
        self, request_iterator: AsyncIterator[pb.UploadMediaRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadMediaResponse:
        principal = _principal()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise invalid_field("header", "the first message of an upload is its header")

        async def chunks() -> AsyncIterator[bytes]:
            async for request in request_iterator:
                if request.WhichOneof("part") != "chunk":
                    raise invalid_field("header", "only the first message is a header")
                yield request.chunk

        header = first.header
        state = await self._media.upload(
            principal.provider_id,
            str(principal.user),
            size=header.size,
            sha256=header.sha256,
            upload_id=header.upload_id,
            offset=header.offset,
            chunks=chunks(),
        )
        return pb.UploadMediaResponse(
            media_id=state.upload_id if state.complete else "",
            expires_at_ms=state.expires_at_ms,
            received=state.received,
        )

    async def CreateUpload(
        self, request: pb.CreateUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateUploadResponse:
        principal = _principal()
        state = await self._media.create(principal.provider_id, str(principal.user), request.size, request.sha256)
        return pb.CreateUploadResponse(upload=_upload_status(state))

    async def GetUpload(self, request: pb.GetUploadRequest, context: grpc.aio.ServicerContext) -> pb.GetUploadResponse:
        principal = _principal()
        state = await self._media.status(principal.provider_id, str(principal.user), request.upload_id)
        return pb.GetUploadResponse(upload=_upload_status(state))

    async def DownloadMedia(
        self, request: pb.DownloadMediaRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DownloadMediaResponse]:
        _principal()
        async for offset, chunk, total in self._media.download(request.media_id, request.offset, request.length):
            yield pb.DownloadMediaResponse(offset=offset, chunk=chunk, total_size=total)


def _upload_status(state: UploadState) -> pb.UploadStatus:
    return pb.UploadStatus(
        upload_id=state.upload_id,
        size=state.size,
        received=state.received,
        complete=state.complete,
        expires_at_ms=state.expires_at_ms,
    )
