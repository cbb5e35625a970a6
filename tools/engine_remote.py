"""Run the engine host tool on remote engine hosts over the system ``ssh`` client.

Nothing is installed on a remote host: its ``python3`` reads a small program on standard
input that carries ``engine_host.py``'s source and the content of the files named on the
command line (``--ca``, ``--client-cert``, ``--client-key``). Standard input travels
inside the ssh connection, so a private key never shows on a command line.
"""

from __future__ import annotations

import argparse
import base64
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tools import engine_host

# Options that only mean something on this side; everything else is passed on.
LOCAL_OPTIONS = ("--ssh", "--ssh-option", "--ssh-command", "--remote-python")
LOCAL_FLAGS = ("--sudo", "--no-sudo")
INPUT_OPTIONS = ("ca", "client_cert", "client_key")
SSH_FAILED = 255

Runner = Callable[[list[str], bytes], "subprocess.CompletedProcess[bytes]"]


@dataclass(frozen=True)
class SshTarget:
    """``[user@]host[:port]`` as given to --ssh; IPv6 hosts go in brackets with a port."""

    label: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return self.host if self.user is None else f"{self.user}@{self.host}"


def parse_target(text: str) -> SshTarget:
    user, at, rest = text.rpartition("@")
    if not rest or (at and not user):
        raise engine_host.UsageError(f"--ssh {text!r}: expected [USER@]HOST[:PORT]")
    host, port = rest, None
    if rest.startswith("["):
        inside, _, after = rest[1:].partition("]")
        host = inside
        if after:
            port = _ssh_port(after.removeprefix(":"), text) if after.startswith(":") else -1
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
        port = _ssh_port(port_text, text)
    if not host or port == -1:
        raise engine_host.UsageError(f"--ssh {text!r}: expected [USER@]HOST[:PORT]")
    return SshTarget(text, host, user or None, port)


def _ssh_port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise engine_host.UsageError(f"--ssh {original!r}: the port must be 1 to 65535")
    return int(text)


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("remote engine hosts")
    group.add_argument(
        "--ssh",
        metavar="[USER@]HOST[:PORT]",
        action="append",
        default=[],
        help="do it on this host over ssh instead of here (repeatable)",
    )
    group.add_argument(
        "--ssh-option",
        metavar="OPTION",
        action="append",
        default=[],
        help="an option for ssh, e.g. --ssh-option=-oStrictHostKeyChecking=yes (repeatable)",
    )
    group.add_argument(
        "--ssh-command",
        metavar="COMMAND",
        default="ssh",
        help="the ssh command line to use, e.g. 'ssh -F ./ssh_config' (default: ssh)",
    )
    group.add_argument(
        "--remote-python",
        metavar="PROGRAM",
        default="python3",
        help="the Python 3.8+ interpreter on the remote hosts (default: python3)",
    )
    sudo = group.add_mutually_exclusive_group()
    sudo.add_argument(
        "--sudo",
        dest="sudo",
        action="store_const",
        const="always",
        default="auto",
        help="always run the remote side under sudo -n (default: when the remote user is not "
        "root, unless --rootless)",
    )
    sudo.add_argument(
        "--no-sudo",
        dest="sudo",
        action="store_const",
        const="never",
        help="never use sudo on the remote hosts",
    )


def remote_arguments(argv: Sequence[str]) -> list[str]:
    """The command line minus the options that only mean something on this side."""
    kept: list[str] = []
    skip_next = False
    for index, token in enumerate(argv):
        if skip_next:
            skip_next = False
        elif token == "--":
            kept += argv[index:]
            break
        elif token in LOCAL_OPTIONS:
            skip_next = True
        elif token in LOCAL_FLAGS or token.split("=", 1)[0] in LOCAL_OPTIONS:
            pass
        else:
            kept.append(token)
    return kept


def input_files(args: argparse.Namespace) -> dict[str, bytes]:
    """The files named on the command line, read here and sent along with the program."""
    files = {}
    for option in INPUT_OPTIONS:
        name = getattr(args, option, None)
        if name:
            try:
                files[name] = Path(name).read_bytes()
            except OSError as exc:
                raise engine_host.UsageError(f"{name}: {exc.strerror}") from None
    return files


def bootstrap(source: str, inputs: Mapping[str, bytes]) -> bytes:
    """The program a remote ``python3 -`` runs: engine_host.py and the input files."""
    encoded = {name: base64.b64encode(data).decode("ascii") for name, data in inputs.items()}
    module = base64.b64encode(source.encode("utf-8")).decode("ascii")
    lines = [
        "import base64, sys, types",
        "module = types.ModuleType('engine_host')",
        "module.__file__ = 'engine_host.py'",
        "sys.modules['engine_host'] = module",
        f"source = base64.b64decode('{module}')",
        "exec(compile(source, 'engine_host.py', 'exec'), module.__dict__)",
        f"inputs = {{k: base64.b64decode(v) for k, v in {encoded!r}.items()}}",
        "sys.exit(module.main(sys.argv[1:], prog='registry engine', inputs=inputs,",
        "                     sudo_hint='run it again with --sudo'))",
    ]
    return ("\n".join(lines) + "\n").encode("ascii")


def remote_command(python: str, arguments: Sequence[str], sudo: str) -> str:
    """The command line sshd hands to the remote user's shell."""
    program = [python, "-", *arguments]
    if sudo == "always":
        return shlex.join(["sudo", "-n", *program])
    if sudo == "never":
        return shlex.join(program)
    script = 'if [ "$(id -u)" -eq 0 ]; then exec "$@"; else exec sudo -n "$@"; fi'
    return shlex.join(["sh", "-c", script, "sh", *program])


def ssh_argv(
    target: SshTarget, ssh_command: str, ssh_options: Sequence[str], command: str
) -> list[str]:
    port = ["-p", str(target.port)] if target.port is not None else []
    return [*shlex.split(ssh_command), *ssh_options, *port, "--", target.destination, command]


def _run(argv: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, input=stdin, capture_output=True, check=False)


def run(
    args: argparse.Namespace,
    argv: Sequence[str],
    *,
    runner: Runner = _run,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the command on every --ssh host, one after the other; 0 only if all succeeded."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        targets = [parse_target(text) for text in args.ssh]
        inputs = input_files(args)
    except engine_host.UsageError as exc:
        print(f"{engine_host.PROG}: error: {exc}", file=err)
        return engine_host.EXIT_USAGE
    source = Path(engine_host.__file__).read_text(encoding="utf-8")
    program = bootstrap(source, inputs)
    sudo = "never" if args.sudo == "auto" and args.rootless else args.sudo
    command = remote_command(args.remote_python, remote_arguments(argv), sudo)
    results = []
    for target in targets:
        ssh = ssh_argv(target, args.ssh_command, args.ssh_option, command)
        try:
            result = runner(ssh, program)
        except OSError as exc:
            print(f"[{target.label}] cannot run {ssh[0]}: {exc.strerror}", file=err)
            results.append((target, SSH_FAILED))
            continue
        for stream, text in ((out, result.stdout), (err, result.stderr)):
            for line in text.decode("utf-8", "replace").splitlines():
                print(f"[{target.label}] {line}", file=stream)
        results.append((target, result.returncode))
    for target, code in results:
        print(f"{target.label}: {describe_exit(code)}", file=out)
    return engine_host.EXIT_OK if all(code == 0 for _, code in results) else 1


def describe_exit(code: int) -> str:
    if code == 0:
        return "ok"
    if code == SSH_FAILED:
        return "failed: ssh could not connect or run the command (exit 255)"
    if code == engine_host.EXIT_USAGE:
        return "failed: usage error (exit 2)"
    return f"failed (exit {code})"
