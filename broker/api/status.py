"""The single place where a servicer's errors become gRPC statuses.

Every servicer method is wrapped by `maps_errors`, so a servicer never calls
`context.abort` itself; the status carries a `google.rpc.ErrorInfo` with the
machine-readable reason (written by `broker/status.py`, which the security
interceptor shares).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from broker.errors import TaskyardError
from broker.status import abort
from broker.store.failures import storage_error

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


async def _abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    """In an except clause: the domain error's status, or INTERNAL for anything unexpected."""
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the call was aborted already
    if isinstance(exc, TaskyardError):
        await abort(context, exc)
    storage = storage_error(exc)  # a full disk, a read-only database: not a bug
    if storage is not None:
        await abort(context, storage)
    log.exception("internal error in %s", context)
    await abort(
        context, TaskyardError(f"internal error ({type(exc).__name__}); see the broker log")
    )


def maps_errors(method: F) -> F:
    """Wrap a unary or server-streaming servicer method."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream(self: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for item in method(self, request, context):
                    yield item
            except Exception as exc:
                await _abort_for(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except Exception as exc:
            await _abort_for(context, exc)

    return unary  # type: ignore[return-value]
