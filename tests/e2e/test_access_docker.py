"""Access control as Docker users meet it: ``docker login``, push, pull, run, ``docker logout``.

Every test drives the real engine (the session's private dockerd) against a
real registry process, with each user's credentials in a client configuration
folder of their own (``docker --config``), so what ``docker login`` stores can
be read and no login leaks into another test. Both of registry:2's schemes are
covered: ``auth.htpasswd`` (Basic) and ``auth.token`` with the registry's
built-in token service, where ``docker login`` keeps a refresh token instead of
the password; and an external token server (``token_issuer.py``) the registry
trusts only through its certificate.

What is shown, beyond "it works":

* refusals carry Docker's usual words, so users see what they see with registry:2;
* the ``access`` rules hold per repository, for tokens from any issuer;
* a cross-repository mount needs pull on the source: without it the registry
  opens an ordinary upload (202) and docker uploads the layer itself;
* over HTTPS on a network address nothing warns; over plain HTTP it does;
* tokens not signed by a trusted key are refused whatever their header claims.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.access import USERS, BearerAuth, htpasswd_config, parse_challenge, token_config
from tests.conftest import RegistryProcess
from tools.certs import ensure_server_certificate

from .clients import access_lines, query
from .conftest import DockerEngine, busybox_tar
from .netns import NetworkNamespace, network_namespace
from .test_tls_engines import docker_certs_d
from .token_issuer import ExternalTokenIssuer, certificate, claims, ec_key, sign, x5c

pytestmark = pytest.mark.e2e

MODES = ("htpasswd", "token")
DENIED = "denied: requested access to the resource is denied"
CLEAR_TEXT = "passwords and tokens would cross the network in clear text"

#: The rules of the registries the per-repository tests use.
POLICY: dict[str, object] = {
    "admins": ["admin"],
    "groups": {"dev": ["alice", "bob"]},
    "rules": [
        {"repositories": ["team/**"], "groups": ["dev"], "actions": ["pull", "push", "delete"]},
        {"repositories": ["team/**"], "users": ["reader"], "actions": ["pull"]},
        {"repositories": ["alice/**"], "users": ["alice"], "actions": ["pull", "push"]},
        {"repositories": ["bob/**"], "users": ["bob"], "actions": ["pull", "push"]},
        {"repositories": ["secret/**"], "users": ["bob"], "actions": ["pull"]},
    ],
}


# --- docker, one client configuration per user ---------------------------------------


@dataclass
class DockerUser:
    """The docker CLI with a configuration folder of its own: its logins are its own."""

    engine: DockerEngine
    config: Path

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.engine.docker("--config", str(self.config), *args, check=check)

    def login(
        self, host: str, user: str, password: str | None = None, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        secret = USERS[user] if password is None else password
        result = self.engine.docker(
            "--config", str(self.config), "login", "--username", user, "--password-stdin", host,
            input=secret.encode(), check=check,
        )  # fmt: skip
        if check:
            assert "Login Succeeded" in result.stdout, result.stdout + result.stderr
        return result

    def auths(self) -> dict[str, dict[str, str]]:
        """``config.json``'s ``auths`` (empty when there is no file yet)."""
        path = self.config / "config.json"
        if not path.exists():
            return {}
        auths: dict[str, dict[str, str]] = json.loads(path.read_text()).get("auths", {})
        return auths

    def config_text(self) -> str:
        path = self.config / "config.json"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def users(docker_engine: DockerEngine, tmp_path: Path) -> Callable[[str], DockerUser]:
    """``users(name)``: that user's docker, with an empty configuration of its own."""
    made: dict[str, DockerUser] = {}

    def user(name: str) -> DockerUser:
        if name not in made:
            folder = tmp_path / f"docker-config-{name}"
            folder.mkdir()
            made[name] = DockerUser(docker_engine, folder)
        return made[name]

    return user


def unique_image(engine: DockerEngine, reference: str) -> str:
    """An image of its own (busybox plus a random word in /etc/word); the word is returned.

    Fresh layers per test: the engine remembers where it pushed every layer and
    would otherwise try to mount layers from other tests' repositories.
    """
    word = secrets.token_hex(12)
    engine.import_image(reference, busybox_tar({"etc/word": word.encode()}))
    return word


def pushed_digest(output: str, tag: str) -> str:
    found = re.search(
        rf"^{re.escape(tag)}: digest: (sha256:[0-9a-f]{{64}}) size: \d+$", output, re.M
    )
    assert found, f"no digest for {tag} in:\n{output}"
    return found.group(1)


def push(user: DockerUser, reference: str) -> str:
    """``docker push``; the digest it printed."""
    result = user("push", reference)
    return pushed_digest(result.stdout, reference.rsplit(":", 1)[1])


def pull_and_run(user: DockerUser, reference: str, digest: str, word: str) -> None:
    """Forget the local image, pull it back (the same digest), run it."""
    user("image", "rm", reference)
    assert user("image", "inspect", reference, check=False).returncode != 0
    pulled = user("pull", reference)
    assert f"Digest: {digest}" in pulled.stdout, pulled.stdout
    ran = user("run", "--rm", "--network", "none", reference, "/bin/cat", "/etc/word")
    assert ran.stdout == word


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    for text in words:
        assert text in result.stderr, result.stderr


def refused_anonymous_pull(
    user: DockerUser, registry: RegistryProcess, reference: str, ca: Path | None = None
) -> None:
    """``docker pull`` without a login fails with Docker's words; the registry asks for one."""
    pulled = user("pull", reference, check=False)
    name = reference.split("/", 1)[1].rsplit(":", 1)[0]
    scheme = mode_of(registry)
    if scheme == "htpasswd":
        # Docker gives up on a Basic challenge it has no credentials for.
        refused(pulled, "no basic auth credentials")
    else:
        # An anonymous token grants nothing: the registry answers insufficient_scope.
        refused(pulled, f"pull access denied for {host_of(registry)}/{name}", "docker login")
    assert user("image", "inspect", reference, check=False).returncode != 0
    verify = ssl.create_default_context(cafile=str(ca)) if ca is not None else True
    with httpx.Client(base_url=registry.url, timeout=30, verify=verify) as client:
        anonymous = client.get(f"/v2/{name}/manifests/{reference.rsplit(':', 1)[1]}")
    assert anonymous.status_code == 401, anonymous.text
    challenge, _ = parse_challenge(anonymous.headers["WWW-Authenticate"])
    assert challenge == ("basic" if scheme == "htpasswd" else "bearer")


def remove_images(engine: DockerEngine, *references: str) -> None:
    for reference in references:
        engine.docker("image", "rm", reference, check=False)


def decoded_auth(entry: dict[str, str]) -> str:
    return base64.b64decode(entry["auth"]).decode()


def user_lines(log: str, user: str, method: str, path_pattern: str) -> list[tuple[str, int]]:
    """``access_lines`` of the requests the access log names ``user`` for."""
    named = "\n".join(line for line in log.splitlines() if f" {user} " in line)
    return access_lines(named, method, path_pattern)


# --- registries shared by the tests of a module ------------------------------------


def start_registry(
    workdir: Path,
    config: dict[str, object],
    *,
    addr: str = "127.0.0.1:0",
    wrap: list[str] | None = None,
) -> RegistryProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = {"storage": {"filesystem": {"rootdirectory": str(workdir / "data")}}, **config}
    return RegistryProcess(workdir, config, wrap=list(wrap or [])).start(addr)


def auth_config(
    mode: str, folder: Path, access: dict[str, object] | None = None, **options: str
) -> dict[str, object]:
    if mode == "htpasswd":
        return htpasswd_config(folder, access)
    return token_config(folder, access, **options)


@pytest.fixture(scope="module", params=MODES)
def open_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    """Authentication without an ``access`` section: registry:2's rule (users may do anything)."""
    workdir = tmp_path_factory.mktemp(f"open-{request.param}")
    registry = start_registry(workdir, auth_config(request.param, workdir))
    yield registry
    registry.stop()


@pytest.fixture(scope="module", params=MODES)
def ruled_registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryProcess]:
    """Authentication with POLICY's per-repository rules."""
    workdir = tmp_path_factory.mktemp(f"ruled-{request.param}")
    registry = start_registry(workdir, auth_config(request.param, workdir, POLICY))
    yield registry
    registry.stop()


def mode_of(registry: RegistryProcess) -> str:
    auth = registry.config["auth"]
    assert isinstance(auth, dict)
    return "htpasswd" if "htpasswd" in auth else "token"


def host_of(registry: RegistryProcess) -> str:
    return registry.url.split("://", 1)[1]


def admin_client(registry: RegistryProcess) -> httpx.Client:
    auth: httpx.Auth
    if mode_of(registry) == "htpasswd":
        auth = httpx.BasicAuth("admin", USERS["admin"])
    else:
        auth = BearerAuth("admin", USERS["admin"])
    return httpx.Client(base_url=registry.url, auth=auth, timeout=30)


def layer_digests(registry: RegistryProcess, name: str, tag: str) -> list[str]:
    with admin_client(registry) as client:
        response = client.get(
            f"/v2/{name}/manifests/{tag}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
    assert response.status_code == 200, response.text
    return [layer["digest"] for layer in response.json()["layers"]]


# --- 1, 2: login, push, pull, run, logout on localhost -----------------------------


def test_login_push_pull_run_logout(
    open_registry: RegistryProcess, users: Callable[[str], DockerUser], docker_engine: DockerEngine
) -> None:
    mode = mode_of(open_registry)
    host = host_of(open_registry)
    alice = users("alice")
    reference = f"{host}/plain/app:1"

    wrong = alice.login(host, "alice", "not-the-password", check=False)
    if mode == "htpasswd":
        refused(wrong, f"login attempt to http://{host}/v2/ failed with status: 401 Unauthorized")
    else:
        refused(wrong, "unauthorized: incorrect username or password")
    assert alice.auths() == {}, "a failed login stores nothing"

    start = len(open_registry.log())
    alice.login(host, "alice")
    auths = alice.auths()
    assert list(auths) == [host], "credentials for this registry only"
    if mode == "htpasswd":
        assert decoded_auth(auths[host]) == f"alice:{USERS['alice']}"
        assert "identitytoken" not in auths[host]
    else:
        # The password is traded for a refresh token at login and never stored.
        assert decoded_auth(auths[host]) == "alice:"
        refresh = auths[host]["identitytoken"]
        assert jwt.decode(refresh, options={"verify_signature": False})["sub"] == "alice"
        assert USERS["alice"] not in alice.config_text()
        assert base64.b64encode(USERS["alice"].encode()).decode() not in alice.config_text()

    word = unique_image(docker_engine, reference)
    digest = push(alice, reference)
    pull_and_run(alice, reference, digest, word)
    log = open_registry.log()[start:]
    assert user_lines(log, "alice", "PUT", r"^/v2/plain/app/manifests/1$") == [
        ("/v2/plain/app/manifests/1", 201)
    ]
    assert user_lines(log, "alice", "GET", r"^/v2/plain/app/blobs/"), "pulled as alice"
    if mode == "token":
        # After login docker signs in with the refresh token (POST, grant_type=refresh_token):
        # the only GET with the password is the login's own.
        refreshes = user_lines(log, "alice", "POST", r"^/token$")
        assert len(refreshes) >= 2 and all(status == 200 for _, status in refreshes), refreshes
        logins = user_lines(log, "alice", "GET", r"^/token\?")
        assert len(logins) == 1 and query(logins[0][0])["offline_token"] == "true", logins

    logout = alice("logout", host)
    assert f"Removing login credentials for {host}" in logout.stdout
    assert alice.auths() == {}

    alice("image", "rm", reference)
    refused_anonymous_pull(alice, open_registry, reference)


# --- 4: per-repository rules --------------------------------------------------------


def test_rules_decide_per_repository(
    ruled_registry: RegistryProcess, users: Callable[[str], DockerUser], docker_engine: DockerEngine
) -> None:
    host = host_of(ruled_registry)
    alice, reader = users("alice"), users("reader")
    alice.login(host, "alice")
    reader.login(host, "reader")

    # alice (group dev) pushes to team/**, nowhere else.
    team = f"{host}/team/x:1"
    word = unique_image(docker_engine, team)
    digest = push(alice, team)
    other = f"{host}/other/x:1"
    alice("tag", team, other)
    refused(alice("push", other, check=False), DENIED)

    # reader pulls team/** but may not push there, not even a tag of what is already there.
    start = len(ruled_registry.log())
    by_reader = f"{host}/team/x:by-reader"
    reader("tag", team, by_reader)
    refused(reader("push", by_reader, check=False), DENIED)
    log = ruled_registry.log()[start:]
    writes = [
        line
        for method in ("POST", "PATCH", "PUT")
        for line in user_lines(log, "reader", method, "^/v2/")
    ]
    assert writes and all(status == 403 for _, status in writes), writes
    pull_and_run(reader, team, digest, word)
    pulls = user_lines(
        ruled_registry.log()[start:], "reader", "GET", r"^/v2/team/x/(manifests|blobs)/"
    )
    assert pulls and all(status == 200 for _, status in pulls), pulls

    with admin_client(ruled_registry) as client:
        assert client.get("/v2/team/x/tags/list").json()["tags"] == ["1"]
        assert client.get("/v2/other/x/tags/list").status_code == 404
    remove_images(docker_engine, team, other, by_reader)


# --- 5: a mount needs pull on the source --------------------------------------------


def test_mount_needs_pull_on_the_source(
    ruled_registry: RegistryProcess, users: Callable[[str], DockerUser], docker_engine: DockerEngine
) -> None:
    host = host_of(ruled_registry)
    admin, bob, alice = users("admin"), users("bob"), users("alice")
    for name in ("admin", "bob", "alice"):
        users(name).login(host, name)

    secret = f"{host}/secret/app:1"
    unique_image(docker_engine, secret)
    assert "Pushed" in admin("push", secret).stdout
    layers = layer_digests(ruled_registry, "secret/app", "1")
    assert len(layers) == 1
    layer = layers[0]

    # bob may pull secret/**: docker mounts the layer from there, nothing is uploaded.
    start = len(ruled_registry.log())
    mine = f"{host}/bob/app:1"
    bob("tag", secret, mine)
    pushed = bob("push", mine).stdout
    assert "Mounted from secret/app" in pushed and "Pushed" not in pushed, pushed
    log = ruled_registry.log()[start:]
    mounts = user_lines(log, "bob", "POST", r"^/v2/bob/app/blobs/uploads/\?")
    assert [(query(path)["from"], query(path)["mount"], status) for path, status in mounts] == [
        ("secret/app", layer, 201)
    ]
    uploads = user_lines(log, "bob", "PUT", r"^/v2/bob/app/blobs/uploads/")
    assert layer not in [query(path)["digest"] for path, _ in uploads]

    # alice may not pull secret/** (nor bob/**): each mount she asks for opens an
    # ordinary upload (202), and docker uploads the layer itself.
    start = len(ruled_registry.log())
    hers = f"{host}/alice/app:1"
    alice("tag", secret, hers)
    pushed = alice("push", hers).stdout
    assert "Pushed" in pushed and "Mounted from" not in pushed, pushed
    log = ruled_registry.log()[start:]
    mounts = user_lines(log, "alice", "POST", r"^/v2/alice/app/blobs/uploads/\?")
    assert mounts and all(status == 202 for _, status in mounts), mounts
    assert ("secret/app", layer) in [
        (query(path)["from"], query(path)["mount"]) for path, _ in mounts
    ]
    uploads = user_lines(log, "alice", "PUT", r"^/v2/alice/app/blobs/uploads/")
    assert (layer, 201) in [(query(path)["digest"], status) for path, status in uploads], uploads
    lines = log.splitlines()
    mount_line = next(i for i, line in enumerate(lines) if "from=secret%2Fapp" in line)
    upload_line = next(
        i for i, line in enumerate(lines) if f"digest={layer.replace(':', '%3A')}" in line
    )
    assert mount_line < upload_line, "the layer is uploaded after the refused mount"
    assert layer_digests(ruled_registry, "alice/app", "1") == [layer]

    # And she cannot read secret/app directly either.
    alice("image", "rm", secret)
    refused(alice("pull", secret, check=False), DENIED)
    remove_images(docker_engine, mine, hers)


# --- 3: HTTPS on a network address ------------------------------------------------------


@pytest.fixture(scope="module")
def namespace() -> Iterator[NetworkNamespace]:
    with network_namespace() as netns:
        yield netns


@contextlib.contextmanager
def docker_trusts(entry: str, ca_cert: Path) -> Iterator[None]:
    """``/etc/docker/certs.d/ENTRY/ca.crt`` (what dockerd reads at every request); removed
    after, as tests/e2e/test_tls_engines.py's ``docker_certs_d`` removes what it made."""
    with docker_certs_d(entry) as target:
        target.mkdir(parents=True)
        shutil.copy(ca_cert, target / "ca.crt")
        yield


def free_port_in(netns: NetworkNamespace) -> int:
    """A free port on the namespace's address (only this module's registries listen there)."""
    probe = (
        "import socket; s = socket.socket(); "
        f"s.bind(({netns.address!r}, 0)); print(s.getsockname()[1])"
    )
    return int(netns.run(sys.executable, "-c", probe).stdout)


def network_config(
    mode: str, folder: Path, scheme: str, netns: NetworkNamespace, port: int
) -> dict[str, object]:
    """``auth`` for a registry on ``netns``'s address; the token realm is named explicitly."""
    realm = f"{scheme}://{netns.address}:{port}/token"
    return (
        auth_config(mode, folder, None, realm=realm)
        if mode == "token"
        else auth_config(mode, folder)
    )


@pytest.mark.parametrize("mode", MODES)
def test_https_on_a_network_address(
    mode: str,
    namespace: NetworkNamespace,
    users: Callable[[str], DockerUser],
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    tls = ensure_server_certificate(
        tmp_path / "certs", [namespace.address], include_default_hosts=False
    )
    port = free_port_in(namespace)
    config = network_config(mode, tmp_path, "https", namespace, port)
    config["http"] = {"tls": {"certificate": str(tls.server_cert), "key": str(tls.server_key)}}
    entry = f"{namespace.address}:{port}"
    reference = f"{entry}/tls/app:1"
    registry = start_registry(tmp_path / "registry", config, addr=entry, wrap=namespace.prefix())
    try:
        assert registry.url == f"https://{entry}"
        assert CLEAR_TEXT not in registry.log(), registry.log()
        bob = users("bob")
        word = unique_image(docker_engine, reference)
        with docker_trusts(entry, tls.ca_cert):
            bob.login(entry, "bob")
            assert list(bob.auths()) == [entry]
            digest = push(bob, reference)
            pull_and_run(bob, reference, digest, word)
            bob("logout", entry)
            assert bob.auths() == {}
            bob("image", "rm", reference)
            refused_anonymous_pull(bob, registry, reference, tls.ca_cert)
        log = registry.log()
        assert user_lines(log, "bob", "PUT", r"^/v2/tls/app/manifests/1$") == [
            ("/v2/tls/app/manifests/1", 201)
        ]
        if mode == "token":
            assert user_lines(log, "bob", "GET", r"^/token\?"), "the token service over HTTPS"
        assert CLEAR_TEXT not in log
    finally:
        registry.stop()
        remove_images(docker_engine, reference)


@pytest.mark.parametrize("mode", MODES)
def test_plain_http_on_a_network_address_warns_of_clear_text(
    mode: str, namespace: NetworkNamespace, tmp_path: Path
) -> None:
    port = free_port_in(namespace)
    config = network_config(mode, tmp_path, "http", namespace, port)
    registry = start_registry(
        tmp_path / "registry", config, addr=f"{namespace.address}:{port}", wrap=namespace.prefix()
    )
    registry.stop()
    warnings = [line for line in registry.log().splitlines() if CLEAR_TEXT in line]
    assert len(warnings) == 1, registry.log()
    assert " WARNING " in warnings[0] and f"http://{namespace.address}:{port}" in warnings[0]


# --- 6: an external token server -------------------------------------------------------


#: What the external issuer grants; bob gets push on team/*, which the registry's rules deny.
ISSUER_GRANTS = {
    "admin": {"*": ["pull", "push", "delete"]},
    "alice": {"team/*": ["pull", "push", "delete"]},
    "bob": {"team/*": ["pull", "push"]},
}
#: The registry's own rules: bob may only pull team/**.
EXTERNAL_POLICY: dict[str, object] = {
    "admins": ["admin"],
    "groups": {"dev": ["alice"]},
    "rules": [
        {"repositories": ["team/**"], "groups": ["dev"], "actions": ["pull", "push", "delete"]},
        {"repositories": ["team/**"], "users": ["bob"], "actions": ["pull"]},
    ],
}


@dataclass
class External:
    issuer: ExternalTokenIssuer
    registry: RegistryProcess


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    folder = tmp_path_factory.mktemp("external-issuer")
    issuer = ExternalTokenIssuer(folder / "issuer", USERS, ISSUER_GRANTS).start()
    try:
        config: dict[str, object] = {"auth": issuer.registry_auth(), "access": EXTERNAL_POLICY}
        registry = start_registry(folder / "registry", config)
        try:
            yield External(issuer, registry)
        finally:
            registry.stop()
    finally:
        issuer.stop()


def test_external_issuer_docker_login_push_pull(
    external: External, users: Callable[[str], DockerUser], docker_engine: DockerEngine
) -> None:
    registry, issuer = external.registry, external.issuer
    host = host_of(registry)
    alice, bob = users("alice"), users("bob")

    before = len(issuer.issued)
    refused(alice.login(host, "alice", "wrong", check=False), "incorrect username or password")
    assert [entry.status for entry in issuer.issued[before:]] == [401], "the issuer said no"
    alice.login(host, "alice")
    # No refresh token offered: docker keeps the password, as with any such token server.
    assert decoded_auth(alice.auths()[host]) == f"alice:{USERS['alice']}"
    reference = f"{host}/team/ext:1"
    word = unique_image(docker_engine, reference)
    digest = push(alice, reference)
    pull_and_run(alice, reference, digest, word)
    assert any(
        entry.user == "alice" and ("repository", "team/ext", ("push", "pull")) in entry.access
        for entry in issuer.issued
    ), issuer.issued

    # bob's tokens from the issuer grant push on team/*; the registry's rules say pull only.
    bob.login(host, "bob")
    start = len(registry.log())
    mine = f"{host}/team/ext:by-bob"
    bob("tag", reference, mine)
    refused(bob("push", mine, check=False), DENIED)
    assert any(
        entry.user == "bob" and ("repository", "team/ext", ("push", "pull")) in entry.access
        for entry in issuer.issued
    ), "the issuer granted bob push; the registry refused it"
    # A request's access-log line follows its response.
    log = registry.log_with("PUT /v2/team/ext/manifests/by-bob")[start:]
    # The layers are there (bob may see them): only the manifest is sent, and refused.
    assert user_lines(log, "bob", "PUT", r"^/v2/team/ext/") == [
        ("/v2/team/ext/manifests/by-bob", 403)
    ]
    pull_and_run(bob, reference, digest, word)
    remove_images(docker_engine, reference, mine)


def test_external_token_cannot_grant_more_than_the_rules(external: External) -> None:
    registry, issuer = external.registry, external.issuer
    token = issuer.token_for("bob", ["repository:team/x:pull,push"])
    access = jwt.decode(token, options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "team/x", "actions": ["pull", "push"]}]
    with httpx.Client(base_url=registry.url, timeout=30) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        # Pull is the rules' and the token's: allowed (nothing there yet: 404).
        read = client.get("/v2/team/x/manifests/1", headers=bearer)
        assert read.status_code == 404, read.text
        upload = client.post("/v2/team/x/blobs/uploads/", headers=bearer)
        assert upload.status_code == 403, upload.text
        assert upload.json()["errors"][0]["code"] == "DENIED"
        # The same kind of token for a user the rules allow to push: accepted.
        admin = issuer.token_for("admin", ["repository:team/x:pull,push"])
        accepted = client.post(
            "/v2/team/x/blobs/uploads/", headers={"Authorization": f"Bearer {admin}"}
        )
        assert accepted.status_code == 202, accepted.text


FORGED_REQUESTS = (
    ("GET", "/v2/"),
    ("GET", "/v2/team/forged/manifests/latest"),
    ("POST", "/v2/team/forged/blobs/uploads/"),
)


def test_forged_tokens_are_refused(external: External) -> None:
    """Claims granting ``*``, right iss, aud and exp, signed by anything but the issuer's key."""
    registry, issuer = external.registry, external.issuer
    payload = claims(
        "admin",
        [
            {"type": "repository", "name": "team/forged", "actions": ["*"]},
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ],
        issuer=issuer.issuer,
        service=issuer.service,
    )
    attacker = ec_key()
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key()))
    attacker_ca_key, leaf_key = ec_key(), ec_key()
    attacker_ca = certificate(attacker_ca_key, "attacker CA")
    leaf = certificate(
        leaf_key, "attacker token signer", issuer=attacker_ca, issuer_key=attacker_ca_key, ca=False
    )
    forged = {
        # CVE-2025-24976: the key the token carries must never be the one that checks it.
        "own key in jwk": sign(payload, attacker, jwk=jwk),
        "trusted kid, attacker's signature": sign(payload, attacker, kid=issuer.kid),
        "x5c of a CA not in the bundle": sign(payload, leaf_key, x5c=x5c(leaf, attacker_ca)),
    }
    genuine = sign(payload, issuer.key, kid=issuer.kid)
    with httpx.Client(base_url=registry.url, timeout=30) as client:

        def send(token: str, method: str, path: str) -> httpx.Response:
            return client.request(method, path, headers={"Authorization": f"Bearer {token}"})

        for name, token in forged.items():
            for method, path in FORGED_REQUESTS:
                response = send(token, method, path)
                assert response.status_code == 401, (name, method, path, response.text)
                scheme, params = parse_challenge(response.headers["WWW-Authenticate"])
                assert (scheme, params.get("error")) == ("bearer", "invalid_token"), (name, params)
                assert params["realm"] == issuer.realm
                assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
        # The same claims signed by the trusted key: every request goes through.
        statuses = [send(genuine, method, path).status_code for method, path in FORGED_REQUESTS]
        assert statuses == [200, 404, 202]
