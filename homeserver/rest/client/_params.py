"""Query-string and body helpers shared by the client servlets."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.canonical_json import parse_json_strict
from federation.errors import Codes, MatrixError

__all__ = ["body_str", "query_bool", "query_int", "query_json", "query_str"]


def query_str(request: web.Request, name: str) -> str | None:
    return request.query.get(name)


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be an integer") from None
    if value < minimum:
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be at least {minimum}")
    return value


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be true or false")


def query_json(request: web.Request, name: str) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_json_strict(raw.encode())
    except MatrixError:
        raise
    except ValueError:
        raise MatrixError(400, Codes.NOT_JSON, f"{name} is not JSON") from None


def body_str(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise MatrixError(400, Codes.MISSING_PARAM, f"Missing {name}")
        return None
    if not isinstance(value, str):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{name} must be a string")
    return value
