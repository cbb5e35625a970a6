"""An external token server for tests: Docker's token protocol, as docker_auth or Harbor answer it.

``GET /token?service=S&scope=repository:NAME:ACTIONS...`` with Basic credentials
(or none: an anonymous token) answers ``{"token", "access_token", "expires_in",
"issued_at"}``. What a token grants comes from a small table, user -> {repository
glob: actions} (``fnmatch`` globs, ``*`` crossing slashes), cut down to what was
asked. Tokens are ES256 JWTs signed with the issuer's own key, the header's
``kid`` being the key's libtrust ID (what registry:2 and this registry look up
in ``auth.token.rootcertbundle``); the key's self-signed certificate is written
to a file for that setting. No refresh tokens: ``docker login`` then keeps the
password, as it does with a token server that offers none.

The registry under test knows nothing of this server but its realm, service,
issuer name and certificate; it runs in a daemon thread of the test process.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from registry.auth.keys import libtrust_key_id

SERVICE = "registry.external.test"
ISSUER = "external-token-issuer"
TOKEN_PATH = "/token"
EXPIRATION = 300
ACTIONS = ("pull", "push", "delete")

#: user -> {repository glob: actions}; the user "" stands for anonymous callers.
Grants = Mapping[str, Mapping[str, Iterable[str]]]


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate(
    key: ec.EllipticCurvePrivateKey,
    name: str,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = True,
) -> x509.Certificate:
    """A certificate for ``key``: self-signed, or signed by ``issuer_key`` as ``issuer``."""
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    )


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(item.public_bytes(Encoding.PEM) for item in certificates)


def x5c(*certificates: x509.Certificate) -> list[str]:
    """The ``x5c`` header: standard base64 of each certificate's DER, leaf first."""
    return [base64.b64encode(item.public_bytes(Encoding.DER)).decode() for item in certificates]


def sign(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey, **headers: Any) -> str:
    """An ES256 JWT of ``claims``, with exactly ``headers`` besides ``alg`` and ``typ``."""
    return jwt.encode(dict(claims), key, algorithm="ES256", headers={"typ": "JWT", **headers})


def claims(
    subject: str,
    access: Iterable[Mapping[str, Any]],
    *,
    issuer: str = ISSUER,
    service: str = SERVICE,
    lifetime: int = EXPIRATION,
) -> dict[str, Any]:
    """The claims of a token for ``subject`` granting ``access`` (the token spec's entries)."""
    now = int(time.time())
    return {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": now + lifetime,
        "nbf": now - 1,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "access": [dict(entry) for entry in access],
    }


@dataclass(frozen=True)
class Issued:
    """One token request the server answered (or refused): who, what was asked, what was given."""

    user: str | None
    scopes: tuple[str, ...]
    status: int
    access: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@dataclass
class ExternalTokenIssuer:
    """The token server; ``start()`` serves it on 127.0.0.1 and a free port."""

    folder: Path
    users: Mapping[str, str]
    grants: Grants
    service: str = SERVICE
    issuer: str = ISSUER
    key: ec.EllipticCurvePrivateKey = field(default_factory=ec_key)
    issued: list[Issued] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.certificate = certificate(self.key, "external token issuer")
        self.bundle = self.folder / "issuer.crt"
        self.bundle.write_bytes(pem(self.certificate))

    @property
    def kid(self) -> str:
        return libtrust_key_id(self.key.public_key())

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def realm(self) -> str:
        return self.url + TOKEN_PATH

    def registry_auth(self) -> dict[str, object]:
        """The registry's ``auth`` section that trusts this issuer (no built-in token service)."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.bundle),
            }
        }

    # --- tokens ---

    def allowed(self, user: str | None, repository: str) -> set[str]:
        actions: set[str] = set()
        for pattern, granted in self.grants.get(user or "", {}).items():
            if fnmatch.fnmatchcase(repository, pattern):
                actions.update(granted)
        return actions

    def access(self, user: str | None, scopes: Iterable[str]) -> list[dict[str, Any]]:
        """The ``access`` claim: the repository actions asked for that the table grants."""
        entries: list[dict[str, Any]] = []
        for text in scopes:
            for item in text.split():
                kind, _, rest = item.partition(":")
                name, _, wanted = rest.rpartition(":")
                if kind != "repository" or not name:
                    continue
                asked = ACTIONS if "*" in wanted.split(",") else wanted.split(",")
                allowed = self.allowed(user, name)
                actions = [action for action in asked if action in allowed]
                entries.append({"type": kind, "name": name, "actions": actions})
        return entries

    def token(self, user: str | None, access: Iterable[Mapping[str, Any]]) -> str:
        """A token as this issuer signs it, for whatever ``access`` the caller chooses."""
        payload = claims(user or "", access, issuer=self.issuer, service=self.service)
        return sign(payload, self.key, kid=self.kid)

    def token_for(self, user: str | None, scopes: Iterable[str]) -> str:
        """What the server answers ``user`` (already authenticated) for ``scopes``."""
        return self.token(user, self.access(user, scopes))

    # --- HTTP ---

    def _record(self, entry: Issued) -> None:
        with self._lock:
            self.issued.append(entry)

    def _answer(
        self, path: str, authorization: str | None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        parts = urlsplit(path)
        if parts.path != TOKEN_PATH:
            return 404, {}, {"errors": [{"code": "NOT_FOUND", "message": "no such path"}]}
        query = parse_qs(parts.query)
        scopes = tuple(query.get("scope", []))
        if query.get("service", [self.service])[0] != self.service:
            self._record(Issued(None, scopes, 400))
            return 400, {}, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]}
        user = None
        if authorization is not None:
            user = self._user(authorization)
            if user is None:
                self._record(Issued(None, scopes, 401))
                refusal = {"code": "UNAUTHORIZED", "message": "incorrect username or password"}
                challenge = {"WWW-Authenticate": f'Basic realm="{self.service}"'}
                return 401, challenge, {"errors": [refusal]}
        access = self.access(user, scopes)
        token = self.token(user, access)
        self._record(
            Issued(
                user,
                scopes,
                200,
                tuple((a["type"], a["name"], tuple(a["actions"])) for a in access),
            )
        )
        issued_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        document = {
            "token": token,
            "access_token": token,
            "expires_in": EXPIRATION,
            "issued_at": issued_at,
        }
        return 200, {}, document

    def _user(self, authorization: str) -> str | None:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return None
        return user

    def start(self) -> ExternalTokenIssuer:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, headers, document = issuer._answer(
                    self.path, self.headers.get("Authorization")
                )
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: what was asked and given is in ``issuer.issued``."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="external-token-issuer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None
