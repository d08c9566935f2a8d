"""The ``torchstn`` command line: ``torchstn COMMAND ...`` (also ``python -m torchstn``).

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which registers the
parser and sets ``func`` to a callable taking the parsed namespace and returning an exit status.
User errors (any :class:`torchstn.TorchSTNError`) print one line to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import TorchSTNError

__all__ = ["build_parser", "main"]

#: sub-command modules, in the order ``--help`` lists them.
_COMMANDS = (
    "train",
    "eval",
    "visualize",
    "predict",
    "export",
    "reproduce",
    "data",
    "demo",
    "bench",
    "report",
    "explain",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="torchstn", description="Spatial Transformer Networks: train, evaluate, visualise."
    )
    parser.add_argument("--version", action="version", version=f"torchstn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def _rank() -> int:
    import os

    try:
        return int(os.environ.get("RANK") or 0)
    except ValueError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TorchSTNError as err:
        if _rank() == 0:  # under torchrun every rank fails alike: one line, from rank 0
            print(f"torchstn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torchstn {args.command}: interrupted", file=sys.stderr)
        return 130
