"""``registry engine``: configure container engines, here or over ssh, to use a registry.

The commands that change files are those of the standalone ``engine_host`` tool (which
also runs as ``python3 tools/engine_host.py``); this module adds what needs more than the
standard library or this host: ``--ssh`` to do it on remote engine hosts, and ``doctor``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tools import engine_doctor, engine_host, engine_remote


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=engine_host.PROG,
        allow_abbrev=False,
        description="Configure container engines (Docker, containerd, podman) to use a "
        "registry: on this host, or on remote hosts over ssh.",
        epilog="Exit codes: 0 done, unchanged or nothing wrong; 1 failure or problems found; "
        "2 usage error.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    engine_host.add_commands(subparsers, extra_options=engine_remote.add_remote_options)
    engine_doctor.add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``registry engine ARGS``: ``argv`` holds the arguments after the word ``engine``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else engine_host.EXIT_USAGE
    if args.command == "doctor":
        return engine_doctor.run(args)
    if args.ssh:
        return engine_remote.run(args, arguments)
    return engine_host.run(args, prog=engine_host.PROG, argv=arguments)


if __name__ == "__main__":
    sys.exit(main())
