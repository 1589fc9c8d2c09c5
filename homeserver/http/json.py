"""Reading and writing JSON bodies: the one helper every servlet uses.

Client-Server API, "API Standards": request and response bodies are JSON
objects. A body that is not JSON is ``400 M_NOT_JSON``; JSON that is not an
object, or holds values canonical JSON forbids, is ``400 M_BAD_JSON``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from federation.canonical_json import parse_json_strict
from federation.errors import Codes, MatrixError

__all__ = ["EncodedJsonList", "JsonDict", "json_response", "read_json_body"]

JsonDict = dict[str, Any]


async def read_json_body(request: web.Request, *, allow_empty: bool = False) -> JsonDict:
    """The request body as a JSON object, or a MatrixError the middleware maps to HTTP.

    ``allow_empty``: an empty body reads as ``{}`` (endpoints whose body is optional).
    Bodies over ``max_request_size`` raise 413 M_TOO_LARGE (aiohttp's limit).
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise MatrixError(413, Codes.TOO_LARGE, "Request body too large") from None
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, Codes.NOT_JSON, "Request body is empty; expected JSON")
    try:
        # Strict: also refuses what canonical JSON cannot hold (floats, NaN,
        # duplicate keys, lone surrogates) with 400 M_BAD_JSON naming the path.
        value = parse_json_strict(raw)
    except RecursionError:
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise MatrixError(400, Codes.BAD_JSON, "Content must be a JSON object")
    return value


class EncodedJsonList(list[str]):
    """A JSON array given as the encoded JSON text of each element.

    A top-level value of a response body (``{"state": EncodedJsonList([...])}``)
    is written as ``[text,text,...]`` without parsing the texts: for large
    answers made of stored events (``send_join``'s 2,000-event state), which
    would otherwise be parsed into objects only to be encoded again. Each text
    must be one valid JSON value (stored canonical JSON is).
    """


def _dumps(body: Any) -> str:
    if type(body) is dict and any(type(v) is EncodedJsonList for v in body.values()):
        return "{" + ",".join(
            _plain(k) + ":" + ("[" + ",".join(v) + "]" if type(v) is EncodedJsonList
                               else _plain(v))
            for k, v in body.items()
        ) + "}"
    return _plain(body)


def _plain(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_response(code: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (UTF-8, compact)."""
    return web.json_response(body, status=code, dumps=_dumps, headers=headers)
