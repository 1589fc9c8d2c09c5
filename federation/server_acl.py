"""Room server ACLs: may this server take part in this room?

Spec: ``client-server-api/modules/server_acls.md`` ("Server Access Control
Lists (ACLs) for rooms"), the ``m.room.server_acl`` event schema, and
``server-server-api.md`` "Server Access Control Lists (ACLs)". The schema's
order of evaluation:

1. no ``m.room.server_acl`` event in the room state: allow;
2. the server name is an IP address literal (v4 or v6) and
   ``allow_ip_literals`` is present and ``false``: deny;
3. it matches an entry of ``deny``: deny;
4. it matches an entry of ``allow``: allow;
5. otherwise deny.

"the suspect server's port number must not be considered", so the port is
cut off before matching. Entries are "case-insensitive glob expressions"
(``appendices.md`` "Glob-style matching": ``*`` is zero or more characters,
``?`` exactly one). Server names are ASCII by their grammar, so case is
folded for ASCII letters only: a non-ASCII pattern character matches only
itself (Unicode folding could make ``K`` (Kelvin) match ``k``).

Content that does not follow the schema is read as Synapse reads it:
``allow_ip_literals`` that is not a boolean is ``true``, ``allow``/``deny``
that are not arrays are empty (an empty ``allow`` denies everyone, as the
schema warns), entries that are not strings never match.

Matching is linear in the pattern: an ACL is room state any room admin
writes, so a pattern like ``*a*a*a*a*b`` must not be able to make a
backtracking matcher spin (a regex translation would).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "ServerAcl",
    "glob_matches",
    "is_ip_literal",
    "server_acl_allows",
    "strip_port",
]

# appendices.md "Server Name": IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT.
# The grammar, not the value range: "999.1.1.1" is written as an IP literal, and
# reading it as one only ever denies more.
_IPV4_LITERAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(s: str) -> str:
    return s.translate(_ASCII_LOWER)


def strip_port(server_name: str) -> str:
    """The host part of ``host[:port]`` (an IPv6 literal keeps its brackets).

    The first ``:`` ends a non-bracketed host (a host never contains one), so
    a malformed ``evil.example:1:2`` is still compared as ``evil.example``.
    """
    if server_name.startswith("["):
        end = server_name.find("]")
        return server_name if end < 0 else server_name[: end + 1]
    return server_name.partition(":")[0]


def is_ip_literal(host: str) -> bool:
    """Whether a host (port already stripped) is an IPv4 or bracketed IPv6 literal."""
    return host.startswith("[") or _IPV4_LITERAL.fullmatch(host) is not None


def _segment_at(segment: str, text: str, pos: int) -> bool:
    """Whether ``segment`` (``?`` a one-character wildcard) matches ``text`` at ``pos``."""
    if pos + len(segment) > len(text):
        return False
    for i, ch in enumerate(segment):
        if ch != "?" and ch != text[pos + i]:
            return False
    return True


def _find_segment(segment: str, text: str, start: int, end: int) -> int:
    """The first position in ``[start, end - len(segment)]`` where ``segment`` matches, or -1."""
    if "?" not in segment:
        return text.find(segment, start, end)
    for pos in range(start, end - len(segment) + 1):
        if _segment_at(segment, text, pos):
            return pos
    return -1


@lru_cache(maxsize=4096)
def _split(pattern: str) -> tuple[str, ...]:
    return tuple(_fold(pattern).split("*"))


def glob_matches(pattern: str, text: str) -> bool:
    """Whether the whole of ``text`` matches the glob ``pattern``, ASCII case-insensitively.

    The pattern is cut at each ``*``; the first piece must match at the
    start, the last at the end, and the pieces between anywhere in order.
    Taking each middle piece at its leftmost match is optimal (leaving more
    room for the rest), so nothing is ever retried: time is bounded by
    ``len(pattern) * len(text)``.
    """
    parts = _split(pattern)
    text = _fold(text)
    if len(parts) == 1:
        return len(text) == len(parts[0]) and _segment_at(parts[0], text, 0)
    first, *middle, last = parts
    if len(first) + len(last) > len(text):
        return False
    if not _segment_at(first, text, 0) or not _segment_at(last, text, len(text) - len(last)):
        return False
    pos, end = len(first), len(text) - len(last)
    for segment in middle:
        if not segment:
            continue
        found = _find_segment(segment, text, pos, end)
        if found < 0:
            return False
        pos = found + len(segment)
    return True


def _string_entries(value: Any) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        return ()
    return tuple(e for e in value if isinstance(e, str))


@dataclass(frozen=True)
class ServerAcl:
    """One ``m.room.server_acl`` content, read once and asked many times."""

    allow: tuple[str, ...]
    deny: tuple[str, ...]
    allow_ip_literals: bool

    @classmethod
    def from_content(cls, content: Mapping[str, Any]) -> ServerAcl:
        ip = content.get("allow_ip_literals", True)
        return cls(
            allow=_string_entries(content.get("allow")),
            deny=_string_entries(content.get("deny")),
            allow_ip_literals=ip if isinstance(ip, bool) else True,
        )

    def allows(self, server_name: str) -> bool:
        """Steps 2-5 of the schema's evaluation order for ``server_name``."""
        host = strip_port(server_name)
        if not self.allow_ip_literals and is_ip_literal(host):
            return False
        if any(glob_matches(p, host) for p in self.deny):
            return False
        return any(glob_matches(p, host) for p in self.allow)


def server_acl_allows(acl_content: Mapping[str, Any] | None, server_name: str) -> bool:
    """Whether a room whose ``m.room.server_acl`` content is ``acl_content``
    (``None``: the room has none) lets ``server_name`` take part."""
    if acl_content is None:
        return True
    return ServerAcl.from_content(acl_content).allows(server_name)
