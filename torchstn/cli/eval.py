"""``torchstn eval``: error of a checkpoint on the task it was trained on."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint",
        description="Print a JSON line with the error of a checkpoint on the data of its run.",
    )
    p.add_argument(
        "checkpoint",
        help="checkpoint.pt (or its run folder), or a TorchScript, exported-program or ONNX file "
        "of torchstn export (classification runs; told apart by content)",
    )
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument(
        "--weights",
        default="best",
        choices=("best", "last"),
        help="best-on-validation weights (as in result.json) or the last ones",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference import inference_device
    from ..scoring import load_for_eval, load_run_data
    from ..train import EvalSettings, get_objective

    device = inference_device(args.device)  # an unknown device: one line, before any loading
    model, info, kind = load_for_eval(args.checkpoint, args.weights, device)
    data = load_run_data(info)  # the model needs no data; its evaluation does
    objective = get_objective(info.config)  # classification, or co-localisation's localisation
    settings = EvalSettings(
        batch_size=info.config.run.eval_batch_size,
        device=device,
        precision=info.config.run.precision if kind == "checkpoint" else "fp32",  # as it ran
    )
    metrics = objective.evaluate(model, data.eval_split(args.split), settings)
    print(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "split": args.split,
                "weights": info.weights,
                **objective.eval_fields(metrics),
                "model": info.model_name,
                "data": data.name,
                "epoch": info.epoch if kind == "checkpoint" else None,
                "precision": info.config.run.precision if kind == "checkpoint" else "fp32",
                "format": kind,
            }
        )
    )
    return 0
