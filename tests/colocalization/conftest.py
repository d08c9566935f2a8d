from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

#: a config that trains in well under a second (8 images, 3 steps, one thread).
TINY = {
    "num_images": 8,
    "batch_size": 4,
    "steps": 3,
    "embedding_dim": 8,
    "num_threads": 1,
    "model_options": {"loc_channels": [4, 4, 4], "channels": [4, 8], "hidden": 16},
}


@pytest.fixture
def tiny() -> dict:
    """A fresh copy of the tiny config's values."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config_dir(tmp_path: Path) -> Path:
    """A ``configs/`` folder whose T and TC configs are tiny."""
    folder = tmp_path / "configs" / "colocalization"
    folder.mkdir(parents=True)
    (folder / "t.yaml").write_text(yaml.safe_dump({**TINY, "clutter": False}))
    (folder / "tc.yaml").write_text(yaml.safe_dump({**TINY, "clutter": True}))
    return tmp_path / "configs"
