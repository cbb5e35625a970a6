#!/usr/bin/env python3
"""Configure the container engines of this host to use a registry.

This is the part of the engine toolkit that runs on the engine host itself. It stays one
file that needs only Python 3.8+ and its standard library, because ``registry engine
--ssh HOST`` streams it to ``python3 -`` on hosts where nothing else is installed; it also
runs as ``python3 tools/engine_host.py ARGS`` where the package is not installed.

It merges into the engines' own files and never clobbers them: other keys and their order
survive, every write is atomic (a temporary file in the same folder, fsync, rename) and
keeps the previous version as ``FILE.bak``, and a re-run that changes nothing writes
nothing. Exit codes: 0 done or unchanged, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PROG = "registry engine"
ENGINES = ("docker", "containerd", "podman")
MARKER = "# Written by registry engine"
CAPABILITIES = '["pull", "resolve", "push"]'
DAEMON_JSON_INDENT = 2
RELOAD_ATTEMPTS = 20
RELOAD_DELAY = 0.25


class EngineConfigError(Exception):
    """A problem the user can fix; the message says what and how (exit code 1)."""


class UsageError(EngineConfigError):
    """The command line itself is wrong (exit code 2)."""


# --------------------------------------------------------------------------- addresses


_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_IPV6_IN_BRACKETS = re.compile(r"\[([^\]]+)\](?::([^:]*))?\Z")


@dataclass(frozen=True)
class Registry:
    """A registry address as engines name it: ``host``, ``host:port`` or ``[v6]:port``."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def file_stem(self) -> str:
        """A file name for this registry (no ``:`` or brackets, which some tools dislike)."""
        return "registry-" + re.sub(r"[^A-Za-z0-9.-]+", "_", str(self)).strip("_")


def _parse_port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{original!r}: the port must be a number from 1 to 65535")
    return int(text)


def _check_hostname(host: str, original: str) -> None:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UsageError(f"{original!r}: {host!r} is not an IPv4 address") from None
        return
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise UsageError(f"{original!r}: {host!r} is not a valid host name")


def parse_registry(text: str) -> Registry:
    """Parse ``HOST[:PORT]``; IPv6 addresses go in brackets, as in a URL."""
    value = text.strip()
    if "://" in value:
        raise UsageError(
            f"{text!r}: write the registry as HOST:PORT, without a scheme "
            "(engines pick HTTP or HTTPS)"
        )
    if "/" in value or not value:
        raise UsageError(f"{text!r}: expected HOST:PORT (a registry address, no path)")
    if value.startswith("["):
        match = _IPV6_IN_BRACKETS.match(value)
        if match is None:
            raise UsageError(f"{text!r}: expected [IPV6]:PORT")
        try:
            ipaddress.IPv6Address(match.group(1))
        except ValueError:
            raise UsageError(f"{text!r}: {match.group(1)!r} is not an IPv6 address") from None
        port = None if match.group(2) is None else _parse_port(match.group(2), text)
        return Registry(f"[{match.group(1)}]", port)
    if value.count(":") > 1:
        raise UsageError(f"{text!r}: put an IPv6 address in brackets, e.g. [{value}]:5000")
    host, sep, port_text = value.partition(":")
    _check_hostname(host, text)
    return Registry(host, _parse_port(port_text, text) if sep else None)


def parse_insecure_entry(text: str) -> str:
    """Validate an ``insecure-registries`` entry: HOST[:PORT] or a CIDR (kept canonical)."""
    value = text.strip()
    if "/" in value and "://" not in value:
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise UsageError(f"{text!r}: not a valid CIDR network such as 10.0.0.0/8") from None
    return str(parse_registry(value))


def parse_mirror_url(text: str) -> str:
    """Validate a ``registry-mirrors`` URL the way dockerd does (http or https, no path,
    no query)."""
    from urllib.parse import urlsplit

    value = text.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"{text!r}: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{text!r}: a mirror is an http:// or https:// URL")
    if parts.username is not None or parts.query or parts.fragment:
        raise UsageError(f"{text!r}: a mirror URL has no user, query or fragment")
    if parts.path not in ("", "/"):
        # dockerd refuses the whole daemon.json for it ("invalid mirror: path, query, or
        # fragment at end of the URI"), and then would not start again.
        raise UsageError(
            f"{text!r}: the Docker engine takes a mirror without a path; for a prefix of "
            "proxy.upstreams use containerd's or podman's mirror settings (docs/mirror.md)"
        )
    return value


def _same_insecure(a: str, b: str) -> bool:
    if "/" in a and "/" in b:
        try:
            return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
        except ValueError:
            pass
    return a.strip().lower() == b.strip().lower()


def _same_mirror(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def is_implicitly_insecure(registry: Registry) -> bool:
    """Docker always treats loopback registries (127.0.0.0/8, ::1, localhost) as insecure."""
    host = registry.host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class EnginePaths:
    """Where each engine reads its configuration, for one (possibly rootless) user."""

    daemon_json: Path
    docker_certs: Path
    containerd_certs: Path
    containers: Path
    docker_pidfile: Path
    root: Path
    rootless: bool

    @property
    def registries_conf_d(self) -> Path:
        return self.containers / "registries.conf.d"

    @property
    def containers_certs(self) -> Path:
        return self.containers / "certs.d"


def system_paths(root: Path) -> EnginePaths:
    return EnginePaths(
        daemon_json=root / "etc/docker/daemon.json",
        docker_certs=root / "etc/docker/certs.d",
        containerd_certs=root / "etc/containerd/certs.d",
        containers=root / "etc/containers",
        docker_pidfile=root / "var/run/docker.pid",
        root=root,
        rootless=False,
    )


def rootless_paths(env: Mapping[str, str], root: Path) -> EnginePaths:
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    runtime = Path(env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")
    return EnginePaths(
        daemon_json=config / "docker/daemon.json",
        docker_certs=config / "docker/certs.d",
        containerd_certs=config / "containerd/certs.d",
        containers=config / "containers",
        docker_pidfile=runtime / "docker.pid",
        root=root,
        rootless=True,
    )


def choose_paths(args: argparse.Namespace, env: Mapping[str, str]) -> EnginePaths:
    """System paths as root, the rootless engine's paths otherwise; every path overridable."""
    root = Path(args.root or "/")
    rootless = args.rootless if args.rootless is not None else os.geteuid() != 0
    paths = rootless_paths(env, root) if rootless else system_paths(root)
    overrides = {
        "daemon_json": args.daemon_json,
        "docker_certs": args.docker_certs_dir,
        "containerd_certs": args.containerd_certs_dir,
        "containers": args.containers_dir,
        "docker_pidfile": args.pidfile,
    }
    values: dict[str, Any] = {key: Path(value) for key, value in overrides.items() if value}
    if not values:
        return paths
    return dataclasses.replace(paths, **values)


# --------------------------------------------------------------------------- file edits


@dataclass(frozen=True)
class FileEdit:
    """The wanted content of one file; ``new`` is None to remove it."""

    path: Path
    old: bytes | None
    new: bytes | None
    summary: str
    mode: int = 0o644
    secret: bool = False

    @property
    def changed(self) -> bool:
        return self.old != self.new


def read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644, backup: bool = True) -> None:
    """Replace ``path`` by ``data`` so that readers see the old or the new file, never half.

    The new file keeps the owner and mode of the one it replaces (``mode`` is for a new
    file); the replaced version stays as ``path.bak``. A symlink is followed, not replaced.
    """
    target = Path(os.path.realpath(str(path)))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        st: os.stat_result | None = target.stat()
    except FileNotFoundError:
        st = None
    fd, tmp_name = tempfile.mkstemp(dir=str(target.parent), prefix="." + target.name + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if st is not None:
            os.chmod(tmp_name, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                os.chown(tmp_name, st.st_uid, st.st_gid)
            if backup:
                _backup(target, st)
        else:
            os.chmod(tmp_name, mode)
        os.replace(tmp_name, str(target))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


def _backup(target: Path, st: os.stat_result) -> None:
    backup = target.with_name(target.name + ".bak")
    fd, tmp_name = tempfile.mkstemp(dir=str(target.parent), prefix="." + backup.name + ".")
    try:
        os.close(fd)
        shutil.copyfile(str(target), tmp_name)
        os.chmod(tmp_name, stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp_name, st.st_uid, st.st_gid)
        os.replace(tmp_name, str(backup))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def remove_file(path: Path, backup: bool = True) -> None:
    """Remove ``path`` (keeping it as ``path.bak``) and its folder if that is left empty."""
    if backup:
        os.replace(str(path), str(path.with_name(path.name + ".bak")))
    else:
        path.unlink()
    _fsync_dir(path.parent)


def unified_diff(edit: FileEdit) -> str:
    if edit.secret:
        return f"--- {edit.path}\n+++ {edit.path}\n(secret content not shown)\n"
    old = (edit.old or b"").decode("utf-8", "replace").splitlines(keepends=True)
    new = (edit.new or b"").decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(
        old,
        new,
        str(edit.path) if edit.old is not None else "/dev/null",
        str(edit.path) if edit.new is not None else "/dev/null",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def apply_edits(edits: Iterable[FileEdit], *, dry_run: bool, backup: bool) -> list[str]:
    """Write the edits that change something; report one line per file."""
    report = []
    for edit in edits:
        if not edit.changed:
            report.append(f"unchanged {edit.path}: {edit.summary}")
            continue
        verb = "created" if edit.old is None else "removed" if edit.new is None else "changed"
        if dry_run:
            report.append(unified_diff(edit).rstrip("\n"))
            report.append(f"would have {verb} {edit.path}: {edit.summary} (dry run)")
            continue
        if edit.new is None:
            remove_file(edit.path, backup=backup)
        else:
            write_atomic(edit.path, edit.new, edit.mode, backup=backup)
        report.append(f"{verb} {edit.path}: {edit.summary}")
    return report


# --------------------------------------------------------------------------- daemon.json


def detect_indent(text: str) -> int | str | None:
    """The indent of an existing JSON file: None for a one-line file, 2 if unknown."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1:
        return None
    for line in lines[1:]:
        match = re.match(r"([ \t]+)\S", line)
        if match:
            spaces = match.group(1)
            return "\t" if spaces.startswith("\t") else len(spaces)
    return DAEMON_JSON_INDENT


def render_json(config: Mapping[str, Any], indent: int | str | None) -> bytes:
    return (json.dumps(config, indent=indent, ensure_ascii=False) + "\n").encode("utf-8")


def read_daemon_json(path: Path) -> tuple[bytes | None, dict[str, Any], int | str | None]:
    """Read a daemon.json: its bytes, its object and its indent; an empty file is ``{}``."""
    raw = read_bytes(path)
    if raw is None or not raw.strip():
        return raw, {}, DAEMON_JSON_INDENT
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); the file was left as it is"
        ) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EngineConfigError(
            f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}; "
            "fix the file (it was left as it is) and run this again"
        ) from None
    if not isinstance(config, dict):
        raise EngineConfigError(
            f"{path}: the top level must be a JSON object, found {type(config).__name__}; "
            "the file was left as it is"
        )
    return raw, config, detect_indent(text)


def daemon_json_list(config: Mapping[str, Any], key: str, path: Path) -> list[str]:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise EngineConfigError(
            f'{path}: "{key}" must be a list of strings, found {json.dumps(value)}; '
            "the file was left as it is"
        )
    return list(value)


def edit_daemon_json(
    path: Path, key: str, entry: str, *, add: bool, same: Callable[[str, str], bool]
) -> FileEdit:
    """Add ``entry`` to (or remove it from) the list ``key``, keeping everything else."""
    raw, config, indent = read_daemon_json(path)
    entries = daemon_json_list(config, key, path)
    present = [item for item in entries if same(item, entry)]
    if add and present:
        return FileEdit(path, raw, raw, f"{key} already lists {entry}")
    if not add and not present:
        return FileEdit(path, raw, raw, f"{key} does not list {entry}")
    if add:
        config[key] = [*entries, entry]
        summary = f"added {entry} to {key}"
    else:
        # An empty list, not no key: on reload dockerd keeps its old list when the key is absent.
        config[key] = [item for item in entries if not same(item, entry)]
        summary = f"removed {', '.join(present)} from {key}"
    return FileEdit(path, raw, render_json(config, indent), summary)


# --------------------------------------------------------------------------- other engines


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(value)


def containerd_hosts_toml(
    registry: Registry,
    *,
    scheme: str,
    ca: str | None = None,
    client: tuple[str, str] | None = None,
    skip_verify: bool = False,
    why: str = "",
) -> bytes:
    """containerd's ``certs.d/HOST:PORT/hosts.toml``; relative paths are read from its folder."""
    url = f"{scheme}://{registry}"
    lines = [
        MARKER + (": " + why if why else "") + ".",
        f"server = {_toml(url)}",
        "",
        f"[host.{_toml(url)}]",
        f"  capabilities = {CAPABILITIES}",
    ]
    if ca is not None:
        lines.append(f"  ca = {_toml(ca)}")
    if client is not None:
        lines.append(f"  client = [[{_toml(client[0])}, {_toml(client[1])}]]")
    if skip_verify:
        lines.append("  skip_verify = true")
    return ("\n".join(lines) + "\n").encode("utf-8")


def containers_registry_conf(registry: Registry) -> bytes:
    """A ``registries.conf.d`` drop-in (podman, CRI-O, skopeo, buildah) for an insecure registry."""
    lines = [
        f"{MARKER}: {registry} over plain HTTP or an unverified certificate.",
        "[[registry]]",
        f"location = {_toml(str(registry))}",
        "insecure = true",
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _owned(raw: bytes | None) -> bool:
    return raw is not None and raw.startswith(MARKER.encode())


def _insecure_hosts(raw: bytes | None) -> bool:
    """Whether a hosts.toml of ours declares plain HTTP or unverified HTTPS (not `trust`)."""
    pattern = rb'^server = "http://|^\s*skip_verify = true'
    return _owned(raw) and re.search(pattern, raw or b"", re.M) is not None


def replace_owned_file(path: Path, content: bytes | None, summary: str) -> FileEdit:
    """Our own whole-file configuration; a file written by someone else is still backed up."""
    raw = read_bytes(path)
    if content is None and raw is not None and not _owned(raw):
        raise EngineConfigError(
            f"{path} was not written by {PROG}; left in place: remove it by hand if it should go"
        )
    if raw is not None and content is not None and not _owned(raw) and raw != content:
        summary += " (replaced a file written by hand; the old one is kept as .bak)"
    return FileEdit(path, raw, content, summary)


# --------------------------------------------------------------------------- engine queries


def docker_base_command(args: argparse.Namespace) -> list[str]:
    command = [args.docker]
    if args.docker_host:
        command += ["-H", args.docker_host]
    return command


def run_docker_info(args: argparse.Namespace, template: str) -> Any:
    """``docker info --format TEMPLATE`` parsed as JSON, or None when the engine can't say."""
    try:
        result = subprocess.run(
            [*docker_base_command(args), "info", "--format", template],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def uses_containerd_image_store(info: Any) -> bool:
    """Whether ``docker info --format '{{json .}}'`` shows the containerd image store.

    That store resolves registries through containerd's hosts.toml files under the engine's
    certs.d, not through daemon.json's ``insecure-registries``.
    """
    if not isinstance(info, dict):
        return False
    status = info.get("DriverStatus") or []
    for pair in status if isinstance(status, list) else []:
        if isinstance(pair, list) and any("io.containerd.snapshotter" in str(v) for v in pair):
            return True
    return False


def docker_image_store(args: argparse.Namespace) -> str:
    if args.image_store != "auto":
        return str(args.image_store)
    info = run_docker_info(args, "{{json .}}")
    return "containerd" if uses_containerd_image_store(info) else "classic"


def insecure_listed(config: Any, entry: str) -> bool:
    """Whether ``docker info``'s RegistryConfig treats ``entry`` as insecure."""
    if not isinstance(config, dict):
        return False
    if "/" in entry:
        cidrs = config.get("InsecureRegistryCIDRs") or []
        return any(_same_insecure(str(cidr), entry) for cidr in cidrs)
    indexes = config.get("IndexConfigs") or {}
    for name, index in indexes.items():
        if _same_insecure(name, entry) and isinstance(index, dict):
            return index.get("Secure") is False
    return False


def mirror_listed(config: Any, url: str) -> bool:
    if not isinstance(config, dict):
        return False
    return any(_same_mirror(str(mirror), url) for mirror in config.get("Mirrors") or [])


def systemd_runs_docker(rootless: bool) -> bool:
    if not os.path.isdir("/run/systemd/system") or shutil.which("systemctl") is None:
        return False
    command = ["systemctl", *(["--user"] if rootless else []), "is-active", "--quiet", "docker"]
    return subprocess.run(command, check=False).returncode == 0


def reload_docker(args: argparse.Namespace, paths: EnginePaths) -> str:
    """Make a running dockerd re-read daemon.json without restarting containers (SIGHUP)."""
    if args.pidfile is None and systemd_runs_docker(paths.rootless):
        command = ["systemctl", *(["--user"] if paths.rootless else []), "reload", "docker"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise EngineConfigError(
                f"{shlex.join(command)} failed: {result.stderr.strip() or result.returncode}"
            )
        return f"reloaded dockerd ({shlex.join(command)})"
    pidfile = paths.docker_pidfile
    try:
        pid = int(pidfile.read_text().strip())
    except FileNotFoundError:
        raise EngineConfigError(
            f"cannot reload: {pidfile} does not exist (is dockerd running? name its pid file with "
            "--pidfile)"
        ) from None
    except ValueError:
        raise EngineConfigError(f"cannot reload: {pidfile} holds no process id") from None
    comm = Path(f"/proc/{pid}/comm")
    if comm.exists() and comm.read_text().strip() != "dockerd":
        raise EngineConfigError(
            f"cannot reload: process {pid} from {pidfile} is {comm.read_text().strip()!r}, "
            "not dockerd (a stale pid file?)"
        )
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise EngineConfigError(
            f"cannot reload: no process {pid} (from {pidfile}); is dockerd running?"
        ) from None
    return f"sent SIGHUP to dockerd (pid {pid} from {pidfile}) to reload its configuration"


def wait_for_registry_config(args: argparse.Namespace, check: Callable[[Any], bool]) -> bool:
    """Poll ``docker info`` until ``check`` holds; dockerd reloads asynchronously."""
    for attempt in range(RELOAD_ATTEMPTS):
        if check(run_docker_info(args, "{{json .RegistryConfig}}")):
            return True
        if attempt + 1 < RELOAD_ATTEMPTS:
            time.sleep(RELOAD_DELAY)
    return False


# --------------------------------------------------------------------------- commands


@dataclass
class Outcome:
    """What a command reports, and whether everything it asked for took effect."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True


def selected_engines(args: argparse.Namespace) -> tuple[str, ...]:
    return ENGINES if args.engine == "all" else (str(args.engine),)


def insecure_edits(
    args: argparse.Namespace, paths: EnginePaths, entry: str, add: bool, out: Outcome
) -> list[FileEdit]:
    edits = []
    engines = selected_engines(args)
    if "docker" in engines:
        edits.append(
            edit_daemon_json(
                paths.daemon_json, "insecure-registries", entry, add=add, same=_same_insecure
            )
        )
    needs_host = [engine for engine in engines if engine != "docker"]
    if "docker" in engines and docker_image_store(args) == "containerd":
        out.lines.append(
            "dockerd uses the containerd image store, which reads hosts.toml under "
            f"{paths.docker_certs} rather than insecure-registries: writing that too"
        )
        needs_host.insert(0, "docker")
    if needs_host and "/" in entry:
        raise UsageError(
            f"{entry} is a network: only Docker's insecure-registries takes CIDRs; name a "
            f"HOST:PORT for {', '.join(needs_host)}"
        )
    registry = parse_registry(entry) if needs_host else None
    transport = "plain HTTP" if args.scheme == "http" else "HTTPS without verifying certificates"
    for engine in needs_host:
        assert registry is not None
        if engine == "podman":
            path = paths.registries_conf_d / (registry.file_stem + ".conf")
            content = containers_registry_conf(registry) if add else None
        else:
            base = paths.docker_certs if engine == "docker" else paths.containerd_certs
            path = base / str(registry) / "hosts.toml"
            content = (
                containerd_hosts_toml(
                    registry,
                    scheme=args.scheme,
                    skip_verify=args.scheme == "https",
                    why=f"{registry} over {transport}",
                )
                if add
                else None
            )
        what = f"{engine} {'treats' if add else 'forgets'} {registry} as insecure"
        raw = read_bytes(path)
        if add or engine == "podman" or not _owned(raw) or _insecure_hosts(raw):
            edits.append(replace_owned_file(path, content, what))
        else:
            out.lines.append(f"left {path} as it is: it holds the HTTPS settings of `trust`")
    return edits


def command_insecure(args: argparse.Namespace, paths: EnginePaths) -> Outcome:
    out = Outcome()
    if args.action == "list":
        return list_insecure(args, paths)
    entry = parse_insecure_entry(require_entry(args))
    add = args.action == "add"
    edits = insecure_edits(args, paths, entry, add, out)
    out.lines += apply_edits(edits, dry_run=args.dry_run, backup=args.backup)
    if "docker" in selected_engines(args):
        if add and "/" not in entry and is_implicitly_insecure(parse_registry(entry)):
            out.lines.append(
                f"note: Docker already treats {entry} as insecure (loopback addresses are)"
            )
        changed = edits[0].changed
        reload_and_verify(args, paths, out, entry, add, insecure_listed, "insecure", changed)
    return out


def list_insecure(args: argparse.Namespace, paths: EnginePaths) -> Outcome:
    out = Outcome()
    for engine in selected_engines(args):
        if engine == "docker":
            _raw, config, _indent = read_daemon_json(paths.daemon_json)
            entries = daemon_json_list(config, "insecure-registries", paths.daemon_json)
        elif engine == "containerd":
            entries = sorted(
                hosts.parent.name
                for hosts in paths.containerd_certs.glob("*/hosts.toml")
                if _insecure_hosts(hosts.read_bytes())
            )
        else:
            entries = sorted(
                match.group(1)
                for conf in paths.registries_conf_d.glob("*.conf")
                for match in [
                    re.search(
                        r'^location = "([^"]+)"\ninsecure = true',
                        conf.read_text("utf-8", "replace"),
                        re.M,
                    )
                ]
                if match
            )
        prefix = f"{engine}: " if len(selected_engines(args)) > 1 else ""
        out.lines += [prefix + entry for entry in entries]
    return out


def command_mirror(args: argparse.Namespace, paths: EnginePaths) -> Outcome:
    if args.engine != "docker":
        raise UsageError("registry mirrors are configured for Docker only (--engine docker)")
    out = Outcome()
    if args.action == "list":
        _raw, config, _indent = read_daemon_json(paths.daemon_json)
        out.lines += daemon_json_list(config, "registry-mirrors", paths.daemon_json)
        return out
    url = parse_mirror_url(require_entry(args))
    add = args.action == "add"
    edit = edit_daemon_json(paths.daemon_json, "registry-mirrors", url, add=add, same=_same_mirror)
    out.lines += apply_edits([edit], dry_run=args.dry_run, backup=args.backup)
    reload_and_verify(args, paths, out, url, add, mirror_listed, "a mirror", edit.changed)
    return out


def reload_and_verify(
    args: argparse.Namespace,
    paths: EnginePaths,
    out: Outcome,
    entry: str,
    add: bool,
    listed: Callable[[Any, str], bool],
    role: str,
    changed: bool,
) -> None:
    """With --reload, make dockerd take the change and check it did; else say how to."""
    if not args.reload:
        if changed and not args.dry_run:
            out.lines.append(
                "dockerd reads this on reload: add --reload, or run `systemctl reload docker` "
                "(or `kill -HUP $(cat /var/run/docker.pid)`)"
            )
        return
    if args.dry_run:
        out.lines.append("would reload dockerd (dry run)")
        return
    out.lines.append(reload_docker(args, paths))
    if wait_for_registry_config(args, lambda config: listed(config, entry) == add):
        out.lines.append(f"docker info {'lists' if add else 'no longer lists'} {entry} as {role}")
        return
    out.ok = False
    out.lines.append(
        f"docker info still {'does not list' if add else 'lists'} {entry} as {role} after the "
        "reload: check dockerd's log (journalctl -u docker); a flag on dockerd's command line "
        "overrides the file"
    )


def require_entry(args: argparse.Namespace) -> str:
    if not args.entry:
        raise UsageError(f"{args.command} {args.action} needs an entry")
    return str(args.entry)


def read_input(path: str, inputs: Mapping[str, bytes] | None) -> bytes:
    """The content of a file named on the command line (sent along when run remotely)."""
    if inputs is not None and path in inputs:
        return inputs[path]
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None


def check_certificates(ca: bytes, client: tuple[bytes, bytes] | None) -> None:
    """Refuse what an engine would refuse later: no PEM certificate, or a key not matching."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cadata=ca.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"the CA file holds no PEM certificate ({exc})") from None
    if client is None:
        return
    with tempfile.TemporaryDirectory() as folder:
        cert, key = Path(folder) / "client.cert", Path(folder) / "client.key"
        cert.write_bytes(client[0])
        key.touch(mode=0o600)
        key.write_bytes(client[1])
        try:
            context.load_cert_chain(str(cert), str(key))
        except ssl.SSLError as exc:
            raise UsageError(f"the client certificate and key do not form a pair ({exc})") from None


def trust_store(root: Path) -> tuple[Path, list[str]] | None:
    """The system trust store's anchor folder and refresh command (Debian, then Fedora)."""
    candidates = (
        ("usr/local/share/ca-certificates", ["update-ca-certificates"]),
        ("etc/pki/ca-trust/source/anchors", ["update-ca-trust", "extract"]),
    )
    for folder, command in candidates:
        if (root / folder).is_dir():
            return root / folder, command
    return None


def command_trust(
    args: argparse.Namespace, paths: EnginePaths, inputs: Mapping[str, bytes] | None
) -> Outcome:
    out = Outcome()
    registry = parse_registry(args.registry)
    ca = client = None
    if not args.remove:
        if not args.ca:
            raise UsageError(
                "trust needs --ca FILE (the CA that signed the registry's certificate)"
            )
        if bool(args.client_cert) != bool(args.client_key):
            raise UsageError("--client-cert and --client-key go together")
        ca = read_input(args.ca, inputs)
        if args.client_cert:
            client = (read_input(args.client_cert, inputs), read_input(args.client_key, inputs))
        check_certificates(ca, client)
    engines = selected_engines(args)
    docker_store = docker_image_store(args) if "docker" in engines else "classic"
    if docker_store == "containerd":
        out.lines.append(
            "dockerd uses the containerd image store, which reads hosts.toml under "
            f"{paths.docker_certs}: writing that too"
        )
    folders = {
        "docker": (paths.docker_certs, docker_store == "containerd"),
        "containerd": (paths.containerd_certs, True),
        "podman": (paths.containers_certs, False),
    }
    edits: list[FileEdit] = []
    for engine in engines:
        base, with_hosts = folders[engine]
        edits += certs_edits(base / str(registry), engine, registry, ca, client, with_hosts)
    if args.system:
        edits.append(system_trust_edit(paths, registry, ca))
    out.lines += apply_edits(edits, dry_run=args.dry_run, backup=args.backup)
    if args.dry_run:
        return out
    if args.remove:
        for engine in engines:
            folder = folders[engine][0] / str(registry)
            if folder.is_dir() and not os.listdir(str(folder)):
                folder.rmdir()
    if args.system and any(edit.changed for edit in edits[-1:]):
        out.lines.append(refresh_system_trust(paths))
    out.lines.append("engines read certs.d at every pull and push: no reload needed")
    return out


def certs_edits(
    folder: Path,
    engine: str,
    registry: Registry,
    ca: bytes | None,
    client: tuple[bytes, bytes] | None,
    with_hosts: bool,
) -> list[FileEdit]:
    """A certs.d folder: ca.crt, client.cert and client.key (0600), hosts.toml if read."""
    verb = "forgets" if ca is None else "trusts"
    summary = f"{engine} {verb} {registry}"
    wanted = [("ca.crt", ca, 0o644, False)]
    if client is not None or ca is None:
        wanted += [
            ("client.cert", client[0] if client else None, 0o644, False),
            ("client.key", client[1] if client else None, 0o600, True),
        ]
    edits = [
        FileEdit(folder / name, read_bytes(folder / name), content, summary, mode, secret)
        for name, content, mode, secret in wanted
    ]
    hosts = folder / "hosts.toml"
    if with_hosts and ca is not None:
        content = containerd_hosts_toml(
            registry,
            scheme="https",
            ca="ca.crt",
            client=("client.cert", "client.key") if client else None,
            why=f"{registry} over HTTPS, verified with ca.crt beside this file",
        )
        edits.append(replace_owned_file(hosts, content, f"{engine} reads it for {registry}"))
    elif with_hosts and _owned(read_bytes(hosts)) and not _insecure_hosts(read_bytes(hosts)):
        edits.append(replace_owned_file(hosts, None, f"{engine} forgets {registry}"))
    return edits


def system_trust_edit(paths: EnginePaths, registry: Registry, ca: bytes | None) -> FileEdit:
    if paths.rootless:
        raise EngineConfigError("--system changes the system trust store: run it as root")
    store = trust_store(paths.root)
    if store is None:
        raise EngineConfigError(
            f"no system trust store found under {paths.root} (looked for Debian's "
            "usr/local/share/ca-certificates and Fedora's etc/pki/ca-trust/source/anchors)"
        )
    path = store[0] / (registry.file_stem + ".crt")
    return FileEdit(
        path,
        read_bytes(path),
        ca,
        f"system trust store {'trusts' if ca else 'forgets'} {registry}",
    )


def refresh_system_trust(paths: EnginePaths) -> str:
    store = trust_store(paths.root)
    assert store is not None
    command = store[1]
    if paths.root != Path("/"):
        return f"run `{shlex.join(command)}` inside {paths.root} to refresh the trust store"
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise EngineConfigError(f"{shlex.join(command)} failed: {result.stderr.strip()}")
    return f"refreshed the system trust store ({shlex.join(command)})"


def execute(
    args: argparse.Namespace, inputs: Mapping[str, bytes] | None, env: Mapping[str, str]
) -> Outcome:
    paths = choose_paths(args, env)
    if args.command == "insecure":
        out = command_insecure(args, paths)
    elif args.command == "mirror":
        out = command_mirror(args, paths)
    else:
        out = command_trust(args, paths, inputs)
    if paths.rootless and args.rootless is None and not args.daemon_json:
        out.lines.insert(
            0,
            "not running as root: configured the rootless engines of this user "
            f"({paths.daemon_json.parent}); run it with sudo for the system engines",
        )
    return out


# --------------------------------------------------------------------------- command line


def add_common_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where the engines' files are")
    where.add_argument(
        "--engine",
        choices=(*ENGINES, "all"),
        default="docker",
        help="the engine(s) to configure (default: docker)",
    )
    where.add_argument(
        "--daemon-json",
        metavar="PATH",
        help="Docker's daemon.json (default: /etc/docker/daemon.json, or "
        "~/.config/docker/daemon.json rootless)",
    )
    where.add_argument(
        "--root",
        metavar="DIR",
        help="prefix of every system path (/etc/..., /var/run/...), default /",
    )
    mode = where.add_mutually_exclusive_group()
    mode.add_argument(
        "--rootless",
        dest="rootless",
        action="store_const",
        const=True,
        default=None,
        help="configure the rootless engines of this user (the default when not root)",
    )
    mode.add_argument(
        "--rootful",
        dest="rootless",
        action="store_const",
        const=False,
        help="configure the system engines even when not root",
    )
    where.add_argument(
        "--docker-certs-dir", metavar="DIR", help="Docker's certs.d (default /etc/docker/certs.d)"
    )
    where.add_argument(
        "--containerd-certs-dir",
        metavar="DIR",
        help="containerd's certs.d (default /etc/containerd/certs.d)",
    )
    where.add_argument(
        "--containers-dir",
        metavar="DIR",
        help="podman/CRI-O's configuration folder (default /etc/containers)",
    )
    engine = parser.add_argument_group("the running Docker engine")
    engine.add_argument(
        "--reload",
        action="store_true",
        help="make dockerd re-read daemon.json (SIGHUP; containers keep running) "
        "and check `docker info` lists the change",
    )
    engine.add_argument(
        "--pidfile",
        metavar="PATH",
        help="dockerd's pid file for --reload (default /var/run/docker.pid; "
        "given, it skips systemctl)",
    )
    engine.add_argument(
        "--docker-host",
        metavar="URL",
        default=None,
        help="the engine `docker info` asks (default: DOCKER_HOST or the client's default)",
    )
    engine.add_argument(
        "--docker",
        metavar="CLIENT",
        default="docker",
        help="the docker client program (default: docker on PATH)",
    )
    engine.add_argument(
        "--image-store",
        choices=("auto", "classic", "containerd"),
        default="auto",
        help="Docker's image store; auto asks `docker info`",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--dry-run",
        action="store_true",
        help="print a unified diff of each change and write nothing",
    )
    output.add_argument(
        "--no-backup",
        dest="backup",
        action="store_false",
        help="do not keep the replaced version as FILE.bak",
    )


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    extra_options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """The engine configuration commands; ``extra_options`` adds options to each one."""
    for name, what, entry in (
        (
            "insecure",
            "Docker's insecure-registries (plain HTTP or unverified TLS)",
            "HOST:PORT, HOST or CIDR",
        ),
        ("mirror", "Docker's registry-mirrors (pull-through caches of Docker Hub)", "URL"),
    ):
        command = subparsers.add_parser(name, help=what, description=what, allow_abbrev=False)
        command.add_argument("action", choices=("add", "remove", "list"))
        command.add_argument(
            "entry", nargs="?", metavar=entry.split(",")[0].split(" ")[0], help=entry
        )
        if name == "insecure":
            command.add_argument(
                "--scheme",
                choices=("http", "https"),
                default="http",
                help="for containerd's hosts.toml: plain HTTP (default) or "
                "HTTPS without verifying the certificate",
            )
        add_common_options(command)
        if extra_options is not None:
            extra_options(command)
    trust = subparsers.add_parser(
        "trust",
        allow_abbrev=False,
        help="install a registry's CA (and client certificate) where the engines look",
        description="Install the CA that signed a registry's certificate in the engines' "
        "certs.d folders (and, with --system, in the system trust store).",
    )
    trust.add_argument("registry", metavar="HOST:PORT")
    trust.add_argument("--ca", metavar="FILE", help="the CA certificate (PEM)")
    trust.add_argument("--client-cert", metavar="FILE", help="client certificate for mutual TLS")
    trust.add_argument("--client-key", metavar="FILE", help="its private key (installed 0600)")
    trust.add_argument(
        "--system", action="store_true", help="also install the CA in the system trust store"
    )
    trust.add_argument(
        "--remove", action="store_true", help="remove what trust installed for HOST:PORT"
    )
    add_common_options(trust)
    if extra_options is not None:
        extra_options(trust)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        description="Configure the container engines of this host to use a registry.",
        epilog="Exit codes: 0 done or unchanged, 1 failure, 2 usage error.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(subparsers)
    return parser


def run(
    args: argparse.Namespace,
    *,
    prog: str,
    argv: Sequence[str],
    inputs: Mapping[str, bytes] | None = None,
    env: Mapping[str, str] | None = None,
    sudo_hint: str | None = None,
) -> int:
    """Run parsed arguments; every failure becomes a message and an exit code."""
    try:
        out = execute(args, inputs, os.environ if env is None else env)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EngineConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except PermissionError as exc:
        hint = sudo_hint or f"run it as root: sudo {shlex.join([*prog.split(), *argv])}"
        print(
            f"{prog}: error: {exc.filename or exc}: permission denied; {hint}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except OSError as exc:
        print(
            f"{prog}: error: {exc.filename or ''}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    for line in out.lines:
        print(line)
    return EXIT_OK if out.ok else EXIT_FAILURE


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str | None = None,
    inputs: Mapping[str, bytes] | None = None,
    sudo_hint: str | None = None,
) -> int:
    """Entry point of the standalone tool (``python3 engine_host.py`` or ``python3 -``)."""
    if prog is None:
        script = os.path.basename(sys.argv[0])
        prog = PROG if script in ("-", "") else "python3 " + script
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(prog).parse_args(arguments)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args, prog=prog, argv=arguments, inputs=inputs, sudo_hint=sudo_hint)


if __name__ == "__main__":
    sys.exit(main())
