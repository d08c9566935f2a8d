"""A model of the user's own, registered with ``register_model`` in a file outside the package,
trains and is evaluated through the command line with ``--import``; without it the commands say
in one line what to pass; a name of the registry cannot be taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchstn.errors import InvalidInputError, UnknownNameError
from torchstn.models import create_model, register_model

PLUGIN = """
import torch
from torch import nn
import torchstn
from torchstn.models import register_model

@register_model("my_tiny_stn")
def build(in_shape, num_classes, hidden=16):
    c, h, w = in_shape
    loc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 8), nn.ReLU())
    return nn.Sequential(
        torchstn.SpatialTransformer(in_shape, "attention", localization=loc),
        nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )
"""


def _torchstn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "torchstn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_registered_model_of_ones_own_trains_and_evaluates(
    tmp_path: Path, tiny_values: dict
) -> None:
    (tmp_path / "my_models.py").write_text(PLUGIN)
    tiny_values["model"] = {"name": "my_tiny_stn", "options": {"hidden": 12}}
    tiny_values["run"]["epochs"] = 1
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tiny_values))
    run = _torchstn(
        "train", "--config", "cfg.yaml", "--out", "run", "--no-progress",
        "--import", "my_models.py", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert 0 <= result["test_error"] <= 100
    # the module-name form, after the command, finds my_models.py in the current folder
    ev = _torchstn("eval", "run/checkpoint.pt", "--import=my_models", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout.strip().splitlines()[-1])["error"] == pytest.approx(
        result["test_error"]
    )
    # without --import: one line naming the model and what to pass
    bare = _torchstn("eval", "run/checkpoint.pt", cwd=tmp_path)
    assert bare.returncode == 2
    lines = bare.stderr.strip().splitlines()
    assert len(lines) == 1 and "my_tiny_stn" in lines[0] and "--import" in lines[0]


def test_a_missing_import_is_one_line(tmp_path: Path) -> None:
    for spec in ("no_such_module_xyz", "nothere.py"):
        out = _torchstn("eval", "x.pt", "--import", spec, cwd=tmp_path)
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and spec in lines[0], out.stderr


def test_registry_names_cannot_be_taken_over() -> None:
    with pytest.raises(InvalidInputError, match="already registered"):

        @register_model("cnn")
        def fake(in_shape, num_classes):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(InvalidInputError, match="letters"):
        register_model("bad name")
    with pytest.raises(UnknownNameError, match="--import"):
        create_model("not_a_model", (1, 8, 8), 3)
    assert create_model("cnn", (1, 28, 28), 10) is not None  # the built-in one survived
