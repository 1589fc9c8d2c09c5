"""federation/canonical_json.py: the appendix examples, and the strict parser's refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from federation.canonical_json import (
    CANONICAL_INT_MAX,
    CANONICAL_INT_MIN,
    check_canonical_values,
    encode_canonical_json,
    parse_json_strict,
)
from federation.errors import MatrixError
from tests.vectors.loader import corpus_expected, corpus_file, load_vector

APPENDIX = load_vector("spec_appendix")
STRICT = load_vector("strict_json")


@pytest.mark.parametrize("case", APPENDIX["canonical_json"], ids=lambda c: c["canonical"][:30])
def test_appendix_canonical_json_examples(case: dict[str, Any]) -> None:
    expected = case["canonical"].encode("utf-8")
    if "note" not in case:
        assert encode_canonical_json(parse_json_strict(case["input"])) == expected
        assert encode_canonical_json(parse_json_strict(case["input"].encode("utf-8"))) == expected
        return
    # {"a": -0, "b": 1e10}: 1e10 is not allowed in JSON we receive...
    with pytest.raises(MatrixError) as e:
        parse_json_strict(case["input"])
    assert e.value.errcode == "M_BAD_JSON" and "at b" in e.value.msg
    # ...but the value it denotes encodes as the appendix says, and -0 is 0.
    value = json.loads(case["input"], parse_float=lambda s: int(float(s)))
    assert encode_canonical_json(value) == expected


@pytest.mark.parametrize("case", STRICT["accept"], ids=lambda c: c["text"][:30])
def test_strict_parser_accepts(case: dict[str, Any]) -> None:
    assert parse_json_strict(case["text"]) == case["value"]


@pytest.mark.parametrize("case", STRICT["reject"], ids=lambda c: c["text"][:30] or "empty")
def test_strict_parser_rejects(case: dict[str, Any]) -> None:
    with pytest.raises(MatrixError) as e:
        parse_json_strict(case["text"])
    assert e.value.code == 400
    assert e.value.errcode == case["errcode"]
    assert case["where"] in e.value.msg


@pytest.mark.parametrize("case", STRICT["reject_bytes_hex"], ids=lambda c: c["what"])
def test_strict_parser_rejects_invalid_utf8(case: dict[str, Any]) -> None:
    with pytest.raises(MatrixError) as e:
        parse_json_strict(bytes.fromhex(case["hex"]))
    assert e.value.errcode == case["errcode"]
    assert case["where"] in e.value.msg


def test_integer_bounds_are_the_spec_range() -> None:
    assert CANONICAL_INT_MAX == 9007199254740991 == -CANONICAL_INT_MIN
    assert parse_json_strict(str(CANONICAL_INT_MAX)) == CANONICAL_INT_MAX
    assert parse_json_strict(str(CANONICAL_INT_MIN)) == CANONICAL_INT_MIN
    for bad in (CANONICAL_INT_MAX + 1, CANONICAL_INT_MIN - 1, 10**400):
        with pytest.raises(MatrixError):
            parse_json_strict(f"[{bad}]")


def test_deep_nesting_is_refused_not_crashed() -> None:
    with pytest.raises(MatrixError) as e:
        parse_json_strict("[" * 100_000 + "]" * 100_000)
    assert e.value.errcode == "M_BAD_JSON"


def test_nested_integers_event_bytes() -> None:
    """Corpus index 14: escapes, U+2028/9, U+007F, keys sorted by code point."""
    for version in ("10", "11", "12"):
        exp = corpus_expected(version)[14]
        pdu = corpus_file(version, "events")[14]
        text = exp["content_hash_input"]
        assert encode_canonical_json(
            {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
        ) == text.encode("utf-8")
        # Code-point order puts U+FF5A before U+1F600 (UTF-16 order would not).
        assert text.index('"ｚ"') < text.index('"😀"')
        for raw in ("\\b", "\\t", "\\n", "\\f", "\\r", "\\u0001", "\\u001f", "\x7f", "\u2028", "/"):
            assert raw in text


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": 1.5}, "at a"),
        ({"a": [1, {"b": 2**53}]}, "at a[1].b"),
        ({"a": {1: 2}}, "non-string key at a"),
        ({"a": "\ud800"}, "at a"),
        ({"a": {"b": object()}}, "at a.b"),
    ],
)
def test_check_canonical_values(value: Any, where: str) -> None:
    with pytest.raises(MatrixError) as e:
        check_canonical_values(value)
    assert where in e.value.msg


def test_check_canonical_values_accepts_json() -> None:
    check_canonical_values({"a": [True, False, None, 0, -1, "x", {"b": CANONICAL_INT_MIN}]})
