"""User ID and server name checks the auth rules need.

Spec: ``appendices.md``, "User Identifiers" (including "Historical User IDs",
which servers MUST accept over federation) and "Server Name".
"""

from __future__ import annotations

import re

# appendices.md "Server Name": hostname [ ":" port ], hostname being an IPv4
# literal, a bracketed IPv6 literal or a DNS name.
_SERVER_NAME = re.compile(
    r"""
    (?:
        \d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}   # IPv4address
      | \[[0-9A-Fa-f:.]{2,45}\]               # "[" IPv6address "]"
      | [0-9A-Za-z.\-]{1,255}                 # dns-name
    )
    (?::\d{1,5})?
    """,
    re.VERBOSE,
)


def is_valid_server_name(name: str) -> bool:
    return _SERVER_NAME.fullmatch(name) is not None


def is_valid_user_id(value: object) -> bool:
    """Whether ``value`` is a user ID a server must accept in an event.

    The historical grammar applies (the localpart may be any non-surrogate code
    points except ``:`` and NUL, even empty), since rooms contain such senders;
    the domain must be a valid server name and the whole ID at most 255 bytes.
    """
    if not isinstance(value, str) or not value.startswith("@"):
        return False
    localpart, sep, domain = value[1:].partition(":")
    if not sep or "\x00" in localpart:
        return False
    if any(0xD800 <= ord(c) <= 0xDFFF for c in localpart):
        return False
    try:
        if len(value.encode("utf-8")) > 255:
            return False
    except UnicodeEncodeError:
        return False
    return is_valid_server_name(domain)


def domain_of(identifier: str) -> str:
    """The server name of a user or (v10/v11) room ID: everything after the first colon."""
    return identifier.partition(":")[2]
