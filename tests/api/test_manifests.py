"""``/v2/<name>/manifests/<reference>``: GET/HEAD/PUT/DELETE, validation, tags that move."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import RegistryProcess
from tests.pushing import (
    ACCEPT_MANIFESTS,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_index,
    image_manifest,
    push_blob,
    push_image,
    push_index,
    push_manifest,
)

from .support import assert_error

Pusher = Callable[[httpx.Client, str, str], tuple[str, bytes]]


def _push_oci_image(client: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    return push_image(client, repo, tag, media_type=OCI_MANIFEST)


def _push_docker_image(client: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    return push_image(client, repo, tag, media_type=DOCKER_MANIFEST)


def _push_oci_index(client: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    return push_index(client, repo, tag, media_type=OCI_INDEX)


def _push_docker_list(client: httpx.Client, repo: str, tag: str) -> tuple[str, bytes]:
    return push_index(client, repo, tag, media_type=DOCKER_LIST)


KINDS = [
    pytest.param(_push_oci_image, OCI_MANIFEST, id="oci-manifest"),
    pytest.param(_push_docker_image, DOCKER_MANIFEST, id="docker-manifest"),
    pytest.param(_push_oci_index, OCI_INDEX, id="oci-index"),
    pytest.param(_push_docker_list, DOCKER_LIST, id="docker-list"),
]


def _assert_manifest_headers(
    response: httpx.Response, digest: str, media_type: str, body: bytes
) -> None:
    assert response.headers["Content-Type"] == media_type
    assert response.headers["Docker-Content-Digest"] == digest
    assert response.headers["Content-Length"] == str(len(body))
    assert response.headers["ETag"] == f'"{digest}"'


@pytest.mark.parametrize(("push", "media_type"), KINDS)
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_get_manifest(
    client: httpx.Client, repo: str, push: Pusher, media_type: str, by: str
) -> None:
    digest, body = push(client, repo, "v1")
    reference = "v1" if by == "tag" else digest
    response = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": media_type})
    assert response.status_code == 200, response.text
    assert response.content == body
    _assert_manifest_headers(response, digest, media_type, body)


@pytest.mark.parametrize(("push", "media_type"), KINDS)
@pytest.mark.parametrize("by", ["tag", "digest"])
def test_head_manifest(
    client: httpx.Client, repo: str, push: Pusher, media_type: str, by: str
) -> None:
    digest, body = push(client, repo, "v1")
    reference = "v1" if by == "tag" else digest
    response = client.head(f"/v2/{repo}/manifests/{reference}")
    assert response.status_code == 200
    assert response.content == b""
    _assert_manifest_headers(response, digest, media_type, body)


@pytest.mark.parametrize(("push", "media_type"), KINDS)
def test_if_none_match_gives_304(
    client: httpx.Client, repo: str, push: Pusher, media_type: str
) -> None:
    digest, _ = push(client, repo, "v1")
    for reference in ("v1", digest):
        response = client.get(
            f"/v2/{repo}/manifests/{reference}", headers={"If-None-Match": f'"{digest}"'}
        )
        assert response.status_code == 304
        assert response.content == b""
        assert response.headers["Docker-Content-Digest"] == digest
    other = client.get(
        f"/v2/{repo}/manifests/v1", headers={"If-None-Match": f'"{digest_of(b"other")}"'}
    )
    assert other.status_code == 200


@pytest.mark.parametrize(("push", "media_type"), KINDS)
def test_put_answers_201_with_location_and_digest(
    client: httpx.Client, repo: str, push: Pusher, media_type: str
) -> None:
    digest, body = push(client, repo, "first")
    for reference in ("second", digest):
        response = push_manifest(client, repo, reference, body, media_type)
        assert response.status_code == 201, response.text
        assert response.headers["Docker-Content-Digest"] == digest
        location = response.headers["Location"]
        assert location.endswith(f"/v2/{repo}/manifests/{digest}")
        assert "OCI-Subject" not in response.headers
        fetched = client.get(location)
        assert fetched.status_code == 200
        assert fetched.content == body


@pytest.mark.parametrize(("push", "media_type"), KINDS)
def test_delete_by_digest(client: httpx.Client, repo: str, push: Pusher, media_type: str) -> None:
    digest, _ = push(client, repo, "v1")
    response = client.delete(f"/v2/{repo}/manifests/{digest}")
    assert response.status_code == 202, response.text
    assert_error(client.get(f"/v2/{repo}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/{digest}").status_code == 404
    assert_error(client.delete(f"/v2/{repo}/manifests/{digest}"), 404, "MANIFEST_UNKNOWN")


def test_unknown_manifest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "v1")
    assert_error(client.get(f"/v2/{repo}/manifests/v2"), 404, "MANIFEST_UNKNOWN")
    unknown = digest_of(b"no such manifest")
    assert_error(client.get(f"/v2/{repo}/manifests/{unknown}"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/{unknown}").status_code == 404
    assert_error(client.get("/v2/never/pushed/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_manifest_served_back_byte_identical(client: httpx.Client, repo: str) -> None:
    config, layer = b'{"os":"linux"}', b"layer bytes"
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    # Odd indentation, key order, spacing and a trailing newline: all part of the digest.
    body = (
        b'{\n\t"layers" : [ {"size": 11, "digest": "' + digest_of(layer).encode() + b'",'
        b' "mediaType": "' + OCI_LAYER.encode() + b'"} ],\n'
        b'   "schemaVersion":2,  "mediaType" : "' + OCI_MANIFEST.encode() + b'",\n'
        b'"config": {"mediaType": "' + OCI_CONFIG.encode() + b'", "size": 14,\n'
        b'  "digest": "' + digest_of(config).encode() + b'"}}\n\n'
    )
    assert json.loads(body)["config"]["size"] == len(config)
    response = push_manifest(client, repo, "odd", body, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == digest_of(body)
    for reference in ("odd", digest_of(body)):
        fetched = client.get(f"/v2/{repo}/manifests/{reference}")
        assert fetched.content == body
        assert fetched.headers["Docker-Content-Digest"] == digest_of(body)


def test_oci_manifest_without_media_type_field(client: httpx.Client, repo: str) -> None:
    """``mediaType`` is optional in OCI manifests: Content-Type says what it is."""
    config, layer = b"{}", b"bare layer"
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    document = json.loads(image_manifest(config, [layer]))
    del document["mediaType"]
    body = json.dumps(document).encode()
    assert push_manifest(client, repo, "bare", body, OCI_MANIFEST).status_code == 201
    response = client.get(f"/v2/{repo}/manifests/bare")
    assert response.headers["Content-Type"] == OCI_MANIFEST
    assert response.content == body


@pytest.mark.parametrize(("push", "media_type"), KINDS)
def test_served_content_type_is_the_pushed_one(
    client: httpx.Client, repo: str, push: Pusher, media_type: str
) -> None:
    """Without a ``mediaType`` field, a manifest is served as the type it was accepted as."""
    _, body = push(client, repo, "with-field")
    document = json.loads(body)
    del document["mediaType"]
    bare = json.dumps(document).encode()
    response = push_manifest(client, repo, "without-field", bare, media_type)
    if response.status_code != 201:
        # registry:2 insists on the field for Docker media types; refusing is fine too.
        assert media_type in (DOCKER_MANIFEST, DOCKER_LIST)
        assert_error(response, 400, "MANIFEST_INVALID")
        return
    fetched = client.get(f"/v2/{repo}/manifests/without-field")
    assert fetched.headers["Content-Type"] == media_type
    assert fetched.content == bare


def test_tag_moves_to_new_digest(client: httpx.Client, repo: str) -> None:
    old_digest, old_body = push_image(client, repo, "moving", layers=[b"old layer"])
    new_digest, new_body = push_image(client, repo, "moving", layers=[b"new layer"])
    assert old_digest != new_digest
    by_tag = client.get(f"/v2/{repo}/manifests/moving")
    assert by_tag.headers["Docker-Content-Digest"] == new_digest
    assert by_tag.content == new_body
    by_old_digest = client.get(f"/v2/{repo}/manifests/{old_digest}")
    assert by_old_digest.status_code == 200
    assert by_old_digest.content == old_body
    tags = client.get(f"/v2/{repo}/tags/list").json()
    assert tags == {"name": repo, "tags": ["moving"]}


def test_put_with_subject_answers_oci_subject(client: httpx.Client, repo: str) -> None:
    subject_digest, subject_body = push_image(client, repo, "subject")
    subject = descriptor(OCI_MANIFEST, subject_body)
    _, body = push_image(
        client,
        repo,
        "signature",
        layers=[b"signature"],
        subject=subject,
        artifact_type="application/vnd.example.signature",
    )
    response = push_manifest(client, repo, digest_of(body), body)
    assert response.status_code == 201
    assert response.headers["OCI-Subject"] == subject_digest


# --- PUT validation -------------------------------------------------------------------


def _valid_image(client: httpx.Client, repo: str) -> tuple[bytes, bytes]:
    config, layer = b'{"valid": true}', b"valid layer"
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    return config, layer


def test_put_invalid_json(client: httpx.Client, repo: str) -> None:
    for body in (b"{not json", b"", b"[]", b'"a string"', b"\xff\xfe"):
        response = push_manifest(client, repo, "bad", body, OCI_MANIFEST)
        assert_error(response, 400, "MANIFEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/bad"), 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize(
    ("declared", "content_type"),
    [
        (OCI_MANIFEST, DOCKER_MANIFEST),
        (DOCKER_MANIFEST, OCI_MANIFEST),
        (OCI_MANIFEST, OCI_INDEX),
        ("application/vnd.example.unknown+json", "application/vnd.example.unknown+json"),
    ],
)
def test_put_media_type_must_match_content_type(
    client: httpx.Client, repo: str, declared: str, content_type: str
) -> None:
    config, layer = _valid_image(client, repo)
    document = json.loads(image_manifest(config, [layer]))
    document["mediaType"] = declared
    body = json.dumps(document).encode()
    assert_error(push_manifest(client, repo, "v1", body, content_type), 400, "MANIFEST_INVALID")


def test_put_structurally_invalid(client: httpx.Client, repo: str) -> None:
    config, layer = _valid_image(client, repo)
    valid = json.loads(image_manifest(config, [layer]))
    broken = [
        {**valid, "schemaVersion": 1},
        {**valid, "config": "not a descriptor"},
        {**valid, "config": {**valid["config"], "digest": "sha256:short"}},
        {**valid, "layers": "not a list"},
        {k: v for k, v in valid.items() if k != "config"},
        {**valid, "manifests": []},
    ]
    for document in broken:
        response = push_manifest(client, repo, "v1", json.dumps(document).encode(), OCI_MANIFEST)
        assert_error(response, 400, "MANIFEST_INVALID")
    schema1 = {"schemaVersion": 1, "name": repo, "tag": "v1", "fsLayers": []}
    response = push_manifest(
        client,
        repo,
        "v1",
        json.dumps(schema1).encode(),
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    )
    assert_error(response, 400, "MANIFEST_INVALID")


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_put_with_missing_blob(client: httpx.Client, repo: str, media_type: str) -> None:
    config, layer = b'{"config": 1}', b"layer never pushed"
    push_blob(client, repo, config)
    body = image_manifest(config, [layer], media_type=media_type)
    response = push_manifest(client, repo, "v1", body, media_type)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    missing_config = image_manifest(b"config never pushed", [], media_type=media_type)
    response = push_manifest(client, repo, "v1", missing_config, media_type)
    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")


def test_put_with_blob_only_in_another_repository(client: httpx.Client, repo: str) -> None:
    other = f"{repo}/other"
    config, layer = b'{"elsewhere": true}', b"layer pushed elsewhere"
    push_blob(client, other, config)
    push_blob(client, other, layer)
    push_blob(client, repo, config)
    body = image_manifest(config, [layer])
    assert_error(push_manifest(client, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")
    assert push_manifest(client, other, "v1", body).status_code == 201


@pytest.mark.parametrize(
    ("media_type", "child_type"), [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)]
)
def test_put_index_with_missing_child(
    client: httpx.Client, repo: str, media_type: str, child_type: str
) -> None:
    config, layer = _valid_image(client, repo)
    present = image_manifest(config, [layer], media_type=child_type)
    assert push_manifest(client, repo, digest_of(present), present).status_code == 201
    absent = image_manifest(config, [layer, b"other"], media_type=child_type)
    index = image_index([(child_type, present), (child_type, absent)], media_type=media_type)
    assert_error(push_manifest(client, repo, "v1", index), 400, "MANIFEST_BLOB_UNKNOWN")
    whole = image_index([(child_type, present)], media_type=media_type)
    assert push_manifest(client, repo, "v1", whole).status_code == 201


def test_put_index_with_child_only_in_another_repository(client: httpx.Client, repo: str) -> None:
    other = f"{repo}/other"
    child_digest, child = push_image(client, other, "child")
    index = image_index([(OCI_MANIFEST, child)])
    assert_error(push_manifest(client, repo, "v1", index), 400, "MANIFEST_BLOB_UNKNOWN")
    assert client.get(f"/v2/{other}/manifests/{child_digest}").status_code == 200


def test_put_by_digest_must_match_body(client: httpx.Client, repo: str) -> None:
    config, layer = _valid_image(client, repo)
    body = image_manifest(config, [layer])
    wrong = digest_of(body + b" ")
    assert_error(push_manifest(client, repo, wrong, body), 400, "DIGEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/{wrong}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/{digest_of(body)}"), 404, "MANIFEST_UNKNOWN")
    malformed = push_manifest(client, repo, "sha256:abc", body)
    assert_error(malformed, 400, "DIGEST_INVALID")
    right = push_manifest(client, repo, digest_of(body), body)
    assert right.status_code == 201
    assert right.headers["Docker-Content-Digest"] == digest_of(body)


def test_put_too_large(client: httpx.Client, repo: str) -> None:
    config, layer = _valid_image(client, repo)
    document = json.loads(image_manifest(config, [layer]))
    document["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    body = json.dumps(document).encode()
    assert len(body) > 4 * 1024 * 1024
    response = push_manifest(client, repo, "big", body)
    assert response.status_code == 413, response.text
    assert_error(client.get(f"/v2/{repo}/manifests/big"), 404, "MANIFEST_UNKNOWN")


def test_put_just_under_the_size_limit(client: httpx.Client, repo: str) -> None:
    config, layer = _valid_image(client, repo)
    document = json.loads(image_manifest(config, [layer]))
    document["annotations"] = {"padding": ""}
    base = len(json.dumps(document).encode())
    document["annotations"] = {"padding": "x" * (4 * 1024 * 1024 - base)}
    body = json.dumps(document).encode()
    assert len(body) == 4 * 1024 * 1024
    response = push_manifest(client, repo, "big", body)
    assert response.status_code == 201, response.text
    assert client.get(f"/v2/{repo}/manifests/big").content == body


@pytest.mark.parametrize("tag", [".hidden", "-dash", "a" * 129, "t%21", "%2e%2e"])
def test_put_invalid_tag(client: httpx.Client, repo: str, tag: str) -> None:
    """Neither a tag nor a digest: registry:2's route does not match, a 404."""
    _, body = push_image(client, repo, "ok")
    assert_error(push_manifest(client, repo, tag, body), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["ok"]


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_under", "UPPER-case_1.2", "a" * 128, "0"])
def test_put_valid_tag(client: httpx.Client, repo: str, tag: str) -> None:
    config, layer = _valid_image(client, repo)
    body = image_manifest(config, [layer])
    response = push_manifest(client, repo, tag, body)
    assert response.status_code == 201, response.text
    assert client.get(f"/v2/{repo}/manifests/{tag}").content == body
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == [tag]


def test_delete_by_tag_removes_only_the_tag(client: httpx.Client, repo: str) -> None:
    digest, body = push_image(client, repo, "one")
    assert push_manifest(client, repo, "two", body).status_code == 201
    response = client.delete(f"/v2/{repo}/manifests/one")
    assert response.status_code == 202, response.text
    assert_error(client.get(f"/v2/{repo}/manifests/one"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/manifests/two").content == body
    assert client.get(f"/v2/{repo}/manifests/{digest}").content == body
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["two"]
    assert_error(client.delete(f"/v2/{repo}/manifests/one"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_digest_removes_every_tag_pointing_at_it(client: httpx.Client, repo: str) -> None:
    digest, body = push_image(client, repo, "one")
    assert push_manifest(client, repo, "two", body).status_code == 201
    other_digest, _ = push_image(client, repo, "other", layers=[b"another layer"])
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    for reference in ("one", "two", digest):
        assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["other"]
    assert client.get(f"/v2/{repo}/manifests/other").headers["Docker-Content-Digest"] == (
        other_digest
    )


def test_delete_invalid_reference(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "v1")
    assert_error(client.delete(f"/v2/{repo}/manifests/-bad"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/manifests/sha256:zz"), 400, "DIGEST_INVALID")


@pytest.mark.parametrize(("push", "media_type"), KINDS)
def test_content_type_survives_a_restart(
    registry_factory: Callable[..., RegistryProcess], push: Pusher, media_type: str
) -> None:
    """The media type is the pushed one for every process, not only the one that took the PUT."""
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as client:
        _, body = push(client, "kinds", "with-field")
        document = json.loads(body)
        del document["mediaType"]
        bare = json.dumps(document).encode()
        accepted = push_manifest(client, "kinds", "without-field", bare, media_type)
    registry.restart()
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as client:
        for tag, expected_body in (("with-field", body), ("without-field", bare)):
            if tag == "without-field" and accepted.status_code != 201:
                assert media_type in (DOCKER_MANIFEST, DOCKER_LIST)
                assert_error(accepted, 400, "MANIFEST_INVALID")
                continue
            response = client.get(f"/v2/kinds/manifests/{tag}")
            assert response.status_code == 200
            assert response.headers["Content-Type"] == media_type
            assert response.content == expected_body
