"""Canonical JSON (spec/format.md §Canonical JSON).

The bytes that are hashed and signed: UTF-8, object keys sorted by code point,
no insignificant white space, no floats (integers, strings, booleans, null,
arrays and objects only), non-ASCII characters written as themselves.
"""

from __future__ import annotations

import json
from typing import Any

from appimg.errors import FormatError


def _check(value: Any, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError("nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("object keys must be strings")
            _check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
    elif isinstance(value, float):
        raise ValueError("floats are not allowed in canonical JSON")
    elif value is not None and not isinstance(value, str | int | bool):
        raise ValueError(f"{type(value).__name__} is not a JSON type")


def dumps(value: Any) -> bytes:
    """Encode ``value`` canonically."""
    _check(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_floats(text: str) -> int:
    raise ValueError("floats are not allowed")


def _no_constants(text: str) -> None:
    raise ValueError(f"{text} is not JSON")


def loads(data: bytes, what: str) -> Any:
    """Decode canonical JSON; anything not in canonical form is a FormatError."""
    try:
        value = json.loads(
            data.decode("utf-8"), parse_float=_no_floats, parse_constant=_no_constants
        )
        canonical = dumps(value)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{what}: invalid JSON ({exc})") from None
    if canonical != data:
        raise FormatError(f"{what}: JSON is not in canonical form")
    return value
