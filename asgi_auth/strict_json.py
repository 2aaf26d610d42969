"""The one JSON decoder for everything that comes from outside: token and DPoP proof
segments, JWKS and discovery documents, introspection and token endpoint answers.

Python's `json` accepts `NaN`, `Infinity` and `-Infinity`, and turns `1e400` into an
infinite float; RFC 8259 §6 has no such numbers. A NaN compares false with everything,
so `nbf > now` lets a token through. Here every number that parses is finite.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["DECODER", "loads", "scan_once"]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    # Called for numbers with a fraction or an exponent only: integers stay exact ints.
    value = float(text)
    if value - value != 0.0:  # inf - inf is NaN: "1e400" overflowed
        raise ValueError("number out of range")
    return value


DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
#: The C scanner alone: a value at an index, without the decoder's whitespace handling.
scan_once: Callable[[str, int], tuple[Any, int]] = DECODER.scan_once  # type: ignore[attr-defined]


def loads(data: bytes | str) -> Any:
    """`json.loads`, strict: ValueError for NaN, infinities, and nesting too deep."""
    if not isinstance(data, str):
        # As json.loads does: RFC 8259 §8.1 UTF-8, or a UTF-16/32 encoding it detects.
        data = data.decode(json.detect_encoding(data), "surrogatepass")
    try:
        return DECODER.decode(data)
    except RecursionError:  # deeply nested arrays
        raise ValueError("JSON nested too deeply") from None
