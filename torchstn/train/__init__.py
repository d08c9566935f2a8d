"""Training: configuration, data, checkpoints and the loop behind ``torchstn train``."""

from __future__ import annotations

from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .config import Config, apply_overrides, config_from_dict, config_to_dict, load_config
from .datamodule import DataModule, Split
from .trainer import (
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    build_model,
    evaluate,
    resolve_device,
)

__all__ = [
    "Config",
    "DataModule",
    "Split",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "apply_overrides",
    "atomic_write_text",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "load_checkpoint",
    "load_config",
    "resolve_device",
    "save_checkpoint",
]
