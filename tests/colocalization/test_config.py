from __future__ import annotations

from pathlib import Path

import pytest

from torchstn.colocalization import (
    ColocalizationConfig,
    colocalization_config,
    load_colocalization_config,
)
from torchstn.colocalization.driver import COLUMNS
from torchstn.errors import ConfigError
from torchstn.experiments import default_config_dir


def test_defaults_are_valid():
    cfg = colocalization_config({})
    assert cfg == ColocalizationConfig().validate()
    assert cfg.margin == 1.0 and cfg.num_images == 100


@pytest.mark.parametrize("column", sorted(COLUMNS))
def test_shipped_configs_load(column):
    cfg = load_colocalization_config(default_config_dir() / "colocalization" / COLUMNS[column])
    assert cfg.clutter is (column == "TC")


def test_unknown_key_fails():
    with pytest.raises(ConfigError, match=r"unknown key.*wings.*valid keys"):
        colocalization_config({"wings": 2})


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"clutter": "yes"}, "clutter"),
        ({"lr": -1.0}, "lr"),
        ({"lr": "fast"}, "lr"),
        ({"batch_size": 1}, "batch_size"),
        ({"batch_size": 200}, "batch_size"),
        ({"scale_range": [0.5, 0.2]}, "scale_range"),
        ({"scale_range": 0.3}, "scale_range"),
        ({"split": "dev"}, "split"),
        ({"iou_threshold": 1.0}, "iou_threshold"),
        ({"model_options": {"scale_range": [0.1, 0.2]}}, "model_options"),
        ({"num_threads": 0}, "num_threads"),
    ],
)
def test_bad_values_fail(values, match):
    with pytest.raises(ConfigError, match=match):
        colocalization_config(values)


def test_yaml_numbers_and_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nsteps: 10\n")
    cfg = load_colocalization_config(path, {"steps": 20})
    assert cfg.lr == 0.001 and cfg.steps == 20


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_colocalization_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_colocalization_config(bad)
