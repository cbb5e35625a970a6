"""Access control for tests: users, signing keys, configs, and an httpx client that logs in.

:class:`BearerAuth` does what Docker does with a token registry: it learns the
realm from ``/v2/``'s challenge, asks the realm for a token with Basic
credentials and the scope the request will need (computed up front, as Docker
and containerd do, so request bodies never need replaying), and caches it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Generator
from pathlib import Path
from urllib.parse import parse_qs

import httpx

from registry.api.routes import match
from registry.auth import htpasswd
from tools.certs import ensure_token_key

SERVICE = "registry.test"
ISSUER = "registry-test-issuer"
TOKEN_PATH = "/token"

#: name -> password; "admin" may do everything in every registry the tests start.
USERS = {
    "admin": "admin-password",
    "alice": "alice-password",
    "bob": "bob-password",
    "reader": "reader-password",
}

_CHALLENGE_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def write_htpasswd(path: Path, users: dict[str, str] | None = None) -> Path:
    """An htpasswd file with ``users`` (default: USERS)."""
    entries = htpasswd.Htpasswd((), {})
    for user, password in (users or USERS).items():
        entries = entries.with_user(user, htpasswd.hash_password(password))
    htpasswd.write(path, entries)
    return path


def htpasswd_config(folder: Path, access: dict[str, object] | None = None) -> dict[str, object]:
    """``auth.htpasswd`` with USERS (and ``access`` rules when given)."""
    config: dict[str, object] = {
        "auth": {
            "htpasswd": {
                "realm": "test-realm",
                "path": str(write_htpasswd(folder / "htpasswd")),
            }
        }
    }
    if access:
        config["access"] = access
    return config


def token_config(
    folder: Path,
    access: dict[str, object] | None = None,
    *,
    realm: str | None = None,
) -> dict[str, object]:
    """``auth.token`` served by the built-in token service with USERS.

    Without ``realm`` the realm follows the Host the client used (``autoredirect``),
    so the registry may listen on any port.
    """
    files = ensure_token_key(folder / "certs")
    token: dict[str, object] = {
        "service": SERVICE,
        "issuer": ISSUER,
        "rootcertbundle": str(files.cert),
    }
    if realm is None:
        token.update(realm="http://unused.invalid/token", autoredirect=True)
        token["autoredirectpath"] = TOKEN_PATH
    else:
        token["realm"] = realm
    section: dict[str, object] = dict(access or {})
    section["tokenservice"] = {
        "key": str(files.key),
        "htpasswd": str(write_htpasswd(folder / "htpasswd")),
    }
    return {"auth": {"token": token}, "access": section}


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., ...})."""
    scheme, _, rest = header.partition(" ")
    params = {key: value.replace('\\"', '"') for key, value in _CHALLENGE_RE.findall(rest)}
    return scheme.lower(), params


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def scope_for(request: httpx.Request) -> str:
    """The scope a client asks for before sending ``request``: every action on its repository.

    The repository is found by the registry's own route table, as a client knows
    which repository it talks to (names may end in ``/blobs`` or ``/manifests``).
    """
    path = request.url.path
    if path.endswith("/v2/_catalog"):
        return "registry:catalog:*"
    found = match(path.split("/v2/", 1)[1]) if "/v2/" in path else None
    if found is None or "name" not in found[1]:
        return ""
    scope = f"repository:{found[1]['name']}:pull,push,delete"
    source = parse_qs(request.url.query.decode()).get("from")
    if source:
        scope += f" repository:{source[0]}:pull"
    return scope


class BearerAuth(httpx.Auth):
    requires_response_body = True  # The token replies are read inside the flow.

    def __init__(self, user: str | None, password: str = "") -> None:
        self.user = user
        self.password = password
        self.challenge: dict[str, str] | None = None
        self.tokens: dict[str, str] = {}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.challenge is None:
            probe = yield httpx.Request("GET", request.url.copy_with(path="/v2/", query=None))
            scheme, params = parse_challenge(probe.headers.get("WWW-Authenticate", ""))
            assert scheme == "bearer" and "realm" in params, probe.headers
            self.challenge = params
        scope = scope_for(request)
        token = self.tokens.get(scope)
        if token is None:
            query = {"service": self.challenge.get("service", "")}
            if scope:
                query["scope"] = scope
            headers = {"Authorization": basic(self.user, self.password)} if self.user else {}
            reply = yield httpx.Request(
                "GET", self.challenge["realm"], params=query, headers=headers
            )
            assert reply.status_code == 200, reply.text
            token = str(reply.json()["token"])
            self.tokens[scope] = token
        request.headers["Authorization"] = f"Bearer {token}"
        yield request
