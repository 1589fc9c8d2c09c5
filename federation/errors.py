"""The one error type of Concord, with the spec's error codes.

Client-Server API, "Standard error response": every error a peer or client
sees is `{"errcode": ..., "error": ...}` with an HTTP status. Anything raised
as a :class:`MatrixError` is safe to show; anything else is an internal error
and is answered as a bare 500 by the one middleware that maps errors to HTTP
(``homeserver/http/errors.py``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Codes(StrEnum):
    """Error codes from the spec (client-server ``_index.md``, "Common error codes")."""

    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    INVALID_PARAM = "M_INVALID_PARAM"
    MISSING_PARAM = "M_MISSING_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"


class MatrixError(Exception):
    """An error a client or peer may see: HTTP status, errcode and message.

    ``extra`` carries additional top-level response keys the spec defines for
    some codes (``retry_after_ms`` for ``M_LIMIT_EXCEEDED``, for instance).
    """

    def __init__(
        self,
        code: int,
        errcode: Codes | str,
        msg: str,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code} {errcode}: {msg}")
        self.code = code
        self.errcode = errcode.value if isinstance(errcode, Codes) else errcode
        self.msg = msg
        self.extra = dict(extra or {})

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.msg}
        body.update(self.extra)
        return body
