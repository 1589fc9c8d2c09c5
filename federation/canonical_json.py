"""Canonical JSON: the one encoder, and a strict parser for JSON we receive.

Spec: ``appendices.md`` "Canonical JSON" (shortest UTF-8 encoding, keys sorted
by code point, integers only, in ``[-(2**53)+1, (2**53)-1]``) and
``rooms/fragments/v6-canonical-json.md`` ("Servers MUST strictly enforce the
JSON format specified in the appendices. This translates to a 400
``M_BAD_JSON`` error on most endpoints, or discarding of events over
federation").

Encoding goes through the ``canonicaljson`` library, never a hand-written
encoder: one wrong byte and every hash and signature differs from Synapse's.
The library happily encodes floats, so values we produce ourselves are checked
with :func:`check_canonical_values` before they are signed.

:func:`parse_json_strict` is for received bytes. Its fast path is the standard
library parser with hooks that refuse what the spec forbids; only when it
refuses does a second, path-tracking pass run, so the error can say *where*.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import canonicaljson

from federation.errors import Codes, MatrixError

__all__ = [
    "CANONICAL_INT_MAX",
    "CANONICAL_INT_MIN",
    "MAX_JSON_DEPTH",
    "check_canonical_values",
    "encode_canonical_json",
    "parse_json_strict",
]

CANONICAL_INT_MAX = 2**53 - 1
CANONICAL_INT_MIN = -(2**53) + 1

#: Deepest nesting of arrays and objects accepted from a peer (the top-level
#: value counts as 1). The spec sets no limit, but every recursive walk over an
#: event (redaction, hashing, format checks) costs a Python stack frame per
#: level: without a bound, a body nested ~1000 deep would raise RecursionError
#: deep inside a handler instead of a clean 400. Real events nest a few levels;
#: a transaction adds three (body, ``pdus``, the PDU).
MAX_JSON_DEPTH = 100

# Longest decimal literal that can be in range: "-9007199254740991" is 17 chars.
# Checking the length first keeps a 10,000-digit literal from ever being
# converted (CPython refuses those with a ValueError anyway).
_MAX_INT_LITERAL_LEN = 17

# A \uD800-\uDFFF escape: either half of a surrogate pair (fine, Python joins
# pairs) or a lone surrogate (not a Unicode scalar value, cannot be encoded as
# UTF-8, so the canonical form does not exist). Only if one appears do we pay
# for a walk looking for lone ones.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def encode_canonical_json(obj: Any) -> bytes:
    """The canonical JSON bytes of ``obj`` (appendices.md "Canonical JSON")."""
    result: bytes = canonicaljson.encode_canonical_json(obj)
    return result


class _Reject(Exception):
    """Raised from inside the parser hooks; carries the BAD_JSON message."""


def _reject_float(literal: str) -> NoReturn:
    raise _Reject(f"floats are not allowed in canonical JSON: {literal}")


def _check_int(literal: str) -> int:
    if len(literal) > _MAX_INT_LITERAL_LEN:
        raise _Reject(f"integer out of the canonical JSON range: {literal[:40]}")
    value = int(literal)
    if not CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX:
        raise _Reject(f"integer out of the canonical JSON range: {literal}")
    return value


def _reject_constant(literal: str) -> NoReturn:
    raise _Reject(f"{literal} is not allowed in JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _Reject("duplicate key in object")
    return result


_strict_decoder = json.JSONDecoder(
    parse_float=_reject_float,
    parse_int=_check_int,
    parse_constant=_reject_constant,
    object_pairs_hook=_no_duplicates,
)


def parse_json_strict(data: bytes | str) -> Any:
    """Parse received JSON, refusing anything outside canonical JSON's value space.

    Raises ``MatrixError(400, M_NOT_JSON)`` for text that is not JSON at all,
    and ``MatrixError(400, M_BAD_JSON)`` for JSON the spec forbids: floats
    (including ``1e10`` and ``1.0``), integers outside
    ``[-(2**53)+1, (2**53)-1]``, ``NaN``/``Infinity``, duplicate keys, invalid
    UTF-8, lone surrogates, and nesting deeper than :data:`MAX_JSON_DEPTH`.
    The message names the JSON path.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MatrixError(
                400, Codes.BAD_JSON, f"invalid UTF-8 at byte offset {e.start}"
            ) from None
    else:
        text = data
    try:
        value = _strict_decoder.decode(text)
    except _Reject:
        if _too_deep_text(text):
            raise _nested_too_deeply() from None
        _explain_rejection(text)
    except json.JSONDecodeError as e:
        raise MatrixError(
            400, Codes.NOT_JSON, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise _nested_too_deeply() from None
    # Nesting needs at least as many brackets as levels: the walk is skipped
    # for small bodies, and counts containers only (leaves are never pushed).
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(value):
        raise _nested_too_deeply()
    if _SURROGATE_ESCAPE.search(text):
        problem = _find_lone_surrogate(value, "")
        if problem is not None:
            raise MatrixError(400, Codes.BAD_JSON, problem)
    return value


def _nested_too_deeply() -> MatrixError:
    return MatrixError(
        400, Codes.BAD_JSON, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    )


def _too_deep(value: Any) -> bool:
    """Whether arrays/objects in ``value`` nest deeper than MAX_JSON_DEPTH (no recursion)."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= MAX_JSON_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _too_deep_text(text: str) -> bool:
    """As :func:`_too_deep`, for text the strict parser refused (before the
    explaining pass recurses over it): brackets outside strings, counted."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    depth = 0
    for token in _BRACKETS_AND_STRINGS.finditer(text):
        ch = token.group()
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif ch in "]}":
            depth -= 1
    return False


_BRACKETS_AND_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


# --- the slow path: say where the problem is --------------------------------


class _Float:
    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class _BigInt(_Float):
    __slots__ = ()


class _Constant(_Float):
    __slots__ = ()


class _Pairs(list[tuple[str, Any]]):
    """An object kept as its key/value pairs, duplicates included."""


def _lenient_int(literal: str) -> int | _BigInt:
    if len(literal) > _MAX_INT_LITERAL_LEN:
        return _BigInt(literal)
    value = int(literal)
    if not CANONICAL_INT_MIN <= value <= CANONICAL_INT_MAX:
        return _BigInt(literal)
    return value


_lenient_decoder = json.JSONDecoder(
    parse_float=_Float,
    parse_int=_lenient_int,
    parse_constant=_Constant,
    object_pairs_hook=_Pairs,
)


def _explain_rejection(text: str) -> NoReturn:
    """Re-parse leniently and raise ``M_BAD_JSON`` naming the first bad value."""
    tree = _lenient_decoder.decode(text)
    problem = _find_problem(tree, "")
    raise MatrixError(400, Codes.BAD_JSON, problem or "JSON is not canonical JSON")


def _where(path: str) -> str:
    return f"at {path}" if path else "at the top level"


def _find_problem(node: Any, path: str) -> str | None:
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, value in node:
            sub = f"{path}.{key}" if path else key
            if key in seen:
                return f"duplicate key {key!r} {_where(path)}"
            seen.add(key)
            found = _find_problem(value, sub)
            if found:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _find_problem(value, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(node, _BigInt):
        return f"integer out of the canonical JSON range {_where(path)}: {node.literal[:40]}"
    elif isinstance(node, _Constant):
        return f"{node.literal} is not allowed in JSON ({_where(path)})"
    elif isinstance(node, _Float):
        return f"floats are not allowed in canonical JSON ({_where(path)}): {node.literal}"
    return None


def _has_lone_surrogate(s: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in s)


def _find_lone_surrogate(node: Any, path: str) -> str | None:
    if isinstance(node, str):
        if _has_lone_surrogate(node):
            return f"lone UTF-16 surrogate in string {_where(path)}"
    elif isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if _has_lone_surrogate(key):
                return f"lone UTF-16 surrogate in a key {_where(path)}"
            found = _find_lone_surrogate(value, sub)
            if found:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _find_lone_surrogate(value, f"{path}[{i}]")
            if found:
                return found
    return None


# --- values we are about to sign --------------------------------------------


def check_canonical_values(obj: Any, path: str = "") -> None:
    """Refuse values that have no canonical JSON form, naming where.

    For JSON we build ourselves before hashing or signing it: floats,
    out-of-range integers, non-string keys, lone surrogates and non-JSON types
    raise ``MatrixError(400, M_BAD_JSON)``. (``bool`` is fine: it is a JSON
    literal, even though Python makes it an ``int``.)
    """
    if obj is None or obj is True or obj is False:
        return
    if isinstance(obj, str):
        if _has_lone_surrogate(obj):
            raise MatrixError(400, Codes.BAD_JSON, f"lone UTF-16 surrogate {_where(path)}")
    elif isinstance(obj, int):
        if not CANONICAL_INT_MIN <= obj <= CANONICAL_INT_MAX:
            raise MatrixError(
                400, Codes.BAD_JSON, f"integer out of the canonical JSON range {_where(path)}"
            )
    elif isinstance(obj, float):
        raise MatrixError(400, Codes.BAD_JSON, f"floats are not allowed {_where(path)}")
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise MatrixError(400, Codes.BAD_JSON, f"non-string key {_where(path)}")
            check_canonical_values(value, f"{path}.{key}" if path else key)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            check_canonical_values(value, f"{path}[{i}]")
    else:
        raise MatrixError(
            400, Codes.BAD_JSON, f"{type(obj).__name__} is not a JSON value {_where(path)}"
        )
