"""``torchstn demo``: train an ST-CNN on cluttered MNIST and draw what its transformer learned.

The demo's budget is a fixed amount of training (``configs/demo.yaml``: epochs of fresh images),
not minutes: a busy or slow machine takes longer, it does not learn less. ``--minutes`` caps the
time where wanted, and the demo then says when the cap left the transformer untrained.

``--out`` is only ever emptied when it is a previous demo run (it holds ``demo.json`` and only
the files a demo writes); any other folder is refused, never deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "clear_previous_demo"]

#: the marker a demo writes first into its folder.
MARKER = "demo.json"
#: what a demo run folder holds: the marker, the run's files, the pictures (and a report).
DEMO_FILES = frozenset(
    {MARKER, "checkpoint.pt", "config.json", "metrics.jsonl", "result.json", ".lock"}
    | {"stn.png", "stn_curves.png", "report.html"}
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="train an ST-CNN on cluttered MNIST (minutes on a CPU), then visualise it",
        description="Train the packaged demo config (an ST-CNN on 60x60 cluttered MNIST: "
        "8 epochs of 16,000 fresh images: about 3 minutes on an idle 2-core CPU, longer on a busy "
        "one), then write "
        "OUT/stn.png (the digits with the regions the transformer samples, above what the "
        "classifier sees) and OUT/stn_curves.png. Starts afresh each time: OUT is emptied only "
        "when it is a previous demo run, any other non-empty folder is refused.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--epochs", type=int, help="epochs to train (default: the config's, 8)")
    p.add_argument(
        "--minutes",
        type=float,
        help="optional cap on the training time (default: none; the epochs set the budget)",
    )
    p.add_argument("--config", help="config to use instead of the packaged demo (name or file)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _is_demo_file(path: Path) -> bool:
    """A file a demo writes (or the temporary file of one, left by an interrupted write)."""
    if path.is_symlink() or not path.is_file():
        return False
    name = path.name
    return name in DEMO_FILES or (name.startswith(".") and name.endswith(".tmp"))


def clear_previous_demo(out: Path) -> None:
    """Make ``out`` ready for a new demo: create it, or empty it when it is a previous demo run.

    A previous demo run holds the marker ``demo.json`` (or, from before the marker, both
    ``config.json`` and ``stn.png``) and nothing but the files a demo writes. Only those files
    are deleted, one by one; the folder itself stays.

    Raises:
        InvalidInputError: ``out`` is a file, or a non-empty folder that is not a demo run (one
            line naming what it holds).
    """
    from ..errors import InvalidInputError

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InvalidInputError(f"--out {out}: not a folder; give a new folder for the demo run")
    if not out.exists():
        return
    entries = sorted(out.iterdir())
    if not entries:
        return
    names = {e.name for e in entries}
    ours = MARKER in names or {"config.json", "stn.png"} <= names
    foreign = [e.name for e in entries if not _is_demo_file(e)]
    if not ours or foreign:
        shown = ", ".join((foreign or [e.name for e in entries])[:3])
        more = len(foreign or entries) - 3
        raise InvalidInputError(
            f"--out {out}: not a previous demo run (it holds {shown}"
            f"{f' and {more} more' if more > 0 else ''}); give a new or empty folder"
        )
    for entry in entries:
        entry.unlink()


def run(args: argparse.Namespace) -> int:
    from .._atomic import atomic_write_text
    from ..errors import InvalidInputError
    from ..train import Trainer, config_from_dict, load_config
    from ..viz import (
        plot_curves,
        plot_predictions,
        read_metrics,
        transformer_params,
        untrained_warnings,
    )

    values = load_config(args.config or "demo")
    run_values = values.setdefault("run", {})
    if args.epochs is not None:
        if args.epochs < 1:
            raise InvalidInputError(f"--epochs: expected a positive number, got {args.epochs}")
        run_values["epochs"] = args.epochs
    run_values["minutes"] = args.minutes  # None: no time cap, the epochs are the budget
    cfg = config_from_dict(values)
    out = Path(args.out).expanduser()
    clear_previous_demo(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / MARKER,
        json.dumps({"written_by": "torchstn demo", "config": args.config or "demo"}) + "\n",
    )
    trainer = Trainer(cfg, out, progress=not args.no_progress)
    images = cfg.run.epochs * cfg.data.train_size
    cap = f", at most {args.minutes:g} min" if args.minutes is not None else ""
    print(
        f"torchstn demo: training {cfg.model.name} ({trainer.params:,} params) on "
        f"{trainer.data.name} for {cfg.run.epochs} epoch{'' if cfg.run.epochs == 1 else 's'} "
        f"of {cfg.data.train_size:,} images "
        f"({images:,} in all{cap}) on {trainer.device}",
        flush=True,
    )
    result = trainer.fit()
    model = trainer.model
    if trainer.best["model"] is not None:
        model.load_state_dict(trainer.best["model"])
    model = model.cpu().eval()
    test_x, test_y = trainer.data.eval_split("test").head(8)
    sts, params = transformer_params(model, test_x)
    warnings = untrained_warnings(sts, params, "test images")
    title = f"{cfg.model.name}: test error {result['test_error']:.2f}%"
    if warnings:
        title += " (the transformer is still the identity: untrained)"
    picture = plot_predictions(model, test_x, test_y, out / "stn.png", title=title)
    rows = read_metrics(out)
    curves = plot_curves(rows, out / "stn_curves.png") if rows else None
    print(json.dumps(result))
    epochs = result["epochs"]
    cut = " (cut short by --minutes)" if result.get("steps_in_partial_epoch") else ""
    print(
        f"test error {result['test_error']:.2f}% after {epochs} epoch{'' if epochs == 1 else 's'}"
        f"{cut}, {result['train_seconds']:.0f} s of training; picture: {picture}"
        + (f", curves: {curves}" if curves else "")
    )
    for line in warnings:
        hint = " or drop --minutes" if args.minutes is not None else ""
        print(f"torchstn demo: {line}{hint}", file=sys.stderr)
    return 0
