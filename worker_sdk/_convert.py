"""Typed tasks' arguments and results ↔ JSON, checked against the function's type hints.

pydantic v2 does the work (a model per signature, one field per parameter, and one per return
type), so that
dataclasses, TypedDicts, pydantic models, datetimes, UUIDs, Decimals, enums, bytes and
containers of them all convert both ways without code of ours per type. (On Python 3.11,
pydantic needs TypedDicts from `typing_extensions`.)

The wire shape (docs/protocol.md, "Typed Python tasks") is a JSON object of the function's
parameters by name. JSON numbers travel as doubles (`google.protobuf.Value`), which hold
integers exactly only up to ±2**53; a larger integer is therefore written as a decimal
string, and a receiver that declared an integer reads it back exactly (pydantic's lax mode
turns a numeric string into an int). Bytes are base64url strings (RFC 4648 §5; plain
base64 is read too) where a parameter or the return type declares them (inside a model of
yours, bytes follow that model's own config: pydantic's default is UTF-8 text, so use
`pydantic.Base64Bytes` there); datetimes ISO 8601 strings; Decimals strings (exact); UUIDs strings;
enums their values.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pydantic
from pydantic import ConfigDict

from worker_sdk._context import TaskContext
from worker_sdk._errors import ValidationError

R = TypeVar("R")

MAX_SAFE_INT = 2**53
_CONFIG = ConfigDict(
    extra="forbid",
    ser_json_bytes="base64",
    val_json_bytes="base64",
    # A dataclass or model instance is checked too, not taken on trust.
    revalidate_instances="always",
)


def _wide_ints_as_strings(value: Any) -> Any:
    """Integers beyond ±2**53 as decimal strings: a JSON number (a double) would round them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) > MAX_SAFE_INT else value
    if isinstance(value, dict):
        return {k: _wide_ints_as_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wide_ints_as_strings(v) for v in value]
    return value


def _field_errors(error: pydantic.ValidationError, strip: int = 0) -> ValidationError:
    """pydantic's error as ours: each problem with its field path (``point.x``, ``items[2]``)."""
    problems: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        path = ""
        for part in item["loc"][strip:]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        problems.append((path or "(the arguments)", item["msg"]))
    return ValidationError(problems)


@dataclass(frozen=True, slots=True)
class Signature:
    """The JSON-facing side of a handler: its argument names and types, and where ctx goes."""

    names: tuple[str, ...]
    context: str | None  # the parameter that receives the TaskContext, if any
    model: type[pydantic.BaseModel]
    bind: Callable[..., inspect.BoundArguments]

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str) -> Signature:
        signature = inspect.signature(fn)
        hints = _hints(fn, name)
        fields: dict[str, Any] = {}
        context: str | None = None
        kept: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            hint = hints.get(param.name, Any)
            if hint is TaskContext:
                context = param.name
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(
                    f"task {name!r}: *{param.name} has no name on the wire; declare each "
                    "argument as a parameter"
                )
            kept.append(param.replace(annotation=inspect.Parameter.empty))
            # Fields are f0, f1, ... aliased to the parameters' names, so that a parameter
            # may be called anything (`json`, `copy`: names BaseModel itself uses).
            default = ... if param.default is param.empty else param.default
            fields[f"f{len(fields)}"] = (hint, pydantic.Field(default, alias=param.name))
        model = pydantic.create_model(f"{name} arguments", __config__=_CONFIG, **fields)
        return cls(
            names=tuple(p.name for p in kept),
            context=context,
            model=model,
            bind=inspect.Signature(kept).bind,
        )

    def encode(self, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments as the task's JSON payload; raises ValidationError."""
        try:
            bound = self.bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError([("(the arguments)", str(exc))]) from None
        try:
            checked = self.model.model_validate(dict(bound.arguments))
            data = checked.model_dump(mode="json", by_alias=True, exclude_unset=True)
        except pydantic.ValidationError as exc:
            raise _field_errors(exc) from None
        except ValueError as exc:  # pydantic_core.PydanticSerializationError is one
            raise ValidationError([("(the arguments)", str(exc))]) from None
        return _wide_ints_as_strings(data)  # type: ignore[no-any-return]

    def decode(self, payload: Any) -> dict[str, Any]:
        """A payload as keyword arguments for the function; raises ValidationError.

        Arguments the payload leaves out take the function's defaults.
        """
        if payload is None:
            payload = {}
        try:
            checked = self.model.model_validate_json(json.dumps(payload))
        except pydantic.ValidationError as exc:
            raise _field_errors(exc) from None
        given = checked.model_fields_set
        return {
            name: getattr(checked, f"f{i}") for i, name in enumerate(self.names) if f"f{i}" in given
        }


class Returns(Generic[R]):
    """The JSON-facing side of a handler's return type."""

    def __init__(self, hint: Any) -> None:
        self._model = pydantic.create_model("result", __config__=_CONFIG, value=(hint, ...))

    def encode(self, value: R) -> Any:
        """A handler's return value as JSON; raises ValidationError if it does not match."""
        try:
            checked = self._model.model_validate({"value": value})
            data = checked.model_dump(mode="json")["value"]
        except pydantic.ValidationError as exc:
            raise _field_errors(exc, strip=1) from None
        except ValueError as exc:  # pydantic_core.PydanticSerializationError is one
            # e.g. bytes that are not UTF-8 in a model of the user's whose own config keeps
            # pydantic's default (bytes as UTF-8 text)
            raise ValidationError([("(the result)", str(exc))]) from None
        return _wide_ints_as_strings(data)

    def decode(self, data: Any) -> R:
        """A task's JSON result as the declared return type; raises ValidationError."""
        try:
            checked = self._model.model_validate_json(json.dumps({"value": data}))
        except pydantic.ValidationError as exc:
            raise _field_errors(exc, strip=1) from None
        return checked.value  # type: ignore[attr-defined,no-any-return]


def _hints(fn: Callable[..., Any], name: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a NameError for a type defined where it cannot be found
        raise TypeError(f"task {name!r}: cannot resolve the type hints of {fn!r}: {exc}") from exc


def return_hint(fn: Callable[..., Any], name: str) -> Any:
    hint = _hints(fn, name).get("return", Any)
    if inspect.iscoroutinefunction(fn):
        return hint
    origin = typing.get_origin(hint)
    if origin is not None and origin.__name__ in ("Coroutine", "Awaitable"):
        return typing.get_args(hint)[-1]
    return hint
