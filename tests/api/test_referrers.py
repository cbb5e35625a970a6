"""``/v2/<name>/referrers/<digest>``: the manifests whose ``subject`` is that digest."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.pushing import (
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_index,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

from .support import assert_error

EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1+json"


def _artifact(
    client: httpx.Client,
    repo: str,
    subject: dict[str, object],
    *,
    artifact_type: str | None = None,
    config_type: str = EMPTY_TYPE,
    payload: bytes = b"payload",
    annotations: dict[str, str] | None = None,
) -> bytes:
    """Push an artifact manifest (its blobs first) that refers to ``subject``."""
    push_blob(client, repo, EMPTY)
    push_blob(client, repo, payload)
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, EMPTY),
        "layers": [descriptor("application/octet-stream", payload)],
        "subject": subject,
    }
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    if annotations is not None:
        document["annotations"] = annotations
    body = json.dumps(document).encode()
    response = push_manifest(client, repo, digest_of(body), body, OCI_MANIFEST)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == subject["digest"]
    return body


def _referrers(
    client: httpx.Client, repo: str, digest: str, **params: str
) -> tuple[httpx.Response, list[dict[str, object]]]:
    response = client.get(f"/v2/{repo}/referrers/{digest}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == OCI_INDEX
    index = response.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    manifests: list[dict[str, object]] = index["manifests"]
    return response, manifests


def _subject(client: httpx.Client, repo: str) -> dict[str, object]:
    _, body = push_image(client, repo, "subject")
    return descriptor(OCI_MANIFEST, body)


def test_referrer_descriptor(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    annotations = {"org.opencontainers.image.created": "2024-01-01T00:00:00Z", "x": "y"}
    body = _artifact(client, repo, subject, artifact_type=SBOM, annotations=annotations)
    response, manifests = _referrers(client, repo, str(subject["digest"]))
    assert "OCI-Filters-Applied" not in response.headers
    assert manifests == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest_of(body),
            "size": len(body),
            "artifactType": SBOM,
            "annotations": annotations,
        }
    ]


def test_artifact_type_falls_back_to_config_media_type(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    body = _artifact(client, repo, subject, config_type=SIGNATURE)
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert manifests == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": digest_of(body),
            "size": len(body),
            "artifactType": SIGNATURE,
        }
    ]


def test_artifact_type_field_wins_over_config(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    _artifact(client, repo, subject, artifact_type=SBOM, config_type=SIGNATURE)
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert [m["artifactType"] for m in manifests] == [SBOM]


def test_index_as_referrer(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    child_digest, child = push_image(client, repo, "child", layers=[b"child layer"])
    index = image_index(
        [(OCI_MANIFEST, child)], subject=subject, artifact_type=SBOM, annotations={"k": "v"}
    )
    response = push_manifest(client, repo, "index", index, OCI_INDEX)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == subject["digest"]
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert manifests == [
        {
            "mediaType": OCI_INDEX,
            "digest": digest_of(index),
            "size": len(index),
            "artifactType": SBOM,
            "annotations": {"k": "v"},
        }
    ]
    assert child_digest != digest_of(index)


def test_artifact_type_filter(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    sbom = _artifact(client, repo, subject, artifact_type=SBOM, payload=b"sbom")
    signature = _artifact(client, repo, subject, artifact_type=SIGNATURE, payload=b"sig")
    _, everything = _referrers(client, repo, str(subject["digest"]))
    assert sorted(str(m["digest"]) for m in everything) == sorted(
        [digest_of(sbom), digest_of(signature)]
    )
    response, only_sbom = _referrers(client, repo, str(subject["digest"]), artifactType=SBOM)
    assert response.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in only_sbom] == [digest_of(sbom)]
    response, none = _referrers(
        client, repo, str(subject["digest"]), artifactType="application/vnd.example.none"
    )
    assert response.headers["OCI-Filters-Applied"] == "artifactType"
    assert none == []


def test_no_referrers(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert manifests == []
    unknown = digest_of(b"nothing refers to this")
    _, manifests = _referrers(client, repo, unknown)
    assert manifests == []


def test_referrers_of_unknown_repository(client: httpx.Client, repo: str) -> None:
    _, manifests = _referrers(client, f"{repo}/never", digest_of(b"x"))
    assert manifests == []


def test_referrers_are_per_repository(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    _artifact(client, repo, subject, artifact_type=SBOM)
    _, manifests = _referrers(client, f"{repo}/other", str(subject["digest"]))
    assert manifests == []


def test_subject_pushed_after_its_referrers(client: httpx.Client, repo: str) -> None:
    config = json.dumps({"os": "linux", "late": True}).encode()
    layer = b"late subject layer"
    subject_body = image_manifest(config, [layer])
    subject = descriptor(OCI_MANIFEST, subject_body)
    assert_error(client.get(f"/v2/{repo}/manifests/{subject['digest']}"), 404, "MANIFEST_UNKNOWN")
    body = _artifact(client, repo, subject, artifact_type=SBOM)
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert [m["digest"] for m in manifests] == [digest_of(body)]
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    assert push_manifest(client, repo, "late", subject_body).status_code == 201
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert [m["digest"] for m in manifests] == [digest_of(body)]


def test_deleting_a_referrer_removes_it(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    kept = _artifact(client, repo, subject, artifact_type=SBOM, payload=b"kept")
    deleted = _artifact(client, repo, subject, artifact_type=SIGNATURE, payload=b"deleted")
    assert client.delete(f"/v2/{repo}/manifests/{digest_of(deleted)}").status_code == 202
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert [m["digest"] for m in manifests] == [digest_of(kept)]


def test_deleting_the_subject_keeps_the_referrers(client: httpx.Client, repo: str) -> None:
    subject = _subject(client, repo)
    body = _artifact(client, repo, subject, artifact_type=SBOM)
    assert client.delete(f"/v2/{repo}/manifests/{subject['digest']}").status_code == 202
    _, manifests = _referrers(client, repo, str(subject["digest"]))
    assert [m["digest"] for m in manifests] == [digest_of(body)]


@pytest.mark.parametrize("digest", ["sha256:xyz", "latest", "sha256:" + "A" * 64, "md5:00"])
def test_bad_digest(client: httpx.Client, repo: str, digest: str) -> None:
    _subject(client, repo)
    assert_error(client.get(f"/v2/{repo}/referrers/{digest}"), 400, "DIGEST_INVALID")


def test_invalid_name(client: httpx.Client) -> None:
    response = client.get(f"/v2/Bad/referrers/{digest_of(b'x')}")
    assert_error(response, 400, "NAME_INVALID")
