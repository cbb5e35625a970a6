"""One test per class of vulnerability known in container registries, each naming its advisory.

Each drives a real registry process and checks what matters for the class:
the bytes on the wire (headers), the files on disk (traversal, deletion), the
server's memory (pagination), not only the status code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm

from registry.auth.keys import libtrust_key_id
from tests.access import ISSUER, SERVICE, USERS, htpasswd_config, parse_challenge, token_config
from tests.conftest import RegistryProcess
from tests.e2e.token_issuer import claims, sign
from tests.pushing import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    digest_of,
    image_manifest,
    push_blob,
    push_image,
    push_manifest,
)

from .raw_http import Connection, assert_spec_error, exchange, header_lines, rss_bytes
from .support import assert_error

Factory = Callable[..., RegistryProcess]

#: What a client that takes any manifest sends.
ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def _files(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root``: (size, mtime, sha256) by relative path."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            stat = path.stat()
            found[str(path.relative_to(root))] = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.sha256(data).digest(),
            )
    return found


# --- CVE-2023-2253: catalog pagination -------------------------------------------------


def test_catalog_n_cannot_exhaust_the_server(registry_factory: Factory) -> None:
    """CVE-2023-2253 (registry:2 before 2.8.2): ``/v2/_catalog?n=<huge>`` made the server
    allocate a slice of ``n`` entries and run out of memory.

    Whatever ``n`` (huge, beyond 64 bits, thousands of digits), the answer is a
    page of at most ``catalog.maxentries`` or a 400, and the server's memory stays put.
    """
    registry = registry_factory({"catalog": {"maxentries": 5}})
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        for index in range(8):
            push_image(client, f"cve-2023-2253/repo{index}", "latest")
        assert registry.process is not None
        before = rss_bytes(registry.process.pid)
        huge = [str(2**31), str(2**63 - 1), str(2**63), str(2**64 + 1), "9" * 25, "9" * 5000]
        for n in ["6", "1000000", *huge, "-1", "0x7fffffff"]:
            for _ in range(5):
                response = client.get("/v2/_catalog", params={"n": n})
                assert len(response.content) < 4096, (n, len(response.content))
                if response.status_code == 400:
                    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")
                    continue
                assert response.status_code == 200, (n, response.text)
                listed = response.json()["repositories"]
                assert len(listed) <= 5, (n, listed)
                link = response.headers.get("Link", "")
                if link:
                    linked_n = int(link.split("n=", 1)[1].split(">", 1)[0].split("&", 1)[0])
                    assert linked_n <= 5, link
        after = rss_bytes(registry.process.pid)
    assert after - before < 32 * 1024 * 1024, (before, after)


# --- CVE-2021-41190: manifest / index confusion ----------------------------------------


def test_manifest_and_index_cannot_be_confused(client: httpx.Client, repo: str) -> None:
    """CVE-2021-41190 (OCI distribution spec, GHSA-mc8v-mgrf-8f4m): a document that could be
    read both as an image manifest and as an index, depending on the media type a
    reader trusts, let two pullers of one digest get different content.

    Refused with MANIFEST_INVALID: a body whose shape contradicts its Content-Type,
    a ``mediaType`` that contradicts the Content-Type, and any body holding both
    ``manifests`` and ``layers``/``config``; nothing is stored.
    """
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"confused layer"
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    child = image_manifest(config, [layer])
    assert push_manifest(client, repo, digest_of(child), child).status_code == 201
    config_descriptor = descriptor(OCI_CONFIG, config)
    layers = [descriptor(OCI_LAYER, layer)]
    children = [descriptor(OCI_MANIFEST, child)]
    image_body = {"schemaVersion": 2, "config": config_descriptor, "layers": layers}
    index_body = {"schemaVersion": 2, "manifests": children}
    both = {**image_body, **index_body}
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("index-as-manifest", index_body, OCI_MANIFEST),
        ("manifest-as-index", image_body, OCI_INDEX),
        ("manifest-as-docker-list", {**image_body, "mediaType": DOCKER_LIST}, DOCKER_LIST),
        ("declared-index-sent-as-manifest", {**image_body, "mediaType": OCI_INDEX}, OCI_MANIFEST),
        ("declared-manifest-sent-as-index", {**index_body, "mediaType": OCI_MANIFEST}, OCI_INDEX),
        ("both-as-manifest", both, OCI_MANIFEST),
        ("both-as-index", both, OCI_INDEX),
        ("both-declared-manifest", {**both, "mediaType": OCI_MANIFEST}, OCI_MANIFEST),
        ("both-declared-index", {**both, "mediaType": OCI_INDEX}, OCI_INDEX),
        ("both-untyped", both, "application/json"),
    ]
    for name, document, content_type in cases:
        body = json.dumps(document).encode()
        response = client.put(
            f"/v2/{repo}/manifests/{name}", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 400, (name, response.status_code, response.text)
        assert response.json()["errors"][0]["code"] == "MANIFEST_INVALID", (name, response.text)
        for reference in (name, digest_of(body)):
            read = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT_ALL})
            assert read.status_code == 404, (name, reference, read.text)
    tags = client.get(f"/v2/{repo}/tags/list")
    assert tags.status_code in (200, 404)
    if tags.status_code == 200:
        assert tags.json()["tags"] in (None, [])


# --- CVE-2025-24976: a token's own jwk header ------------------------------------------


def test_token_signed_by_a_key_it_carries_is_refused(
    registry_factory: Factory, tmp_path: Path
) -> None:
    """CVE-2025-24976 (distribution 3.0.0 betas/RCs, GHSA-phw4-mc57-4hwc): a token whose header
    carried a ``jwk`` was verified with that key once the JWK's ``kid`` matched a trusted
    key, without comparing the key material: anyone could sign a token granting anything.

    Here only keys from ``rootcertbundle`` verify: the attacker's token gets 401
    with ``error="invalid_token"``, however its ``jwk``/``kid`` are arranged (the
    attack itself: a JWK of the attacker's key naming the trusted key's ``kid``),
    while a token signed by the configured key (the control) is accepted.
    """
    config = token_config(tmp_path)
    registry = registry_factory(config)
    real_key = load_pem_private_key((tmp_path / "certs" / "token.key").read_bytes(), None)
    assert isinstance(real_key, ec.EllipticCurvePrivateKey)  # tokens.py's default: ES256
    trusted_kid = libtrust_key_id(real_key.public_key())
    with httpx.Client(base_url=registry.url, timeout=30) as admin:
        admin.auth = _bearer(
            sign(
                claims(
                    "admin",
                    [{"type": "repository", "name": "secret/app", "actions": ["pull", "push"]}],
                    issuer=ISSUER,
                    service=SERVICE,
                ),
                real_key,
                kid=trusted_kid,
            )
        )
        push_image(admin, "secret/app", "latest")
        assert admin.get("/v2/secret/app/tags/list").json()["tags"] == ["latest"]

    attacker = ec.generate_private_key(ec.SECP256R1())
    jwk = dict(ECAlgorithm.to_jwk(attacker.public_key(), as_dict=True))
    grants = [
        {"type": "repository", "name": "secret/app", "actions": ["pull", "push", "delete"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    payload = claims("admin", grants, issuer=ISSUER, service=SERVICE)
    own_kid = libtrust_key_id(attacker.public_key())
    forged = {
        "jwk": sign(payload, attacker, jwk=jwk),
        "jwk-naming-the-trusted-kid": sign(payload, attacker, jwk={**jwk, "kid": trusted_kid}),
        "jwk-and-trusted-kid": sign(
            payload, attacker, jwk={**jwk, "kid": trusted_kid}, kid=trusted_kid
        ),
        "jwk-and-own-kid": sign(payload, attacker, jwk={**jwk, "kid": own_kid}, kid=own_kid),
        "trusted-kid-only": sign(payload, attacker, kid=trusted_kid),
    }
    for label, token in forged.items():
        for method, path in (
            ("GET", "/v2/"),
            ("GET", "/v2/secret/app/tags/list"),
            ("GET", "/v2/secret/app/manifests/latest"),
            ("DELETE", "/v2/secret/app/manifests/latest"),
            ("GET", "/v2/_catalog"),
        ):
            reply = exchange(registry.url, method, path, [("Authorization", f"Bearer {token}")])
            assert_spec_error(reply, 401, "UNAUTHORIZED")
            scheme, params = parse_challenge(reply.header("www-authenticate") or "")
            assert scheme == "bearer" and params.get("error") == "invalid_token", (label, path)
    # The forged DELETEs deleted nothing.
    tag = registry.root / "docker/registry/v2/repositories/secret/app/_manifests/tags/latest"
    assert (tag / "current/link").is_file()


def _bearer(token: str) -> httpx.Auth:
    class Bearer(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    return Bearer()


# --- GHSA-55r9-5mx9-qq7r: mounting what one may not read -------------------------------


def test_mount_from_a_repository_without_pull_links_nothing(
    registry_factory: Factory, tmp_path: Path
) -> None:
    """GHSA-55r9-5mx9-qq7r (distribution): a cross-repository mount linked a blob from a
    repository the caller could not pull, giving read access to it.

    Without pull on ``from`` the request is an ordinary upload (202): no link is
    written into the caller's repository and the blob stays unreadable there.
    tests/api/test_access_behaviour.py::test_mount_needs_pull_on_the_source covers
    both access controllers over the API; this one checks the files.
    """
    policy = {
        "admins": ["admin"],
        "rules": [{"repositories": ["alice/**"], "users": ["alice"], "actions": ["pull", "push"]}],
    }
    registry = registry_factory(htpasswd_config(tmp_path, policy))
    secret = b"only admin may read this"
    digest = digest_of(secret)
    with httpx.Client(base_url=registry.url, auth=("admin", USERS["admin"])) as admin:
        push_blob(admin, "secret/app", secret)
    with httpx.Client(base_url=registry.url, auth=("alice", USERS["alice"])) as alice:
        push_blob(alice, "alice/app", b"alice's own blob")  # The repository exists.
        for source in ("secret/app", "secret/app/", "alice/../secret/app"):
            response = alice.post(
                "/v2/alice/app/blobs/uploads/", params={"mount": digest, "from": source}
            )
            assert response.status_code in (202, 400), (source, response.text)
            assert alice.head(f"/v2/alice/app/blobs/{digest}").status_code == 404
    hex_digest = digest.split(":", 1)[1]
    link = registry.root / f"docker/registry/v2/repositories/alice/app/_layers/sha256/{hex_digest}"
    assert not link.exists()
    anonymous = exchange(
        registry.url, "POST", f"/v2/alice/app/blobs/uploads/?mount={digest}&from=secret/app"
    )
    assert_spec_error(anonymous, 401, "UNAUTHORIZED")
    assert not link.exists()


# --- deletes disabled --------------------------------------------------------------------


def test_deletes_disabled_refuses_every_delete_and_removes_nothing(
    registry_factory: Factory,
) -> None:
    """No advisory: registry:2's contract (``storage.delete.enabled`` false, its default) that
    operators rely on for immutable storage. Every DELETE of content is 405
    UNSUPPORTED, and not one file under the storage root changes or goes."""
    registry = registry_factory({})
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        digest, _ = push_image(client, "keep/app", "latest", layers=[b"kept layer"])
        layer = digest_of(b"kept layer")
        before = _files(registry.root)
        for path in (
            f"/v2/keep/app/manifests/{digest}",
            "/v2/keep/app/manifests/latest",
            f"/v2/keep/app/blobs/{layer}",
            f"/v2/keep/app/blobs/{digest}",
            f"/v2/keep/app/manifests/{digest_of(b'unknown')}",
        ):
            reply = exchange(registry.url, "DELETE", path)
            assert_spec_error(reply, 405, "UNSUPPORTED")
        assert _files(registry.root) == before
        read = client.get("/v2/keep/app/manifests/latest", headers={"Accept": ACCEPT_ALL})
        assert read.status_code == 200
        assert client.get(f"/v2/keep/app/blobs/{layer}").content == b"kept layer"


# --- path traversal ----------------------------------------------------------------------

#: From the repositories folder (root/docker/registry/v2/repositories) to the folder
#: above the storage root: five levels.
UP = 5


def _traversals(target: str) -> list[str]:
    """``target`` above the storage root, spelled every way a path might be decoded."""
    spellings = []
    for up, separator in (("..", "/"), ("%2e%2e", "/"), ("..", "%2f"), ("%2e%2e", "%2f")):
        for extra in (0, 3):
            spellings.append(separator.join([up] * (UP + extra) + [target]))
    spellings += [
        "%252e%252e/" * UP + target,
        "..%5c" * UP + target,
        "....//" * UP + target,
        ".%2e/" * UP + target,
        f"a/{'../' * (UP + 1)}{target}",
        f"/{target}",
        f"%2f{target}",
    ]
    return spellings


def test_traversal_reads_and_writes_nothing_outside_the_root(
    registry_factory: Factory, tmp_path: Path
) -> None:
    """CWE-22, the class of CVE-2024-3727 (containers/image: digests and names used in paths
    unchecked). Bait repositories are planted just above the storage root, with links to
    content the registry holds: were any name, digest, upload id or ``from`` resolved
    through ``..`` (plain, percent-encoded, double-encoded, backslashed), the bait's
    manifest or blob would be served or a file would appear or change out there.
    """
    root = tmp_path / "data"
    registry = registry_factory(
        {"storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}}}
    )
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        manifest_digest, manifest = push_image(client, "real/app", "latest", layers=[b"bait"])
    blob_digest = digest_of(b"bait")
    # A repository folder above the root that links the real manifest and blob.
    bait = tmp_path / "bait"
    for relative, digest in (
        ("_manifests/tags/latest/current/link", manifest_digest),
        (f"_manifests/tags/latest/index/sha256/{manifest_digest[7:]}/link", manifest_digest),
        (f"_manifests/revisions/sha256/{manifest_digest[7:]}/link", manifest_digest),
        (f"_layers/sha256/{blob_digest[7:]}/link", blob_digest),
    ):
        (bait / relative).parent.mkdir(parents=True, exist_ok=True)
        (bait / relative).write_text(digest)
    upload_bait = bait / "_uploads" / "0b0b0b0b-0000-4000-8000-000000000000"
    upload_bait.mkdir(parents=True)
    (upload_bait / "data").write_bytes(b"")
    (upload_bait / "startedat").write_text("2024-01-01T00:00:00Z")
    outside = {
        path: value
        for path, value in _files(tmp_path).items()
        if not path.startswith(("data/", "registry-0/"))
    }

    requests: list[tuple[str, str, bytes]] = []
    for name in _traversals("bait"):
        requests += [
            ("GET", f"/v2/{name}/tags/list", b""),
            ("GET", f"/v2/{name}/manifests/latest", b""),
            ("HEAD", f"/v2/{name}/manifests/{manifest_digest}", b""),
            ("GET", f"/v2/{name}/blobs/{blob_digest}", b""),
            ("GET", f"/v2/{name}/referrers/{manifest_digest}", b""),
            ("DELETE", f"/v2/{name}/manifests/{manifest_digest}", b""),
            ("DELETE", f"/v2/{name}/blobs/{blob_digest}", b""),
            ("PUT", f"/v2/{name}/manifests/stolen", manifest),
            ("POST", f"/v2/{name}/blobs/uploads/", b""),
            ("POST", f"/v2/{name}/blobs/uploads/?digest={blob_digest}", b"bait"),
            ("PATCH", f"/v2/{name}/blobs/uploads/{upload_bait.name}", b"written"),
            ("PUT", f"/v2/{name}/blobs/uploads/{upload_bait.name}?digest={blob_digest}", b""),
            ("POST", f"/v2/real/app/blobs/uploads/?mount={blob_digest}&from={name}", b""),
        ]
        for route in ("blobs", "manifests", "referrers"):
            requests.append(("GET", f"/v2/real/app/{route}/sha256:{name}", b""))
        requests.append(("PATCH", f"/v2/real/app/blobs/uploads/{name}/{upload_bait.name}", b"x"))
        requests.append(("DELETE", f"/v2/real/app/blobs/uploads/{name}", b""))
    with Connection(registry.url) as connection:
        for method, target, body in requests:
            headers = [("Accept", ACCEPT_ALL)]
            if body or method in ("PUT", "PATCH", "POST"):
                headers.append(("Content-Length", str(len(body))))
            if method == "PUT" and "/manifests/" in target:
                headers.append(("Content-Type", OCI_MANIFEST))
            reply = connection.request(method, target, headers, body)
            if target.startswith("/v2/real/app/blobs/uploads/?mount="):
                # At most an ordinary upload session in real/app, never a mount (201).
                assert reply.status in (202, 400), (target, reply.status)
            else:
                assert reply.status >= 400, (method, target, reply.status)
            assert manifest not in reply.body and reply.body != b"bait", (method, target)
    after = {
        path: value
        for path, value in _files(tmp_path).items()
        if not path.startswith(("data/", "registry-0/"))
    }
    assert after == outside
    for entry in root.rglob("*"):
        parts = entry.relative_to(root).parts
        assert ".." not in parts and "bait" not in parts, entry
    # And the real repository is as it was.
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        read = client.get(
            f"/v2/real/app/manifests/{manifest_digest}", headers={"Accept": ACCEPT_ALL}
        )
        assert read.status_code == 200 and read.content == manifest


# --- header injection ----------------------------------------------------------------------

#: CR/LF (and look-alikes that a careless latin-1 encoder truncates to CR/LF) that
#: would start a header of the attacker's if they reached one of ours.
INJECTIONS = [
    "%0d%0aX-Injected:%20yes",
    "%0aX-Injected:%20yes",
    "%0dX-Injected:%20yes",
    "%E5%98%8A%E5%98%8DX-Injected:%20yes",
    "%22%3B%20X-Injected%3D%22yes",
    "%3E%3B%20rel%3D%22next%22%2C%20%3Chttp://evil",
]


def _assert_clean_head(head: bytes, context: object) -> None:
    """No header but ours: every line is ``name: value`` with neither CR nor LF inside."""
    for line in header_lines(head):
        if not line:
            continue
        assert b"\r" not in line and b"\n" not in line, (context, line)
        name, colon, _ = line.partition(b":")
        assert colon and name.strip() == name and name, (context, line)
        assert name.lower() != b"x-injected", (context, head)
    assert b"evil" not in head.lower(), (context, head)


def test_no_header_injection_through_names_tags_digests(
    shared_registry: RegistryProcess, repo: str
) -> None:
    """CWE-113 (HTTP response splitting): names, tags, digests, upload ids and query values
    flow into ``Location``, ``Link`` and ``Docker-Content-Digest``; CR/LF and quotes in
    them (encoded in the request) are refused before any header is built. Checked on
    the raw response bytes."""
    with httpx.Client(base_url=shared_registry.url, timeout=30) as client:
        push_image(client, repo, "a")
        _, manifest = push_image(client, repo, "b")
        push_manifest(client, repo, "c", manifest)
    with Connection(shared_registry.url) as connection:
        started = connection.request(
            "POST", f"/v2/{repo}/blobs/uploads/", [("Content-Length", "0")]
        )
        upload = (started.header("location") or "").rsplit("/", 1)[1]
        for payload in INJECTIONS:
            digest = f"sha256:{'a' * 60}{payload}"
            for method, target in (
                ("GET", f"/v2/{repo}{payload}/tags/list"),
                ("GET", f"/v2/{repo}/tags/list?n=1&last=a{payload}"),
                ("GET", f"/v2/{repo}/tags/list?n=1{payload}"),
                ("GET", f"/v2/_catalog?n=1&last={payload}"),
                ("GET", f"/v2/{repo}/manifests/a{payload}"),
                ("PUT", f"/v2/{repo}/manifests/a{payload}"),
                ("GET", f"/v2/{repo}/manifests/{digest}"),
                ("GET", f"/v2/{repo}/blobs/{digest}"),
                ("GET", f"/v2/{repo}/referrers/{digest}"),
                ("POST", f"/v2/{repo}{payload}/blobs/uploads/"),
                ("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}"),
                ("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={repo}"),
                ("POST", f"/v2/{repo}/blobs/uploads/?mount=sha256:{'a' * 64}&from=x{payload}"),
                ("GET", f"/v2/{repo}/blobs/uploads/{upload}{payload}"),
                ("PATCH", f"/v2/{repo}/blobs/uploads/{upload}{payload}"),
                ("PUT", f"/v2/{repo}/blobs/uploads/{upload}?digest={digest}"),
            ):
                reply = connection.request(method, target, [("Content-Length", "0")])
                _assert_clean_head(reply.head, (method, target))
                assert reply.status < 500, (method, target, reply.status)
        # The Link header of a page, built from a stored tag, is well-formed too.
        page = connection.request("GET", f"/v2/{repo}/tags/list?n=1")
        assert page.header("link") == f'</v2/{repo}/tags/list?last=a&n=1>; rel="next"'
        _assert_clean_head(page.head, "link")


def test_no_injection_into_the_token_challenge(registry_factory: Factory, tmp_path: Path) -> None:
    """CWE-113 in ``WWW-Authenticate``: with ``autoredirect`` the realm follows the client's
    Host, and the scope names the repository. A Host or forwarded scheme holding quotes
    or parameters of its own, and names holding quotes, never add or bend a parameter."""
    registry = registry_factory(token_config(tmp_path))
    host = registry.url.split("://", 1)[1]
    hostile = [
        [("Host", f'{host}",error="injected')],
        [("Host", f'{host}", realm="http://evil')],
        [("Host", f"{host}\\")],
        [("Host", 'evil:1/"x')],
        [("Host", f"{host}/token?x=")],
        [("Host", host), ("X-Forwarded-Proto", 'https",error="x')],
        [("Host", host), ("X-Forwarded-Proto", "javascript")],
    ]
    challenges = 0
    for headers in hostile:
        for target in ("/v2/", "/v2/a%22b/tags/list", "/v2/ok/app/tags/list"):
            reply = exchange(registry.url, "GET", target, headers)
            context = (headers, target)
            _assert_clean_head(reply.head, context)
            if reply.status != 401:
                assert_spec_error(reply, 400)  # A Host that is not one.
                continue
            challenges += 1
            challenge = reply.header("www-authenticate") or ""
            scheme, params = parse_challenge(challenge)
            assert scheme == "bearer", challenge
            assert set(params) <= {"realm", "service", "scope"}, (context, challenge)
            assert params["service"] == SERVICE
            assert params["realm"] in (f"http://{host}/token", f"https://{host}/token"), challenge
            if target == "/v2/ok/app/tags/list":
                assert params["scope"] == "repository:ok/app:pull", challenge
            else:
                assert "scope" not in params, challenge
    assert challenges >= 6  # The forwarded schemes, at least, reached the challenge.
