"""Channels from one Parley service to another: traced, and carrying the internal token on every call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from parley_runtime.config import ServiceSettings
from parley_runtime.deadlines import bounded_timeout
from parley_runtime.telemetry import Telemetry


class _TokenMixin:
    """Adds ``authorization: Bearer <token>`` to calls that carry no credentials of their own, and ends each call
    no later than the call being served (see :mod:`parley_runtime.deadlines`)."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        if "authorization" not in metadata:
            metadata.add(*self._metadata)
        return details._replace(metadata=metadata, timeout=bounded_timeout(details.timeout))


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


@dataclass(frozen=True, slots=True)
class PeerTls:
    """How a service's calls to its peers use TLS.

    Attributes:
        ca: PEM CA bundle the peers' server certificates are verified with.
        cert_chain: PEM certificate chain presented to peers that require client certificates (mTLS); its URI SAN
            ``spiffe://<trust domain>/<service>`` is this service's identity there. None: no client certificate.
        key: PEM private key of ``cert_chain``.
    """

    ca: bytes
    cert_chain: bytes | None = None
    key: bytes | None = None


def internal_channel(
    target: str, *, internal_token: str, telemetry: Telemetry, tls: PeerTls | None = None
) -> grpc.aio.Channel:
    """A channel to another service's ``host:port`` that traces calls and authenticates as a service.

    Args:
        target: ``host:port`` (or any gRPC target string).
        internal_token: this service's own credential (``<service>:<secret>``).
        telemetry: the process's telemetry (trace context is propagated on every call).
        tls: TLS towards the peer (CA, and the client certificate for mTLS); None for plaintext.
    """
    interceptors: list[Any] = [
        *aio_client_interceptors(tracer_provider=telemetry.tracer_provider),  # type: ignore[no-untyped-call]
        *(
            kind(internal_token)
            for kind in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
        ),
    ]
    options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_permit_without_calls", 1)]
    if tls is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca, private_key=tls.key, certificate_chain=tls.cert_chain
    )
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors, options=options)


def peer_tls(settings: ServiceSettings) -> PeerTls | None:
    """TLS towards a service's Parley peers from its settings (``PARLEY_TLS_CA_FILE``, ``PARLEY_TLS_PEER_*``), or
    None for plaintext."""
    if not settings.tls_ca_file:
        return None
    if not settings.tls_peer_cert_file:
        return PeerTls(Path(settings.tls_ca_file).read_bytes())
    return PeerTls(
        Path(settings.tls_ca_file).read_bytes(),
        Path(settings.tls_peer_cert_file).read_bytes(),
        Path(settings.tls_peer_key_file).read_bytes(),
    )
