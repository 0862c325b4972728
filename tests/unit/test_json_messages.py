"""Client JSON is read with bounds: what later code could not carry is refused with a reason, at once."""

from __future__ import annotations

import json

import pytest

from earshot.api.json_messages import MAX_NESTING, BadJSON, load_message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": ' + "9" * 5000 + "}", "more than 20 digits"),
        ('{"a": -' + "9" * 21 + "}", "more than 20 digits"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": 1e400}', "out of range"),
        ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "nests deeper"),
        ("[" * 100_000, "nests deeper"),
        ("{nope", "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_what_json_loads_would_choke_on_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(BadJSON, match=reason):
        load_message(text)


def test_ordinary_messages_read_as_json_does() -> None:
    message = {"type": "session.update", "n": 10**19, "x": 0.25, "s": "[[[{{{", "deep": [[[[1]]]]}
    assert load_message(json.dumps(message)) == message
    nested = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert load_message(nested) == json.loads(nested)
