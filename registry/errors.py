"""The spec's error codes, each with its HTTP status: the one table every error comes from.

Handlers raise :class:`RegistryError`; one error handler turns it into the
``{"errors": [{"code", "message", "detail"}]}`` body the OCI Distribution Spec
and the Docker Registry HTTP API v2 define.
"""

from __future__ import annotations

import json
from enum import Enum
from http import HTTPStatus


class ErrorCode(Enum):
    """Error codes of the OCI Distribution Spec (code-1 to code-15) and registry:2's extras."""

    BLOB_UNKNOWN = ("blob unknown to registry", HTTPStatus.NOT_FOUND)
    BLOB_UPLOAD_INVALID = ("blob upload invalid", HTTPStatus.BAD_REQUEST)
    BLOB_UPLOAD_UNKNOWN = ("blob upload unknown to registry", HTTPStatus.NOT_FOUND)
    DIGEST_INVALID = ("provided digest did not match uploaded content", HTTPStatus.BAD_REQUEST)
    MANIFEST_BLOB_UNKNOWN = ("blob unknown to registry", HTTPStatus.BAD_REQUEST)
    MANIFEST_INVALID = ("manifest invalid", HTTPStatus.BAD_REQUEST)
    MANIFEST_UNKNOWN = ("manifest unknown", HTTPStatus.NOT_FOUND)
    NAME_INVALID = ("invalid repository name", HTTPStatus.BAD_REQUEST)
    NAME_UNKNOWN = ("repository name not known to registry", HTTPStatus.NOT_FOUND)
    SIZE_INVALID = ("provided length did not match content length", HTTPStatus.BAD_REQUEST)
    UNAUTHORIZED = ("authentication required", HTTPStatus.UNAUTHORIZED)
    DENIED = ("requested access to the resource is denied", HTTPStatus.FORBIDDEN)
    UNSUPPORTED = ("the operation is unsupported", HTTPStatus.METHOD_NOT_ALLOWED)
    TOOMANYREQUESTS = ("too many requests", HTTPStatus.TOO_MANY_REQUESTS)
    # registry:2 extras that Docker clients know.
    TAG_INVALID = ("manifest tag did not match URI", HTTPStatus.BAD_REQUEST)
    RANGE_INVALID = ("invalid content range", HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
    PAGINATION_NUMBER_INVALID = ("invalid number of results requested", HTTPStatus.BAD_REQUEST)
    UNAVAILABLE = ("service unavailable", HTTPStatus.SERVICE_UNAVAILABLE)
    UNKNOWN = ("unknown error", HTTPStatus.INTERNAL_SERVER_ERROR)

    def __init__(self, message: str, status: HTTPStatus) -> None:
        self.message = message
        self.status = status


class RegistryError(Exception):
    """An error the API reports to the client as a spec error body."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        *,
        detail: object = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.message
        self.detail = detail
        self.status: int = status or int(code.status)
        self.headers = headers or {}
        super().__init__(f"{code.name}: {self.message}")

    def to_json(self) -> dict[str, object]:
        entry: dict[str, object] = {"code": self.code.name, "message": self.message}
        entry["detail"] = self.detail if self.detail is not None else {}
        return entry

    def body(self) -> bytes:
        return json.dumps({"errors": [self.to_json()]}, separators=(",", ":")).encode() + b"\n"
