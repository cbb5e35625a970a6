"""The error-code table and the error body every API error is written as."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from registry.errors import ErrorCode, RegistryError

#: The OCI Distribution Spec's error codes (code-1 to code-14) with the statuses
#: the spec's endpoints and registry:2 answer them with.
SPEC_CODES = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
}


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_every_code_has_a_message_and_an_error_status(code: ErrorCode) -> None:
    assert isinstance(code.message, str)
    assert code.message.strip()
    assert code.message == code.message.strip()
    assert isinstance(code.status, HTTPStatus)
    assert 400 <= code.status <= 599


def test_codes_are_distinct_members() -> None:
    """Members with equal values would become aliases and report another code's name."""
    assert len(ErrorCode.__members__) == len(list(ErrorCode))
    for name, code in ErrorCode.__members__.items():
        assert code.name == name


def test_code_names_are_the_wire_names() -> None:
    for code in ErrorCode:
        assert code.name.isupper()
        assert code.name.replace("_", "").isalpha()


@pytest.mark.parametrize(("name", "status"), SPEC_CODES.items())
def test_spec_codes(name: str, status: int) -> None:
    assert ErrorCode[name].status == status


def test_the_table_is_the_spec_table_and_registry2_extras_only() -> None:
    extras = {
        "TAG_INVALID": 400,
        "RANGE_INVALID": 416,
        "PAGINATION_NUMBER_INVALID": 400,
        "UNAVAILABLE": 503,
        "UNKNOWN": 500,
    }
    assert {code.name: int(code.status) for code in ErrorCode} == {**SPEC_CODES, **extras}


def test_registry2_extras() -> None:
    assert ErrorCode.UNKNOWN.status == 500
    assert ErrorCode.RANGE_INVALID.status == 416
    assert ErrorCode.TAG_INVALID.status == 400
    assert ErrorCode.PAGINATION_NUMBER_INVALID.status == 400
    assert ErrorCode.UNAVAILABLE.status == 503


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.name)
def test_body_shape(code: ErrorCode) -> None:
    error = RegistryError(code)
    body = error.body()
    document = json.loads(body)
    assert document == {"errors": [{"code": code.name, "message": code.message, "detail": {}}]}
    assert error.status == int(code.status)
    assert error.headers == {}
    assert error.to_json() == document["errors"][0]


def test_body_with_message_and_detail() -> None:
    error = RegistryError(
        ErrorCode.NAME_INVALID, "invalid repository name", detail={"name": "A/../b"}
    )
    assert json.loads(error.body()) == {
        "errors": [
            {
                "code": "NAME_INVALID",
                "message": "invalid repository name",
                "detail": {"name": "A/../b"},
            }
        ]
    }
    assert error.code is ErrorCode.NAME_INVALID
    assert "NAME_INVALID" in str(error)


@pytest.mark.parametrize("detail", ["a string", 0, [], ["x"], {"nested": {"a": [1, 2]}}, False])
def test_detail_kept_as_given(detail: object) -> None:
    error = RegistryError(ErrorCode.BLOB_UNKNOWN, detail=detail)
    assert json.loads(error.body())["errors"][0]["detail"] == detail


def test_status_and_headers_override() -> None:
    error = RegistryError(ErrorCode.MANIFEST_INVALID, status=413, headers={"Retry-After": "1"})
    assert error.status == 413
    assert error.headers == {"Retry-After": "1"}
    assert json.loads(error.body())["errors"][0]["code"] == "MANIFEST_INVALID"


def test_body_is_compact_json() -> None:
    body = RegistryError(ErrorCode.DENIED, detail={"a": "b"}).body()
    assert isinstance(body, bytes)
    assert json.loads(body)
    assert body.count(b" ") == len(ErrorCode.DENIED.message.split()) - 1


def test_unicode_detail_is_ascii_safe() -> None:
    body = RegistryError(ErrorCode.NAME_INVALID, detail={"name": "\u00e4\n"}).body()
    assert json.loads(body)["errors"][0]["detail"] == {"name": "\u00e4\n"}
    body.decode("ascii")


def test_registry_error_is_an_exception() -> None:
    with pytest.raises(RegistryError) as raised:
        raise RegistryError(ErrorCode.UNSUPPORTED)
    assert raised.value.message == ErrorCode.UNSUPPORTED.message
