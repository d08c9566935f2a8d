"""``torchstn report``: one self-contained HTML page about a training run."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run",
        description="Write one HTML file (images inlined, no scripts, no network) about a "
        "training run: curves, test inputs with their sampling grids beside the transformer's "
        "outputs (misclassified first), the confusion matrix, the learned transformations against "
        "the generated distortions, and the config, result, hardware and versions. For a "
        "registration run: the curves, test pairs (fixed, moving, warped, differences, the "
        "deformed grid and the Jacobian determinant with its folds), and the same tables.",
    )
    p.add_argument("run_dir", help="a torchstn train run folder")
    p.add_argument("--out", help="the HTML file to write (default RUN_DIR/report.html)")
    p.add_argument("--weights", default="best", choices=("best", "last"))
    p.add_argument("--num", type=int, default=12, help="test images drawn with their grids")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..viz import write_report

    out = write_report(args.run_dir, args.out, weights=args.weights, num_images=args.num)
    print(f"wrote {out}")
    return 0
