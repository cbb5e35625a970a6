"""Access control beyond the route table: mounts, failed logins, the htpasswd file, secrets.

Each test starts the registry it needs (a real process, real files).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from registry.auth import htpasswd
from tests.access import USERS, BearerAuth, basic, htpasswd_config, token_config
from tests.conftest import RegistryProcess
from tests.pushing import push_blob

from .support import assert_error

Factory = Callable[..., RegistryProcess]

#: alice may push her own repositories and pull nothing else; admin may do everything.
MOUNT_POLICY: dict[str, object] = {
    "admins": ["admin"],
    "rules": [{"repositories": ["alice/**"], "users": ["alice"], "actions": ["pull", "push"]}],
}


def _client(registry: RegistryProcess, mode: str, user: str) -> httpx.Client:
    auth: httpx.Auth = (
        httpx.BasicAuth(user, USERS[user]) if mode == "htpasswd" else BearerAuth(user, USERS[user])
    )
    return httpx.Client(base_url=registry.url, auth=auth, timeout=30)


def _config(tmp_path: Path, mode: str, access: dict[str, object] | None) -> dict[str, object]:
    make = htpasswd_config if mode == "htpasswd" else token_config
    return make(tmp_path, access)


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_mount_needs_pull_on_the_source(
    registry_factory: Factory, tmp_path: Path, mode: str
) -> None:
    """Without pull on ``from``, a mount is an ordinary upload (202), never a 201 that
    would prove (and give) access to another repository's blob."""
    registry = registry_factory(_config(tmp_path, mode, MOUNT_POLICY))
    secret = b"only admin may read this"
    with _client(registry, mode, "admin") as admin, _client(registry, mode, "alice") as alice:
        digest = push_blob(admin, "secret/app", secret)
        assert alice.head(f"/v2/secret/app/blobs/{digest}").status_code == 403
        refused = alice.post(
            "/v2/alice/app/blobs/uploads/", params={"mount": digest, "from": "secret/app"}
        )
        assert refused.status_code == 202, refused.text
        assert "/blobs/uploads/" in refused.headers["Location"]
        assert alice.head(f"/v2/alice/app/blobs/{digest}").status_code == 404
        # The session is an ordinary one: alice can push the bytes herself.
        done = alice.put(refused.headers["Location"], params={"digest": digest}, content=secret)
        assert done.status_code == 201, done.text
        # admin may read the source, so the same request mounts.
        mounted = admin.post(
            "/v2/admin/copy/blobs/uploads/", params={"mount": digest, "from": "secret/app"}
        )
        assert mounted.status_code == 201, mounted.text


def test_failed_logins_are_delayed_then_locked_out(
    registry_factory: Factory, tmp_path: Path
) -> None:
    config = htpasswd_config(
        tmp_path, {"failedlogins": {"limit": 3, "window": "1m", "delay": "0.3s"}}
    )
    registry = registry_factory(config)
    url = f"{registry.url}/v2/"
    started = time.monotonic()
    for _ in range(3):
        assert_error(httpx.get(url, auth=("alice", "wrong")), 401, "UNAUTHORIZED")
    assert time.monotonic() - started >= 3 * 0.3  # Each failure waited the delay.
    # Locked out: even the right password is refused, with when to come back.
    locked = httpx.get(url, auth=("alice", USERS["alice"]))
    assert_error(locked, 429, "TOOMANYREQUESTS")
    assert 0 < int(locked.headers["Retry-After"]) <= 60
    # The token service shares the lockout (same address, same process).
    assert registry.log_with("failed login as 'alice'").count("failed login as 'alice'") == 3


def test_token_service_logins_count_too(registry_factory: Factory, tmp_path: Path) -> None:
    config = token_config(tmp_path, {"failedlogins": {"limit": 2, "window": "1m", "delay": "0s"}})
    registry = registry_factory(config)
    realm = f"{registry.url}/token"
    for _ in range(2):
        refused = httpx.get(realm, params={"service": "registry.test"}, auth=("bob", "nope"))
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["message"] == "incorrect username or password"
    locked = httpx.get(realm, params={"service": "registry.test"}, auth=("bob", USERS["bob"]))
    assert_error(locked, 429, "TOOMANYREQUESTS")
    form = {"grant_type": "password", "username": "bob", "password": USERS["bob"]}
    assert httpx.post(realm, data={**form, "service": "registry.test"}).status_code == 429


def test_htpasswd_changes_apply_without_a_restart(
    registry_factory: Factory, tmp_path: Path
) -> None:
    registry = registry_factory(htpasswd_config(tmp_path))
    path = tmp_path / "htpasswd"
    url = f"{registry.url}/v2/"
    assert httpx.get(url, auth=("carol", "carol-pw")).status_code == 401
    entries = htpasswd.read(path)
    htpasswd.write(path, entries.with_user("carol", htpasswd.hash_password("carol-pw")))
    assert httpx.get(url, auth=("carol", "carol-pw")).status_code == 200
    # A remembered password stops working the moment the user is removed.
    assert httpx.get(url, auth=("alice", USERS["alice"])).status_code == 200
    htpasswd.write(path, htpasswd.read(path).without_user("alice"))
    assert httpx.get(url, auth=("alice", USERS["alice"])).status_code == 401
    # A broken edit is refused and logged; the users read before stay.
    path.write_text(path.read_text() + "mallory:$apr1$abc$def\n")
    assert httpx.get(url, auth=("carol", "carol-pw")).status_code == 200
    log = registry.log_with("MD5")
    assert re.search(r"htpasswd:\d+: user 'mallory' has an MD5 password", log), log


def test_secrets_never_reach_the_log(registry_factory: Factory, tmp_path: Path) -> None:
    registry = registry_factory(token_config(tmp_path))
    realm = f"{registry.url}/token"
    reply = httpx.get(
        realm,
        params={
            "service": "registry.test",
            "scope": "repository:a/b:pull",
            "offline_token": "true",
        },
        auth=("alice", USERS["alice"]),
    ).json()
    httpx.get(f"{registry.url}/v2/", headers={"Authorization": f"Bearer {reply['token']}"})
    httpx.get(realm, params={"service": "registry.test"}, auth=("alice", "a-wrong-password"))
    form = {"grant_type": "password", "username": "bob", "password": USERS["bob"]}
    httpx.post(realm, data={**form, "service": "registry.test", "access_type": "offline"})
    log = registry.log_with('bob "POST /token')
    for secret in (
        USERS["alice"],
        USERS["bob"],
        "a-wrong-password",
        reply["token"],
        reply["refresh_token"],
        reply["token"].split(".")[2],
    ):
        assert secret not in log
    assert 'alice "GET /v2/' in log  # The user is named instead.


def test_refresh_tokens(registry_factory: Factory, tmp_path: Path) -> None:
    """Docker keeps the refresh token from ``docker login`` instead of the password."""
    registry = registry_factory(token_config(tmp_path))
    realm = f"{registry.url}/token"
    login = httpx.get(
        realm,
        params={"service": "registry.test", "offline_token": "true", "client_id": "docker"},
        auth=("alice", USERS["alice"]),
    ).json()
    refresh = login["refresh_token"]
    # Not an access token: the registry refuses it.
    assert_error(
        httpx.get(f"{registry.url}/v2/", headers={"Authorization": f"Bearer {refresh}"}),
        401,
        "UNAUTHORIZED",
    )
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "service": "registry.test",
        "scope": "repository:alice/app:pull,push",
        "client_id": "docker",
    }
    granted = httpx.post(realm, data=form)
    assert granted.status_code == 200, granted.text
    token = granted.json()["access_token"]
    assert granted.json()["scope"] == "repository:alice/app:pull,push"
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        httpx.post(f"{registry.url}/v2/alice/app/blobs/uploads/", headers=headers).status_code
        == 202
    )
    # A password change ends every refresh token issued before it.
    path = tmp_path / "htpasswd"
    htpasswd.write(path, htpasswd.read(path).with_user("alice", htpasswd.hash_password("new")))
    ended = httpx.post(realm, data=form)
    assert ended.status_code == 401
    assert ended.json()["error"] == "invalid_grant"


def test_token_requests_are_checked(registry_factory: Factory, tmp_path: Path) -> None:
    registry = registry_factory(token_config(tmp_path, {"default": {"anonymous": ["pull"]}}))
    realm = f"{registry.url}/token"
    assert httpx.get(realm, params={"service": "another"}).status_code == 400
    anonymous = httpx.get(
        realm, params={"service": "registry.test", "scope": "repository:x/y:pull,push"}
    )
    assert anonymous.status_code == 200
    assert "refresh_token" not in anonymous.json()
    grant = BearerAuth(None)
    with httpx.Client(base_url=registry.url, auth=grant) as client:
        assert client.get("/v2/x/y/tags/list").status_code == 404  # Pull: allowed, no such repo.
        denied = client.post("/v2/x/y/blobs/uploads/")
    assert_error(denied, 401, "UNAUTHORIZED")  # Anonymous: 401, as without credentials.
    unsupported = httpx.post(realm, data={"grant_type": "client_credentials"})
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"
    too_big = httpx.post(realm, content=b"a=" + b"x" * (70 * 1024))
    assert too_big.status_code == 413
    assert httpx.get(realm, headers={"Authorization": "Basic !!"}).status_code == 401


def test_refused_before_the_body_is_read(registry_factory: Factory, tmp_path: Path) -> None:
    """A 401 answered before the body arrives tells the client the connection closes."""
    registry = registry_factory(htpasswd_config(tmp_path))
    with socket.create_connection(("127.0.0.1", registry.port), timeout=30) as connection:
        connection.sendall(
            b"PUT /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        )
        head = connection.recv(65536)
    assert head.startswith(b"HTTP/1.1 401")
    assert re.search(rb"(?im)^connection:\s*close", head)


def test_oversized_authorization_is_refused_cleanly(
    registry_factory: Factory, tmp_path: Path
) -> None:
    registry = registry_factory(token_config(tmp_path))
    response = httpx.get(f"{registry.url}/v2/", headers={"Authorization": "Bearer " + "a" * 12000})
    assert_error(response, 401, "UNAUTHORIZED")
    response = httpx.get(
        f"{registry.url}/v2/", headers={"Authorization": basic("x" * 6000, "y" * 6000)}
    )
    assert_error(response, 401, "UNAUTHORIZED")


def test_clear_text_warning_names_the_fix(registry_factory: Factory, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    exposed = registry_factory(htpasswd_config(tmp_path / "a"), addr="0.0.0.0:0")
    assert "passwords and tokens would cross the network in clear text" in exposed.log()
    assert "registry serve --tls --tls-host NAME" in exposed.log()
    local = registry_factory(htpasswd_config(tmp_path / "b"))
    assert "clear text" not in local.log()


DEBIAN_CONFIG = Path("/etc/docker/registry/config.yml")


def _serve(config: Path, tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "registry", "serve", str(config), "--addr", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "data"),
            **env,
        },
    )


def test_debian_default_config_stops_naming_the_key_and_the_fix(tmp_path: Path) -> None:
    """Debian's file names a folder as the htpasswd file: stop, say which key and what to do."""
    if not DEBIAN_CONFIG.exists():
        pytest.fail(f"{DEBIAN_CONFIG} missing: install it with `apt-get install docker-registry`")
    process = _serve(DEBIAN_CONFIG, tmp_path)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "auth.htpasswd.path: /etc/docker/registry is a folder, not an htpasswd file" in output
    assert "registry users add NAME --file /etc/docker/registry/htpasswd" in output
    assert "Traceback" not in output


def test_a_missing_htpasswd_file_is_made_with_one_user(tmp_path: Path) -> None:
    """registry:2's behaviour: the file appears with user docker and a password shown once."""
    path = tmp_path / "auth" / "htpasswd"
    process = _serve(DEBIAN_CONFIG, tmp_path, REGISTRY_AUTH_HTPASSWD_PATH=str(path))
    assert process.stdout is not None
    lines: list[str] = []
    while not any("listening on" in line for line in lines):
        line = process.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    try:
        output = "".join(lines)
        password = re.search(r"password\n\n    (\S+)\n", output)
        assert password, output
        url = re.search(r"listening on (\S+?)[,\s]", output)
        assert url
        assert (path.stat().st_mode & 0o777) == 0o600
        assert set(htpasswd.read(path).users) == {"docker"}
        answer = httpx.get(f"{url.group(1)}/v2/", auth=("docker", password.group(1)))
        assert answer.status_code == 200
    finally:
        process.terminate()
        rest, _ = process.communicate(timeout=30)
    assert password.group(1) not in rest  # Shown once, never again (nor in the access log).
