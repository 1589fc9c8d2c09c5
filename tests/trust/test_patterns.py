"""federation/trust.py: the pattern grammar and TrustPolicy decisions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.trust import OPEN, TrustPatternError, TrustPolicy, parse_pattern

CASES = [
    # pattern, server name, matches
    ("example.org", "example.org", True),
    ("example.org", "example.org:8448", True),
    ("example.org", "EXAMPLE.org", True),
    ("example.org", "a.example.org", False),
    ("example.org", "example.org.evil", False),
    ("example.org:8448", "example.org:8448", True),
    ("example.org:8448", "example.org", False),
    ("example.org:8448", "example.org:443", False),
    ("*.example.org", "a.example.org", True),
    ("*.example.org", "a.example.org:1234", True),
    ("*.example.org", "a.b.example.org", False),
    ("*.example.org", "example.org", False),
    ("*.example.org", "aexample.org", False),
    ("*.example.org", "a.example.org.evil.com", False),
    ("*.*.example.org", "a.b.example.org", True),
    ("*.*.example.org", "a.example.org", False),
    ("**.example.org", "a.example.org", True),
    ("**.example.org", "a.b.c.example.org", True),
    ("**.example.org", "example.org", False),
    ("**.*.example.org", "a.example.org", False),
    ("**.*.example.org", "a.b.example.org", True),
    ("*.example.org:8448", "a.example.org:8448", True),
    ("*.example.org:8448", "a.example.org", False),
    ("*", "anything.at.all:99", True),
    ("1.2.3.4", "1.2.3.4:8448", True),
    ("1.2.3.4", "1.2.3.5", False),
    ("[::1]", "[::1]:8448", True),
    ("[::1]:8448", "[::1]", False),
    ("[::1]", "[::2]", False),
]


@pytest.mark.parametrize(("pattern", "name", "expected"), CASES)
def test_pattern_matching(pattern: str, name: str, expected: bool) -> None:
    policy = TrustPolicy.from_patterns([pattern])
    assert policy.allows(name) is expected
    if expected:
        assert repr(pattern) in policy.reason(name)


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("", "non-empty"),
        (" example.org", "spaces"),
        ("exa*mple.org", "whole leftmost labels"),
        ("a.*.org", "whole leftmost labels"),
        ("*.**.org", "whole leftmost labels"),
        ("*", None),
        ("*.", "valid DNS label"),
        ("**", "literal domain"),
        ("*.*", "literal domain"),
        ("example.org:0", "1-65535"),
        ("example.org:99999", "1-65535"),
        ("example.org:http", "bad port"),
        ("[::1", "unclosed"),
        ("[zz]", "IPv6"),
        ("-bad.org", "valid DNS label"),
        ("a..org", "valid DNS label"),
    ],
)
def test_bad_patterns_say_why(pattern: str, why: str | None) -> None:
    if why is None:
        parse_pattern(pattern)
        return
    with pytest.raises(TrustPatternError, match=why):
        parse_pattern(pattern)


def test_open_empty_and_reasons() -> None:
    assert OPEN.allows("x.test") and OPEN.is_open
    assert "unset" in OPEN.reason("x.test")
    closed = TrustPolicy.from_patterns([], source="tenants[a].trusted_servers")
    assert not closed.allows("x.test")
    assert closed.reason("x.test") == "tenants[a].trusted_servers is empty (no server is trusted)"
    p = TrustPolicy.from_patterns(["a.test", "*.b.test"])
    assert p.reason("evil.test") == (
        "matches none of the 2 patterns of federation.trusted_servers"
    )
    assert p.texts == ["a.test", "*.b.test"]
    # Garbage names are never trusted (and never crash the check).
    assert not p.allows("a.test:notaport")
    assert not p.allows("[::1")


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
names = st.lists(labels, min_size=1, max_size=5).map(".".join)
ports = st.none() | st.integers(1, 65535)


def with_port(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


@given(names, ports)
def test_exact_name_matches_itself_on_any_port(host: str, port: int | None) -> None:
    assert TrustPolicy.from_patterns([host]).allows(with_port(host, port))
    assert TrustPolicy.from_patterns([host.upper()]).allows(with_port(host, port))


@given(names, st.lists(labels, min_size=1, max_size=4), ports)
def test_wildcards_count_labels(domain: str, prefix: list[str], port: int | None) -> None:
    name = with_port(".".join([*prefix, domain]), port)
    one = TrustPolicy.from_patterns([f"*.{domain}"])
    deep = TrustPolicy.from_patterns([f"**.{domain}"])
    assert one.allows(name) is (len(prefix) == 1)
    assert deep.allows(name)
    # The domain itself is never matched by a wildcard.
    assert not one.allows(domain) and not deep.allows(domain)


@given(names, names, ports)
def test_a_different_domain_never_matches(domain: str, other: str, port: int | None) -> None:
    if other == domain or other.endswith("." + domain):
        return
    for pattern in (domain, f"*.{domain}", f"**.{domain}"):
        assert not TrustPolicy.from_patterns([pattern]).allows(with_port(other, port))


@given(names, st.integers(1, 65535), st.integers(1, 65535))
def test_a_port_in_the_pattern_pins_it(host: str, port: int, other: int) -> None:
    policy = TrustPolicy.from_patterns([f"{host}:{port}"])
    assert policy.allows(f"{host}:{port}")
    assert policy.allows(f"{host}:{other}") is (other == port)
    assert not policy.allows(host)


@given(st.text(max_size=40))
def test_any_text_either_parses_or_raises_the_pattern_error(text: str) -> None:
    try:
        policy = TrustPolicy.from_patterns([text])
    except TrustPatternError:
        return
    policy.allows(text)
