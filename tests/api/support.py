"""Checks shared by the API tests: spec error bodies, and requests with untouched paths."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

API_VERSION = "registry/2.0"


@dataclass
class RawResponse:
    """A response to a request whose path was sent exactly as written."""

    status_code: int
    headers: httpx.Headers
    content: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.content)


def raw_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send ``path`` byte for byte: httpx would resolve ``..`` segments before sending."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        connection.request(method, path, body=body or None, headers=headers or {})
        response = connection.getresponse()
        content = response.read()
        return RawResponse(response.status, httpx.Headers(response.getheaders()), content)
    finally:
        connection.close()


def error_codes(response: httpx.Response | RawResponse) -> list[str]:
    document = response.json()
    assert isinstance(document, dict), document
    return [entry["code"] for entry in document["errors"]]


def assert_error(response: httpx.Response | RawResponse, status: int, code: str) -> None:
    """A spec error: the status, a JSON body ``{"errors": [{code, message, detail}]}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("Docker-Distribution-API-Version") == API_VERSION
    content_type = response.headers.get("Content-Type", "")
    assert content_type.split(";")[0].strip() == "application/json", content_type
    document = response.json()
    assert isinstance(document, dict), document
    errors = document["errors"]
    assert isinstance(errors, list) and errors, document
    for entry in errors:
        assert set(entry) >= {"code", "message", "detail"}, entry
        assert isinstance(entry["message"], str) and entry["message"], entry
    assert errors[0]["code"] == code, document
