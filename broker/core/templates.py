"""Workflow templates' parameters: declarations, the values a start gives, and placeholders.

A placeholder is `{{ params.NAME }}`. A JSON string that is exactly one
placeholder becomes the parameter's value, whatever its JSON type; one inside
a longer string is replaced by the value's text (a string as it is, anything
else as compact JSON). There is no expression language: substitution is all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.errors import InvalidArgument

PLACEHOLDER = re.compile(r"\{\{\s*params\.([A-Za-z][A-Za-z0-9_]*)\s*\}\}")
_WHOLE = re.compile(r"^\s*\{\{\s*params\.([A-Za-z][A-Za-z0-9_]*)\s*\}\}\s*$")
_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
TYPES = ("", "string", "number", "integer", "boolean", "object", "array")
MAX_PARAMS = 100


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str = ""  # "" accepts any JSON value
    default: Any = None
    has_default: bool = False
    required: bool = False


def check_params(params: Sequence[Param]) -> None:
    """A template's declarations: valid names, known types, defaults of their type."""
    if len(params) > MAX_PARAMS:
        raise InvalidArgument(
            f"{len(params)} parameters declared; at most {MAX_PARAMS}", reason="INVALID_TEMPLATE"
        )
    seen: set[str] = set()
    for p in params:
        if not _PARAM.match(p.name):
            raise InvalidArgument(
                f"parameter name {p.name[:60]!r} must be letters, digits and _, starting with a "
                "letter",
                reason="INVALID_TEMPLATE",
            )
        if p.name in seen:
            raise InvalidArgument(
                f"parameter {p.name!r} is declared twice", reason="INVALID_TEMPLATE"
            )
        seen.add(p.name)
        if p.type not in TYPES:
            raise InvalidArgument(
                f"parameter {p.name!r} has type {p.type!r}; use one of {', '.join(TYPES[1:])} "
                "or leave it empty for any",
                reason="INVALID_TEMPLATE",
            )
        if p.has_default and not _is(p.type, p.default):
            raise InvalidArgument(
                f"parameter {p.name!r}: the default {p.default!r} is not a {p.type}",
                reason="INVALID_TEMPLATE",
            )


def resolve(params: Sequence[Param], given: Mapping[str, Any]) -> dict[str, Any]:
    """The values a start uses: given ones checked against their type, defaults for the rest."""
    declared = {p.name: p for p in params}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise InvalidArgument(
            f"the template has no parameter {unknown[0]!r}; it declares "
            f"{', '.join(sorted(declared)) or 'none'}",
            reason="INVALID_PARAMS",
        )
    out: dict[str, Any] = {}
    for p in params:
        if p.name in given:
            value = given[p.name]
            if not _is(p.type, value):
                raise InvalidArgument(
                    f"parameter {p.name!r} must be a {p.type}, got {json.dumps(value)[:80]}",
                    reason="INVALID_PARAMS",
                )
            out[p.name] = value
        elif p.has_default:
            out[p.name] = p.default
        elif p.required:
            raise InvalidArgument(f"parameter {p.name!r} is required", reason="INVALID_PARAMS")
        else:
            out[p.name] = None
    return out


def _is(type_: str, value: Any) -> bool:
    if type_ == "":
        return True
    if type_ == "string":
        return isinstance(value, str)
    if type_ == "boolean":
        return isinstance(value, bool)
    if type_ == "integer":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
        )
    if type_ == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type_ == "object":
        return isinstance(value, dict)
    return isinstance(value, list)  # array


def placeholders(value: Any) -> Iterator[str]:
    """Every parameter name a JSON value's strings refer to."""
    if isinstance(value, str):
        yield from PLACEHOLDER.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from placeholders(item)
    elif isinstance(value, list):
        for item in value:
            yield from placeholders(item)


def substitute(value: Any, params: Mapping[str, Any]) -> Any:
    """`value` with its placeholders replaced (names must be in `params`)."""
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return params[whole.group(1)]
        return PLACEHOLDER.sub(lambda m: _text(params[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
