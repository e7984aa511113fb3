"""The ``rodflow`` command. Subcommands import torch only when they run.

    rodflow demo [--steps N ...]     the demo (same as ``make demo``)
    rodflow optimizers               the registered optimizer names
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rodflow", description="Continuous-time dynamics of Adam-family optimizers.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="run the demo (options: rodflow demo --help)", add_help=False)
    sub.add_parser("optimizers", help="list the registered optimizers")
    args, rest = parser.parse_known_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("rodflow"))
        return 0
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "optimizers":
        from .optimizers import OPTIMIZERS

        print("\n".join(OPTIMIZERS))
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
