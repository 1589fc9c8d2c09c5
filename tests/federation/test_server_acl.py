"""federation/server_acl.py: the spec's evaluation order as vectors, globs against a reference."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.server_acl import (
    ServerAcl,
    glob_matches,
    is_ip_literal,
    server_acl_allows,
    strip_port,
)
from tests.vectors.loader import load_vector

CASES = load_vector("server_acl")["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["why"])
def test_vectors(case: dict[str, Any]) -> None:
    assert server_acl_allows(case["content"], case["server"]) is case["allowed"]


def reference_glob(pattern: str, text: str) -> bool:
    """Glob matching by its definition (appendices.md), as a dynamic programme."""
    p, t = pattern.lower(), text.lower()

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(p):
            return j == len(t)
        if p[i] == "*":
            return match(i + 1, j) or (j < len(t) and match(i, j + 1))
        return j < len(t) and (p[i] == "?" or p[i] == t[j]) and match(i + 1, j + 1)

    return match(0, 0)


ALPHABET = "ab.?*A"
glob_props = settings(max_examples=400, deadline=None, derandomize=True)


@glob_props
@given(st.text(alphabet=ALPHABET, max_size=10), st.text(alphabet="abAB.", max_size=10))
def test_glob_agrees_with_the_definition(pattern: str, text: str) -> None:
    assert glob_matches(pattern, text) is reference_glob(pattern, text)


@glob_props
@given(st.text(alphabet="ab.-0123456789", min_size=1, max_size=20))
def test_a_name_matches_itself_and_star(host: str) -> None:
    assert glob_matches(host, host) and glob_matches(host.upper(), host)
    assert glob_matches("*", host) and glob_matches("?" * len(host), host)
    assert not glob_matches("?" * (len(host) + 1), host)


@glob_props
@given(
    st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
    st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    st.lists(st.text(alphabet="abcxyz.*?", max_size=8), max_size=4),
    st.lists(st.text(alphabet="abcxyz.*?", max_size=8), max_size=4),
)
def test_the_port_is_never_considered(
    host: str, port: int | None, allow: list[str], deny: list[str]
) -> None:
    acl = {"allow": allow, "deny": deny}
    name = host if port is None else f"{host}:{port}"
    assert server_acl_allows(acl, name) is server_acl_allows(acl, host)
    # And the evaluation order: deny wins, then allow, then deny by default.
    expected = not any(reference_glob(d, host) for d in deny) and any(
        reference_glob(a, host) for a in allow
    )
    assert server_acl_allows(acl, name) is expected


def test_strip_port_and_ip_literals() -> None:
    assert strip_port("example.org:8448") == "example.org"
    assert strip_port("[::1]:8448") == "[::1]"
    assert strip_port("[::1]") == "[::1]"
    assert strip_port("evil.example:1:2") == "evil.example"
    assert is_ip_literal("127.0.0.1") and is_ip_literal("[::1]")
    assert not is_ip_literal("127.0.0.1.example") and not is_ip_literal("1.2.3")


def test_from_content_reads_malformed_content_as_synapse_does() -> None:
    acl = ServerAcl.from_content({"allow": ["a", 1, "b"], "deny": "x", "allow_ip_literals": 0})
    assert acl == ServerAcl(allow=("a", "b"), deny=(), allow_ip_literals=True)


def test_pathological_patterns_stay_linear() -> None:
    # A backtracking (regex) matcher would not finish this in any reasonable
    # time (the test would hang); the greedy segment matcher needs one pass
    # per segment.
    pattern = "*a" * 40 + "*b"
    assert not server_acl_allows({"allow": [pattern] * 50}, "a" * 250)
    assert server_acl_allows({"allow": [pattern]}, "a" * 250 + "b")
