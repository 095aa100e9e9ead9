"""Domain errors on the wire: a gRPC status with `google.rpc.ErrorInfo` (and `RetryInfo`).

`errors.py` says which code and reason each domain error carries; this module
writes that down as the status details a client decodes. It sits on the
ground floor so that both the servicers (`api/status.py`) and the
interceptor in front of them (`security/interceptor.py`) abort a call the
same way without one importing the other.
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from broker.errors import DOMAIN, TaskyardError


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
