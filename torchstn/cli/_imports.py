"""``--import MODULE``: bring a user's own code (a model registered with
:func:`torchstn.models.register_model`, say) into any ``torchstn`` command.

The option is taken out of the command line before the sub-command's parser sees it, so it works
in any position (``torchstn --import my_models train ...`` or ``torchstn train ... --import
my_models.py``) and with every command that builds a model from a name (``train``, ``eval``,
``predict``, ``export``, ``visualize``, ``report``, ``reproduce``). A value ending in ``.py`` (or
naming an existing file) is loaded from that file; anything else is a module name, looked up from
the current folder first and then on ``sys.path``.

Nothing is imported because a checkpoint or a config names it: a run that used a model of your own
needs ``--import`` again to be evaluated, exported or drawn, so that opening a file received from
elsewhere never runs code.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import InvalidInputError

__all__ = ["import_user_modules", "split_imports"]

_FLAG = "--import"


def split_imports(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(modules, rest)``: the values of every ``--import X`` / ``--import=X`` before a ``--``,
    and the other arguments in their order.

    Example:
        >>> split_imports(["train", "--import", "m.py", "--epochs", "1", "--import=pkg.mod"])
        (['m.py', 'pkg.mod'], ['train', '--epochs', '1'])
    """
    modules: list[str] = []
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":
            rest.append(arg)
            rest.extend(it)
            break
        if arg == _FLAG:
            value = next(it, None)
            if value is None or not value:
                raise InvalidInputError("--import: expected a module name or a .py file")
            modules.append(value)
        elif arg.startswith(_FLAG + "="):
            value = arg[len(_FLAG) + 1 :]
            if not value:
                raise InvalidInputError("--import: expected a module name or a .py file")
            modules.append(value)
        else:
            rest.append(arg)
    return modules, rest


def _import_file(path: Path) -> None:
    name = f"torchstn_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInputError(f"--import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def import_user_modules(specs: Sequence[str]) -> None:
    """Import each module or ``.py`` file of ``--import``; a module or file that is missing is a
    one-line :class:`~torchstn.errors.InvalidInputError`. Errors raised by the user's code itself
    propagate unchanged (their traceback is the user's to read)."""
    for spec in specs:
        path = Path(spec)
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise InvalidInputError(f"--import {spec}: no such file")
            _import_file(path.resolve())
            continue
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        try:
            importlib.import_module(spec)
        except ModuleNotFoundError as err:
            # the module asked for (or a package above it) is missing; a module that the user's
            # code imports and lacks is the user's error, with its own traceback
            if err.name is not None and (spec == err.name or spec.startswith(err.name + ".")):
                raise InvalidInputError(
                    f"--import {spec}: no module {err.name!r} (in the current folder or on "
                    "sys.path); pass a .py file or install the package"
                ) from None
            raise
