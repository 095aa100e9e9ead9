"""The single place where domain errors become gRPC statuses.

Every servicer method is wrapped by `maps_errors`, so a servicer never calls
`context.abort` itself; the status carries a `google.rpc.ErrorInfo` with the
machine-readable reason.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from broker.errors import DOMAIN, TaskyardError

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def status_details(
    code: grpc.StatusCode, reason: str, message: str, retry_after_s: float | None = None
) -> bytes:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    if retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromMicroseconds(max(1, round(retry_after_s * 1_000_000)))
        status.details.add().Pack(retry)
    return bytes(status.SerializeToString())


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: TaskyardError) -> NoReturn:
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=(
            (
                "grpc-status-details-bin",
                status_details(error.code, error.reason, error.message, error.retry_after_s),
            ),
        ),
    )
    raise AssertionError("unreachable: abort raises")


async def _abort_unexpected(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> None:
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
            except TaskyardError as error:
                await abort(context, error)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort_unexpected(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except TaskyardError as error:
            await abort(context, error)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_unexpected(context, exc)

    return unary  # type: ignore[return-value]
