"""Training: configuration, objectives, the step, the loop behind ``torchstn train``.

The pieces, from the bottom: :mod:`~torchstn.train.config` (what a run is),
:mod:`~torchstn.train.datamodule` (its data), :mod:`~torchstn.train.evaluate` (its device, model
and scoring), :mod:`~torchstn.train.objective` (what it minimises, by name),
:mod:`~torchstn.train.step` (one step), :mod:`~torchstn.train.callbacks`,
:mod:`~torchstn.train.trainer` (the loop), with :mod:`~torchstn.train.checkpoint`,
:mod:`~torchstn.train.runfolder`, :mod:`~torchstn.train.resume` and
:mod:`~torchstn.train.provenance` beside it.
"""

from __future__ import annotations

from .callbacks import Callback
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from .datamodule import DataModule, Split
from .evaluate import EvalSettings, build_model, evaluate, resolve_device
from .objective import (
    Classification,
    Objective,
    get_objective,
    objective_names,
    register_objective,
)
from .step import TrainStep
from .trainer import Trainer, TrainingDiverged, TrainingInterrupted

__all__ = [
    "Callback",
    "Classification",
    "Config",
    "DataModule",
    "EvalSettings",
    "Objective",
    "Split",
    "TrainStep",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "apply_overrides",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "get_objective",
    "load_checkpoint",
    "load_config",
    "objective_names",
    "register_objective",
    "resolve_device",
    "save_checkpoint",
]
