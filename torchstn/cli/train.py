"""``torchstn train``: train a model from a YAML config into a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import _rank

__all__ = ["add_parser", "resolve_config"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train a model. The config file sets defaults, --set and the flags override it; "
        "the resolved config is saved as RUN_DIR/config.json.",
    )
    p.add_argument("--config", help="YAML config (see configs/)")
    p.add_argument("--out", required=True, help="run folder for checkpoint, metrics and result")
    p.add_argument("--epochs", type=int, help="number of epochs (run.epochs)")
    p.add_argument(
        "--minutes",
        type=float,
        help="time budget: minutes of training steps and validation (run.minutes)",
    )
    p.add_argument("--seed", type=int, help="seed of initialisation and data order")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--model", help="model name (model.name)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        help="run.precision: fp32, bf16 autocast, or fp16 autocast with a gradient scaler",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="also save the checkpoint every STEPS steps inside an epoch (run.checkpoint_every)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="PyTorch's deterministic algorithms (run.deterministic)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optim.lr=0.02 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint, with the run's settings: the budget "
        "(--epochs, --minutes), --checkpoint-every, --device, run.num_threads and "
        "data.num_workers may change; any other setting given (--config, --set, flags) must "
        "equal the run's, else it is refused (train into a new --out to change it)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--report",
        action="store_true",
        help="write OUT/report.html at the end (torchstn report; needs matplotlib)",
    )
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> Any:
    """Defaults < config file < --set < flags."""
    from ..train import config_from_dict

    return config_from_dict(given_values(args))


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives (config file < --set < flags), without defaults."""
    from ..train import apply_overrides, load_config

    values = apply_overrides(load_config(args.config), args.set)
    flags = {
        ("run", "epochs"): args.epochs,
        ("run", "minutes"): args.minutes,
        ("seed",): args.seed,
        ("device",): args.device,
        ("model", "name"): getattr(args, "model", None),
        ("run", "precision"): getattr(args, "precision", None),
        ("run", "checkpoint_every"): getattr(args, "checkpoint_every", None),
        ("run", "deterministic"): getattr(args, "deterministic", None),
    }
    for path, value in flags.items():
        if value is None:
            continue
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return values


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a folder we may not look into: the lock says why in one line
        return False


def run(args: argparse.Namespace) -> int:
    from ..train import Trainer
    from ..train.distributed import restart_count, shutdown_after
    from ..train.runfolder import RunFolderLock

    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    given = given_values(args)
    cfg = resolve_config(args)
    if restart_count() > 0 and _is_file(ckpt):
        # torchrun restarted the group after a failure (--max-restarts): carry on from the last
        # checkpoint this run wrote
        args.resume = True
    if args.resume:
        if not _is_file(ckpt):
            raise ConfigError(f"--resume: no checkpoint in {out}")
    elif _is_file(ckpt):
        raise ConfigError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if _rank() == 0:
        # fail fast, before the data is read, when another run holds the folder (fit() takes
        # the lock for the run's life)
        RunFolderLock.check(out)
    with shutdown_after():
        trainer = Trainer(
            cfg,
            out,
            resume=args.resume,
            progress=not args.no_progress,
            settings=given if args.resume else None,
        )
        if trainer.rank == 0:
            world = f", {trainer.world.size} processes" if trainer.world.distributed else ""
            resumed = (
                f", resumed at epoch {trainer.epoch + 1} step {trainer.step}" if args.resume else ""
            )
            print(
                f"torchstn train: {trainer.cfg.model.name} ({trainer.params:,} params) on "
                f"{trainer.data.name} {trainer.data.in_shape}, device {trainer.device}{world}, "
                f"run folder {out}{resumed}",
                flush=True,
            )
        if getattr(args, "report", False):
            from ..viz import pyplot

            pyplot()  # no matplotlib: say so in one line now, not after the training
        result = trainer.fit()
        if trainer.rank == 0:
            print(json.dumps(result))
            if getattr(args, "report", False):
                from ..viz import write_report

                print(f"wrote {write_report(out)}", flush=True)
    return 0
