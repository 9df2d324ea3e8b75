"""The ``mlmon`` command.

Exit codes: 0 done, 1 data error, 2 bad usage. Subcommands import their dependencies when they run, so
``mlmon --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otel_mlmon._version import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlmon", description="ML model monitoring on OpenTelemetry.")
    parser.add_argument("--version", action="version", version=f"otel-mlmon {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="serve a small scikit-learn model with otel-mlmon and show its telemetry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from otel_mlmon._demo import run

        return run()
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
