"""Real clients pull through the S3 driver's presigned redirect, with access control on.

With ``storage.s3`` a blob GET answers ``307`` to a URL of the Ceph RADOS Gateway,
presigned by the registry (registry:2's behaviour); the client fetches the bytes
from the gateway itself, without the registry's credentials. Shown here with the
real clients, for Basic users (``auth.htpasswd``) and for tokens of the built-in
token service:

* the Docker engine pushes, forgets, pulls (every blob GET answered 307) and runs;
* skopeo copies to ``dir:`` and ``oci:``, digests checked; with
  ``storage.redirect.disable`` the registry streams the blobs (no 307 at all);
* a user without pull on the repository, or no user at all, gets 401/403 and no
  URL of the gateway, signed or not.

Passwords go to the clients on stdin (``--password-stdin``), never in argv.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.access import USERS, BearerAuth, htpasswd_config, token_config
from tests.conftest import RegistryProcess
from tests.pushing import digest_of, push_image
from tests.services.ceph import CephS3

from . import images
from .clients import access_lines
from .conftest import DockerEngine, busybox_tar
from .needs import require

pytestmark = pytest.mark.e2e

MODES = ("htpasswd", "token")
ROOT = "/s3-clients"
PLAIN = "--tls-verify=false"

#: alice pulls and pushes team/**; bob only other/**; admin everything.
ACCESS: dict[str, object] = {
    "admins": ["admin"],
    "rules": [
        {"repositories": ["team/**"], "users": ["alice"], "actions": ["pull", "push"]},
        {"repositories": ["other/**"], "users": ["bob"], "actions": ["pull", "push"]},
    ],
}

StartRegistry = Callable[..., RegistryProcess]


# --- the registry on a bucket of its own, with access control ----------------------


def s3_registry(
    registry_factory: StartRegistry,
    ceph_s3: CephS3,
    bucket: str,
    mode: str,
    folder: Path,
    *,
    redirect: bool = True,
) -> RegistryProcess:
    """Our registry on ``bucket``, with ``mode``'s authentication and ACCESS's rules."""
    folder.mkdir(parents=True, exist_ok=True)
    auth = htpasswd_config(folder, ACCESS) if mode == "htpasswd" else token_config(folder, ACCESS)
    storage: dict[str, object] = {"s3": ceph_s3.driver_parameters(bucket, ROOT)}
    if not redirect:
        storage["redirect"] = {"disable": True}
    return registry_factory({"storage": storage, **auth})


def host_of(registry: RegistryProcess) -> str:
    return registry.url.removeprefix("http://")


def http_auth(mode: str, user: str) -> httpx.Auth:
    if mode == "htpasswd":
        return httpx.BasicAuth(user, USERS[user])
    return BearerAuth(user, USERS[user])


def user_lines(
    registry: RegistryProcess, since: int, user: str, method: str, pattern: str, *, at_least: int
) -> list[tuple[str, int]]:
    """``access_lines`` of ``user``'s requests logged after offset ``since``.

    A worker writes a request's line just after its reply, so a client may have
    finished before the last line is there: the log is read again until
    ``at_least`` lines are found (for ten seconds at most; the check follows).
    """
    found: list[tuple[str, int]] = []
    for _ in range(100):
        log = registry.log()[since:]
        named = "\n".join(line for line in log.splitlines() if f" {user} " in line)
        found = access_lines(named, method, pattern)
        if len(found) >= at_least:
            break
        time.sleep(0.1)
    return found


def presigned_gets(
    ceph_s3: CephS3, since: int, bucket: str, *, at_least: int = 0
) -> list[tuple[str, int, str]]:
    """(key, status, user agent) of the GETs by presigned URL the gateway logged in ``bucket``
    after offset ``since``. The registry's own reads are signed in a header: not listed.
    The gateway logs from a thread of its own: read again until ``at_least`` are there."""
    request = rf'"GET /{re.escape(bucket)}/(\S+?)\?\S*Signature=\S* HTTP/[\d.]+"'
    found: list[tuple[str, str, str]] = []
    for _ in range(100):
        log = gateway_log(ceph_s3)[since:]
        found = re.findall(rf'{request} (\d{{3}}) \S+ \S+ "([^"]*)"', log)
        if len(found) >= at_least:
            break
        time.sleep(0.1)
    return [(key, int(status), agent) for key, status, agent in found]


def gateway_log(ceph_s3: CephS3) -> str:
    path = ceph_s3.base / "log" / "client.rgw.a.log"
    return path.read_text(errors="replace") if path.exists() else ""


def blob_key(digest: str) -> str:
    """The key registry:2's layout (and ours) keeps a blob's bytes under, below the root."""
    hex_digest = digest.removeprefix("sha256:")
    return f"{ROOT.strip('/')}/docker/registry/v2/blobs/sha256/{hex_digest[:2]}/{hex_digest}/data"


# --- 1, 2: the Docker engine, Basic and token ---------------------------------------


@dataclass
class DockerUser:
    """The docker CLI with a configuration folder of its own."""

    engine: DockerEngine
    config: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.docker("--config", str(self.config), *args, check=check)

    def login(self, host: str, user: str) -> None:
        result = self.engine.docker(
            "--config", str(self.config), "login", "--username", user, "--password-stdin", host,
            input=USERS[user].encode(),
        )  # fmt: skip
        assert "Login Succeeded" in result.stdout, result.stdout + result.stderr


def pushed_digest(output: str, tag: str) -> str:
    found = re.search(
        rf"^{re.escape(tag)}: digest: (sha256:[0-9a-f]{{64}}) size: \d+$", output, re.M
    )
    assert found, f"no digest for {tag} in:\n{output}"
    return found.group(1)


@pytest.mark.parametrize("mode", MODES)
def test_docker_pulls_through_the_redirect(
    mode: str,
    registry_factory: StartRegistry,
    ceph_s3: CephS3,
    s3_bucket: str,
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    registry = s3_registry(registry_factory, ceph_s3, s3_bucket, mode, tmp_path / "auth")
    host = host_of(registry)
    alice = DockerUser(docker_engine, tmp_path / "docker-config")
    alice.config.mkdir()
    reference = f"{host}/team/app:1"
    # Layers of the test's own: the engine would otherwise mount what other tests pushed.
    word = secrets.token_hex(12)
    docker_engine.import_image(reference, busybox_tar({"etc/word": word.encode()}))
    try:
        alice.login(host, "alice")
        digest = pushed_digest(alice("push", reference).stdout, "1")
        image_id = alice("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()
        with httpx.Client(base_url=registry.url, auth=http_auth(mode, "admin")) as admin:
            served = admin.get(
                f"/v2/team/app/manifests/{digest}",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
            )
        assert served.status_code == 200, served.text
        document = served.json()
        blobs = [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]
        assert image_id == document["config"]["digest"]

        alice("image", "rm", reference)
        assert alice("image", "inspect", reference, check=False).returncode != 0
        since, gateway_since = len(registry.log()), len(gateway_log(ceph_s3))
        pulled = alice("pull", reference)
        assert f"Digest: {digest}" in pulled.stdout, pulled.stdout
        assert alice("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip() == (
            image_id
        )
        ran = alice("run", "--rm", "--network", "none", reference, "/bin/cat", "/etc/word")
        assert ran.stdout == word

        # Every blob was sent to the gateway, none streamed by the registry...
        gets = user_lines(
            registry, since, "alice", "GET", r"^/v2/team/app/blobs/", at_least=len(blobs)
        )
        assert sorted(gets) == sorted((f"/v2/team/app/blobs/{d}", 307) for d in blobs), gets
        # ...and the engine fetched each from there, at the first try: the gateway answers
        # 400 to a presigned URL that comes with an Authorization header (Basic or Bearer).
        fetched = presigned_gets(ceph_s3, gateway_since, s3_bucket, at_least=len(blobs))
        assert sorted((key, status) for key, status, _ in fetched) == sorted(
            (blob_key(blob), 200) for blob in blobs
        ), fetched
        assert all(agent.startswith("docker/") for _, _, agent in fetched), fetched
    finally:
        docker_engine.docker("image", "rm", reference, check=False)


# --- 3: skopeo, with the redirect and without ---------------------------------------


def skopeo(authfile: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [require("skopeo", "skopeo"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={"REGISTRY_AUTH_FILE": str(authfile), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, f"skopeo {args[0]}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("redirect", [True, False], ids=["redirect", "no-redirect"])
@pytest.mark.parametrize("mode", MODES)
def test_skopeo_copies_out_with_digests_verified(
    mode: str,
    redirect: bool,
    registry_factory: StartRegistry,
    ceph_s3: CephS3,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    registry = s3_registry(
        registry_factory, ceph_s3, s3_bucket, mode, tmp_path / "auth", redirect=redirect
    )
    host = host_of(registry)
    authfile = tmp_path / "skopeo-auth.json"
    skopeo(
        authfile, "login", PLAIN, "--username", "alice", "--password-stdin", host,
        stdin=USERS["alice"],
    )  # fmt: skip
    assert USERS["alice"] not in " ".join(json.loads(authfile.read_text())["auths"])
    content = images.image(
        [
            {"etc/s3/base.txt": secrets.token_bytes(300 * 1024)},
            {f"etc/s3/{mode}.txt": secrets.token_hex(16).encode()},
        ]
    )
    layout = images.Layout(tmp_path / "layout", {"v1": content}).write()
    target = f"docker://{host}/team/skopeo:v1"
    skopeo(authfile, "copy", "--dest-tls-verify=false", f"oci:{layout.path}:v1", target)
    blobs = {d: data for d, data in content.blobs().items() if d != content.digest}

    since, gateway_since = len(registry.log()), len(gateway_log(ceph_s3))
    back = tmp_path / "back"
    skopeo(authfile, "copy", "--src-tls-verify=false", target, f"dir:{back}")
    assert (back / "manifest.json").read_bytes() == content.manifest
    assert images.read_dir(back) == blobs  # Every file hashed against its name.
    again = tmp_path / "again"
    skopeo(authfile, "copy", "--src-tls-verify=false", target, f"oci:{again}:v1")
    top = json.loads((again / "index.json").read_text())
    assert [entry["digest"] for entry in top["manifests"]] == [content.digest]
    for digest, data in content.blobs().items():
        stored = again / "blobs" / "sha256" / digest.removeprefix("sha256:")
        assert digest_of(stored.read_bytes()) == digest and stored.read_bytes() == data

    gets = user_lines(
        registry, since, "alice", "GET", r"^/v2/team/skopeo/blobs/", at_least=2 * len(blobs)
    )
    expected = 307 if redirect else 200
    assert {path.rsplit("/", 1)[1] for path, _ in gets} == set(blobs), gets
    assert len(gets) == 2 * len(blobs) and {status for _, status in gets} == {expected}, gets
    # With the redirect, skopeo fetched every blob (twice) from the gateway by the signed
    # URL, never refused; without it, no signed URL was ever used.
    wanted = sorted((blob_key(blob), 200) for blob in blobs for _ in range(2)) if redirect else []
    logged = presigned_gets(ceph_s3, gateway_since, s3_bucket, at_least=len(wanted))
    fetched = sorted((key, status) for key, status, _ in logged)
    assert fetched == wanted, logged


# --- 4: no pull, no URL ----------------------------------------------------------------


def assert_no_url(response: httpx.Response, ceph_s3: CephS3) -> None:
    """Nothing of the gateway in the answer: no Location, no endpoint, no signature."""
    assert "Location" not in response.headers, response.headers
    seen = response.text + json.dumps(dict(response.headers))
    for leak in (ceph_s3.endpoint, f":{ceph_s3.rgw_port}", "Signature", "X-Amz", "AWSAccessKeyId"):
        assert leak not in seen, (leak, seen)


@pytest.mark.parametrize("mode", MODES)
def test_no_pull_right_no_presigned_url(
    mode: str,
    registry_factory: StartRegistry,
    ceph_s3: CephS3,
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    registry = s3_registry(registry_factory, ceph_s3, s3_bucket, mode, tmp_path / "auth")
    layer = secrets.token_bytes(64 * 1024)
    digest = digest_of(layer)
    with httpx.Client(base_url=registry.url, auth=http_auth(mode, "alice")) as alice:
        push_image(alice, "team/app", "1", layers=[layer])
        # The control: alice may pull, and is sent to the gateway.
        allowed = alice.get(f"/v2/team/app/blobs/{digest}")
        assert allowed.status_code == 307, allowed.text
        assert allowed.headers["Location"].startswith(ceph_s3.endpoint + "/")

    since = len(registry.log())
    path = f"/v2/team/app/blobs/{digest}"
    with httpx.Client(base_url=registry.url, auth=http_auth(mode, "bob")) as bob:
        for method in ("GET", "HEAD"):
            refused = bob.request(method, path)
            assert refused.status_code in (401, 403), (method, refused.status_code, refused.text)
            assert_no_url(refused, ceph_s3)
            if method == "GET":
                code = refused.json()["errors"][0]["code"]
                assert code in ("UNAUTHORIZED", "DENIED"), refused.text
        # bob's own repository does not hold the blob: deduplication by digest lends no access.
        elsewhere = bob.get(f"/v2/other/app/blobs/{digest}")
        assert elsewhere.status_code == 404, elsewhere.text
        assert_no_url(elsewhere, ceph_s3)
    with httpx.Client(base_url=registry.url) as anonymous:
        for method in ("GET", "HEAD"):
            refused = anonymous.request(method, path)
            assert refused.status_code == 401, (method, refused.status_code, refused.text)
            assert_no_url(refused, ceph_s3)

    lines = user_lines(registry, since, "bob", "GET", r"/blobs/", at_least=2)
    assert (path, 307) not in lines and lines, lines
    assert all(status in (401, 403, 404) for _, status in lines), lines
