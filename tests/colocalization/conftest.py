from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

#: a co-localisation config that trains in about a second: 8 images of digit 1, 2 steps of 4
#: per epoch, 2 epochs, a small model, one thread.
TINY = {
    "seed": 0,
    "device": "cpu",
    "objective": {
        "name": "colocalization",
        "options": {"digit": 1, "num_images": 8, "val_images": 6, "embedding_dim": 8},
    },
    "data": {"task": "colocalization", "options": {"clutter": False}, "train_size": 8},
    "model": {
        "name": "st_attention_encoder",
        "options": {"loc_channels": [4, 4, 4], "channels": [4, 8], "hidden": 16},
    },
    "optim": {"name": "adam", "lr": 0.003, "loc_lr_scale": 0.5, "batch_size": 4},
    "run": {"epochs": 2, "eval_batch_size": 4, "num_threads": 1},
}


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny config's values."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    """The tiny config as a YAML file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture
def tiny_config_dir(tmp_path: Path) -> Path:
    """A ``configs/`` folder whose T and TC configs are tiny."""
    folder = tmp_path / "configs" / "colocalization"
    folder.mkdir(parents=True)
    for name, clutter in (("t.yaml", False), ("tc.yaml", True)):
        values = copy.deepcopy(TINY)
        values["data"]["options"]["clutter"] = clutter
        (folder / name).write_text(yaml.safe_dump(values))
    return tmp_path / "configs"
