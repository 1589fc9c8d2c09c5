"""parse_json_strict's nesting limit: depth bombs are a clean 400, never a RecursionError."""

from __future__ import annotations

import pytest

from federation.canonical_json import MAX_JSON_DEPTH, parse_json_strict
from federation.errors import MatrixError


def arrays(n: int, inner: str = "") -> str:
    return "[" * n + inner + "]" * n


def objects(n: int, inner: str = "1") -> str:
    return '{"a":' * n + inner + "}" * n


@pytest.mark.parametrize("make", [arrays, objects], ids=["arrays", "objects"])
def test_the_limit_itself_is_accepted(make: object) -> None:
    assert callable(make)
    value = parse_json_strict(make(MAX_JSON_DEPTH))
    depth = 0
    while isinstance(value, list | dict):
        depth += 1
        value = (value or [None])[0] if isinstance(value, list) else value["a"]
    assert depth == MAX_JSON_DEPTH


@pytest.mark.parametrize(
    "text",
    [
        arrays(MAX_JSON_DEPTH + 1),
        objects(MAX_JSON_DEPTH + 1),
        arrays(5000),
        objects(5000),
        arrays(200_000),  # far past the C parser's own recursion limit
        arrays(5000, "1.5"),  # refused for the float, yet explained without recursing
        '{"pdus": [' + objects(MAX_JSON_DEPTH) + "]}",
        "[" * 100_000,  # unterminated too
        # Depth hides behind siblings: the deep branch is not the first.
        "[1, {}, [], " + arrays(MAX_JSON_DEPTH) + "]",
    ],
    ids=["arrays+1", "objects+1", "arrays5000", "objects5000", "arrays200k", "float-deep",
         "deep-in-a-transaction", "unterminated", "sibling"],
)
def test_deeper_is_bad_json(text: str) -> None:
    with pytest.raises(MatrixError) as e:
        parse_json_strict(text)
    assert (e.value.code, e.value.errcode) == (400, "M_BAD_JSON")
    assert "nested" in e.value.msg


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"s": "' + "[{" * 5000 + '", "t": "\\"[[["}'
    assert parse_json_strict(text)["t"] == '"[[['
    # ...also on the path that explains another refusal.
    with pytest.raises(MatrixError) as e:
        parse_json_strict('{"s": "' + "[" * 5000 + '", "f": 1.5}')
    assert "floats" in e.value.msg


def test_many_shallow_containers_are_fine() -> None:
    assert len(parse_json_strict("[" + ",".join(["[]"] * 10_000) + "]")) == 10_000
