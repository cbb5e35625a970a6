"""Access control with real clients: podman, skopeo and oras-py, against Basic users and tokens.

Every test runs twice: with ``auth.htpasswd`` (the clients answer a Basic
challenge) and with ``auth.token`` served by the registry's own token service
(the clients fetch a token from the realm, then retry). The ``access`` rules
are the same in both modes; the users are ``tests.access.USERS``:

* ``admin`` may do everything everywhere;
* ``alice`` and ``bob`` (group ``dev``) may pull, push and delete under ``team/``;
  ``alice`` may also pull and push her own ``alice/*``;
* ``reader`` may only pull, under ``team/`` and ``library/*``;
* anonymous callers get nothing (except, in the one test that says so, ``public/*``).

Clients keep their credentials in files of the test's own (podman's and skopeo's
``--authfile``/``REGISTRY_AUTH_FILE``, oras-py's ``config_path``), never the
machine's. What the registry decided is read back from its access log, which
names the user of every request (also a refused one).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.access import USERS, BearerAuth, htpasswd_config, parse_challenge, token_config
from tests.conftest import RegistryProcess

from . import images
from .clients import DOCKER_ACCEPT, ContainersTools, Podman, containers_tools, run
from .needs import require

pytestmark = pytest.mark.e2e

try:
    import oras.provider as oras_provider
except ImportError:  # pragma: no cover - the test extra installs it
    if os.environ.get("E2E_REQUIRED") == "1":
        raise
    pytest.skip(
        "oras not found: install it with `pip install -e '.[test]'`", allow_module_level=True
    )

MODES = ("htpasswd", "token")
PLAIN = "--tls-verify=false"

RULES: list[dict[str, object]] = [
    {"repositories": ["team/**"], "groups": ["dev"], "actions": ["pull", "push", "delete"]},
    {"repositories": ["alice/*"], "users": ["alice"], "actions": ["pull", "push"]},
    {"repositories": ["team/**", "library/*"], "users": ["reader"], "actions": ["pull"]},
]
ACCESS: dict[str, object] = {
    "admins": ["admin"],
    "groups": {"dev": ["alice", "bob"]},
    "rules": RULES,
}
PUBLIC_RULE: dict[str, object] = {
    "repositories": ["public/*"],
    "anonymous": True,
    "actions": ["pull"],
}

#: The registry's own words for a wrong password, as the clients pass them on.
WRONG_PASSWORD = {
    "htpasswd": "unauthorized: invalid username or password",
    "token": "unauthorized: incorrect username or password",
}
NO_CREDENTIALS = "unauthorized: authentication required"
DENIED = "denied: requested access to the resource is denied"

_ACCESS_LINE = re.compile(
    r'registry\.access\[\d+\]: \S+ (\S+) "([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) '
)

StartRegistry = Callable[..., RegistryProcess]


def access_config(mode: str, folder: Path, access: dict[str, object]) -> dict[str, object]:
    """``auth`` and ``access`` for ``mode``, with their files (users, token key) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "htpasswd":
        return htpasswd_config(folder, access)
    return token_config(folder, access)


def host_of(registry: RegistryProcess) -> str:
    return registry.url.removeprefix("http://")


def http_auth(mode: str, user: str, password: str | None = None) -> httpx.Auth:
    """How ``user`` signs in with httpx: Basic, or a token from the realm."""
    password = USERS[user] if password is None else password
    if mode == "htpasswd":
        return httpx.BasicAuth(user, password)
    return BearerAuth(user, password)


def admin_client(registry: RegistryProcess, mode: str) -> httpx.Client:
    return httpx.Client(base_url=registry.url, auth=http_auth(mode, "admin"), timeout=30)


def tags_of(registry: RegistryProcess, mode: str, name: str) -> list[str]:
    """The tags of ``name`` as the admin sees them."""
    with admin_client(registry, mode) as http:
        response = http.get(f"/v2/{name}/tags/list")
    assert response.status_code == 200, response.text
    return sorted(response.json()["tags"])


def served_digest(registry: RegistryProcess, mode: str, name: str, reference: str) -> str:
    """The digest the registry serves for ``name:reference`` (asked as the admin)."""
    with admin_client(registry, mode) as http:
        response = http.head(f"/v2/{name}/manifests/{reference}", headers={"Accept": DOCKER_ACCEPT})
    assert response.status_code == 200, f"HEAD {name}:{reference}: {response.status_code}"
    return str(response.headers["Docker-Content-Digest"])


def logged(
    registry: RegistryProcess, method: str, path: str, *, since: int = 0
) -> list[tuple[str, int]]:
    """(user, status) of each access-log line (from offset ``since``) for a matching request.

    ``method`` and ``path`` are regular expressions; the user is ``-`` for an anonymous caller.
    """
    found = []
    for line in registry.log()[since:].splitlines():
        match = _ACCESS_LINE.search(line)
        if match and re.fullmatch(method, match.group(2)) and re.search(path, match.group(3)):
            found.append((match.group(1), int(match.group(4))))
    return found


def assert_logged(
    registry: RegistryProcess,
    method: str,
    path: str,
    expected: tuple[str, int],
    *,
    since: int = 0,
) -> list[tuple[str, int]]:
    """:func:`logged`, after checking ``expected`` is among the entries.

    A worker writes its line just after the reply, so a client that stops at a
    refusal (or ends with that request) may exit before the line is there: the
    log is read again for a few seconds before the check fails.
    """
    for _ in range(100):
        found = logged(registry, method, path, since=since)
        if expected in found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {expected} for {method} {path} in the access log: {found}")


def failed_logins(registry: RegistryProcess, user: str) -> int:
    """How many times the registry logged a wrong password for ``user``."""
    return registry.log().count(f"failed login as {user!r}")


def skopeo(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """skopeo with an auth file of the test's own (absent: no stored credentials)."""
    return run(
        [require("skopeo", "skopeo"), *args],
        check=check,
        env={"REGISTRY_AUTH_FILE": str(folder / "skopeo-auth.json")},
    )


def creds(user: str, password: str | None = None) -> str:
    return f"{user}:{USERS[user] if password is None else password}"


def content(label: str) -> images.Image:
    """A small two-layer OCI image of its own: ``label`` makes its digests unique."""
    return images.image(
        [{"etc/access/base.txt": b"base layer\n"}, {f"etc/access/{label}.txt": label.encode()}]
    )


def layout_of(folder: Path, tag: str, image: images.Image) -> str:
    """An OCI layout holding ``image`` as ``tag``; returns skopeo's ``oci:`` reference."""
    layout = images.Layout(folder / f"layout-{tag}", {tag: image}).write()
    return f"oci:{layout.path}:{tag}"


def layout_digest(path: Path) -> str:
    """The digest of the one manifest an OCI layout names."""
    entries = json.loads((path / "index.json").read_text())["manifests"]
    assert len(entries) == 1, entries
    return str(entries[0]["digest"])


def podman_login(
    podman: Podman, host: str, user: str, password: str, authfile: Path
) -> subprocess.CompletedProcess[str]:
    """``podman login --password-stdin`` into ``authfile``: the password never is an argument."""
    return subprocess.run(
        [
            podman.binary,
            *podman.args(),
            "login",
            PLAIN,
            "--authfile",
            str(authfile),
            "--username",
            user,
            "--password-stdin",
            host,
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )


def stored_auths(authfile: Path) -> dict[str, object]:
    if not authfile.exists():
        return {}
    auths: dict[str, object] = json.loads(authfile.read_text()).get("auths", {})
    return auths


def oras_client(mode: str, host: str) -> oras_provider.Registry:
    """oras-py over plain HTTP, with the auth backend that answers ``mode``'s challenge."""
    backend = "basic" if mode == "htpasswd" else "token"
    return oras_provider.Registry(hostname=host, insecure=True, auth_backend=backend)


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def registry(mode: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One registry per mode for the tests that use repositories of their own (two workers)."""
    workdir = tmp_path_factory.mktemp(f"access-{mode}")
    config = {
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}},
        **access_config(mode, workdir / "auth", ACCESS),
    }
    process = RegistryProcess(workdir, config, workers=2)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def tools(tmp_path: Path) -> Iterator[ContainersTools]:
    yield from containers_tools(tmp_path)


def test_podman_login_push_pull_logout(
    mode: str, registry: RegistryProcess, tools: ContainersTools, tmp_path: Path
) -> None:
    host = host_of(registry)
    authfile = tmp_path / "podman-auth.json"
    builder = tools.podman("builder")

    refused = podman_login(builder, host, "alice", "not-" + USERS["alice"], authfile)
    assert refused.returncode != 0
    assert f'logging into "{host}": invalid username/password' in refused.stderr
    assert host not in stored_auths(authfile)

    accepted = podman_login(builder, host, "alice", USERS["alice"], authfile)
    assert accepted.returncode == 0, accepted.stderr
    assert "Login Succeeded" in accepted.stdout
    stored = stored_auths(authfile)[host]
    assert isinstance(stored, dict)
    assert base64.b64decode(stored["auth"]).decode() == creds("alice")

    # An image built here (FROM scratch: nothing to fetch), pushed with the stored login.
    context = tmp_path / "context"
    context.mkdir()
    (context / "hello.txt").write_text(f"built by podman, {mode}\n")
    (context / "Containerfile").write_text(
        "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL made-by=podman-build\n"
    )
    reference = f"{host}/team/podman:v1"
    builder("build", "--format", "oci", "--tag", reference, str(context))
    digest_file = tmp_path / "pushed.digest"
    builder("push", PLAIN, "--authfile", str(authfile), "--digestfile", str(digest_file), reference)
    pushed = digest_file.read_text().strip()
    assert served_digest(registry, mode, "team/podman", "v1") == pushed
    assert_logged(registry, "PUT", r"^/v2/team/podman/manifests/v1$", ("alice", 201))

    # Pulled back on a storage of its own, with the same login.
    puller = tools.podman("puller")
    puller("pull", PLAIN, "--authfile", str(authfile), reference)
    inspected = json.loads(puller("image", "inspect", reference).stdout)[0]
    assert inspected["Digest"] == pushed
    assert inspected["Labels"]["made-by"] == "podman-build"

    logout = puller("logout", "--authfile", str(authfile), host)
    assert "Removed login credentials" in logout.stdout
    assert host not in stored_auths(authfile)
    # Nothing stored any more: a fresh storage cannot pull, the registry asked for a login.
    since = len(registry.log())
    late = tools.podman("late")("pull", PLAIN, "--authfile", str(authfile), reference, check=False)
    assert late.returncode != 0
    assert NO_CREDENTIALS in late.stderr, late.stderr
    after = assert_logged(registry, "GET", "^/v2/team/podman/", ("-", 401), since=since)
    assert after and set(after) == {("-", 401)}, after


def test_skopeo_with_credentials(mode: str, registry: RegistryProcess, tmp_path: Path) -> None:
    host = host_of(registry)
    image = content(f"skopeo-{mode}")
    source = layout_of(tmp_path, "v1", image)
    target = f"docker://{host}/team/skopeo:v1"

    skopeo(
        tmp_path, "copy", "--dest-tls-verify=false", "--dest-creds", creds("alice"), source, target
    )
    assert served_digest(registry, mode, "team/skopeo", "v1") == image.digest
    assert_logged(registry, "PUT", r"^/v2/team/skopeo/manifests/v1$", ("alice", 201))

    inspected = json.loads(
        skopeo(tmp_path, "inspect", PLAIN, "--creds", creds("alice"), target).stdout
    )
    assert inspected["Digest"] == image.digest
    assert inspected["Layers"] == [layer.digest for layer in image.layers]
    listed = json.loads(
        skopeo(
            tmp_path, "list-tags", PLAIN, "--creds", creds("bob"), f"docker://{host}/team/skopeo"
        ).stdout
    )
    assert listed["Tags"] == ["v1"]

    back = tmp_path / "back"
    skopeo(
        tmp_path,
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds("alice"),
        target,
        f"oci:{back}:v1",
    )
    assert layout_digest(back) == image.digest
    assert (back / "blobs" / "sha256" / image.digest.removeprefix("sha256:")).read_bytes() == (
        image.manifest
    )

    # A wrong password: the registry's 401, through skopeo.
    wrong = creds("alice", "not-" + USERS["alice"])
    before = failed_logins(registry, "alice")
    failed = skopeo(tmp_path, "inspect", PLAIN, "--creds", wrong, target, check=False)
    assert failed.returncode != 0
    assert WRONG_PASSWORD[mode] in failed.stderr, failed.stderr
    assert failed_logins(registry, "alice") > before
    before = failed_logins(registry, "alice")
    other = content(f"skopeo-wrong-{mode}")
    failed = skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        wrong,
        layout_of(tmp_path, "wrong", other),
        f"docker://{host}/team/skopeo:wrong",
        check=False,
    )
    assert failed.returncode != 0
    # The first refusal is a HEAD (is the blob there?): no body, so no message but the status.
    assert "unauthorized" in failed.stderr, failed.stderr
    assert failed_logins(registry, "alice") > before

    # No credentials at all: a challenge, for reads and writes alike.
    for args in (
        ("inspect", PLAIN, target),
        ("list-tags", PLAIN, f"docker://{host}/team/skopeo"),
        (
            "copy",
            "--dest-tls-verify=false",
            layout_of(tmp_path, "anonymous", other),
            f"docker://{host}/team/skopeo:anonymous",
        ),
    ):
        since = len(registry.log())
        failed = skopeo(tmp_path, *args, check=False)
        assert failed.returncode != 0
        # A refused HEAD has no body: then skopeo can only tell the status.
        assert NO_CREDENTIALS in failed.stderr or "HTTP 401" in failed.stderr, failed.stderr
        refused = assert_logged(registry, "[A-Z]+", "^/v2/team/skopeo/", ("-", 401), since=since)
        assert refused and set(refused) == {("-", 401)}, (args, refused)
    assert tags_of(registry, mode, "team/skopeo") == ["v1"]
    written = [entry for entry in logged(registry, "PUT", r"^/v2/team/skopeo/") if entry[1] < 300]
    assert written and {user for user, _ in written} == {"alice"}, written


def test_pull_only_user_cannot_push(mode: str, registry: RegistryProcess, tmp_path: Path) -> None:
    host = host_of(registry)
    shared, attempt = content(f"shared-{mode}"), content(f"reader-{mode}")
    skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds("alice"),
        layout_of(tmp_path, "v1", shared),
        f"docker://{host}/team/shared:v1",
    )

    # reader may pull team/**, not push there: new blobs, then the manifest, are refused.
    refused = skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds("reader"),
        layout_of(tmp_path, "reader", attempt),
        f"docker://{host}/team/shared:reader",
        check=False,
    )
    assert refused.returncode != 0
    assert DENIED in refused.stderr, refused.stderr
    assert_logged(registry, "POST", r"^/v2/team/shared/blobs/uploads/", ("reader", 403))
    assert tags_of(registry, mode, "team/shared") == ["v1"]
    with admin_client(registry, mode) as http:
        layer = http.head(f"/v2/team/shared/blobs/{attempt.layers[-1].digest}")
    assert layer.status_code == 404

    # The same content pushed by alice already: only the manifest is left to refuse.
    refused = skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds("reader"),
        layout_of(tmp_path, "again", shared),
        f"docker://{host}/team/shared:again",
        check=False,
    )
    assert refused.returncode != 0
    assert DENIED in refused.stderr, refused.stderr
    assert_logged(registry, "PUT", r"^/v2/team/shared/manifests/again$", ("reader", 403))
    assert tags_of(registry, mode, "team/shared") == ["v1"]

    # Pulling is what reader may do.
    pulled = tmp_path / "pulled"
    skopeo(
        tmp_path,
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds("reader"),
        f"docker://{host}/team/shared:v1",
        f"oci:{pulled}:v1",
    )
    assert layout_digest(pulled) == shared.digest
    assert_logged(registry, "GET", r"^/v2/team/shared/manifests/v1$", ("reader", 200))
    # Outside the rules that name reader, not even that.
    skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds("alice"),
        layout_of(tmp_path, "mine", shared),
        f"docker://{host}/alice/private:v1",
    )
    hidden = skopeo(
        tmp_path,
        "inspect",
        PLAIN,
        "--creds",
        creds("reader"),
        f"docker://{host}/alice/private:v1",
        check=False,
    )
    assert hidden.returncode != 0
    assert DENIED in hidden.stderr, hidden.stderr


def test_oras_push_and_pull_with_credentials(
    mode: str, registry: RegistryProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = host_of(registry)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(f"notes pushed by oras-py as alice ({mode})\n".encode())
    config_path = tmp_path / "oras-config.json"

    alice = oras_client(mode, host)
    # Without docker-py, oras-py's login only writes the credentials to config_path.
    login = alice.login("alice", USERS["alice"], hostname=host, config_path=str(config_path))
    assert login == {"Status": "Login Succeeded"}
    assert host in stored_auths(config_path)
    pushed = alice.push(
        f"{host}/team/oras/notes:v1",
        files=[f"{notes}:text/plain"],
        disable_path_validation=True,
        config_path=str(config_path),
    )
    assert pushed.status_code == 201
    assert_logged(registry, "PUT", r"^/v2/team/oras/notes/manifests/v1$", ("alice", 201))
    # A second repository with the same client. With tokens, the one it holds is for the
    # first: the registry answers 403 with insufficient_scope, and oras-py gets a new one.
    again = alice.push(
        f"{host}/team/oras/copy:v1",
        files=[f"{notes}:text/plain"],
        disable_path_validation=True,
        config_path=str(config_path),
    )
    assert again.status_code == 201
    files = alice.pull(f"{host}/team/oras/notes:v1", outdir=str(tmp_path / "alice"))
    assert [Path(f).read_bytes() for f in files] == [notes.read_bytes()]

    # Another client with nothing but the stored login.
    stored = oras_client(mode, host)
    files = stored.pull(
        f"{host}/team/oras/copy:v1", outdir=str(tmp_path / "stored"), config_path=str(config_path)
    )
    assert [Path(f).read_bytes() for f in files] == [notes.read_bytes()]

    # reader pulls, but its push is refused (DENIED) and leaves no tag.
    reader = oras_client(mode, host)
    reader.auth.set_basic_auth("reader", USERS["reader"])
    files = reader.pull(f"{host}/team/oras/notes:v1", outdir=str(tmp_path / "reader"))
    assert [Path(f).read_bytes() for f in files] == [notes.read_bytes()]
    assert_logged(registry, "GET", r"^/v2/team/oras/notes/manifests/v1$", ("reader", 200))
    attempt = tmp_path / "attempt.txt"
    attempt.write_bytes(b"reader may not push this\n")
    with pytest.raises(ValueError, match="DENIED"):
        reader.push(
            f"{host}/team/oras/notes:reader",
            files=[f"{attempt}:text/plain"],
            disable_path_validation=True,
        )
    assert_logged(registry, "POST", r"^/v2/team/oras/notes/blobs/uploads/", ("reader", 403))
    # The blobs alice pushed are there already: only the manifest is left to refuse.
    caplog.clear()
    with pytest.raises(ValueError, match="/v2/team/oras/notes/manifests/reader"):
        reader.push(
            f"{host}/team/oras/notes:reader",
            files=[f"{notes}:text/plain"],
            disable_path_validation=True,
        )
    assert "requested access to the resource is denied" in caplog.text
    assert_logged(registry, "PUT", r"^/v2/team/oras/notes/manifests/reader$", ("reader", 403))
    assert tags_of(registry, mode, "team/oras/notes") == ["v1"]

    # Without credentials nothing at all: an anonymous token carries no pull. (oras-py's
    # Basic backend cannot go without credentials: it fails before asking, and retries.)
    if mode == "token":
        since = len(registry.log())
        with pytest.raises(ValueError, match="/v2/team/oras/notes/manifests/v1"):
            oras_client(mode, host).pull(f"{host}/team/oras/notes:v1", outdir=str(tmp_path / "no"))
        assert_logged(registry, "GET", "^/v2/team/oras/notes/", ("-", 401), since=since)
        assert not (tmp_path / "no").exists()


def test_catalog_filtered_per_user(
    mode: str, registry_factory: StartRegistry, tmp_path: Path
) -> None:
    registry = registry_factory(access_config(mode, tmp_path / "auth", ACCESS), workers=2)
    host = host_of(registry)
    everything = ["alice/notes", "library/base", "other/secret", "team/app", "team/sub/tool"]
    source = layout_of(tmp_path, "v1", content(f"catalog-{mode}"))
    for name in everything:  # The admin may push where no rule names anyone.
        skopeo(
            tmp_path,
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds("admin"),
            source,
            f"docker://{host}/{name}:v1",
        )

    def catalog(auth: httpx.Auth | None, **params: int) -> httpx.Response:
        with httpx.Client(base_url=registry.url, auth=auth, timeout=30) as http:
            return http.get("/v2/_catalog", params=params)

    expected = {
        "admin": everything,
        "alice": ["alice/notes", "team/app", "team/sub/tool"],
        "bob": ["team/app", "team/sub/tool"],
        "reader": ["library/base", "team/app", "team/sub/tool"],
    }
    for user, names in expected.items():
        response = catalog(http_auth(mode, user))
        assert response.status_code == 200, (user, response.text)
        assert response.json() == {"repositories": names}, user

        # Paged one at a time, the pages hold the same names: filtering comes before paging.
        seen: list[str] = []
        with httpx.Client(base_url=registry.url, auth=http_auth(mode, user), timeout=30) as http:
            page = http.get("/v2/_catalog", params={"n": 1})
            while True:
                assert page.status_code == 200, page.text
                seen += page.json()["repositories"]
                if "Link" not in page.headers:
                    break
                page = http.get(page.headers["Link"].split(";")[0].strip("<>"))
        assert seen == names, user

    anonymous = catalog(None)
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["code"] == "UNAUTHORIZED"
    scheme, challenge = parse_challenge(anonymous.headers["WWW-Authenticate"])
    assert scheme == ("basic" if mode == "htpasswd" else "bearer")
    if mode == "token":
        assert challenge["scope"] == "registry:catalog:*"
        # An anonymous token carries no catalog access: still 401, not an empty list.
        assert catalog(BearerAuth(None)).status_code == 401
    else:
        assert catalog(http_auth(mode, "alice", "wrong")).status_code == 401


def test_anonymous_pull_where_the_rules_allow_it(
    mode: str, registry_factory: StartRegistry, tools: ContainersTools, tmp_path: Path
) -> None:
    """podman and skopeo pull anonymously from ``public/*``, and only there.

    With no credentials containers/image still answers a Basic challenge, with
    an empty user name and password: the registry must take that as anonymous.
    """
    access = {**ACCESS, "rules": [*RULES, PUBLIC_RULE]}
    registry = registry_factory(access_config(mode, tmp_path / "auth", access))
    host = host_of(registry)
    image = content(f"public-{mode}")
    source = layout_of(tmp_path, "v1", image)
    for name in ("public/app", "team/app"):
        skopeo(
            tmp_path,
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds("admin"),
            source,
            f"docker://{host}/{name}:v1",
        )

    inspected = json.loads(
        skopeo(tmp_path, "inspect", PLAIN, f"docker://{host}/public/app:v1").stdout
    )
    assert inspected["Digest"] == image.digest
    authfile = tmp_path / "empty-auth.json"
    authfile.write_text('{"auths": {}}')
    podman = tools.podman("anonymous")
    podman("pull", PLAIN, "--authfile", str(authfile), f"{host}/public/app:v1")
    pulled = json.loads(podman("image", "inspect", f"{host}/public/app:v1").stdout)[0]
    assert pulled["Digest"] == image.digest
    assert_logged(registry, "GET", r"^/v2/public/app/manifests/v1$", ("-", 200))

    # Not elsewhere, and never a push.
    hidden = skopeo(tmp_path, "inspect", PLAIN, f"docker://{host}/team/app:v1", check=False)
    assert hidden.returncode != 0
    assert NO_CREDENTIALS in hidden.stderr, hidden.stderr
    pushed = skopeo(
        tmp_path,
        "copy",
        "--dest-tls-verify=false",
        layout_of(tmp_path, "anonymous", content(f"anonymous-{mode}")),
        f"docker://{host}/public/app:anonymous",
        check=False,
    )
    assert pushed.returncode != 0
    assert NO_CREDENTIALS in pushed.stderr, pushed.stderr
    assert tags_of(registry, mode, "public/app") == ["v1"]
    # Anonymous callers may pull something, so they see the catalog: only that.
    anonymous = None if mode == "htpasswd" else BearerAuth(None)
    listed = httpx.get(f"{registry.url}/v2/_catalog", auth=anonymous, timeout=30)
    assert listed.status_code == 200
    assert listed.json() == {"repositories": ["public/app"]}
