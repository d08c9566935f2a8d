from __future__ import annotations

import copy
from pathlib import Path

import pytest

from torchstn.colocalization import ColocalizationOptions, colocalization_options
from torchstn.errors import ConfigError
from torchstn.experiments import COLOCALIZATION
from torchstn.train import config_from_dict, load_config
from torchstn.train.config import default_config_dir
from torchstn.train.objective import get_objective


def test_default_options_are_valid():
    assert colocalization_options({}) == ColocalizationOptions().validate()
    assert (colocalization_options(None).margin, ColocalizationOptions().num_images) == (1.0, 100)


@pytest.mark.parametrize("column", sorted(COLOCALIZATION.columns))
def test_shipped_configs_load(column):
    cfg = config_from_dict(load_config(default_config_dir() / COLOCALIZATION.columns[column]))
    assert cfg.objective.name == "colocalization"
    assert cfg.data.options["clutter"] is (column == "TC")
    options = get_objective(cfg).options
    # scored on test images, selected on the MNIST training file's images
    assert (options.images, options.val_split) == ("test", "val")


def test_unknown_keys_fail(tiny):
    values = copy.deepcopy(tiny)
    values["objective"]["options"]["wings"] = 2
    with pytest.raises(ConfigError, match=r"objective\.options: unknown key.*wings.*valid keys"):
        get_objective(config_from_dict(values))
    values = copy.deepcopy(tiny)
    values["objective"]["loss"] = "triplet"
    with pytest.raises(ConfigError, match=r"objective: unknown key.*loss"):
        config_from_dict(values)


@pytest.mark.parametrize(
    ("where", "key", "value", "match"),
    [
        ("options", "digit", 10, "digit"),
        ("options", "digit", 1.5, "digit"),
        ("options", "num_images", 1, "num_images"),
        ("options", "images", "dev", "images"),
        ("options", "val_split", "test", "another split"),
        ("options", "margin", -1.0, "margin"),
        ("options", "margin", "wide", "margin"),
        ("options", "iou_threshold", 1.0, "iou_threshold"),
        ("options", "transformer_positive_grad", "yes", "transformer_positive_grad"),
        ("optim", "batch_size", 16, "batch_size"),  # more than the 8 images
        ("optim", "batch_size", 3, "multiple of 2"),  # the images are paired
        ("data", "task", "cluttered", "data.task"),
        ("data", "normalize", True, "normalize"),
        ("objective", "name", "regression", "classification or colocalization"),
    ],
)
def test_bad_values_fail(tiny, where, key, value, match):
    values = copy.deepcopy(tiny)
    section = values["objective"]["options"] if where == "options" else values[where]
    section[key] = value
    with pytest.raises(ConfigError, match=match):  # the objective checks what it needs
        get_objective(config_from_dict(values))


def test_classification_takes_no_options(tiny):
    values = {"objective": {"name": "classification", "options": {"digit": 3}}}
    with pytest.raises(ConfigError, match="classification takes no options"):
        get_objective(config_from_dict(values))


def test_yaml_numbers(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "objective: {name: colocalization, options: {margin: 1e-1}}\n"
        "data: {task: colocalization}\nmodel: {name: st_attention_encoder}\n"
        "optim: {batch_size: 32}\n"
    )
    cfg = config_from_dict(load_config(path))
    assert get_objective(cfg).options.margin == 0.1
