"""Section 5 of the guide: the same CNN with and without a spatial transformer, trained by the
project's :class:`~torchstn.train.Trainer` on cluttered digits of growing translation and clutter.

The ST-CNN of the hardest level is also followed through training (section 6): after every epoch
its transformer's params on a fixed set of test digits are recorded.
"""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import get_task
from ..module import SpatialTransformer
from ..train import (
    Callback,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    build_model,
    config_from_dict,
)
from .budget import MODELS, Budget, Level, run_values

__all__ = ["RunResult", "Tracked", "train_command", "train_sweep", "transformer_of"]


@dataclass
class Tracked:
    """Test digits followed through the training of one ST-CNN.

    Attributes:
        x: ``(N, 1, H, W)`` the first ``N`` test images of the level; ``y`` ``(N,)`` labels.
        frames: ``(N, 4)`` the digits' 28 x 28 frames, ``(x0, y0, x1, y1)`` with the canvas
            spanning ``[0, W] x [0, H]``; ``ink``: ``(N, 4)`` their ink boxes, likewise.
        epochs: the epoch of each snapshot (0: the initialisation, the identity).
        params: one ``(N, 6)`` tensor of affine params per snapshot.
    """

    x: torch.Tensor
    y: torch.Tensor
    frames: torch.Tensor
    ink: torch.Tensor
    epochs: list[int] = field(default_factory=list)
    params: list[torch.Tensor] = field(default_factory=list)


@dataclass
class RunResult:
    """One trained model at one level.

    Attributes:
        level: the distortion level; ``model``: display name; ``name``: registered name.
        values: the run's config (nested dicts).
        test_error: % of test images misclassified by the best-on-validation weights.
        val_errors: validation error (%) after each epoch.
        params: trainable parameters.
        model_module: the best-on-validation model, in eval mode (the tracked run only).
        tracked: the test digits followed through training (the tracked run only).
    """

    level: Level
    model: str
    name: str
    values: dict[str, Any]
    test_error: float
    val_errors: list[float]
    params: int
    model_module: nn.Module | None = None
    tracked: Tracked | None = None

    @property
    def accuracy(self) -> float:
        return 100.0 - self.test_error


def transformer_of(model: nn.Module) -> SpatialTransformer:
    """The spatial transformer of an ST classifier (``model.transformer``)."""
    st = getattr(model, "transformer", None)
    if not isinstance(st, SpatialTransformer):  # pragma: no cover - ST-CNNs always have one
        raise TypeError(f"expected a model with a SpatialTransformer, got {type(model).__name__}")
    return st


class _Tracking(Callback):
    """Records the transformer's params on ``tracked.x`` at the start and after every complete
    epoch of a run (``tracked.epochs``: the epochs done, 0 for the initialisation)."""

    def __init__(self, tracked: Tracked) -> None:
        self.tracked = tracked

    def _record(self, trainer: Trainer, epochs_done: int) -> None:
        st = transformer_of(trainer.model)
        with torch.no_grad():
            params = st.localize(self.tracked.x.to(trainer.device))
        self.tracked.epochs.append(epochs_done)
        self.tracked.params.append(params.detach().cpu().double())

    def on_fit_start(self, trainer: Trainer) -> None:
        self._record(trainer, trainer.epoch)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not record.get("partial"):
            self._record(trainer, record["epoch"])


def _tracked_digits(values: dict[str, Any], num: int) -> Tracked:
    """The first ``num`` test images of a run's task, as its data module generates them."""
    data = values["data"]
    task = get_task(data["task"], **data["options"])
    s = task.generate("test", num=data["test_size"], seed=config_from_dict(values).data.eval_seed)
    return Tracked(x=s.x[:num], y=s.y[:num], frames=s.boxes[:num], ink=s.params["ink_box"][:num])


def _train(values: dict[str, Any], root: Path, tracked: Tracked | None) -> RunResult:
    cfg = config_from_dict(values)
    options = values["data"]["options"]
    run_dir = root / f"{values['model']['name']}-{options['canvas_size']}"
    callbacks = [_Tracking(tracked)] if tracked is not None else []
    trainer = Trainer(cfg, run_dir, progress=False, callbacks=callbacks)
    try:
        result = trainer.fit()
    except TrainingInterrupted:  # its checkpoint is in a folder about to be deleted
        raise KeyboardInterrupt from None
    except TrainingDiverged as err:
        raise TrainingDiverged(
            f"{values['model']['name']} on {options['canvas_size']} x "
            f"{options['canvas_size']} diverged: {str(err).split(';')[0]}"
        ) from None
    module = None
    if tracked is not None:
        module = build_model(cfg, trainer.data.in_shape, trainer.data.num_classes)
        module.load_state_dict(trainer.best["model"] or trainer.model.state_dict())
        module.eval()
    return RunResult(
        level=Level(options["canvas_size"], options["num_distractors"]),
        model=next(shown for shown, name, _ in MODELS if name == values["model"]["name"]),
        name=values["model"]["name"],
        values=values,
        test_error=float(result["test_error"]),
        val_errors=[float(r["val_error"]) for r in trainer.history if not r.get("partial")],
        params=int(result["params"]),
        model_module=module,
        tracked=tracked,
    )


def train_sweep(
    budget: Budget,
    seed: int,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Train both models at every level (levels in order, CNN before ST-CNN); the ST-CNN of the
    last level is tracked (:class:`Tracked`) and keeps its model."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    results = []
    total = len(budget.levels) * len(MODELS)
    with tempfile.TemporaryDirectory(prefix="torchstn-explain-") as tmp:
        for i, level in enumerate(budget.levels):
            for j, (shown, name, _) in enumerate(MODELS):
                values = run_values(budget, level, name, seed, threads)
                last = i == len(budget.levels) - 1 and name.startswith("st_")
                tracked = _tracked_digits(values, budget.track) if last else None
                log(
                    f"torchstn explain: training {shown} on {level.label()} "
                    f"({i * len(MODELS) + j + 1}/{total})"
                )
                results.append(_train(values, Path(tmp), tracked))
    return results


def train_command(values: dict[str, Any], out: str = "runs/NAME") -> str:
    """The ``torchstn train`` command line that trains the run of ``values``."""
    parts = ["torchstn train", f"--out {out}"]

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and value:
                walk(value, f"{prefix}{key}.")
            else:
                text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
                parts.append(f"--set {shlex.quote(f'{prefix}{key}={text}')}")

    walk(values, "")
    return " ".join(parts)
