"""registry:2's log settings: ``log.formatter`` json gives one object per line that log
shippers can parse, access lines carry registry:2's field names, ``log.fields`` is on
every line, and ``log.accesslog.disabled`` silences access lines only."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.access import USERS, htpasswd_config
from tests.conftest import RegistryProcess

Factory = Callable[..., RegistryProcess]


def _lines(registry: RegistryProcess) -> list[dict[str, object]]:
    """Every line of the log as JSON: a line that is not one fails the test."""
    return [json.loads(line) for line in registry.log().splitlines() if line.strip()]


def test_json_lines_with_registry2_access_fields(registry_factory: Factory) -> None:
    registry = registry_factory(
        {"log": {"formatter": "json", "fields": {"service": "registry", "environment": "test"}}},
        workers=2,
    )
    agent = "log-test/1.0"
    with httpx.Client(base_url=registry.url, headers={"User-Agent": agent}) as client:
        assert client.get("/v2/_catalog?n=5").status_code == 200
        assert client.get("/v2/missing/manifests/latest").status_code == 404
    registry.log_with("missing/manifests")
    lines = _lines(registry)
    assert all(line["service"] == "registry" and line["environment"] == "test" for line in lines)
    assert any("listening on" in str(line["msg"]) for line in lines)
    access = [line for line in lines if line["logger"] == "registry.access"]
    by_uri = {line["http.request.uri"]: line for line in access}
    catalog = by_uri["/v2/_catalog?n=5"]
    assert catalog["http.request.method"] == "GET"
    assert catalog["http.response.status"] == 200
    assert catalog["http.request.useragent"] == agent
    assert catalog["http.request.remoteaddr"] == "127.0.0.1"
    written = catalog["http.response.written"]
    assert isinstance(written, int) and written > 0
    assert str(catalog["http.response.duration"]).endswith("ms")
    assert by_uri["/v2/missing/manifests/latest"]["http.response.status"] == 404


def test_the_signed_in_user_is_named_and_the_password_never_is(
    registry_factory: Factory, tmp_path: Path
) -> None:
    registry = registry_factory({"log": {"formatter": "json"}, **htpasswd_config(tmp_path)})
    user, password = next(iter(USERS.items()))
    with httpx.Client(base_url=registry.url, auth=(user, password)) as client:
        assert client.get("/v2/").status_code == 200
    registry.log_with('"/v2/"')
    access = [line for line in _lines(registry) if line["logger"] == "registry.access"]
    assert any(line.get("auth.user.name") == user for line in access)
    assert password not in registry.log()


def test_access_lines_can_be_turned_off(registry_factory: Factory) -> None:
    registry = registry_factory({"log": {"formatter": "json", "accesslog": {"disabled": True}}})
    with httpx.Client(base_url=registry.url) as client:
        assert client.get("/v2/").status_code == 200
        assert client.get("/v2/nothing/tags/list").status_code == 404
    lines = _lines(registry)
    assert lines, "the start is still logged"
    assert not [line for line in lines if line["logger"] == "registry.access"]


def test_text_lines_carry_the_fields_too(registry_factory: Factory) -> None:
    registry = registry_factory({"log": {"formatter": "text", "fields": {"service": "registry"}}})
    with httpx.Client(base_url=registry.url) as client:
        assert client.get("/v2/").status_code == 200
    log = registry.log_with('"GET /v2/ HTTP/1.1" 200')
    access = [line for line in log.splitlines() if "registry.access" in line]
    assert access and all(line.endswith(" service=registry") for line in access)
