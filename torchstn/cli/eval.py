"""``torchstn eval``: error of a checkpoint on the task it was trained on."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "load_trained"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint",
        description="Print a JSON line with the error of a checkpoint on the data of its run.",
    )
    p.add_argument("checkpoint", help="checkpoint.pt (or its run folder)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--weights",
        default="best",
        choices=("best", "last"),
        help="best-on-validation weights (as in result.json) or the last ones",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def load_trained(
    path: str, weights: str = "best", device: str = "cpu"
) -> tuple[Any, Any, Any, dict]:
    """``(model, datamodule, config, state)`` of a checkpoint; the model in eval mode."""
    from ..train import DataModule, build_model, config_from_dict, load_checkpoint, resolve_device

    state = load_checkpoint(path)
    cfg = config_from_dict(state["config"])
    data = DataModule(cfg.data, cfg.seed)
    model = build_model(cfg, data.in_shape, data.num_classes)
    sd = (
        state["best"]["model"]
        if weights == "best" and state["best"]["model"] is not None
        else state["model"]
    )
    model.load_state_dict(sd)
    model.to(resolve_device(device)).eval()
    return model, data, cfg, state


def run(args: argparse.Namespace) -> int:
    from ..train import evaluate, resolve_device

    model, data, cfg, state = load_trained(args.checkpoint, args.weights, args.device)
    metrics = evaluate(
        model, data.eval_split(args.split), cfg.run.eval_batch_size, resolve_device(args.device)
    )
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "split": args.split,
                "weights": args.weights,
                "error": metrics["error"],
                "loss": metrics["loss"],
                "model": cfg.model.name,
                "data": data.name,
                "epoch": state["epoch"],
            }
        )
    )
    return 0
