"""``torchstn demo``: train an ST-CNN on cluttered MNIST for a few minutes and draw what it learned."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="train an ST-CNN on cluttered MNIST for a few minutes, then visualise it",
        description="Train configs/demo.yaml (an ST-CNN on 60x60 cluttered MNIST, from the bundled "
        "MNIST files) for --minutes, then write OUT/stn.png (the sampling grids) and "
        "OUT/stn_curves.png. Starts afresh each time.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget (default 4)")
    p.add_argument("--config", help="config to use instead of configs/demo.yaml")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import default_config_dir
    from ..train import Trainer, config_from_dict, load_config
    from ..viz import plot_curves, plot_predictions, read_metrics

    values = load_config(args.config or default_config_dir() / "demo.yaml")
    values.setdefault("run", {})["minutes"] = args.minutes
    cfg = config_from_dict(values)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    trainer = Trainer(cfg, out, progress=not args.no_progress)
    print(
        f"torchstn demo: training {cfg.model.name} ({trainer.params:,} params) on {trainer.data.name} "
        f"for {args.minutes:g} min on {trainer.device}",
        flush=True,
    )
    result = trainer.fit()
    model = trainer.model
    if trainer.best["model"] is not None:
        model.load_state_dict(trainer.best["model"])
    test_x, test_y = trainer.data.eval_split("test").head(8)
    picture = plot_predictions(
        model,
        test_x,
        test_y,
        out / "stn.png",
        title=f"{cfg.model.name}: test error {result['test_error']:.2f}%",
    )
    rows = read_metrics(out)
    curves = plot_curves(rows, out / "stn_curves.png") if rows else None
    print(json.dumps(result))
    print(
        f"test error {result['test_error']:.2f}% after {result['epochs']} epochs; "
        f"picture: {picture}" + (f", curves: {curves}" if curves else "")
    )
    return 0
