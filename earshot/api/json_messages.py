"""Parsing a client's JSON text message with bounds, so hostile input is a protocol error and never a crash.

`json.loads` alone lets through what later code can't carry: integers of thousands of digits (a ValueError
outside JSONDecodeError, or an OverflowError far from the parser), `NaN` and `Infinity`, and nesting deep
enough to exhaust the stack. Every live protocol parses its text frames here and maps `BadJSON` to its own
error shape.
"""

from __future__ import annotations

import json
from typing import Any

# Longer than any integer a protocol field means (a 64-bit count has 19 digits).
MAX_INTEGER_DIGITS = 20
MAX_NESTING = 32


class BadJSON(ValueError):
    """A text message that is not JSON earshot will read; the message says why, for the caller."""


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BadJSON(f"an integer has more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadJSON("a number is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise BadJSON(f"{name} is not a JSON number")


def _nesting(text: str) -> int:
    """How deep brackets nest outside strings (cheap: one pass, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_message(text: str) -> Any:
    """The JSON value of one text message; raises BadJSON saying what is wrong with it."""
    # Counting brackets is C-fast; the walk that measures nesting only runs on bracket-heavy messages.
    if text.count("[") + text.count("{") > MAX_NESTING and _nesting(text) > MAX_NESTING:
        raise BadJSON(f"the message nests deeper than {MAX_NESTING} levels")
    try:
        return json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except BadJSON:
        raise
    except (ValueError, RecursionError) as e:
        raise BadJSON("the message is not valid JSON") from e
