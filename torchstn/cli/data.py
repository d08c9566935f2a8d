"""``torchstn data``: list the task generators, export a split to ``.npz``, preview samples,
download MNIST.

Examples::

    torchstn data list
    torchstn data download --root mnist   # the four MNIST files, checked, for offline use
    torchstn data export cluttered --split test --num 10000 --seed 0 --out tc_test.npz
    torchstn data export rts --option "angle=[-30, 30]" --num 500 --out rts.npz
    torchstn data preview addition --out addition.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from .. import data
from .._atomic import atomic_path
from .._version import __version__
from ..data.mnist import download_mnist
from ..data.npz import save_npz
from ..data.tasks import VALIDATION_SIZE
from ..errors import InvalidInputError

__all__ = ["add_parser"]


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values are read as JSON where they parse (numbers,
    ``[lo, hi]``, ``true``), else kept as strings.

    Example:
        >>> _parse_options(["canvas_size=100", "angle=[-30, 30]", "clutter=true"])
        {'canvas_size': 100, 'angle': [-30, 30], 'clutter': True}
    """
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--option: expected KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _build_manifest(task: Any, split: str, num: int, seed: int, sample: Any) -> dict[str, Any]:
    """The JSON manifest written beside (and inside) an export."""

    arrays = {"x": sample.x, "y": sample.y, "boxes": sample.boxes}
    arrays.update({f"param_{k}": v for k, v in sample.params.items()})
    return {
        "task": task.name,
        "options": task.options,
        "split": split,
        "num": num,
        "seed": seed,
        "in_shape": list(task.in_shape),
        "num_classes": task.num_classes,
        "generator_version": task.version,
        "torchstn_version": __version__,
        "torch_version": torch.__version__,
        "validation_size": VALIDATION_SIZE,
        "boxes": "x0, y0, x1, y1 in pixels; the image spans [0, W] x [0, H]",
        "arrays": {
            k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in arrays.items()
        },
    }


def _task(args: argparse.Namespace) -> Any:

    return data.get_task(args.task, root=args.root, **_parse_options(args.option))


def _export(args: argparse.Namespace) -> int:

    out = Path(args.out)
    if out.suffix != ".npz":
        raise InvalidInputError(f"--out: expected a .npz file name, got {args.out!r}")
    task = _task(args)
    start = time.perf_counter()
    sample = task.generate(args.split, num=args.num, seed=args.seed)
    manifest = _build_manifest(task, args.split, args.num, args.seed, sample)
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        save_npz(sample, out, manifest, compress=args.compress)
    seconds = time.perf_counter() - start
    print(
        f"wrote {out} ({len(sample)} x {tuple(task.in_shape)}, task {task.name}, split "
        f"{args.split}, seed {args.seed}, {seconds:.1f} s) and {out.with_suffix('.json')}"
    )
    return 0


def _preview(args: argparse.Namespace) -> int:
    from ..viz import pyplot, save_preview  # lazy: matplotlib is an optional extra

    pyplot()  # no matplotlib: say so in one line before generating anything
    task = _task(args)
    sample = task.generate(args.split, num=args.num, seed=args.seed)
    title = f"{task.name} ({args.split}, seed {args.seed})"
    path = save_preview(sample, args.out, ncols=args.ncols, title=title)
    print(f"wrote {path}")
    return 0


def _download(args: argparse.Namespace) -> int:

    paths = download_mnist(args.root)
    print(f"MNIST: the {len(paths)} files are in {paths[0].parent} (size and checksums verified)")
    return 0


def _list(args: argparse.Namespace) -> int:

    for name in data.task_names():
        task = data.get_task(name)
        shape = "x".join(str(s) for s in task.in_shape)
        print(f"{name:15s} {shape:10s} {task.num_classes:2d} classes  {json.dumps(task.options)}")
    return 0


def _common(p: argparse.ArgumentParser, num: int) -> None:
    p.add_argument("task", metavar="TASK", help="task name (see `torchstn data list`)")
    p.add_argument("--split", choices=("train", "val", "test"), default="test")
    p.add_argument("--num", type=int, default=num, help=f"number of samples (default {num})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a task option, e.g. canvas_size=100 or 'angle=[-30, 30]' (repeatable)",
    )
    p.add_argument(
        "--root",
        default=None,
        help="folder holding the four MNIST .gz files (default: $TORCHSTN_MNIST, the "
        "checkout's data/mnist, ~/.cache/torchstn/mnist; downloaded there when missing)",
    )


def add_parser(subparsers: Any) -> None:
    """Register ``torchstn data`` and its actions."""
    parser = subparsers.add_parser(
        "data",
        help="list, export and preview the task data sets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    listing = actions.add_parser("list", help="the task names, input shapes and default options")
    listing.set_defaults(func=_list)

    export = actions.add_parser("export", help="write a split of a task to FILE.npz and FILE.json")
    _common(export, 1000)
    export.add_argument("--out", required=True, help="the .npz file (written atomically)")
    export.add_argument("--compress", action="store_true", help="deflate the arrays")
    export.set_defaults(func=_export)

    preview = actions.add_parser("preview", help="write a labelled grid of samples to FILE.png")
    _common(preview, 32)
    preview.add_argument("--out", required=True, help="the .png file")
    preview.add_argument("--ncols", type=int, default=8, help="images per row")
    preview.set_defaults(func=_preview)

    fetch = actions.add_parser(
        "download",
        help="download the four MNIST files (size and checksums verified) for offline use",
    )
    fetch.add_argument(
        "--root",
        default=None,
        help="folder to download into (default: $TORCHSTN_MNIST, else ~/.cache/torchstn/mnist)",
    )
    fetch.set_defaults(func=_download)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)
