"""The HTTP side of every RPC: the gRPC servicers behind Guard, called from Connect.

For each method of each service (api/services.py) this builds a Connect
endpoint that hands the request, still encoded, to the *same* Guard-wrapped
handler that gRPC calls: Guard authenticates (bearer token), decodes,
authorizes and rate-limits exactly as for gRPC, and the servicer runs
unchanged. Nothing here decides who may do what.

The servicers talk to a `grpc.aio.ServicerContext`; `CallContext` is the
part of one they use (metadata, peer, abort), backed by the HTTP request.
An abort becomes a `ConnectError` with the same code, message and details
(`google.rpc.ErrorInfo`, `RetryInfo`), which Connect maps to an HTTP status.
`WorkerService.Lease` is bidirectional and needs HTTP/2: over HTTP/1.1 it
answers UNIMPLEMENTED, pointing to gRPC.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any, NoReturn

import grpc
from connectrpc.code import Code
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf import descriptor_pool
from google.rpc import status_pb2
from protobuf.wkt import Any as ConnectAny

from broker.api.services import Service
from broker.http.codecs import RawRequest, codecs, to_message
from broker.security.interceptor import Guard

log = logging.getLogger(__name__)

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
_CODE = {status: Code[status.name] for status in grpc.StatusCode if status.name in Code.__members__}
_CODE[grpc.StatusCode.CANCELLED] = Code.CANCELED
_DETAILS = "grpc-status-details-bin"


class _Aborted(grpc.aio.AbortError):
    """`context.abort` on the HTTP side: carries the status to `_connect_error`."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: Sequence[Any]) -> None:
        super().__init__(details)
        self.code, self.details, self.trailers = code, details, trailers


class CallContext:
    """What the servicers and Guard use of a grpc.aio.ServicerContext, over HTTP."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [(k.lower(), v) for k, v in self._ctx.request_headers.allitems()]

    def peer(self) -> str:
        address = self._ctx.client_address or "unknown"
        return f"{'ipv6' if address.count(':') > 1 else 'ipv4'}:{address}"

    def auth_context(self) -> dict[str, list[bytes]]:
        # Client certificates are checked by TLS itself (broker/http/server.py);
        # the HTTP side names callers by bearer token only.
        return {}

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> NoReturn:
        raise _Aborted(code, details, trailing_metadata)

    def __str__(self) -> str:
        return f"HTTP {self._ctx.method.service_name}/{self._ctx.method.name}"


def _connect_error(aborted: _Aborted) -> ConnectError:
    details: list[ErrorDetail] = []
    for key, value in aborted.trailers:
        if key == _DETAILS and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            details += [
                ErrorDetail(ConnectAny(type_url=d.type_url, value=d.value)) for d in status.details
            ]
    return ConnectError(_CODE.get(aborted.code, Code.UNKNOWN), aborted.details, details)


def _internal(exc: Exception, where: str) -> ConnectError:
    log.error("internal error in %s over HTTP", where, exc_info=exc)
    return ConnectError(Code.INTERNAL, f"internal error ({type(exc).__name__}); see the broker log")


def _unary(behavior: Any, where: str) -> Callable[..., Awaitable[Any]]:
    async def call(request: RawRequest, ctx: RequestContext[Any, Any]) -> Any:
        try:
            return await behavior(request, CallContext(ctx))
        except _Aborted as aborted:
            raise _connect_error(aborted) from None
        except ConnectError:
            raise
        except Exception as exc:
            raise _internal(exc, where) from None

    return call


def _server_stream(behavior: Any, where: str) -> Callable[..., AsyncIterator[Any]]:
    async def call(request: RawRequest, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        stream = behavior(request, CallContext(ctx))
        try:
            async for item in stream:
                yield item
        except _Aborted as aborted:
            raise _connect_error(aborted) from None
        except ConnectError:
            raise
        except Exception as exc:
            raise _internal(exc, where) from None
        finally:
            # A client that goes away cancels this generator; the servicer's
            # `finally` blocks (subscriptions, stream counts) run now.
            await stream.aclose()

    return call


def _bidi_unavailable(method: str) -> Callable[..., AsyncIterator[Any]]:
    async def call(requests: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
        raise ConnectError(
            Code.UNIMPLEMENTED,
            f"{method} is a bidirectional stream, served over gRPC only (HTTP/2); "
            "see docs/protocol.md",
        )
        yield  # pragma: no cover - makes this an async generator

    return call


def snake(name: str) -> str:
    """The Connect generator's method names: CreateTask → create_task."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def applications(
    services: Sequence[Service], guard: Guard, *, read_max_bytes: int
) -> dict[str, ASGIApp]:
    """One Connect ASGI application per service, by service name."""
    apps: dict[str, ASGIApp] = {}
    for service in services:
        impl = SimpleNamespace()
        for method, handler in service.handlers.items():
            full = f"/{service.name}/{method}"
            setattr(impl, snake(method), _endpoint(guard, full, handler))
        apps[service.name] = _generated(service.name)(
            impl, codecs=codecs(), read_max_bytes=read_max_bytes
        )
    return apps


def _endpoint(guard: Guard, method: str, handler: Any) -> Callable[..., Any]:
    if handler.request_streaming:
        return _bidi_unavailable(method)
    decode = to_message(handler.request_deserializer)
    make = (
        grpc.unary_stream_rpc_method_handler
        if handler.response_streaming
        else grpc.unary_unary_rpc_method_handler
    )
    behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    ours: Any = make(behavior, request_deserializer=decode, response_serializer=None)  # type: ignore[arg-type]

    # Not intercept_service: that refuses calls without a token from their headers,
    # which do not exist yet here; Connect hands each call's to Guard through CallContext.
    wrapped: Any = guard.handler_for(method, ours)
    if handler.response_streaming:
        return _server_stream(wrapped.unary_stream, method)
    return _unary(wrapped.unary_unary, method)


def _generated(service_name: str) -> Any:
    """The generated ASGI application class for a service (taskyard/v1/*_connect.py)."""
    proto_file = descriptor_pool.Default().FindServiceByName(service_name).file.name
    module = importlib.import_module(
        proto_file.removesuffix(".proto").replace("/", ".") + "_connect"
    )
    return getattr(module, service_name.rsplit(".", 1)[1] + "ASGIApplication")
