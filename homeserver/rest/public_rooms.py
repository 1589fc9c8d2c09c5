"""``publicRooms`` requests of both APIs, as the REST layer reads them.

Client-server and server-server ``GET``/``POST /publicRooms``
(``public_rooms.yaml`` of both) ask the same thing: a GET in its query
string, a POST in its JSON body. Either is read here into one
:class:`~homeserver.discovery.directory.DirectoryRequest`, so both APIs
refuse the same bad input with the same ``400 M_INVALID_PARAM``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federation.errors import Codes, MatrixError
from homeserver.discovery.directory import DirectoryRequest

__all__ = ["request_from_body", "request_from_query"]


def bad_param(message: str) -> MatrixError:
    return MatrixError(400, Codes.INVALID_PARAM, message)


def request_from_query(query: Mapping[str, str]) -> DirectoryRequest:
    """A ``GET``'s query string."""
    limit = query.get("limit")
    if limit is not None:
        try:
            parsed = int(limit)
        except ValueError:
            raise bad_param("limit must be an integer") from None
        if parsed < 0:
            raise bad_param("limit must be a non-negative integer")
    networks = query.get("include_all_networks")
    if networks not in (None, "true", "false"):
        raise bad_param("include_all_networks must be true or false")
    return DirectoryRequest(
        limit=None if limit is None else parsed, since=query.get("since"),
        include_all_networks=networks == "true",
        third_party_instance_id=query.get("third_party_instance_id"),
    )

def request_from_body(body: Mapping[str, Any]) -> DirectoryRequest:
    """A ``POST``'s JSON body."""
    limit = body.get("limit")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise bad_param("limit must be a non-negative integer")
    since = body.get("since")
    if since is not None and not isinstance(since, str):
        raise bad_param("since must be a string")
    flt = body.get("filter")
    if flt is None:
        flt = {}
    if not isinstance(flt, Mapping):
        raise bad_param("filter must be an object")
    term = flt.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise bad_param("generic_search_term must be a string")
    types = flt.get("room_types")
    if types is not None and (
        not isinstance(types, list)
        or not all(t is None or isinstance(t, str) for t in types)
    ):
        raise bad_param("room_types must be a list of strings and nulls")
    networks = body.get("include_all_networks", False)
    if not isinstance(networks, bool):
        raise bad_param("include_all_networks must be a boolean")
    instance = body.get("third_party_instance_id")
    if instance is not None and not isinstance(instance, str):
        raise bad_param("third_party_instance_id must be a string")
    return DirectoryRequest(
        limit=limit, since=since, search_term=term,
        room_types=None if types is None else tuple(types),
        include_all_networks=networks, third_party_instance_id=instance,
    )
