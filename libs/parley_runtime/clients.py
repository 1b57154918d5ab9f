"""Channels from one Parley service to another: traced, and carrying the internal token on every call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from parley_runtime.telemetry import Telemetry


class _TokenMixin:
    """Adds ``authorization: Bearer <token>`` to calls that carry no credentials of their own."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if "authorization" not in metadata:
            metadata.add(*self._metadata)
        return details._replace(metadata=metadata)


# grpc.aio files each interceptor under the first call shape it implements, so every shape needs its own class.
class _UnaryUnaryToken(_TokenMixin, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request)


class _UnaryStreamToken(_TokenMixin, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request)


class _StreamUnaryToken(_TokenMixin, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request_iterator)


class _StreamStreamToken(_TokenMixin, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Callable[..., Awaitable[Any]], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._with_token(client_call_details), request_iterator)


def internal_channel(target: str, *, internal_token: str, telemetry: Telemetry) -> grpc.aio.Channel:
    """A channel to another service's ``host:port`` that traces calls and authenticates as a service.

    Args:
        target: ``host:port`` (or any gRPC target string).
        internal_token: the shared internal token.
        telemetry: the process's telemetry (trace context is propagated on every call).
    """
    interceptors: list[Any] = [
        *aio_client_interceptors(tracer_provider=telemetry.tracer_provider),  # type: ignore[no-untyped-call]
        *(
            kind(internal_token)
            for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
        ),
    ]
    return grpc.aio.insecure_channel(
        target,
        interceptors=interceptors,
        options=[("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_permit_without_calls", 1)],
    )
