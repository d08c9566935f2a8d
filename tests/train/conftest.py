from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

TINY = {
    "seed": 0,
    "device": "cpu",
    "data": {"task": "rotated", "train_size": 192, "val_size": 64, "test_size": 64},
    "model": {
        "name": "st_cnn_affine",
        "options": {"channels": [4, 8], "loc_channels": [4, 4], "loc_hidden": 8},
    },
    "optim": {"lr": 0.02, "batch_size": 32, "schedule": "step", "step_epochs": 1, "gamma": 0.5},
    "run": {"epochs": 2, "eval_batch_size": 64},
}


@pytest.fixture
def tiny_values() -> dict:
    """A fresh copy of the tiny config's values."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A config that trains in about a second."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path
