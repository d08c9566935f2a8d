"""``torchstn visualize``: what the transformer learned, and the training curves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "visualize",
        help="draw the transformer's sampling grids and the training curves",
        description="Write a PNG of input images with the sampling grid of each spatial transformer "
        "drawn over them, beside the transformer's output; and, when the run folder has "
        "metrics.jsonl, the training curves next to it (OUT_curves.png).",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or its run folder")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--num", type=int, default=8, help="number of images")
    p.add_argument("--curves", help="where to write the training curves (default OUT_curves.png)")
    p.add_argument("--weights", default="best", choices=("best", "last"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..inference import load_with_info
    from ..scoring import load_run_data
    from ..viz import (
        data_label,
        plot_curves,
        plot_predictions,
        read_metrics,
        transformer_params,
        untrained_warnings,
    )

    if args.num < 1:
        raise InvalidInputError(f"--num: expected a positive number, got {args.num}")
    model, info = load_with_info(args.checkpoint, args.weights, "cpu")
    if info.config.objective.name == "colocalization":  # the crops, over the images
        from ..viz import save_run_boxes

        out = save_run_boxes(
            args.checkpoint, args.out, split=args.split, num=args.num, weights=args.weights
        )
        print(f"wrote {out}")
        return 0
    if info.config.objective.name == "registration":  # fixed, moving, warped, grid, Jacobian
        from ..viz.registration import plot_run_registration

        ckpt = Path(args.checkpoint)
        for path in plot_run_registration(
            model,
            info,
            args.out,
            split=args.split,
            num=args.num,
            run_dir=ckpt if ckpt.is_dir() else ckpt.parent,
            curves=args.curves,
        ):
            print(f"wrote {path}")
        return 0
    data = load_run_data(info)  # the images to draw
    x, y = data.eval_split(args.split).head(args.num)
    name = data_label(data.name, info.config)
    sts, params = transformer_params(model, x)
    warnings = untrained_warnings(sts, params, f"{args.split} images")
    title = f"{info.model_name} on {name}, epoch {info.epoch} ({args.split} images)"
    if warnings:
        title += "\nthe transformer never moved from the identity: untrained"
    out = plot_predictions(model, x, y, args.out, title=title)
    print(f"wrote {out}")
    for line in warnings:
        print(f"torchstn visualize: {line}", file=sys.stderr)
    ckpt = Path(args.checkpoint)
    run_dir = ckpt if ckpt.is_dir() else ckpt.parent
    if (run_dir / "metrics.jsonl").is_file():
        rows = read_metrics(run_dir)
        if rows:
            curves = Path(args.curves) if args.curves else out.with_name(f"{out.stem}_curves.png")
            plot_curves(rows, curves, title=f"{info.model_name} on {name}")
            print(f"wrote {curves}")
    return 0
