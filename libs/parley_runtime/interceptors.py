"""The server interceptor every RPC passes through: tracing, error mapping with RPC metrics, the in-flight limit and
authentication, in that order, in one layer.

One layer rather than one interceptor per concern: grpc.aio calls every interceptor on every call, and each layer
costs an await, a rebuilt method handler and a wrapping closure, which on a unary call that does one Redis round
trip is a good part of its CPU. :class:`CallInterceptor` wraps each method's handler once and reuses it. The work
runs in the same task as the handler (the authenticated principal travels in a context variable).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.exceptions import RedisError

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.auth import Access, Authenticator, Principal
from parley_runtime.deadlines import call_deadline
from parley_runtime.errors import ERROR_DOMAIN, Code, ParleyError, dependency_unavailable
from parley_runtime.telemetry import RPC_MILLISECONDS_BUCKETS

_log = logging.getLogger(__name__)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("parley_principal", default=None)

_PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def current_principal() -> Principal | None:
    """The principal authenticated for the RPC running in this task (None for public RPCs)."""
    return _principal.get()


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


_ACTIVE_CALLS: dict[metrics.Meter, dict[str, list[int]]] = {}
"""Per meter, each method's calls in progress, in one mutable cell per method."""


def _active_calls(meter: metrics.Meter) -> dict[str, list[int]]:
    """The in-progress counts of ``meter``'s ``rpc.server.active_requests``, registering it on first use.

    The counts are kept here and read by the SDK at collection time: an up-down counter's ``add`` walks the SDK's
    aggregation twice per call, for a figure read once per export interval. Servers sharing a meter (tests run
    several in one process) share the counts, as they would share an up-down counter's.
    """
    calls = _ACTIVE_CALLS.get(meter)
    if calls is None:
        calls = _ACTIVE_CALLS[meter] = {}

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(active[0], {"rpc.method": name}) for name, active in calls.items()]

        meter.create_observable_up_down_counter(
            "rpc.server.active_requests", callbacks=[observe], unit="{request}", description="RPCs in progress"
        )
    return calls


@dataclass(frozen=True, slots=True)
class _Method:
    """What the interceptor needs to know about one method, worked out once."""

    name: str
    public: bool
    access: Access | None
    callers: Collection[str] | None
    traced: bool
    span_attributes: dict[str, str]
    duration_attributes: dict[grpc.StatusCode, dict[str, str | int]]
    active: list[int]
    """The method's calls in progress (one mutable cell, read by the ``rpc.server.active_requests`` callback)."""


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Traces, limits, authenticates and maps the errors of every call, in one layer.

    - Tracing: a server span per call, continuing the caller's W3C trace context, sampled by the process's sampler
      (parent-based: a caller's unsampled trace gets no span here, only its context carried on to the calls this
      one makes). Long-lived streams listed in ``untraced`` get none; their services trace frames instead.
    - Errors and metrics: exceptions become gRPC statuses with ``ErrorInfo``. ``ParleyError`` keeps its code and
      reason; Redis failures and unavailable dependencies become UNAVAILABLE / DEPENDENCY_UNAVAILABLE with a
      ``retry_after_ms`` hint; anything else is logged with its trace id and becomes INTERNAL (no details leak).
      ``rpc.server.duration`` (ms) and ``rpc.server.active_requests``, by service, method and code. A unary call's
      deadline bounds the calls it makes to other services (:mod:`parley_runtime.deadlines`).
    - Limits: beyond ``max_inflight`` unary calls in flight, RESOURCE_EXHAUSTED / OVERLOADED at once, so latency
      stays bounded under overload instead of queueing without limit. Streams are long-lived and bounded by the
      services that own them. Health checks and reflection are never refused (nor authenticated): an overloaded
      replica must not fail its probes and be restarted for it.
    - Authentication: each call against the :class:`Access` its method declares; undeclared methods are refused.

    Args:
        authenticator: verifies credentials.
        access: full method name (``/package.Service/Method``) -> accepted principals.
        tracer: for the server spans.
        meter: for the RPC metrics.
        max_inflight: unary calls in flight before new ones are refused.
        untraced: full names of long-lived streaming methods that get no call-long span.
        client_certificates: whether the server requires TLS client certificates (then checked against the
            certificate a provider enlisted); without them no call carries one worth reading.
        internal_callers: full method name -> the services an INTERNAL method serves (absent: every peer).
    """

    def __init__(
        self,
        authenticator: Authenticator,
        access: Mapping[str, Access],
        *,
        tracer: trace.Tracer,
        meter: metrics.Meter,
        max_inflight: int,
        untraced: Collection[str] = (),
        client_certificates: bool = False,
        internal_callers: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._access = dict(access)
        self._tracer = tracer
        self._untraced = frozenset(untraced)
        self._max_inflight = max_inflight
        self._inflight = 0
        self._client_certificates = client_certificates
        self._callers = dict(internal_callers or {})
        self._duration = meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Duration of inbound RPCs",
            explicit_bucket_boundaries_advisory=RPC_MILLISECONDS_BUCKETS,
        )
        self._active_calls = _active_calls(meter)
        self._propagated = frozenset(propagate.get_global_textmap().fields)
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        name: str = handler_call_details.method
        cached = self._handlers.get(name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(self._method(name), handler)
        self._handlers[name] = (handler, wrapped)
        return wrapped

    def _method(self, name: str) -> _Method:
        service, _, method = name.lstrip("/").rpartition("/")
        base = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        return _Method(
            name=name,
            public=name.startswith(_PUBLIC_PREFIXES),
            access=self._access.get(name),
            callers=self._callers.get(name),
            traced=name not in self._untraced,
            span_attributes=base,
            duration_attributes={code: {**base, "rpc.grpc.status_code": code.value[0]} for code in grpc.StatusCode},
            active=self._active_calls.setdefault(name, [0]),
        )

    def _wrap(self, method: _Method, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.response_streaming:
            attr = "stream_stream" if handler.request_streaming else "unary_stream"
            # A partial rather than a generator wrapping _around_stream: each generator lives, with its frame, as
            # long as its stream, and grpc still sees an async generator function (it runs others in threads).
            stream_behavior = functools.partial(self._around_stream, method, getattr(handler, attr))
            return handler._replace(**{attr: stream_behavior})
        attr = "stream_unary" if handler.request_streaming else "unary_unary"
        inner_unary = getattr(handler, attr)

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self._around_unary(method, context, inner_unary, request)

        return handler._replace(**{attr: unary_behavior})

    async def _around_unary(
        self, method: _Method, context: grpc.aio.ServicerContext, behavior: Callable[..., Any], request: Any
    ) -> Any:
        span, token = self._enter_trace(method, context) if method.traced else (None, None)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        counted = False
        method.active[0] += 1
        try:
            # Calls this one makes to other services end with it (streams are long-lived and carry none).
            with call_deadline(context.time_remaining()):
                if not method.public:
                    if self._inflight >= self._max_inflight:
                        raise ParleyError(
                            Code.RESOURCE_EXHAUSTED,
                            ErrorReason.ERROR_REASON_OVERLOADED,
                            "server overloaded; retry with backoff",
                            limit=self._max_inflight,
                        )
                    self._inflight += 1
                    counted = True
                await self._authenticate(method, context)
                return await behavior(request, context)
        except grpc.aio.AbortError:
            code = grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code, details, trailers = _status_for(_classify(exc))
            _end_trace_with_error(span, code, details, exc)
            await context.abort(code, details, trailers)
        finally:
            if counted:
                self._inflight -= 1
            method.active[0] -= 1
            self._duration.record((time.perf_counter() - start) * 1000, method.duration_attributes[code])
            self._exit_trace(span, token, code)

    async def _around_stream(
        self,
        method: _Method,
        behavior: Callable[..., Any],
        request: Any,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[Any]:
        span, token = self._enter_trace(method, context) if method.traced else (None, None)
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        method.active[0] += 1
        try:
            await self._authenticate(method, context)
            result = behavior(request, context)
            # The handler's own iterator when it has one: a wrapping generator would live (and hold memory) as long
            # as each open stream.
            responses = _awaited(result) if inspect.isawaitable(result) else result
            async for item in responses:
                yield item
        except grpc.aio.AbortError:
            code = grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code, details, trailers = _status_for(_classify(exc))
            _end_trace_with_error(span, code, details, exc)
            await context.abort(code, details, trailers)
        finally:
            method.active[0] -= 1
            self._duration.record((time.perf_counter() - start) * 1000, method.duration_attributes[code])
            self._exit_trace(span, token, code)

    def _enter_trace(
        self, method: _Method, context: grpc.aio.ServicerContext
    ) -> tuple[trace.Span | None, object | None]:
        """Starts the call's span (None outside a sampled trace) and makes its context current."""
        carrier = {key: value for key, value in context.invocation_metadata() or () if key in self._propagated}
        parent = propagate.extract(carrier) if carrier else None
        if parent is not None:
            caller = trace.get_current_span(parent).get_span_context()
            if caller.is_valid and not caller.trace_flags.sampled:
                # Unsampled upstream: no span, but the decision travels on with the caller's context.
                return None, otel_context.attach(parent)
        span = self._tracer.start_span(method.name, context=parent, kind=SpanKind.SERVER)
        if span.is_recording():
            span.set_attributes(method.span_attributes)
            peer = context.peer()
            if peer and not peer.startswith("unix:"):
                address, _, port = peer.split(",")[0].partition(":")[2].rpartition(":")
                span.set_attributes({"net.peer.ip": address, "net.peer.port": port})
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    @staticmethod
    def _exit_trace(span: trace.Span | None, token: object | None, code: grpc.StatusCode) -> None:
        if span is not None:
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.end()
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    async def _authenticate(self, method: _Method, context: grpc.aio.ServicerContext) -> None:
        if method.public:
            _principal.set(None)
            return
        if method.access is None:
            raise ParleyError(Code.PERMISSION_DENIED, ErrorReason.ERROR_REASON_INTERNAL, "method has no policy")
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        certificates = context.auth_context().get("x509_pem_cert") if self._client_certificates else None
        _principal.set(
            await self._authenticator.authenticate(
                metadata,
                method.access,
                peer_cert_pem=certificates[0] if certificates else None,
                callers=method.callers,
            )
        )


_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Codes that mark a server span as failed (OpenTelemetry's gRPC conventions); others are the caller's fault."""


def _end_trace_with_error(span: trace.Span | None, code: grpc.StatusCode, details: str, exc: Exception) -> None:
    if span is None or not span.is_recording():
        return
    if code in _SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details}"))
    if not isinstance(exc, ParleyError):
        span.record_exception(exc)
