"""The certificate folder: a CA, the server's and clients' key pairs, and engine bundles.

Layout of the folder (``certs/`` by default)::

    ca.crt  ca.key                  the CA (ca.key may be encrypted)
    server.crt  server.key          the registry's TLS certificate and key
    client-NAME.crt  client-NAME.key    mutual-TLS client pairs
    token.crt  token.key            the token service's signing key, self-signed
    certs.d/HOST:PORT/              what a Docker engine wants in /etc/docker/certs.d/HOST:PORT/
        ca.crt  client.cert  client.key

Every function here is safe to call again: it keeps what still fits, reissues
a certificate for an existing key when it no longer does, and never replaces a
private key unless asked to (``force``). Private keys are created with mode
0600, certificates 0644, and every file is replaced atomically, so a crash or a
concurrent start never leaves half a key. Errors are raised, never printed:
the command line in ``tools.certs_cli`` turns them into messages.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path

from cryptography import x509

from registry.auth.keys import algorithms_for, libtrust_key_id
from tools.certs_files import CERT_MODE, KEY_MODE, folder_lock, make_folder, write_file
from tools.certs_hosts import (
    HostNameError,
    canonical_host,
    default_hosts,
    host_of,
    name_matches,
    parse_host_port,
    parse_ip,
)
from tools.certs_x509 import (
    CA,
    CA_DAYS,
    LEAF_DAYS,
    MAX_COMMON_NAME,
    CertificateError,
    KeyType,
    LeafCert,
    LeafKey,
    PassphraseError,
    Purpose,
    as_leaf_key,
    certificates_pem,
    check_key_pair,
    common_name,
    describe_key,
    extended_key_usages,
    is_ca_certificate,
    is_encrypted_key_file,
    is_issued_by,
    key_matches,
    load_certificates,
    load_private_key,
    private_key_pem,
    signer_certificate,
    subject_alternative_names,
)

__all__ = [
    "CA",
    "CA_CERT",
    "CA_KEY",
    "DEFAULT_DIRECTORY",
    "PASSPHRASE_ENV",
    "SERVER_CERT",
    "SERVER_KEY",
    "TOKEN_CERT",
    "TOKEN_KEY",
    "Action",
    "BundleFiles",
    "CAFiles",
    "CAResult",
    "CertificateError",
    "ClientFiles",
    "ClientNameError",
    "HostNameError",
    "KeyType",
    "LeafCert",
    "PassphraseError",
    "ServerFiles",
    "TokenFiles",
    "check_key_pair",
    "client_paths",
    "ensure_ca",
    "ensure_client_certificate",
    "ensure_server_certificate",
    "ensure_token_key",
    "main",
    "read_passphrase",
    "trust_instructions",
    "write_bundle",
]

logger = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path("certs")
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
TOKEN_CERT = "token.crt"
TOKEN_KEY = "token.key"
TOKEN_DAYS = CA_DAYS
BUNDLES = "certs.d"
PASSPHRASE_ENV = "REGISTRY_CA_PASSPHRASE"
# A certificate with less than this left is renewed (and `show` warns about it).
RENEW_BEFORE = timedelta(days=30)
_CLIENT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


class ClientNameError(ValueError):
    """A client name that cannot be a common name and a file name."""


class Action(Enum):
    """What an ``ensure_*`` call did to a key pair."""

    CREATED = "created"  # a new key and certificate where there were none
    UNCHANGED = "unchanged"  # the existing certificate still fits
    REISSUED = "reissued"  # a new certificate for the existing key
    REPLACED = "replaced"  # a new key and certificate in place of the old ones (force)


@dataclass(frozen=True, slots=True)
class CAFiles:
    """A CA kept outside the folder (e.g. a company CA): its certificate and key files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class CAResult:
    """The folder's CA after ``ensure_ca``."""

    ca_cert: Path
    ca_key: Path
    action: Action
    certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class ServerFiles:
    """Where the server's TLS files are, and what ``ensure_server_certificate`` did."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    action: Action = Action.UNCHANGED
    ca_created: bool = False
    names: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    not_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClientFiles:
    """Where a client's mutual-TLS files are, and what ``ensure_client_certificate`` did."""

    ca_cert: Path
    client_cert: Path
    client_key: Path
    name: str
    action: Action = Action.UNCHANGED
    ca_created: bool = False
    reasons: tuple[str, ...] = ()
    not_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class TokenFiles:
    """The token service's signing key, its certificate, and what ``ensure_token_key`` did."""

    cert: Path
    key: Path
    action: Action
    certificate: x509.Certificate
    reasons: tuple[str, ...] = ()

    @property
    def key_id(self) -> str:
        """The ``kid`` tokens signed with the key carry (libtrust's, as registry:2 looks up)."""
        return libtrust_key_id(self.certificate.public_key())


@dataclass(frozen=True, slots=True)
class BundleFiles:
    """A ``certs.d/HOST:PORT`` folder ready to copy onto an engine host."""

    folder: Path
    host_port: str
    ca_cert: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    warnings: tuple[str, ...] = field(default=())


def main(argv: Sequence[str] | None = None) -> int:
    """``registry certs ARGS``; see ``tools.certs_cli``."""
    from tools.certs_cli import main as cli_main

    return cli_main(argv)


def read_passphrase(file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The CA key's passphrase: first line of ``file``, else ``REGISTRY_CA_PASSPHRASE``.

    Returns None when neither is given (the CA key is then unencrypted).
    """
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as error:
            raise CertificateError(
                f"{file}: cannot read passphrase file: {error.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise CertificateError(f"{file}: passphrase file is not UTF-8 text") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise CertificateError(f"{file}: passphrase file is empty (first line is used)")
        return lines[0].encode("utf-8")
    value = environ.get(PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


def client_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """``DIR/client-NAME.crt`` and ``DIR/client-NAME.key``, after checking NAME."""
    if not _CLIENT_NAME_RE.match(name):
        raise ClientNameError(
            f"{name!r}: a client name is 1 to 64 letters, digits and '._@+-', "
            "starting with a letter or digit"
        )
    return directory / f"client-{name}.crt", directory / f"client-{name}.key"


# --- the CA --------------------------------------------------------------------


def _default_ca_name() -> str:
    return f"registry CA {socket.gethostname()}"[:MAX_COMMON_NAME]


def _create_ca(
    directory: Path,
    *,
    key_type: KeyType,
    passphrase: bytes | None,
    days: int = CA_DAYS,
    name: str | None = None,
    replace: bool = False,
    now: datetime | None = None,
) -> CA:
    ca = CA.create(name or _default_ca_name(), key_type=key_type, days=days, now=now)
    # Key first: a crash between the two leaves a key without a certificate, which is reported.
    write_file(directory / CA_KEY, ca.private_key_pem(passphrase), mode=KEY_MODE, replace=replace)
    write_file(directory / CA_CERT, ca.cert_pem(), mode=CERT_MODE, replace=True)
    logger.info("created CA %s in %s", ca.cert.subject.rfc4514_string(), directory)
    return ca


def ensure_ca(
    directory: Path,
    *,
    key_type: KeyType = KeyType.ECDSA_P256,
    passphrase: bytes | None = None,
    days: int = CA_DAYS,
    name: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> CAResult:
    """The folder's CA: created when there is none, kept when there is one.

    ``force`` replaces an existing CA; every certificate it signed stops being trusted.
    """
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    with folder_lock(directory):
        if force or not (cert_path.exists() or key_path.exists()):
            existed = cert_path.exists() or key_path.exists()
            ca = _create_ca(
                directory,
                key_type=key_type,
                passphrase=passphrase,
                days=days,
                name=name,
                replace=force,
                now=now,
            )
            action = Action.REPLACED if existed else Action.CREATED
            return CAResult(cert_path, key_path, action, ca.cert)
        _require_ca_pair(cert_path, key_path)
        cert = load_certificates(cert_path)[0]
        # An encrypted key is checked when it signs; an unencrypted one can be checked now.
        if not is_encrypted_key_file(key_path) and not key_matches(
            cert, load_private_key(key_path)
        ):
            raise CertificateError(f"{key_path}: key does not match the CA certificate {cert_path}")
        return CAResult(cert_path, key_path, Action.UNCHANGED, cert)


def _require_ca_pair(cert_path: Path, key_path: Path) -> None:
    if not key_path.exists():
        raise CertificateError(
            f"{key_path}: not found beside {cert_path}; to sign with a CA kept elsewhere "
            "give its certificate and key (--ca-cert FILE --ca-key FILE), "
            "or make a new CA here (init --force)"
        )
    if not cert_path.exists():
        raise CertificateError(
            f"{cert_path}: not found beside {key_path}; "
            "remove the key or make a new CA here (init --force)"
        )


@dataclass(frozen=True, slots=True)
class _Signer:
    """The CA a leaf is checked against now and signed by if needed (its key loaded late)."""

    ca_cert: Path
    anchor: x509.Certificate | None  # None: the folder has no CA yet
    load: Callable[[], tuple[CA, bool]]


def _signer(
    directory: Path,
    *,
    ca_files: CAFiles | None,
    passphrase: bytes | None,
    ca_key_type: KeyType,
    now: datetime | None,
) -> _Signer:
    folder_cert, folder_key = directory / CA_CERT, directory / CA_KEY
    if ca_files is not None:
        outside = load_certificates(ca_files.cert)
        if not is_ca_certificate(outside[0]):
            raise CertificateError(
                f"{ca_files.cert}: not a CA certificate (BasicConstraints ca=TRUE missing)"
            )
        if folder_cert.exists():
            kept = load_certificates(folder_cert)[0]
            if kept != outside[0]:
                raise CertificateError(
                    f"{folder_cert}: holds another CA ({kept.subject.rfc4514_string()}) than "
                    f"{ca_files.cert}; use another folder for certificates signed by "
                    f"{ca_files.cert}, or remove {folder_cert} and {folder_key}"
                )
        elif folder_key.exists():
            raise CertificateError(
                f"{folder_key}: a CA key without its certificate; remove it before "
                f"signing with {ca_files.cert} in this folder"
            )
        else:
            # Users of this folder (bundle, show, the server) find the CA where they look.
            write_file(folder_cert, certificates_pem(outside), mode=CERT_MODE, replace=False)

        def load_outside() -> tuple[CA, bool]:
            return CA.load(ca_files.cert, ca_files.key, passphrase), False

        return _Signer(folder_cert, outside[0], load_outside)

    if not folder_cert.exists() and not folder_key.exists():

        def create() -> tuple[CA, bool]:
            ca = _create_ca(directory, key_type=ca_key_type, passphrase=passphrase, now=now)
            return ca, True

        return _Signer(folder_cert, None, create)

    anchor = load_certificates(folder_cert)[0] if folder_cert.exists() else None

    def load_folder() -> tuple[CA, bool]:
        _require_ca_pair(folder_cert, folder_key)
        return CA.load(folder_cert, folder_key, passphrase), False

    return _Signer(folder_cert, anchor, load_folder)


# --- leaf certificates ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Wanted:
    """What a leaf certificate must be: purpose, names it must carry, its common name."""

    purpose: Purpose
    names: tuple[str, ...] = ()
    common_name: str | None = None


@dataclass(frozen=True, slots=True)
class _Existing:
    """What the folder already holds for a leaf, and why it no longer fits (if it does not)."""

    key: LeafKey | None  # the existing key, when it is kept
    names: tuple[str, ...]
    reasons: tuple[str, ...]


def _renewal_margin(cert: x509.Certificate) -> timedelta:
    # A deliberately short-lived certificate is renewed in its last third, not every run.
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    return min(RENEW_BEFORE, lifetime / 3)


def _examine(
    cert_path: Path,
    key_path: Path,
    *,
    wanted: _Wanted,
    anchor: x509.Certificate | None,
    key_type: KeyType | None,
    force: bool,
    now: datetime,
) -> _Existing:
    if force or not key_path.exists():
        return _Existing(key=None, names=(), reasons=())
    try:
        key = as_leaf_key(load_private_key(key_path), key_path)
    except PassphraseError:
        raise CertificateError(
            f"{key_path}: encrypted; a TLS key must load unattended (replace it with --force)"
        ) from None
    except CertificateError as error:
        raise CertificateError(f"{error} (replace it with --force)") from None
    if key_type is not None and KeyType.of(key) is not key_type:
        raise CertificateError(
            f"{key_path}: holds a {describe_key(key)} key, not {key_type.value}; "
            "replace the key with --force"
        )
    if not cert_path.exists():
        return _Existing(key=key, names=(), reasons=(f"{cert_path.name} is missing",))
    try:
        cert = load_certificates(cert_path)[0]
    except CertificateError as error:
        return _Existing(key=key, names=(), reasons=(str(error),))

    names = tuple(
        host for host in (host_of(name) for name in subject_alternative_names(cert)) if host
    )
    reasons: list[str] = []
    if not key_matches(cert, key):
        reasons.append(f"{cert_path.name} does not match {key_path.name}")
    if anchor is None:
        reasons.append("the CA is new")
    elif not is_issued_by(cert, anchor):
        reasons.append(f"{cert_path.name} is not signed by the CA")
    if cert.not_valid_after_utc <= now:
        reasons.append(f"{cert_path.name} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    elif cert.not_valid_after_utc - now < _renewal_margin(cert):
        reasons.append(f"{cert_path.name} expires on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        reasons.append(f"{cert_path.name} is not valid yet")
    if wanted.purpose.oid not in extended_key_usages(cert):
        reasons.append(f"{cert_path.name} is not for {wanted.purpose.value} authentication")
    sans = subject_alternative_names(cert)
    missing = [host for host in wanted.names if not name_matches(host, sans)]
    if missing:
        reasons.append(f"{cert_path.name} does not name {', '.join(missing)}")
    if wanted.common_name is not None and common_name(cert) != wanted.common_name:
        reasons.append(f"{cert_path.name} is not for {wanted.common_name}")
    return _Existing(key=key, names=names, reasons=tuple(reasons))


@dataclass(frozen=True, slots=True)
class _LeafOutcome:
    action: Action
    ca_created: bool
    names: tuple[str, ...]
    reasons: tuple[str, ...]
    not_after: datetime


def _ensure_leaf(
    cert_path: Path,
    key_path: Path,
    *,
    wanted: _Wanted,
    signer: _Signer,
    key_type: KeyType | None,
    days: int,
    force: bool,
    reissue: bool,
    now: datetime | None,
) -> _LeafOutcome:
    moment = datetime.now(UTC) if now is None else now.astimezone(UTC)
    existing = _examine(
        cert_path,
        key_path,
        wanted=wanted,
        anchor=signer.anchor,
        key_type=key_type,
        force=force,
        now=moment,
    )
    reasons = existing.reasons
    if existing.key is not None and not reasons and not reissue:
        cert = load_certificates(cert_path)[0]
        return _LeafOutcome(Action.UNCHANGED, False, existing.names, (), cert.not_valid_after_utc)
    if existing.key is not None and reissue and not reasons:
        reasons = ("reissue requested",)

    names = wanted.names
    if existing.key is not None and not reissue:
        # Names given on earlier runs stay: dropping them would break clients that use them.
        names = _merge_names(names, existing.names)

    ca, ca_created = signer.load()
    leaf = ca.issue_cert(
        *names,
        purpose=wanted.purpose,
        common_name=wanted.common_name or _server_common_name(names),
        key=existing.key,
        key_type=key_type or KeyType.ECDSA_P256,
        days=days,
        now=moment,
    )
    key_existed = key_path.exists()
    if existing.key is None:
        write_file(key_path, leaf.private_key_pem(), mode=KEY_MODE, replace=force)
    write_file(cert_path, leaf.cert_chain_pem(), mode=CERT_MODE, replace=True)
    if existing.key is not None:
        action = Action.REISSUED
    elif key_existed:
        action = Action.REPLACED
    else:
        action = Action.CREATED
    logger.info("%s %s (%s)", action.value, cert_path, "; ".join(reasons) or "new")
    return _LeafOutcome(action, ca_created, names, reasons, leaf.cert.not_valid_after_utc)


def _merge_names(wanted: Sequence[str], earlier: Sequence[str]) -> tuple[str, ...]:
    merged = list(wanted)
    seen = {canonical_host(name) for name in wanted}
    for name in earlier:
        try:
            key = canonical_host(name)
        except HostNameError:
            continue  # a name this toolkit would not write; not worth keeping
        if key not in seen:
            seen.add(key)
            merged.append(key)
    return tuple(merged)


def _server_common_name(names: Sequence[str]) -> str | None:
    # Old clients still print the CN; the first DNS name short enough to fit serves best.
    for name in names:
        if parse_ip(name) is None and len(name) <= MAX_COMMON_NAME and not name.startswith("*"):
            return name
    return None


def _server_names(hosts: Sequence[str], include_default_hosts: bool) -> tuple[str, ...]:
    names: list[str] = []
    seen: set[str] = set()
    candidates = [*hosts, *(default_hosts() if include_default_hosts else ())]
    for host in candidates:
        key = canonical_host(host)
        address = parse_ip(key)
        # 0.0.0.0 and :: mean "listen everywhere"; no client connects to them by that name.
        if address is not None and address.is_unspecified:
            continue
        if key not in seen:
            seen.add(key)
            names.append(key)
    if not names:
        raise HostNameError("a server certificate needs at least one host name or address")
    return tuple(names)


def ensure_server_certificate(
    directory: Path,
    hosts: Sequence[str] = (),
    *,
    include_default_hosts: bool = True,
    key_type: KeyType | None = None,
    ca_key_type: KeyType = KeyType.ECDSA_P256,
    days: int = LEAF_DAYS,
    passphrase: bytes | None = None,
    ca_files: CAFiles | None = None,
    force: bool = False,
    reissue: bool = False,
    now: datetime | None = None,
) -> ServerFiles:
    """The server's certificate and key in ``directory``, made or renewed as needed.

    The certificate names every host given plus (unless
    ``include_default_hosts`` is false) this machine's names and addresses. An
    existing certificate is kept while it is signed by the CA, matches the key,
    has 30 days or more left and names every host wanted; otherwise a new one
    is issued for the existing key, keeping the names it had (``reissue``:
    exactly the names wanted). ``force`` makes a new key too. Without a CA the
    folder gets one first (``ca_key_type``, encrypted with ``passphrase``);
    ``ca_files`` signs with a CA kept elsewhere instead.
    """
    names = _server_names(hosts, include_default_hosts)
    with folder_lock(directory):
        signer = _signer(
            directory,
            ca_files=ca_files,
            passphrase=passphrase,
            ca_key_type=ca_key_type,
            now=now,
        )
        outcome = _ensure_leaf(
            directory / SERVER_CERT,
            directory / SERVER_KEY,
            wanted=_Wanted(Purpose.SERVER, names=names),
            signer=signer,
            key_type=key_type,
            days=days,
            force=force,
            reissue=reissue,
            now=now,
        )
    return ServerFiles(
        ca_cert=signer.ca_cert,
        server_cert=directory / SERVER_CERT,
        server_key=directory / SERVER_KEY,
        action=outcome.action,
        ca_created=outcome.ca_created,
        names=outcome.names,
        reasons=outcome.reasons,
        not_after=outcome.not_after,
    )


def ensure_client_certificate(
    directory: Path,
    name: str,
    *,
    key_type: KeyType | None = None,
    ca_key_type: KeyType = KeyType.ECDSA_P256,
    days: int = LEAF_DAYS,
    passphrase: bytes | None = None,
    ca_files: CAFiles | None = None,
    force: bool = False,
    reissue: bool = False,
    now: datetime | None = None,
) -> ClientFiles:
    """A mutual-TLS client pair ``client-NAME.crt``/``.key`` (CN=NAME, clientAuth).

    Kept, reissued or replaced by the same rules as the server certificate.
    """
    cert_path, key_path = client_paths(directory, name)
    with folder_lock(directory):
        signer = _signer(
            directory,
            ca_files=ca_files,
            passphrase=passphrase,
            ca_key_type=ca_key_type,
            now=now,
        )
        outcome = _ensure_leaf(
            cert_path,
            key_path,
            wanted=_Wanted(Purpose.CLIENT, common_name=name),
            signer=signer,
            key_type=key_type,
            days=days,
            force=force,
            reissue=reissue,
            now=now,
        )
    return ClientFiles(
        ca_cert=signer.ca_cert,
        client_cert=cert_path,
        client_key=key_path,
        name=name,
        action=outcome.action,
        ca_created=outcome.ca_created,
        reasons=outcome.reasons,
        not_after=outcome.not_after,
    )


# --- the token service's signing key ----------------------------------------------


def _default_token_name() -> str:
    return f"registry token signer {socket.gethostname()}"[:MAX_COMMON_NAME]


def _existing_token_key(key_path: Path, key_type: KeyType | None) -> LeafKey:
    try:
        key = as_leaf_key(load_private_key(key_path), key_path)
    except PassphraseError:
        raise CertificateError(
            f"{key_path}: encrypted; the registry reads it unattended (replace it with --force)"
        ) from None
    except CertificateError as error:
        raise CertificateError(f"{error} (replace it with --force)") from None
    if not algorithms_for(key.public_key()):
        raise CertificateError(
            f"{key_path}: a {describe_key(key)} key cannot sign tokens (replace it with --force)"
        )
    if key_type is not None and KeyType.of(key) is not key_type:
        raise CertificateError(
            f"{key_path}: holds a {describe_key(key)} key, not {key_type.value}; "
            "replace the key with --force"
        )
    return key


def _token_certificate_problems(cert_path: Path, key: LeafKey, now: datetime) -> tuple[str, ...]:
    if not cert_path.exists():
        return (f"{cert_path.name} is missing",)
    try:
        cert = load_certificates(cert_path)[0]
    except CertificateError as error:
        return (str(error),)
    if not key_matches(cert, key):
        return (f"{cert_path.name} does not match {cert_path.with_suffix('.key').name}",)
    if cert.not_valid_after_utc <= now:
        return (f"{cert_path.name} expired on {cert.not_valid_after_utc:%Y-%m-%d}",)
    if cert.not_valid_after_utc - now < _renewal_margin(cert):
        return (f"{cert_path.name} expires on {cert.not_valid_after_utc:%Y-%m-%d}",)
    return ()


def ensure_token_key(
    directory: Path,
    *,
    key_type: KeyType | None = None,
    days: int = TOKEN_DAYS,
    name: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> TokenFiles:
    """``DIR/token.key`` and the self-signed ``DIR/token.crt`` that publishes it.

    An existing key is kept, so tokens keep their ``kid``; its certificate is
    reissued only when missing, not matching, expired or expiring. ``force``
    makes a new key (tokens signed with the old one stop being accepted). The
    key is never encrypted: the registry reads it unattended.
    """
    moment = datetime.now(UTC) if now is None else now.astimezone(UTC)
    cert_path, key_path = directory / TOKEN_CERT, directory / TOKEN_KEY
    with folder_lock(directory):
        existed = cert_path.exists() or key_path.exists()
        key: LeafKey | None = None
        reasons: tuple[str, ...] = ()
        if not force and key_path.exists():
            key = _existing_token_key(key_path, key_type)
            reasons = _token_certificate_problems(cert_path, key, moment)
            if not reasons:
                cert = load_certificates(cert_path)[0]
                return TokenFiles(cert_path, key_path, Action.UNCHANGED, cert)
        elif not force and cert_path.exists():
            raise CertificateError(
                f"{cert_path}: exists without its key {key_path}; make a new pair with --force"
            )
        signing_key = key if key is not None else (key_type or KeyType.ECDSA_P256).generate()
        cert = signer_certificate(signing_key, name or _default_token_name(), days=days, now=moment)
        if key is None:
            # Key first: a crash between the two leaves a key whose certificate is reissued.
            write_file(key_path, private_key_pem(signing_key), mode=KEY_MODE, replace=force)
        write_file(cert_path, certificates_pem([cert]), mode=CERT_MODE, replace=True)
    if key is not None:
        action = Action.REISSUED
    elif existed:
        action = Action.REPLACED
    else:
        action = Action.CREATED
    logger.info("%s %s (%s)", action.value, cert_path, "; ".join(reasons) or "new")
    return TokenFiles(cert_path, key_path, action, cert, reasons)


# --- engine bundles and instructions ---------------------------------------------


def write_bundle(
    directory: Path,
    host_port: str,
    *,
    client: str | None = None,
    ca_cert: Path | None = None,
    force: bool = False,
) -> BundleFiles:
    """``DIR/certs.d/HOST:PORT/`` laid out as Docker and Podman read it.

    ``ca.crt`` (the CA to trust) and, for mutual TLS, ``client.cert`` and
    ``client.key`` (the engine reads ``.cert``, not ``.crt``) copied from
    ``client-NAME.*``. An existing bundle key is only replaced with ``force``.
    """
    host, _port = parse_host_port(host_port)
    source_ca = ca_cert if ca_cert is not None else directory / CA_CERT
    ca_certs = load_certificates(source_ca)
    folder = directory / BUNDLES / host_port
    warnings: list[str] = []
    server_cert = directory / SERVER_CERT
    if server_cert.exists():
        with contextlib.suppress(CertificateError, HostNameError):
            cert = load_certificates(server_cert)[0]
            if not name_matches(host, subject_alternative_names(cert)):
                warnings.append(
                    f"{server_cert} does not name {host}: engines will refuse it "
                    f"(add it: registry certs server --host {host})"
                )
            if not is_issued_by(cert, ca_certs[0]):
                warnings.append(f"{server_cert} is not signed by {source_ca}")

    pair: tuple[bytes, bytes] | None = None
    if client is not None:
        cert_path, key_path = client_paths(directory, client)
        check_key_pair(cert_path, key_path)
        pair = (cert_path.read_bytes(), key_path.read_bytes())

    with folder_lock(directory):
        make_folder(folder)
        bundle_ca = folder / "ca.crt"
        write_file(bundle_ca, certificates_pem(ca_certs), mode=CERT_MODE, replace=True)
        if pair is None:
            return BundleFiles(folder, host_port, bundle_ca, warnings=tuple(warnings))
        bundle_cert, bundle_key = folder / "client.cert", folder / "client.key"
        same_key = bundle_key.exists() and _same_content(bundle_key, pair[1])
        if bundle_key.exists() and not same_key and not force:
            raise CertificateError(f"{bundle_key}: holds another key; replace it with --force")
        if not same_key:
            write_file(bundle_key, pair[1], mode=KEY_MODE, replace=True)
        write_file(bundle_cert, pair[0], mode=CERT_MODE, replace=True)
    return BundleFiles(folder, host_port, bundle_ca, bundle_cert, bundle_key, tuple(warnings))


def _same_content(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


def trust_instructions(ca_cert: Path, host_port: str) -> str:
    """Shell commands that make Docker, Podman and containerd trust ``ca_cert`` for ``host_port``.

    Run as root on each engine host, after copying ``ca_cert`` there. The
    engines read these folders on every connection: no restart is needed.
    """
    host, port = parse_host_port(host_port)
    source = shlex.quote(str(ca_cert))
    docker = f"/etc/docker/certs.d/{host_port}"
    podman = f"/etc/containers/certs.d/{host_port}"
    containerd = f"/etc/containerd/certs.d/{host_port}"
    server = f"https://{host_port}"
    toml = "\n".join(
        [
            f'server = "{server}"',
            "",
            f'[host."{server}"]',
            '  capabilities = ["pull", "resolve", "push"]',
            f'  ca = "{containerd}/ca.crt"',
        ]
    )
    q = shlex.quote
    lines = [
        f"# Docker engine: trusts {host_port} through {docker}/",
        f"mkdir -p {q(docker)}",
        f"cp {source} {q(docker + '/ca.crt')}",
        "",
        "# Podman, Buildah, Skopeo (containers/image)",
        f"mkdir -p {q(podman)}",
        f"cp {source} {q(podman + '/ca.crt')}",
        "",
        '# containerd (CRI plugin with config_path = "/etc/containerd/certs.d"; nerdctl)',
        f"mkdir -p {q(containerd)}",
        f"cp {source} {q(containerd + '/ca.crt')}",
        f"cat > {q(containerd + '/hosts.toml')} <<'EOF'",
        toml,
        "EOF",
    ]
    if port is None:
        lines.insert(0, f"# {host} without a port: clients reach the registry on port 443")
    return "\n".join(lines) + "\n"
