"""``registry certs``: make a CA, server and client certificates, engine bundles; show them.

``token`` makes the signing key of the registry's token service and the
self-signed certificate registries trust it by (``auth.token.rootcertbundle``).

``main(argv)`` takes the arguments after ``certs`` and returns the exit code,
so the server's command line dispatches to it and tests call it in-process.

Exit codes: 0 done (or nothing to do), 1 failure (a file or key that cannot be
read, used or written), 2 usage error (bad option, host name, ``HOST:PORT`` or
client name), 3 ``show`` found a problem (expired or expiring within 30 days,
not signed by the CA, a ``--host`` not named, a key that does not match).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from tools.certs import (
    CA_CERT,
    DEFAULT_DIRECTORY,
    PASSPHRASE_ENV,
    TOKEN_DAYS,
    Action,
    CAFiles,
    ClientNameError,
    ensure_ca,
    ensure_client_certificate,
    ensure_server_certificate,
    ensure_token_key,
    read_passphrase,
    trust_instructions,
    write_bundle,
)
from tools.certs_hosts import HostNameError, canonical_host, parse_host_port
from tools.certs_inspect import format_inspection, inspect
from tools.certs_x509 import (
    CA_DAYS,
    LEAF_DAYS,
    MAX_LEAF_DAYS,
    CertificateError,
    KeyType,
    PassphraseError,
    describe_key,
    load_certificates,
)

PROG = "registry certs"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PROBLEMS = 3
DOCKER_CERTS_D = "/etc/docker/certs.d"


class _UsageError(Exception):
    """A command line that is well-formed for argparse but still wrong (exit 2)."""


def _host(text: str) -> str:
    try:
        return canonical_host(text)
    except HostNameError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _host_port(text: str) -> str:
    try:
        parse_host_port(text)
    except HostNameError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _days(limit: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days") from None
        if not 0 < value <= limit:
            raise argparse.ArgumentTypeError(f"days must be 1 to {limit}, not {value}")
        return value

    return parse


def _key_type(text: str) -> KeyType:
    try:
        return KeyType(text)
    except ValueError:
        choices = ", ".join(key_type.value for key_type in KeyType)
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of {choices}") from None


def _parser() -> argparse.ArgumentParser:
    key_types = "|".join(key_type.value for key_type in KeyType)
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIRECTORY,
        metavar="DIR",
        help=f"certificate folder (default: {DEFAULT_DIRECTORY}/ in the current folder)",
    )
    passphrase = argparse.ArgumentParser(add_help=False)
    passphrase.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help=f"CA key passphrase: first line of FILE (else ${PASSPHRASE_ENV}, if set)",
    )
    signing = argparse.ArgumentParser(add_help=False, parents=[passphrase])
    signing.add_argument(
        "--ca-cert", type=Path, metavar="FILE", help="sign with this CA instead of DIR/ca.crt"
    )
    signing.add_argument(
        "--ca-key", type=Path, metavar="FILE", help="the key of --ca-cert (PEM, may be encrypted)"
    )
    leaf = argparse.ArgumentParser(add_help=False, parents=[folder, signing])
    leaf.add_argument(
        "--key-type",
        type=_key_type,
        metavar=key_types,
        help="key algorithm of a new key (default: ecdsa-p256; an existing key is kept)",
    )
    leaf.add_argument(
        "--ca-key-type",
        type=_key_type,
        default=KeyType.ECDSA_P256,
        metavar=key_types,
        help="key algorithm of the CA when it has to be made first (default: ecdsa-p256)",
    )
    leaf.add_argument(
        "--days",
        type=_days(MAX_LEAF_DAYS),
        default=LEAF_DAYS,
        help=f"validity of the certificate (default and maximum: {MAX_LEAF_DAYS})",
    )
    leaf.add_argument(
        "--reissue",
        action="store_true",
        help="issue a new certificate for the existing key now, with exactly this run's names",
    )
    leaf.add_argument(
        "--force", action="store_true", help="replace the existing key and certificate"
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Certificates for the registry's TLS: a CA, server and client certificates, "
        "and the certs.d folders container engines read; and the token service's signing key.",
        epilog="Exit codes: 0 done, 1 failure, 2 usage error, 3 show found a problem.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser(
        "init", parents=[folder, passphrase], help="make the CA (once; re-running keeps it)"
    )
    init.add_argument(
        "--key-type",
        type=_key_type,
        default=KeyType.ECDSA_P256,
        metavar=key_types,
        help="CA key algorithm (default: ecdsa-p256)",
    )
    init.add_argument(
        "--days",
        type=_days(100 * 366),
        default=CA_DAYS,
        help=f"validity of the CA (default: {CA_DAYS})",
    )
    init.add_argument("--name", help="common name of the CA (default: 'registry CA HOSTNAME')")
    init.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA (every certificate it signed stops being trusted)",
    )

    server = commands.add_parser(
        "server", parents=[leaf], help="issue the server certificate (DIR/server.crt, .key)"
    )
    server.add_argument(
        "--host",
        action="append",
        type=_host,
        default=[],
        metavar="NAME_OR_IP",
        help="a DNS name or IP address clients use (repeat; added to the defaults)",
    )
    server.add_argument(
        "--no-default-hosts",
        action="store_true",
        help="leave out this machine's names and addresses (host name, localhost, interfaces)",
    )

    client = commands.add_parser(
        "client", parents=[leaf], help="issue a client pair for mutual TLS (DIR/client-NAME.*)"
    )
    client.add_argument("name", metavar="NAME", help="the client's name (certificate CN)")

    bundle = commands.add_parser(
        "bundle",
        parents=[folder, signing],
        help="write DIR/certs.d/HOST:PORT/ for a Docker engine's /etc/docker/certs.d/",
    )
    bundle.add_argument("host_port", type=_host_port, metavar="HOST:PORT")
    bundle.add_argument(
        "--client",
        metavar="NAME",
        help="add client.cert and client.key of client NAME (issued if missing) for mutual TLS",
    )
    bundle.add_argument(
        "--force", action="store_true", help="replace a client.key already in the bundle"
    )

    trust = commands.add_parser(
        "trust", parents=[folder], help="print the commands that make engines trust the CA"
    )
    trust.add_argument("host_port", type=_host_port, metavar="HOST:PORT")
    trust.add_argument(
        "--ca", type=Path, metavar="FILE", help="the CA certificate (default: DIR/ca.crt)"
    )

    token = commands.add_parser(
        "token",
        parents=[folder],
        help="make the token service's signing key (DIR/token.key) and certificate (token.crt)",
    )
    token.add_argument(
        "--key-type",
        type=_key_type,
        metavar=key_types,
        help="key algorithm of a new key (default: ecdsa-p256; an existing key is kept)",
    )
    token.add_argument(
        "--days",
        type=_days(100 * 366),
        default=TOKEN_DAYS,
        help=f"validity of a new certificate (default: {TOKEN_DAYS})",
    )
    token.add_argument("--name", help="common name (default: 'registry token signer HOSTNAME')")
    token.add_argument(
        "--force",
        action="store_true",
        help="replace the key and certificate (tokens signed with the old key stop working)",
    )

    show = commands.add_parser(
        "show", help="describe certificates and warn about problems (exit 3 if any)"
    )
    show.add_argument("path", type=Path, metavar="PATH", help="a certificate file or a folder")
    show.add_argument(
        "--ca",
        type=Path,
        metavar="FILE",
        help="check the chain against this CA (default: ca.crt in or beside PATH)",
    )
    show.add_argument(
        "--host",
        action="append",
        type=_host,
        default=[],
        metavar="NAME_OR_IP",
        help="warn when a server certificate does not name this host (repeat)",
    )
    return parser


def _ca_files(args: argparse.Namespace) -> CAFiles | None:
    if args.ca_cert is None and args.ca_key is None:
        return None
    if args.ca_cert is None or args.ca_key is None:
        raise _UsageError("--ca-cert and --ca-key go together")
    return CAFiles(cert=args.ca_cert, key=args.ca_key)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    return read_passphrase(args.passphrase_file, os.environ)


def _until(moment: datetime | None) -> str:
    return "" if moment is None else f", valid until {moment:%Y-%m-%d}"


def _run_init(args: argparse.Namespace, out: TextIO) -> int:
    passphrase = _passphrase(args)
    result = ensure_ca(
        args.dir,
        key_type=args.key_type,
        passphrase=passphrase,
        days=args.days,
        name=args.name,
        force=args.force,
    )
    cert = result.certificate
    described = (
        f"{cert.subject.rfc4514_string()}, {describe_key(cert.public_key())}"
        f"{_until(cert.not_valid_after_utc)}"
    )
    if result.action is Action.UNCHANGED:
        if cert.not_valid_after_utc <= datetime.now(UTC):
            raise CertificateError(
                f"{result.ca_cert}: the CA expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                "make a new one with init --force"
            )
        print(f"CA exists already: {result.ca_cert} ({described}); nothing done", file=out)
        return EXIT_OK
    encrypted = " (encrypted)" if passphrase else ""
    print(f"{result.action.value} CA {result.ca_cert} ({described})", file=out)
    print(f"  key {result.ca_key}{encrypted}, mode 0600: keep it secret", file=out)
    return EXIT_OK


def _describe_leaf(
    out: TextIO,
    what: str,
    cert_path: Path,
    key_path: Path,
    action: Action,
    reasons: Sequence[str],
    not_after: datetime | None,
) -> None:
    if action is Action.UNCHANGED:
        print(f"{cert_path} still fits{_until(not_after)}: nothing done", file=out)
    elif action is Action.REISSUED:
        print(
            f"reissued {cert_path} for the existing key {key_path} ({'; '.join(reasons)})"
            f"{_until(not_after)}",
            file=out,
        )
    else:
        print(f"{action.value} {what} {cert_path} and key {key_path}{_until(not_after)}", file=out)


def _run_server(args: argparse.Namespace, out: TextIO) -> int:
    files = ensure_server_certificate(
        args.dir,
        args.host,
        include_default_hosts=not args.no_default_hosts,
        key_type=args.key_type,
        ca_key_type=args.ca_key_type,
        days=args.days,
        passphrase=_passphrase(args),
        ca_files=_ca_files(args),
        force=args.force,
        reissue=args.reissue,
    )
    if files.ca_created:
        print(f"created CA {files.ca_cert} (no CA in {args.dir} yet)", file=out)
    _describe_leaf(
        out,
        "server certificate",
        files.server_cert,
        files.server_key,
        files.action,
        files.reasons,
        files.not_after,
    )
    print(f"  names: {', '.join(files.names)}", file=out)
    print(
        f"next: {PROG} bundle HOST:PORT --dir {args.dir} makes the folder engines need to "
        f"trust {files.ca_cert}",
        file=out,
    )
    return EXIT_OK


def _run_client(args: argparse.Namespace, out: TextIO) -> int:
    files = ensure_client_certificate(
        args.dir,
        args.name,
        key_type=args.key_type,
        ca_key_type=args.ca_key_type,
        days=args.days,
        passphrase=_passphrase(args),
        ca_files=_ca_files(args),
        force=args.force,
        reissue=args.reissue,
    )
    if files.ca_created:
        print(f"created CA {files.ca_cert} (no CA in {args.dir} yet)", file=out)
    _describe_leaf(
        out,
        f"client certificate CN={files.name}",
        files.client_cert,
        files.client_key,
        files.action,
        files.reasons,
        files.not_after,
    )
    return EXIT_OK


def _run_bundle(args: argparse.Namespace, out: TextIO) -> int:
    ca_files = _ca_files(args)
    if args.client is not None:
        files = ensure_client_certificate(
            args.dir, args.client, passphrase=_passphrase(args), ca_files=ca_files
        )
        if files.action is not Action.UNCHANGED:
            _describe_leaf(
                out,
                f"client certificate CN={files.name}",
                files.client_cert,
                files.client_key,
                files.action,
                files.reasons,
                files.not_after,
            )
    bundle = write_bundle(
        args.dir,
        args.host_port,
        client=args.client,
        ca_cert=ca_files.cert if ca_files is not None else None,
        force=args.force,
    )
    print(f"wrote {bundle.ca_cert}", file=out)
    if bundle.client_cert is not None and bundle.client_key is not None:
        print(f"wrote {bundle.client_cert}", file=out)
        print(f"wrote {bundle.client_key} (mode 0600)", file=out)
    for warning in bundle.warnings:
        print(f"WARNING: {warning}", file=out)
    target = f"{DOCKER_CERTS_D}/{args.host_port}"
    folder = shlex.quote(str(bundle.folder))
    print(
        f"\nCopy it to {target}/ on each Docker engine host that uses {args.host_port}:", file=out
    )
    print(f"  mkdir -p {shlex.quote(target)} && cp {folder}/* {shlex.quote(target)}/", file=out)
    print(f"or over ssh:  scp -r {folder} root@ENGINE_HOST:{DOCKER_CERTS_D}/", file=out)
    print(
        "Podman reads the same layout from /etc/containers/certs.d/; "
        f"`{PROG} trust {args.host_port}` prints the commands for each engine.",
        file=out,
    )
    return EXIT_OK


def _run_trust(args: argparse.Namespace, out: TextIO) -> int:
    ca_cert = args.ca if args.ca is not None else args.dir / CA_CERT
    load_certificates(ca_cert)
    out.write(trust_instructions(ca_cert, args.host_port))
    return EXIT_OK


def _run_token(args: argparse.Namespace, out: TextIO) -> int:
    files = ensure_token_key(
        args.dir, key_type=args.key_type, days=args.days, name=args.name, force=args.force
    )
    cert = files.certificate
    described = f"{describe_key(cert.public_key())}{_until(cert.not_valid_after_utc)}"
    if files.action is Action.UNCHANGED:
        print(
            f"token signing key {files.key} and certificate {files.cert} exist already "
            f"({described}): kept (--force replaces both)",
            file=out,
        )
    elif files.action is Action.REISSUED:
        print(
            f"reissued {files.cert} for the existing key {files.key} "
            f"({'; '.join(files.reasons)}){_until(cert.not_valid_after_utc)}",
            file=out,
        )
    else:
        print(
            f"{files.action.value} token signing key {files.key} and certificate {files.cert} "
            f"({cert.subject.rfc4514_string()}, {described})",
            file=out,
        )
        print(
            f"  key {files.key}, mode 0600, not encrypted (the registry reads it unattended): "
            "keep it secret",
            file=out,
        )
    print(f"  key ID (kid in tokens): {files.key_id}", file=out)
    print("config.yml:", file=out)
    print(f"  auth.token.rootcertbundle: {files.cert}", file=out)
    print(f"  access.tokenservice.key: {files.key}", file=out)
    return EXIT_OK


def _run_show(args: argparse.Namespace, out: TextIO) -> int:
    inspection = inspect(args.path, ca_path=args.ca, hosts=args.host)
    out.write(format_inspection(inspection))
    return EXIT_PROBLEMS if inspection.all_warnings else EXIT_OK


_COMMANDS = {
    "init": _run_init,
    "server": _run_server,
    "client": _run_client,
    "bundle": _run_bundle,
    "trust": _run_trust,
    "token": _run_token,
    "show": _run_show,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``registry certs`` with ``argv`` (the words after ``certs``); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    out, err = sys.stdout, sys.stderr
    try:
        return _COMMANDS[args.command](args, out)
    except (_UsageError, HostNameError, ClientNameError) as error:
        print(f"{PROG} {args.command}: error: {error}", file=err)
        return EXIT_USAGE
    except PassphraseError as error:
        print(
            f"{PROG} {args.command}: error: {error} "
            f"(give it with --passphrase-file FILE or ${PASSPHRASE_ENV})",
            file=err,
        )
        return EXIT_FAILURE
    except CertificateError as error:
        print(f"{PROG} {args.command}: error: {error}", file=err)
        return EXIT_FAILURE
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{PROG} {args.command}: error: {where}{error.strerror or error}", file=err)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
