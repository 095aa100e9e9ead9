"""The gate in front of every servicer: who is calling, may they, and may they now.

For each call: authenticate (bearer token, else the mTLS client certificate;
everyone is an anonymous admin when no tokens file is configured), decode the
request (malformed bytes are INVALID_ARGUMENT, not a crash), decide by role
and queue (`roles`), check task ownership (`access`), apply the per-identity
submission rates and stream count (`limits`), then run the servicer with the
caller's grant in a context variable. Health and reflection pass without a
token unless configured closed; their streams are capped in total.

What gRPC lets us check before a request's bytes are read: grpc.aio runs
`intercept_service` when a call's headers arrive, with the method and the
metadata but before any message is received (and without the peer or the TLS
session). So a missing or invalid bearer token is refused there, with a
handler that never reads the request: its bytes stay in HTTP/2 flow control
(a stream window, 64 KiB by default), not in a message buffer. What needs the
client certificate or the request itself (mTLS identities, roles, queues,
ownership) is decided after the message is received, which the receive limit
bounds (docs/security.md). Unary handlers are registered without a
deserializer, so nothing is parsed before authentication either way.

Tokens never reach a log line; refusals are logged with the method, the
peer, the identity or token id, and the reason, at most one line per peer per
interval (`refusals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import DecodeError

from broker.config import Settings
from broker.errors import (
    ConfigError,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    TaskyardError,
    Unauthenticated,
)
from broker.security import access, roles, tls, tokens
from broker.security.limits import OpenStream, Streams, SubmitBudget, budget_of, rate_limited
from broker.security.refusals import RefusalLog
from broker.security.roles import Principal, Role
from broker.status import abort
from broker.store.database import Database

log = logging.getLogger("taskyard.security")

Context = Any  # grpc.aio.ServicerContext
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
HEALTH = ("/grpc.health.v1.Health/",)
REFLECTION = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_SUBMIT_COST: dict[str, Callable[[Any], int]] = {
    "/taskyard.v1.TaskService/CreateTask": lambda request: 1,
    "/taskyard.v1.TaskService/BatchCreateTasks": lambda request: len(request.requests),
}
_ANONYMOUS = Principal(name=roles.ANONYMOUS, roles=frozenset({Role.ADMIN}), identified=False)


class TooManyStreams(ResourceExhausted):
    reason = "TOO_MANY_STREAMS"


class Unimplemented(TaskyardError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Guard(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        clock: Callable[[], float] = time.monotonic,
        budget: SubmitBudget | None = None,
    ) -> None:
        security, limits = settings.security, settings.limits
        self._security = security
        self._tokens_path = security.tokens_path
        self._credentials = tokens.load(self._tokens_path) if self._tokens_path else None
        self._mtls = security.tls_client_ca is not None
        self._db = db
        self._open = (HEALTH if security.open_health else ()) + (
            REFLECTION if security.open_reflection else ()
        )
        # Per identity, shared with the schedules' fires (api/schedule_convert.py).
        self._budget = budget or budget_of(limits, clock)
        self._wrapped: dict[tuple[str, int], Handler | None] = {}
        self.streams = Streams(limits.max_streams_per_identity)
        # Health and reflection streams opened without a token, all callers together.
        self._open_streams = 0
        self._max_open_streams = limits.max_open_streams
        self._refusals = RefusalLog(interval_s=limits.refusal_log_interval_s)

    @property
    def identities(self) -> int:
        return self._credentials.size if self._credentials is not None else 0

    def announce(self, listen: str) -> None:
        """At start: how callers are authenticated, and a loud warning when that is unsafe."""
        if self._credentials is not None:
            log.info(
                "authentication: tokens file %s (%d tokens, %d certificates); SIGHUP reloads it",
                self._tokens_path,
                len(self._credentials.tokens),
                len(self._credentials.certificates),
            )
            self._check_file(self._credentials)
        elif self._mtls:
            log.info("authentication: client certificates only; every client is an admin")
        else:
            log.info("authentication: OFF, every caller is an anonymous admin (development)")
        tls.warn_if_exposed(listen, self._security)

    def reload(self) -> None:
        """SIGHUP: read the tokens file again; a broken file keeps the previous reading."""
        if self._tokens_path is None:
            log.info("SIGHUP: no tokens file configured (--tokens); nothing to reload")
            return
        try:
            fresh = tokens.load(self._tokens_path)
        except ConfigError as exc:
            log.error("tokens file NOT reloaded; the previous identities stay in force: %s", exc)
            return
        self._credentials = fresh
        ended = self.streams.revoke(fresh.still_valid)
        log.log(
            logging.INFO if fresh.size else logging.WARNING,
            "tokens file reloaded: %d tokens, %d certificates; %d streams of revoked or changed "
            "identities ended",
            len(fresh.tokens),
            len(fresh.certificates),
            ended,
        )
        self._check_file(fresh)

    def _check_file(self, credentials: tokens.Credentials) -> None:
        """Warn about a tokens file that locks everyone out or that others may read or change."""
        assert self._tokens_path is not None
        if credentials.size == 0:
            log.warning(
                "the tokens file %s holds 0 tokens and 0 certificates: every call that needs "
                "authentication is refused",
                self._tokens_path,
            )
        mode = tokens.exposed_mode(self._tokens_path)
        if mode is not None:
            log.warning(
                "the tokens file %s is readable or writable by group or others (mode %04o): "
                "anyone who can change it can add an admin; chmod 600 it",
                self._tokens_path,
                mode,
            )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if not method.startswith(self._open):
            early = self._refuse_early(handler_call_details.invocation_metadata)
            if early is not None:
                return self._refuser(method, early)
        return self.handler_for(method, handler)

    def handler_for(self, method: str, handler: Handler | None) -> Handler | None:
        """`handler` behind the guard: what every call of `method` runs once its headers
        passed (the HTTP gateway, broker/http/gate.py, wraps its endpoints with this)."""
        if method.startswith(self._open):
            return self._cached(method, handler, self._cap_open)
        return self._cached(method, handler, self._wrap)

    def _cached(
        self,
        method: str,
        handler: Handler | None,
        wrap: Callable[[Handler | None, str], Handler | None],
    ) -> Handler | None:
        # The wrappers depend only on the method and its handler, which grpc
        # hands out again for every call: build each once, not per call.
        key = (method, id(handler))
        if key in self._wrapped:
            return self._wrapped[key]
        wrapped = self._wrapped[key] = wrap(handler, method)
        return wrapped

    def _refuse_early(self, metadata: Any) -> Unauthenticated | None:
        """A missing or invalid token, decided from the headers alone (see the module doc)."""
        if self._credentials is None:
            return None
        headers = [v for k, v in metadata or () if k == "authorization"]
        if not headers and self._mtls:
            return None  # the client certificate decides, once the call's context exists
        try:
            self._by_headers(self._credentials, headers)
        except Unauthenticated as error:
            return error
        return None

    def _refuser(self, method: str, error: Unauthenticated) -> Handler:
        """A handler that refuses without reading the request: request-streaming, never read."""

        async def refuse(requests: Any, context: Context) -> None:
            self._refusals.refused(method, str(context.peer()), error.reason, error.message)
            await abort(context, error)

        return grpc.stream_unary_rpc_method_handler(refuse)

    def _cap_open(self, handler: Handler | None, method: str) -> Handler | None:
        """Health and reflection, open to callers without a token: cap their streams in total.

        Their unary calls end at once and pass untouched; a stream (Health.Watch,
        ServerReflectionInfo) holds a task and buffers until it is closed.
        """
        if handler is None or not (handler.response_streaming or handler.request_streaming):
            return handler
        streaming = handler.unary_stream or handler.stream_stream
        if streaming is None:
            return handler
        counted = self._counted(streaming, method, handler.stream_stream is not None)
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.unary_stream is not None
            else grpc.stream_stream_rpc_method_handler
        )
        return make(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=_passthrough(handler.response_serializer),
        )

    def _counted(self, inner: Any, method: str, requests_stream: bool) -> Any:
        if inspect.isasyncgenfunction(inner):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                await self._take_open_stream(method, context, request if requests_stream else None)
                try:
                    async for item in inner(request, context):
                        yield item
                finally:
                    self._open_streams -= 1

            return generator

        async def coroutine(request: Any, context: Context) -> Any:
            await self._take_open_stream(method, context, request if requests_stream else None)
            try:
                return await inner(request, context)
            finally:
                self._open_streams -= 1

        return coroutine

    async def _take_open_stream(self, method: str, context: Context, requests: Any) -> None:
        if 0 < self._max_open_streams <= self._open_streams:
            error = TooManyStreams(
                f"{self._open_streams} health and reflection streams are open, the limit "
                "(--max-open-streams); close one first"
            )
            self._refusals.refused(method, str(context.peer()), error.reason, error.message)
            await _refuse(context, error, requests)
        self._open_streams += 1

    def _wrap(self, handler: Handler | None, method: str) -> Handler:
        if handler is None:
            # Unknown to this broker: still authenticate and authorize first, so
            # that callers without a right learn nothing about what exists.
            return grpc.unary_unary_rpc_method_handler(self._unimplemented(method))
        if handler.unary_unary is not None:
            return self._unary_unary(handler, method)
        if handler.unary_stream is not None:
            return self._unary_stream(handler, method)
        return self._stream_request(handler, method)

    # --- Handlers ---------------------------------------------------------------------------

    def _unary_unary(self, handler: Handler, method: str) -> Handler:
        inner: Any = handler.unary_unary
        decode = handler.request_deserializer

        async def behavior(raw: bytes, context: Context) -> Any:
            grant, request = await self._admit(method, context, raw, decode)
            with access.acting_as(grant):
                return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            behavior, response_serializer=_passthrough(handler.response_serializer)
        )

    def _unary_stream(self, handler: Handler, method: str) -> Handler:
        inner: Any = handler.unary_stream
        decode = handler.request_deserializer
        if inspect.isasyncgenfunction(inner):

            async def generator(raw: bytes, context: Context) -> AsyncIterator[Any]:
                grant, request = await self._admit(method, context, raw, decode)
                stream = await self._open_stream(grant, method, context)
                try:
                    async for item in inner(request, context):
                        yield item
                except asyncio.CancelledError:
                    if not stream.revoked:
                        raise
                    await _abort_revoked(context)
                finally:
                    self.streams.close(stream)

            return grpc.unary_stream_rpc_method_handler(
                generator, response_serializer=_passthrough(handler.response_serializer)
            )

        async def writer(raw: bytes, context: Context) -> None:
            grant, request = await self._admit(method, context, raw, decode)
            await self._run_stream(grant, method, context, inner, request)

        return grpc.unary_stream_rpc_method_handler(
            writer, response_serializer=_passthrough(handler.response_serializer)
        )

    def _stream_request(self, handler: Handler, method: str) -> Handler:
        streaming = handler.response_streaming
        inner: Any = handler.stream_stream if streaming else handler.stream_unary
        if inspect.isasyncgenfunction(inner):

            async def generator(requests: Any, context: Context) -> AsyncIterator[Any]:
                grant, _ = await self._admit(method, context, None, None, requests)
                stream = await self._open_stream(grant, method, context, requests)
                try:
                    async for item in inner(requests, context):
                        yield item
                except DecodeError as exc:
                    await abort(context, _malformed(method, exc))
                except asyncio.CancelledError:
                    if not stream.revoked:
                        raise
                    await _abort_revoked(context)
                finally:
                    self.streams.close(stream)

            behavior: Any = generator
        else:

            async def coroutine(requests: Any, context: Context) -> Any:
                grant, _ = await self._admit(method, context, None, None, requests)
                return await self._run_stream(grant, method, context, inner, requests)

            behavior = coroutine
        make = (
            grpc.stream_stream_rpc_method_handler
            if streaming
            else grpc.stream_unary_rpc_method_handler
        )
        return make(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=_passthrough(handler.response_serializer),
        )

    async def _run_stream(
        self, grant: access.Grant, method: str, context: Context, inner: Any, request: Any
    ) -> Any:
        stream = await self._open_stream(grant, method, context, request)
        try:
            return await inner(request, context)
        except DecodeError as exc:
            await abort(context, _malformed(method, exc))
        except asyncio.CancelledError:
            if not stream.revoked:
                raise
            await _abort_revoked(context)
        finally:
            self.streams.close(stream)

    def _unimplemented(self, method: str) -> Callable[[bytes, Context], Awaitable[None]]:
        async def behavior(raw: bytes, context: Context) -> None:
            await self._admit(method, context, None, None)
            await abort(context, Unimplemented(f"{method} is not a method of this broker"))

        return behavior

    # --- Checks -----------------------------------------------------------------------------

    async def _admit(
        self, method: str, context: Context, raw: bytes | None, decode: Any, requests: Any = None
    ) -> tuple[access.Grant, Any]:
        """Authenticate, decode, authorize and rate-limit one call, or abort it.

        `requests`: a request stream's messages, for `_refuse`.
        """
        try:
            principal = self._authenticate(context)
            request = _decode(method, raw, decode) if raw is not None else None
            grant = await self._authorize(principal, method, request, len(raw or b""))
        except TaskyardError as error:
            self._refusals.refused(method, str(context.peer()), error.reason, error.message)
            await _refuse(context, error, requests)
        return grant, request

    async def _authorize(
        self, principal: Principal, method: str, request: Any, size: int
    ) -> access.Grant:
        decision = roles.decide(principal, method, request)
        if not decision.allowed:
            raise PermissionDenied(decision.why, reason=decision.reason)
        if decision.task_id is not None:
            await access.check_task(
                self._db,
                principal,
                decision.task_id,
                own_only=decision.own_only,
                check_queue=decision.check_queue,
            )
        cost = _SUBMIT_COST.get(method)
        if cost is not None and request is not None:
            over = self._budget.take(principal.name, tasks=cost(request), size=size)
            if over is not None:
                raise rate_limited(principal.name, over)
        return access.Grant(principal, own_only=decision.own_only)

    def _authenticate(self, context: Context) -> Principal:
        subjects = _peer_subjects(context) if self._mtls else []
        credentials = self._credentials
        if credentials is None:
            if subjects:
                return Principal(name=subjects[0], roles=frozenset({Role.ADMIN}))
            return _ANONYMOUS
        headers = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
        if headers or not subjects:
            return self._by_headers(credentials, headers)
        principal = credentials.by_certificate(subjects)
        if principal is not None:
            return principal
        raise Unauthenticated(
            f"the client certificate {subjects[0]!r} has no entry in the tokens file and "
            "no token was sent",
            reason="UNKNOWN_CERTIFICATE",
        )

    @staticmethod
    def _by_headers(credentials: tokens.Credentials, headers: list[Any]) -> Principal:
        """The identity of the bearer token in the authorization headers, or Unauthenticated."""
        if len(headers) > 1:
            raise Unauthenticated("send one authorization header", reason="INVALID_TOKEN")
        if headers:
            scheme, _, token = str(headers[0]).strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "the authorization header must be 'Bearer <token>'", reason="INVALID_TOKEN"
                )
            principal = credentials.by_token(token.strip())
            if principal is None:
                parts = tokens.split(token.strip())
                which = f"token id {parts[0]}" if parts else "a malformed token"
                raise Unauthenticated(
                    f"{which} is not valid: unknown, revoked or mistyped", reason="INVALID_TOKEN"
                )
            return principal
        raise Unauthenticated(
            "this broker requires a token: send the metadata 'authorization: Bearer <token>' "
            "(TASKYARD_TOKEN for the CLI)",
            reason="TOKEN_REQUIRED",
        )

    async def _open_stream(
        self, grant: access.Grant, method: str, context: Context, requests: Any = None
    ) -> OpenStream:
        stream = self.streams.open(grant.principal)
        if stream is None:
            error = TooManyStreams(
                f"{grant.principal.name} holds {self.streams.limit} open streams, the limit; "
                "close one first"
            )
            self._refusals.refused(method, str(context.peer()), error.reason, error.message)
            await _refuse(context, error, requests)
        # The handler task is this call's own: the grant stays for its whole life.
        access.enter(grant)
        return stream


REFUSAL_READ_S = 1.0


async def _refuse(context: Context, error: TaskyardError, requests: Any) -> NoReturn:
    """Abort the call with `error`; a request stream's once its first message is in.

    A grpc.aio client whose write is still in flight when the status arrives reports
    INTERNAL "Internal error from Core" instead of the status (grpc/grpc#36066, under
    load about one refusal in fifty): a worker refused for its role would now and then
    be told nothing it can act on. Its first message (a hello) follows the headers at once,
    so waiting for it costs nothing; a caller that sends nothing is refused after
    `REFUSAL_READ_S` all the same. Only callers whose token is valid get here: a missing or
    invalid token is refused before anything is read (`_refuser`), which leaves that race.
    """
    if requests is not None:
        with contextlib.suppress(Exception):  # ended, malformed or late: refuse regardless
            async with asyncio.timeout(REFUSAL_READ_S):
                await anext(aiter(requests))
    await abort(context, error)


def _passthrough(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """A response serializer that sends a message serialized once for many streams as it is:
    an object with the bytes in `wire` (WatchTask's frames, api/watch_frames.py)."""
    if serialize is None:
        return None
    inner = serialize

    def serializer(message: Any) -> bytes:
        wire = getattr(message, "wire", None)
        return wire if isinstance(wire, bytes) else inner(message)

    return serializer


async def _abort_revoked(context: Context) -> None:
    """A stream that `reload` cancelled ends UNAUTHENTICATED rather than CANCELLED."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    await abort(
        context,
        Unauthenticated("the credentials of this stream were revoked or changed", reason="REVOKED"),
    )


def _decode(method: str, raw: bytes, decode: Any) -> Any:
    if decode is None:
        return raw
    try:
        return decode(raw)
    except DecodeError as exc:
        raise _malformed(method, exc) from None


def _malformed(method: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(
        f"the request to {method.rsplit('/', 1)[-1]} is not a valid protobuf message: {exc}",
        reason="MALFORMED_REQUEST",
    )


def _peer_subjects(context: Context) -> list[str]:
    """The client certificate's common name, then its subject alternative names."""
    auth = context.auth_context()
    names = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return list(dict.fromkeys(n.decode(errors="replace") for n in names))
