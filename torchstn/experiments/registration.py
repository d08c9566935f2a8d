"""The registration table: learned registration (affine-only, displacement and velocity
networks) against a classical baseline that optimises one field per pair, on 2-D MNIST pairs
and the 3-D MNI152 template under random diffeomorphisms.

Every row but ``classical`` is a ``torchstn train`` run of ``configs/registration/COLUMN/MODEL.yaml``.
``classical`` has no training: it is the column's velocity config scored with
:class:`~torchstn.registration.classical.ClassicalRegistration` (Adam on the same loss, per pair,
at test time), through the same objective's evaluation, and written as a run folder with a
``result.json`` of the same fields (``epochs`` 0), so the runner reuses and records it like the
others.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write_text
from ..errors import ConfigError
from ..registration.classical import ClassicalRegistration
from ..registration.objective import RegistrationObjective
from ..train import EvalSettings, get_objective
from ..train.config import Config, config_to_dict, default_config_dir
from ..train.provenance import loaded_commit, provenance
from ..train.runfolder import finite
from .tables import Options, PlannedRun, Table, register_table

__all__ = ["CLASSICAL", "MODELS", "REGISTRATION", "RegistrationTable", "classical_result"]

#: per column: the classical optimiser's settings (Adam steps per batch, learning rate in
#: pixels of the field's grid, the field's grid divided by ``downsize``)
CLASSICAL: dict[str, dict[str, Any]] = {
    "MNIST": {"iterations": 150, "lr": 0.1, "downsize": 1},
    "MNI152": {"iterations": 100, "lr": 0.1, "downsize": 2},
}


def _device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def classical_result(cfg: Config, run_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Score the classical baseline on the test pairs of ``cfg``'s data with
    ``cfg``'s objective, and write ``run_dir/result.json`` (atomically) as a trained run would.

    Args:
        cfg: a registration config (its model is not used).
        run_dir: the run folder (created).
        settings: :class:`~torchstn.registration.classical.ClassicalRegistration` keywords.
    """
    objective = get_objective(cfg)
    if not isinstance(objective, RegistrationObjective):
        raise ConfigError(f"classical: a registration config is needed, got {objective.name!r}")
    field = str(cfg.model.options.get("field", "velocity"))
    device = _device(cfg)
    torch.set_num_threads(max(1, int(cfg.run.num_threads or torch.get_num_threads())))
    data = objective.build_data()
    model = ClassicalRegistration(objective.options, field=field, **settings).to(device)
    scoring = EvalSettings.of_run(cfg, device)
    start = time.perf_counter()
    # nothing is selected on validation (no training, fixed settings): the test split only
    test = objective.evaluate(model, data.eval_split("test"), scoring)
    result = {
        "test_error": test["error"],
        "val_error": None,
        **objective.test_fields(test),
        "best_epoch": None,
        "best_partial_steps": None,
        "epochs": 0,
        "steps_in_partial_epoch": 0,
        "train_seconds": 0.0,
        "eval_seconds": round(time.perf_counter() - start, 2),
        "params": 0,
        "model": "classical",
        "classical": {"field": field, **settings},
        "objective": objective.name,
        "data": cfg.data.task,
        "test_is_val": False,
        "seed": cfg.seed,
        "device": str(device),
        "world_size": 1,
        "batch_size": cfg.run.eval_batch_size,
        "precision": cfg.run.precision,
        **provenance(config_to_dict(cfg), device, loaded_commit()),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite(result), indent=2, allow_nan=False) + "\n"
    atomic_write_text(run_dir / "result.json", text)
    return result


@dataclass(frozen=True)
class RegistrationTable(Table):
    """Registration runs, one per (column, model, seed), scored by Dice (%) before and after,
    the share of folded pixels (%) and the time per pair."""

    #: the column's config that the classical row scores with
    CLASSICAL_CONFIG = "velocity"
    EPOCHS_LIMIT_TIME = True  # a time budget leaves the configs' epochs a limit

    def check(self, options: Options) -> None:
        super().check(options)
        if options.variant:
            raise ConfigError("--variant: the registration table records no variants")

    def plan(self, options: Options) -> list[PlannedRun]:
        config_dir = options.config_dir or default_config_dir()
        plan = []
        for column in options.columns:
            for model in options.models or self.models:
                stem = self.CLASSICAL_CONFIG if model == "classical" else model
                path = config_dir / self.columns[column] / f"{stem}.yaml"
                if not path.is_file():
                    raise ConfigError(f"missing config {path} for {model} on {column}")
                plan += [PlannedRun(column, seed, path, model) for seed in options.seeds]
        return plan

    def execute(
        self, run: PlannedRun, cfg: Any, run_dir: Path, resume: bool = False
    ) -> dict[str, Any]:
        if run.item == "classical":
            return classical_result(cfg, run_dir, CLASSICAL[run.column])
        return super().execute(run, cfg, run_dir, resume)

    def run_dir(self, run: PlannedRun, options: Options, slug: str) -> Path:
        """``RUNS/registration/COLUMN/MODEL-seedS-BUDGET`` (``classical-seedS``: no training)."""
        name = f"{run.item}-seed{run.seed}" + ("" if run.item == "classical" else f"-{slug}")
        return options.runs_dir / self.name / run.column / name

    def entry(
        self,
        run: PlannedRun,
        cfg: Any,
        result: dict[str, Any],
        options: Options,
        where: dict[str, Any],
    ) -> dict[str, Any]:
        """The run's scores: Dice (%) before and after (where the data has labels), the
        similarity loss before and after, folded share (%), Jacobian spread, ms per pair."""
        scores = {
            k: result.get(f"test_{k}")
            for k in (
                "dice",
                "dice_before",
                "similarity",
                "similarity_before",
                "folded",
                "jacobian_std",
                "ms_per_pair",
            )
        }
        for k in ("dice", "dice_before"):
            value = scores[k]
            if value is not None:
                scores[k] = 100.0 * float(value)
        return {
            "column": run.column,
            "model": run.item,
            "seed": run.seed,
            "budget": "test-time optimisation" if run.item == "classical" else where["budget"],
            "world_size": where["world_size"],
            **{k: where[k] for k in ("config", "run_dir", "git_commit", "config_sha256")},
            **scores,
            "val_error": result["val_error"],
            "test_error": result["test_error"],
            "epochs": result["epochs"],
            "train_seconds": result["train_seconds"],
            "params": result["params"],
            **({"classical": result["classical"]} if "classical" in result else {}),
        }

    def key(self, entry: dict[str, Any]) -> tuple[Any, ...]:
        return (entry["column"], entry["model"], entry["seed"], entry["budget"])

    def summary(self, entry: dict[str, Any]) -> str:
        dice = (
            f"Dice {entry['dice_before']:.1f}% -> {entry['dice']:.1f}%, "
            if entry.get("dice") is not None
            else ""
        )
        return (
            f"    {dice}folded {entry['folded']:.3f}%, {entry['ms_per_pair']:.1f} ms/pair, "
            f"{entry['epochs']} epochs, {entry['train_seconds'] / 60:.1f} min"
        )


#: the models of the table, its rows
MODELS = ("affine", "displacement", "velocity", "classical")

REGISTRATION = register_table(
    RegistrationTable(
        name="registration",
        title="Learned registration: dense spatial transformers against affine and classical",
        columns={"MNIST": "registration/mnist", "MNI152": "registration/mni152"},
        models=MODELS,
        metric="Dice (%) after registration",
        notes=(
            "Dice of the moving image's labels warped by the predicted field with the fixed "
            "image's labels (MNIST: the digit's foreground; MNI152: grey and white matter), "
            "mean over test pairs; before: without registration. folded: % of pixels (voxels) "
            "whose Jacobian determinant is <= 0. loss: the similarity term of the training "
            "loss on the test pairs (MNIST: MSE; MNI152: 1 - local NCC), lower is better. ms/pair: the forward pass (networks) or the "
            "whole per-pair optimisation (classical). Seeds change a network's initialisation "
            "and training pairs; the test pairs are fixed by data.eval_seed, and the classical "
            "optimisation starts from zero, so its seeds repeat one computation (spread 0). "
            "The paper has no registration table."
        ),
    )
)
