"""The `registry` command: serve, check-config, purge-uploads, garbage-collect, certs, engine,
users."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import Config, ConfigError, Secret, load_config
from .logs import LEVELS, configure_logging
from .server import ServerError, TLSFiles, check_tls, is_loopback_url, serve, worker_count

log = logging.getLogger("registry")

def _serve_flags(args: argparse.Namespace) -> dict[str, object]:
    flags: dict[str, object] = {}
    if args.addr:
        flags["http.addr"] = args.addr
    if args.root:
        flags["storage.filesystem.rootdirectory"] = args.root
    if args.workers is not None:
        flags["http.workers"] = args.workers
    if args.delete:
        flags["storage.delete.enabled"] = True
    if args.read_only:
        flags["storage.maintenance.readonly.enabled"] = True
    if args.log_level:
        flags["log.level"] = args.log_level
    return flags


def _load(args: argparse.Namespace, flags: dict[str, object] | None = None) -> Config:
    path = args.config or args.config_file
    return load_config(path, os.environ, flags)


def _prepare_storage(config: Config) -> str:
    if config.storage.driver != "filesystem":
        return f"{config.storage.driver} storage"
    root = os.path.abspath(str(config.storage.parameters["rootdirectory"]))
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"storage.filesystem.rootdirectory: cannot create {root}: {error.strerror}"
        ) from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ConfigError(f"storage.filesystem.rootdirectory: {root} is not writable")
    return root


def _prepare_redis(config: Config) -> None:
    """``redis.tls``'s files, checked before any worker needs them."""
    if config.storage.cache.blobdescriptor == "redis" and config.redis.tls.enabled:
        from .storage.redis_cache import check_tls_files

        check_tls_files(config.redis.tls)


def _htpasswd_files(config: Config) -> list[tuple[str, str]]:
    """(config key, path) of each htpasswd file the configuration names."""
    files = []
    if config.auth.htpasswd is not None:
        files.append(("auth.htpasswd.path", config.auth.htpasswd.path))
    if config.access.tokenservice is not None:
        files.append(("access.tokenservice.htpasswd", config.access.tokenservice.htpasswd))
    return files


def _prepare_access(config: Config, *, provision: bool) -> list[str]:
    """Check every file access control reads; with ``provision``, make a missing htpasswd file.

    registry:2 makes a missing htpasswd file with one user and a random
    password, and shows the password once; so do we (on the terminal, before
    the workers start, so it is shown once whatever their number).
    """
    from .auth import build_access_control
    from .auth.htpasswd import DEFAULT_USER
    from .auth.htpasswd import provision as make_htpasswd

    notes = []
    for key, path in _htpasswd_files(config):
        if os.path.exists(path):
            continue
        if not provision:
            notes.append(f"{key}: {path} does not exist; the first start makes it")
            return notes
        try:
            password = make_htpasswd(path)
        except OSError as error:
            raise ConfigError(f"{key}: cannot create {path}: {error.strerror}") from None
        if password is not None:
            print(
                f"{key}: {path} did not exist; made it with user {DEFAULT_USER!r} and password\n"
                f"\n    {password}\n\n(shown only now; change it with "
                f"`registry users passwd {DEFAULT_USER} --file {path}`)",
                file=sys.stderr,
            )
    build_access_control(config)
    return notes


def _warn_clear_text(config: Config, urls: list[str]) -> None:
    """Credentials over plain HTTP beyond this machine: say so, and how to turn on TLS."""
    if not config.auth.enabled:
        return
    exposed = [url for url in urls if url.startswith("http://") and not is_loopback_url(url)]
    token = config.auth.token
    # With autoredirect the realm follows the scheme and Host the client used.
    realm = token.realm if token is not None and not token.autoredirect else ""
    if realm.startswith("http://") and not is_loopback_url(realm):
        exposed.append(f"the token realm {realm}")
    if exposed:
        log.warning(
            "auth: passwords and tokens would cross the network in clear text on %s; serve "
            "HTTPS with `registry serve --tls --tls-host NAME` (or set http.tls.certificate and "
            "http.tls.key), or listen on localhost only",
            ", ".join(exposed),
        )


def _auto_tls(config: Config, args: argparse.Namespace) -> Config:
    """``serve --tls`` without a configured certificate: make (once) and use our own."""
    from tools.certs import ensure_server_certificate, read_passphrase

    files = ensure_server_certificate(
        Path(args.tls_dir),
        tuple(args.tls_host or ()),
        passphrase=read_passphrase(None, os.environ),
    )
    log.info("TLS certificate %s: %s", files.server_cert, files.action.value)
    tls = dataclasses.replace(
        config.http.tls,
        certificate=str(files.server_cert),
        key=str(files.server_key),
        auto=True,
        directory=args.tls_dir,
    )
    return dataclasses.replace(config, http=dataclasses.replace(config.http, tls=tls))


def _print_trust_instructions(config: Config, urls: list[str], names: Sequence[str]) -> None:
    """After ``serve --tls`` made its certificate: how engines trust it, for the bound port.

    On every interface, engines are told the first ``--tls-host`` (the name the
    user gave for the registry), else the machine's host name.
    """
    from tools.certs import CA_CERT, HostNameError, trust_instructions

    bound = next((url for url in urls if url.startswith("https://")), None)
    if bound is None:
        return  # A Unix socket: engines do not reach it by HOST:PORT.
    host = config.http.addr.rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]"):
        host = names[0] if names else socket.gethostname()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # An IPv6 address, as HOST:PORT writes it.
    port = bound.rsplit(":", 1)[1]  # The one bound, also when the address asked for port 0.
    try:
        text = trust_instructions(Path(config.http.tls.directory) / CA_CERT, f"{host}:{port}")
    except HostNameError as error:
        log.warning("no trust instructions for %s:%s: %s", host, port, error)
        return
    print(text, file=sys.stderr)


def _tls_files(config: Config, args: argparse.Namespace) -> tuple[Config, TLSFiles | None]:
    """The certificate files to serve with, checked; made first for ``--tls`` alone."""
    if not args.tls and not config.http.tls.enabled:
        return config, None  # Plain HTTP: the certificate toolkit is not even loaded.
    from tools.certs import CertificateError

    try:
        if config.http.tls.certificate is None:
            config = _auto_tls(config, args)
        return config, check_tls(config.http.tls)
    except CertificateError as error:
        raise ServerError(f"TLS: {error}") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args, _serve_flags(args))
    configure_logging(config.log)
    for warning in config.warnings:
        log.warning("config: %s", warning)
    where = _prepare_storage(config)
    _prepare_access(config, provision=True)
    _prepare_redis(config)

    def ready(urls: list[str]) -> None:
        workers = worker_count(config)
        log.info(
            "registry %s listening on %s (%d worker%s), storage: %s%s",
            __version__,
            ", ".join(urls),
            workers,
            "" if workers == 1 else "s",
            where,
            ", read-only" if config.storage.readonly else "",
        )
        _warn_clear_text(config, urls)
        if config.http.tls.auto:
            _print_trust_instructions(config, urls, args.tls_host or ())

    def reload() -> tuple[Config, TLSFiles | None]:
        """SIGHUP: the configuration read again from the same file, environment and
        flags, and checked as at start (files access control reads, TLS files)."""
        from .auth import build_access_control

        fresh = _load(args, _serve_flags(args))
        build_access_control(fresh)
        _prepare_redis(fresh)
        fresh, fresh_tls = _tls_files(fresh, args)
        configure_logging(fresh.log)
        for warning in fresh.warnings:
            log.warning("config: %s", warning)
        return fresh, fresh_tls

    try:
        config, tls = _tls_files(config, args)
        return serve(config, tls, ready=ready, reload=reload)
    except ServerError as error:
        log.error("%s", error)
        return 1


def _json_value(value: object) -> object:
    """Sets as lists; credentials as stars (``check-config``'s output may be shared)."""
    return str(value) if isinstance(value, Secret) else list(value)  # type: ignore[call-overload]


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    _prepare_redis(config)
    for warning in (*config.warnings, *_prepare_access(config, provision=False)):
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps(dataclasses.asdict(config), indent=2, default=_json_value))
    return 0


def _cmd_purge_uploads(args: argparse.Namespace) -> int:
    from .config import parse_duration
    from .storage.driver.factory import create_driver
    from .storage.purge import purge_uploads

    config = _load(args)
    configure_logging(config.log)
    age = (
        parse_duration("--older-than", args.older_than)
        if args.older_than
        else config.storage.upload_purging.age
    )
    driver = create_driver(config.storage.driver, config.storage.parameters)
    result = asyncio.run(purge_uploads(driver, age, dry_run=args.dry_run))
    verb = "would purge" if args.dry_run else "purged"
    for entry in result.purged:
        print(f"{verb} {entry}")
    print(f"{verb} {len(result.purged)} upload(s), kept {result.kept}")
    return 0


def _cmd_garbage_collect(args: argparse.Namespace) -> int:
    """registry:2's ``garbage-collect``; the exit statuses are in ``_GC_EPILOG``."""
    from .config import parse_duration
    from .storage.driver.factory import create_driver, with_cache
    from .storage.gc_report import garbage_collect

    config = _load(args)
    configure_logging(config.log)
    if config.storage.driver == "inmemory":
        driver = config.storage.driver
        raise ConfigError(f"storage.{driver}: nothing to collect in storage one process holds")
    grace = parse_duration("--grace", args.grace) if args.grace else config.storage.gc.grace
    _prepare_redis(config)
    storage = create_driver(config.storage.driver, config.storage.parameters)
    return garbage_collect(
        # With a Redis cache, what it deletes is forgotten there too (not looked up).
        with_cache(storage, config, lookups=False),
        grace=grace,
        delete_untagged=args.delete_untagged,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )


_GC_EPILOG = """\
Run it with the registry stopped or in read-only mode, as registry:2 asks; still,
nothing younger than the grace delay is taken, and a push racing the collection
gets back what it needed (docs/gc.md). storage.maintenance.gc collects while serving.

exit status: 0 done (also --dry-run); 1 the storage failed midway (run it again);
2 configuration or usage error; 130 interrupted (hidden content is checked again
by the next collection).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry",
        description="Container image registry: OCI Distribution v1.1, Docker Registry API v2.",
    )
    parser.add_argument("--version", action="version", version=f"registry {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "config_file", nargs="?", metavar="CONFIG", help="registry:2 config.yml (as --config)"
        )
        sub.add_argument("--config", "-c", metavar="FILE", help="registry:2 config.yml to read")

    serve = commands.add_parser("serve", help="run the registry (defaults: ./data, localhost:5000)")
    with_config(serve)
    serve.add_argument("--addr", help="listen address, HOST:PORT or :PORT (http.addr)")
    serve.add_argument("--root", help="storage folder (storage.filesystem.rootdirectory)")
    serve.add_argument(
        "--workers", type=int, help="server processes, 0 = one per CPU (http.workers)"
    )
    serve.add_argument(
        "--delete", action="store_true", help="allow deletes (storage.delete.enabled)"
    )
    serve.add_argument(
        "--read-only", action="store_true", help="refuse writes (maintenance.readonly)"
    )
    serve.add_argument("--log-level", choices=sorted(LEVELS), help="log.level")
    serve.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS; without http.tls.* make a CA and certificate once",
    )
    serve.add_argument(
        "--tls-dir", default="certs", help="where --tls keeps what it makes (default: certs)"
    )
    serve.add_argument(
        "--tls-host",
        action="append",
        metavar="NAME_OR_IP",
        help="extra name for the --tls certificate",
    )
    serve.set_defaults(run=_cmd_serve)

    check = commands.add_parser("check-config", help="validate a config and print the result")
    with_config(check)
    check.set_defaults(run=_cmd_check_config)

    purge = commands.add_parser("purge-uploads", help="delete abandoned upload sessions now")
    with_config(purge)
    purge.add_argument("--older-than", metavar="DURATION", help="default: uploadpurging.age (168h)")
    purge.add_argument("--dry-run", action="store_true", help="only list what would go")
    purge.set_defaults(run=_cmd_purge_uploads)

    collect = commands.add_parser(
        "garbage-collect",
        help="delete blobs no manifest references (registry:2's command)",
        epilog=_GC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_config(collect)
    collect.add_argument("-d", "--dry-run", action="store_true", help="only list what would go")
    collect.add_argument(
        "-m", "--delete-untagged", action="store_true", help="also delete manifests no tag reaches"
    )
    collect.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    collect.add_argument(
        "--grace", metavar="DURATION", help="keep what is younger (default: gc.grace, 1h; 0: all)"
    )
    collect.set_defaults(run=_cmd_garbage_collect)

    commands.add_parser("certs", help="certificate toolkit (registry certs --help)", add_help=False)
    commands.add_parser(
        "engine", help="engine configuration toolkit (registry engine --help)", add_help=False
    )
    commands.add_parser(
        "users", help="users of the htpasswd file (registry users --help)", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "certs":
        from tools.certs_cli import main as certs_main

        return certs_main(arguments[1:])
    if arguments and arguments[0] == "engine":
        from tools.engine import main as engine_main

        return engine_main(arguments[1:])
    if arguments and arguments[0] == "users":
        from tools.users import main as users_main

        return users_main(arguments[1:])
    args = _parser().parse_args(arguments)
    try:
        code: int = args.run(args)
    except ConfigError as error:
        print(f"registry: configuration error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code
