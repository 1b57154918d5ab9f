"""Server interceptors for the concerns every RPC shares: error mapping with RPC metrics, request limits, auth.

Each interceptor wraps the behaviour of the handler it intercepts, so its work runs in the same task as the
handler (the authenticated principal travels in a context variable). Installed outermost first by
:mod:`parley_runtime.server`: tracing (OpenTelemetry), :class:`ErrorMappingInterceptor`,
:class:`LimitsInterceptor`, :class:`AuthInterceptor`.
"""

from __future__ import annotations

import abc
import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import metrics
from redis.exceptions import RedisError

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.auth import Access, Authenticator, Principal
from parley_runtime.deadlines import call_deadline
from parley_runtime.errors import ERROR_DOMAIN, Code, ParleyError, dependency_unavailable
from parley_runtime.telemetry import RPC_MILLISECONDS_BUCKETS

_log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("parley_principal", default=None)

_PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")

UnaryCall = Callable[[], Awaitable[Any]]


def current_principal() -> Principal | None:
    """The principal authenticated for the RPC running in this task (None for public RPCs)."""
    return _principal.get()


class _WrappingInterceptor(grpc.aio.ServerInterceptor, abc.ABC):  # type: ignore[misc]
    """Wraps each handler's behaviour with :meth:`around_unary` or :meth:`around_stream`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if handler.response_streaming:
            attr = "stream_stream" if handler.request_streaming else "unary_stream"
            inner_stream = getattr(handler, attr)

            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                result = inner_stream(request, context)
                # The handler's own iterator when it has one: a wrapping generator per interceptor would live
                # (and hold memory) as long as each open stream.
                responses = _awaited(result) if inspect.isawaitable(result) else result
                async for item in self.around_stream(method, context, responses):
                    yield item

            return handler._replace(**{attr: stream_behavior})
        attr = "stream_unary" if handler.request_streaming else "unary_unary"
        inner_unary = getattr(handler, attr)

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.around_unary(method, context, lambda: inner_unary(request, context))

        return handler._replace(**{attr: unary_behavior})

    @abc.abstractmethod
    async def around_unary(self, method: str, context: grpc.aio.ServicerContext, call: UnaryCall) -> Any:
        """Runs ``call`` (the handler) for a unary-response RPC and returns its response."""

    @abc.abstractmethod
    def around_stream(
        self, method: str, context: grpc.aio.ServicerContext, responses: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        """Yields the handler's ``responses`` for a streaming-response RPC."""


async def _awaited(result: Awaitable[None]) -> AsyncIterator[Any]:
    """A streaming handler written as a coroutine that writes with ``context.write`` (e.g. health Watch), as an
    async iterator of no responses."""
    await result
    return
    yield  # makes this an async generator


def _status_for(error: ParleyError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str | bytes], ...]]:
    info = error_details_pb2.ErrorInfo(reason=error.reason_name, domain=ERROR_DOMAIN, metadata=error.metadata)
    status = status_pb2.Status(code=int(error.code), message=error.message)
    status.details.add().Pack(info)
    converted = rpc_status.to_status(status)
    return converted.code, converted.details, tuple(converted.trailing_metadata)


def _classify(exc: Exception) -> ParleyError:
    if isinstance(exc, ParleyError):
        return exc
    if isinstance(exc, RedisError):
        _log.warning("redis unavailable: %s", exc)
        return dependency_unavailable("storage is unavailable; retry")
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        _log.warning("dependency unavailable: %s", exc.code())
        return dependency_unavailable("a dependency is unavailable; retry")
    _log.exception("unexpected error")
    return ParleyError(Code.INTERNAL, ErrorReason.ERROR_REASON_INTERNAL, "internal error")


class ErrorMappingInterceptor(_WrappingInterceptor):
    """Turns exceptions into gRPC statuses with ``ErrorInfo`` and records per-RPC metrics.

    ``ParleyError`` keeps its code and reason; Redis failures and unavailable dependencies become UNAVAILABLE /
    DEPENDENCY_UNAVAILABLE with a ``retry_after_ms`` hint; anything else is logged with its trace id and becomes
    INTERNAL (no details leak).
    Metrics: ``rpc.server.duration`` (ms) and ``rpc.server.active_requests``, by service, method and code.
    """

    def __init__(self, meter: metrics.Meter) -> None:
        self._duration = meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Duration of inbound RPCs",
            explicit_bucket_boundaries_advisory=RPC_MILLISECONDS_BUCKETS,
        )
        self._active = meter.create_up_down_counter(
            "rpc.server.active_requests", unit="{request}", description="RPCs in progress"
        )

    @staticmethod
    def _attributes(method: str, code: grpc.StatusCode) -> dict[str, str | int]:
        service, _, name = method.lstrip("/").rpartition("/")
        return {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            "rpc.grpc.status_code": code.value[0],
        }

    async def around_unary(self, method: str, context: grpc.aio.ServicerContext, call: UnaryCall) -> Any:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        self._active.add(1, {"rpc.method": method})
        try:
            # Calls this one makes to other services end with it (streams are long-lived and carry none).
            with call_deadline(context.time_remaining()):
                return await call()
        except grpc.aio.AbortError:
            code = grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code, details, trailers = _status_for(_classify(exc))
            await context.abort(code, details, trailers)
        finally:
            self._active.add(-1, {"rpc.method": method})
            self._duration.record((time.perf_counter() - start) * 1000, self._attributes(method, code))

    async def around_stream(
        self, method: str, context: grpc.aio.ServicerContext, responses: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        self._active.add(1, {"rpc.method": method})
        try:
            async for item in responses:
                yield item
        except grpc.aio.AbortError:
            code = grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code, details, trailers = _status_for(_classify(exc))
            await context.abort(code, details, trailers)
        finally:
            self._active.add(-1, {"rpc.method": method})
            self._duration.record((time.perf_counter() - start) * 1000, self._attributes(method, code))


class LimitsInterceptor(_WrappingInterceptor):
    """Bounds the unary calls in flight; beyond the bound, RESOURCE_EXHAUSTED / OVERLOADED at once.

    Refusing early keeps latency bounded under overload instead of queueing without limit. Streaming calls are
    long-lived and bounded by the services that own them (per-connection and per-provider limits). Health checks
    and reflection are never refused: an overloaded replica must not fail its probes and be restarted for it.
    """

    def __init__(self, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self._inflight = 0

    async def around_unary(self, method: str, context: grpc.aio.ServicerContext, call: UnaryCall) -> Any:
        if method.startswith(_PUBLIC_PREFIXES):
            return await call()
        if self._inflight >= self._max_inflight:
            raise ParleyError(
                Code.RESOURCE_EXHAUSTED,
                ErrorReason.ERROR_REASON_OVERLOADED,
                "server overloaded; retry with backoff",
                limit=self._max_inflight,
            )
        self._inflight += 1
        try:
            return await call()
        finally:
            self._inflight -= 1

    def around_stream(
        self, method: str, context: grpc.aio.ServicerContext, responses: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        return responses


class AuthInterceptor(_WrappingInterceptor):
    """Authenticates each call against the :class:`Access` its method declares; undeclared methods are refused.

    Args:
        authenticator: verifies credentials.
        access: full method name (``/package.Service/Method``) -> accepted principals.
        client_certificates: whether the server requires TLS client certificates (then checked against the
            certificate a provider enlisted); without them no call carries one worth reading.
        internal_callers: full method name -> the services an INTERNAL method serves (absent: every peer).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        access: Mapping[str, Access],
        *,
        client_certificates: bool = False,
        internal_callers: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._access = dict(access)
        self._client_certificates = client_certificates
        self._callers = dict(internal_callers or {})

    async def _authenticate(self, method: str, context: grpc.aio.ServicerContext) -> None:
        if method.startswith(_PUBLIC_PREFIXES):
            _principal.set(None)
            return
        access = self._access.get(method)
        if access is None:
            raise ParleyError(Code.PERMISSION_DENIED, ErrorReason.ERROR_REASON_INTERNAL, "method has no policy")
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        certificates = context.auth_context().get("x509_pem_cert") if self._client_certificates else None
        _principal.set(
            await self._authenticator.authenticate(
                metadata,
                access,
                peer_cert_pem=certificates[0] if certificates else None,
                callers=self._callers.get(method),
            )
        )

    async def around_unary(self, method: str, context: grpc.aio.ServicerContext, call: UnaryCall) -> Any:
        await self._authenticate(method, context)
        return await call()

    async def around_stream(
        self, method: str, context: grpc.aio.ServicerContext, responses: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        await self._authenticate(method, context)
        async for item in responses:
            yield item
