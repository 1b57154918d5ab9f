"""A probe service for the runtime's tests (tests/libs/runtime): the real server bootstrap around a tiny servicer.

The probe has no protos: its methods take and return raw bytes, so each test can make a handler fail in exactly
the way it needs (a ``ParleyError``, a Redis failure, a bug) or hold a call in flight until the test releases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import grpc.aio
from redis.exceptions import ConnectionError as RedisConnectionError

from parley.common.v1.common_pb2 import ErrorReason
from parley_runtime.auth import Access, Authenticator
from parley_runtime.config import ServiceSettings, load_settings
from parley_runtime.errors import Code, ParleyError
from parley_runtime.providers import ProviderCache
from parley_runtime.server import GrpcServer, ServiceDefinition
from parley_runtime.telemetry import Telemetry

PROBE_SERVICE = "parley.test.v1.Probe"
PROBE_ADMIN_TOKEN = "probe-admin-token"

FAILURES: dict[bytes, Exception] = {
    b"parley": ParleyError(
        Code.NOT_FOUND, ErrorReason.ERROR_REASON_DEVICE_NOT_FOUND, "no device 7", device_id=7, address="a"
    ),
    b"redis": RedisConnectionError("connection refused by 10.0.0.7"),
    b"bug": RuntimeError("secret internal detail"),
}
"""What ``Fail`` raises, by request body."""


class _FirstUseInMemory:
    """Replay guard of the probe: assertion ids remembered in this process."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    async def first_use(self, provider_id: str, jti: str, expires_at: float) -> bool:
        key = (provider_id, jti)
        first = key not in self._seen
        self._seen.add(key)
        return first


class Probe:
    """A running probe server.

    Attributes:
        server: the gRPC server.
        entered: set when a ``Block`` call is inside its handler.
        release: set by the test to let ``Block`` calls return.
    """

    server: GrpcServer

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None

    @property
    def target(self) -> str:
        """``host:port``."""
        return f"127.0.0.1:{self.server.port}"

    @property
    def channel(self) -> grpc.aio.Channel:
        """A client channel to the probe."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        return self._channel

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        """A raw-bytes callable for ``method``."""
        return self.channel.unary_unary(f"/{PROBE_SERVICE}/{method}")

    def stream(self, method: str) -> grpc.aio.UnaryStreamMultiCallable:
        """A raw-bytes server-streaming callable for ``method``."""
        return self.channel.unary_stream(f"/{PROBE_SERVICE}/{method}")

    async def close(self) -> None:
        """Closes the channel and stops the server at once."""
        if self._channel is not None:
            await self._channel.close()
        await self.server.stop(0)

    def register(self, server: grpc.aio.Server) -> None:
        """Adds the probe's handlers to ``server``."""

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return request

        async def fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            raise FAILURES[request]

        async def block(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.entered.set()
            await self.release.wait()
            return b"done"

        async def stream_then_fail(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            yield b"one"
            raise FAILURES[request]

        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Block": grpc.unary_unary_rpc_method_handler(block),
            "Guarded": grpc.unary_unary_rpc_method_handler(echo),
            "ForProviders": grpc.unary_unary_rpc_method_handler(echo),
            "ForServices": grpc.unary_unary_rpc_method_handler(echo),
            "Unlisted": grpc.unary_unary_rpc_method_handler(echo),
            "StreamThenFail": grpc.unary_stream_rpc_method_handler(stream_then_fail),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(PROBE_SERVICE, handlers),))


ProbeFactory = Callable[..., Awaitable[Probe]]
"""Starts a probe with ``ServiceSettings`` overrides (the ``start_probe`` fixture of tests/libs/runtime)."""


async def start_probe_server(
    telemetry: Telemetry, providers: ProviderCache | None = None, **overrides: object
) -> Probe:
    """Starts a probe server on a free port with the given ``ServiceSettings`` overrides.

    ``ForProviders`` accepts provider assertions of the ``providers`` given (none by default).
    """
    settings = load_settings(ServiceSettings, **{"port": 0, "admin_token": PROBE_ADMIN_TOKEN, **overrides})
    access = {f"/{PROBE_SERVICE}/{method}": Access.PUBLIC for method in ("Echo", "Fail", "Block", "StreamThenFail")}
    access[f"/{PROBE_SERVICE}/Guarded"] = Access.ADMIN
    access[f"/{PROBE_SERVICE}/ForProviders"] = Access.PROVIDER
    access[f"/{PROBE_SERVICE}/ForServices"] = Access.INTERNAL
    directory = providers if providers is not None else ProviderCache()
    authenticator = Authenticator.from_settings(settings, directory, _FirstUseInMemory())
    probe = Probe()
    definition = ServiceDefinition(name="probe", service_names=[PROBE_SERVICE], register=probe.register, access=access)
    probe.server = GrpcServer(settings, definition, authenticator, telemetry)
    await probe.server.start()
    return probe
