"""The trust domain: which servers a homeserver federates with.

Issue "Trust domain" (docs/usage/trust_domain.md). The spec has no whitelist
of peers; server names and their grammar come from the server-server API,
"Server names" (``host[:port]``, the host a DNS name, an IPv4 literal or a
bracketed IPv6 literal). Everything here is pure: a pattern list in, a
decision out, so the check on every inbound request costs a few string
comparisons.

Pattern grammar (case-insensitive on the host, as DNS names are):

- ``example.org``: exactly that host, on any port (``example.org`` and
  ``example.org:8448`` are both matched);
- ``example.org:8448``: that host on that port only (a bare ``example.org``
  is a different server name and is not matched);
- ``*.example.org``: ``*`` is exactly ONE label, so ``a.example.org``
  matches and ``a.b.example.org`` and ``example.org`` do not;
- ``**.example.org``: ``**`` is ONE OR MORE labels (``a.example.org``,
  ``a.b.example.org``), still not ``example.org`` itself;
- ``*`` alone: every server (an explicit "open federation" entry).

Wildcards stand only for whole leftmost labels (``*.*.example.org`` is two
labels; ``**`` may only come first); IP literals take no wildcards.

:class:`TrustPolicy` ``(None)`` is open federation (Synapse's default); an
empty tuple trusts nobody.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "OPEN",
    "ServerPattern",
    "TrustPolicy",
    "TrustPatternError",
    "parse_pattern",
    "split_server_name",
]

_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9\-_]{0,61}[a-z0-9])?$|^[a-z0-9]$")


class TrustPatternError(ValueError):
    """A trusted-servers pattern does not follow the grammar (message says why)."""


def split_server_name(name: str) -> tuple[str, int | None]:
    """``"a.example:8448"`` → ``("a.example", 8448)``; host lower-cased.

    IPv6 literals keep their brackets. Raises :class:`ValueError` on a port
    that is not a number.
    """
    if name.startswith("["):
        end = name.find("]")
        if end < 0:
            raise ValueError(f"unclosed IPv6 literal in {name!r}")
        host, rest = name[: end + 1], name[end + 1 :]
        if not rest:
            return host.lower(), None
        if not rest.startswith(":"):
            raise ValueError(f"junk after IPv6 literal in {name!r}")
        port_text = rest[1:]
    elif name.count(":") == 1:
        host, port_text = name.split(":")
    else:
        return name.lower(), None
    if not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"bad port in {name!r}")
    return host.lower(), int(port_text)


@dataclass(frozen=True)
class ServerPattern:
    """One parsed pattern. ``labels`` are the literal labels after the
    wildcards; ``single`` is how many leading ``*`` labels there are and
    ``deep`` whether a leading ``**`` adds one or more further labels."""

    text: str
    labels: tuple[str, ...]
    single: int = 0
    deep: bool = False
    port: int | None = None
    everything: bool = False
    literal_host: str | None = None

    def matches(self, host: str, port: int | None) -> bool:
        """Whether a server name already split by :func:`split_server_name` matches."""
        if self.everything:
            return True
        if self.port is not None and port != self.port:
            return False
        if self.literal_host is not None:
            return host == self.literal_host
        parts = host.split(".")
        wild = self.single + (1 if self.deep else 0)
        n = len(self.labels)
        if len(parts) < n + wild or (not self.deep and len(parts) != n + wild):
            return False
        if tuple(parts[len(parts) - n :]) != self.labels:
            return False
        # Every wildcard label must be a real, non-empty label.
        return all(parts[: len(parts) - n])


OPEN_TEXT = "*"


def parse_pattern(text: str) -> ServerPattern:
    """Parse one pattern; raises :class:`TrustPatternError` naming the problem."""
    if not isinstance(text, str) or not text:
        raise TrustPatternError("a pattern must be a non-empty string")
    if text != text.strip():
        raise TrustPatternError(f"{text!r}: no spaces allowed")
    if text == OPEN_TEXT:
        return ServerPattern(text, (), everything=True)
    try:
        host, port = split_server_name(text)
    except ValueError as e:
        raise TrustPatternError(f"{text!r}: {e}") from None
    if port is not None and not 1 <= port <= 65535:
        raise TrustPatternError(f"{text!r}: port must be 1-65535")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise TrustPatternError(f"{text!r}: not a valid IPv6 literal") from None
        return ServerPattern(text, (), port=port, literal_host=host)
    if not host:
        raise TrustPatternError(f"{text!r}: no host")
    if len(host) > 255:
        raise TrustPatternError(f"{text!r}: host longer than 255 characters")
    labels = host.split(".")
    single = 0
    deep = False
    i = 0
    if labels[0] == "**":
        deep = True
        i = 1
    while i < len(labels) and labels[i] == "*":
        single += 1
        i += 1
    rest = tuple(labels[i:])
    if not rest:
        raise TrustPatternError(
            f"{text!r}: a wildcard needs a literal domain after it (like *.example.org)"
        )
    for label in rest:
        if "*" in label:
            raise TrustPatternError(
                f"{text!r}: wildcards may only be whole leftmost labels "
                "(*.example.org, **.example.org)"
            )
        if not _LABEL_RE.match(label):
            raise TrustPatternError(f"{text!r}: {label!r} is not a valid DNS label")
    if single == 0 and not deep:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            pass
        else:
            return ServerPattern(text, (), port=port, literal_host=host)
    return ServerPattern(text, rest, single=single, deep=deep, port=port)


@dataclass(frozen=True)
class TrustPolicy:
    """A whitelist of server-name patterns, or ``None`` for open federation.

    ``source`` names where the list came from (``federation.trusted_servers``
    ...); it appears in every :meth:`reason`, so a refusal tells the operator
    which setting to change.
    """

    patterns: tuple[ServerPattern, ...] | None
    source: str = "federation.trusted_servers"

    @classmethod
    def from_patterns(
        cls, patterns: Iterable[str] | None, source: str = "federation.trusted_servers"
    ) -> TrustPolicy:
        """Parse ``patterns`` (``None``: open); raises :class:`TrustPatternError`."""
        if patterns is None:
            return cls(None, source)
        return cls(tuple(parse_pattern(p) for p in patterns), source)

    @property
    def is_open(self) -> bool:
        return self.patterns is None

    @property
    def texts(self) -> list[str] | None:
        """The patterns as written (``None`` when open)."""
        return None if self.patterns is None else [p.text for p in self.patterns]

    def matching_pattern(self, server_name: str) -> ServerPattern | None:
        """The first pattern that matches ``server_name``, if any."""
        if self.patterns is None:
            return None
        try:
            host, port = split_server_name(server_name)
        except ValueError:
            return None
        for p in self.patterns:
            if p.matches(host, port):
                return p
        return None

    def allows(self, server_name: str) -> bool:
        """Whether we federate with ``server_name``."""
        return self.patterns is None or self.matching_pattern(server_name) is not None

    def reason(self, server_name: str) -> str:
        """Which rule decides about ``server_name``, in words for logs and errors."""
        if self.patterns is None:
            return f"open federation ({self.source} is unset)"
        p = self.matching_pattern(server_name)
        if p is not None:
            return f"matches {p.text!r} of {self.source}"
        if not self.patterns:
            return f"{self.source} is empty (no server is trusted)"
        return f"matches none of the {len(self.patterns)} patterns of {self.source}"


#: Open federation: every server is trusted.
OPEN = TrustPolicy(None)
