"""The ``torchstn`` command line: ``torchstn COMMAND ...`` (also ``python -m torchstn``).

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which registers the
parser and sets ``func`` to a callable taking the parsed namespace and returning an exit status.
User errors (any :class:`torchstn.TorchSTNError`) print one line to stderr and exit with status 2.
``--import MODULE`` (any position, any command) imports a user's own code first, such as a model
registered with :func:`torchstn.models.register_model` (see :mod:`torchstn.cli._imports`).

A command imports what it runs inside its ``run`` function, when it runs: ``torchstn --help`` and
every parser load no training, export or plotting code (the only function-local imports of the
package besides optional extras, and the reason for them).
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
    "register",
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
    parser.add_argument(
        "--import",
        metavar="MODULE",
        dest="imports",
        action="append",
        help="import a module or .py file first (a model registered with "
        "torchstn.models.register_model); any position, repeatable",
    )
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
    from ._imports import import_user_modules, split_imports

    parser = build_parser()
    try:
        modules, argv = split_imports(sys.argv[1:] if argv is None else argv)
        import_user_modules(modules)
    except TorchSTNError as err:
        print(f"torchstn: error: {err}", file=sys.stderr)
        return 2
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
