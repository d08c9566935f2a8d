"""``torchstn reproduce registration``: trained rows and the classical baseline, recorded and
rendered, at tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from torchstn.cli import main
from torchstn.experiments import get_table, render_results
from torchstn.experiments.registration import CLASSICAL
from torchstn.train.config import default_config_dir

TINY = [
    "--set",
    "data.train_size=16",
    "--set",
    "data.val_size=8",
    "--set",
    "data.test_size=8",
    "--set",
    "run.eval_batch_size=8",
    "--set",
    "optim.batch_size=8",
]


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    """The packaged MNIST configs, unchanged, in a folder of the test's own."""
    root = tmp_path / "configs"
    src = default_config_dir() / "registration" / "mnist"
    dst = root / "registration" / "mnist"
    dst.mkdir(parents=True)
    for path in src.glob("*.yaml"):
        (dst / path.name).write_text(path.read_text())
    return root


def test_the_table_trains_three_models_and_scores_the_classical_baseline(
    tmp_path: Path, configs: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(CLASSICAL, "MNIST", {"iterations": 40, "lr": 0.2, "downsize": 1})
    results = tmp_path / "results"
    code = main(
        [
            "reproduce",
            "registration",
            "--columns",
            "MNIST",
            "--epochs",
            "1",
            "--configs",
            str(configs),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(results),
            "--results-md",
            str(tmp_path / "RESULTS.md"),
            *TINY,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    record = json.loads((results / "registration.json").read_text())
    runs = {r["model"]: r for r in record["runs"]}
    assert set(runs) == set(get_table("registration").models)
    classical = runs["classical"]
    assert classical["epochs"] == 0 and classical["params"] == 0
    assert classical["budget"] == "test-time optimisation"
    assert classical["classical"] == {
        "field": "velocity",
        "iterations": 40,
        "lr": 0.2,
        "downsize": 1,
    }
    # it scores the same test pairs as the networks: same Dice before
    befores = {r["dice_before"] for r in record["runs"]}
    assert len(befores) == 1
    # 40 Adam steps per pair move the digits towards the atlas
    assert classical["dice"] > classical["dice_before"]
    assert classical["config"].endswith("registration/mnist/velocity.yaml")
    result = json.loads(
        (
            tmp_path / "runs" / "registration" / "MNIST" / "classical-seed0" / "result.json"
        ).read_text()
    )
    assert result["val_error"] is None and result["model"] == "classical"
    text = (tmp_path / "RESULTS.md").read_text()
    assert (
        "### MNIST" in text and "| classical |" in text and "none; per pair: field velocity" in text
    )
    assert text == render_results(results)
    # a second command reuses every run, classical included
    main(
        [
            "reproduce",
            "registration",
            "--columns",
            "MNIST",
            "--epochs",
            "1",
            "--configs",
            str(configs),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--results-dir",
            str(results),
            "--results-md",
            str(tmp_path / "RESULTS.md"),
            *TINY,
        ]
    )
    assert capsys.readouterr().out.count("reusing") == 4


def test_the_packaged_configs_cover_the_table() -> None:
    table = get_table("registration")
    for folder in table.columns.values():
        for model in table.models:
            stem = "velocity" if model == "classical" else model
            values = yaml.safe_load((default_config_dir() / folder / f"{stem}.yaml").read_text())
            assert values["objective"]["name"] == "registration"
            if model != "classical":
                want = "reg_affine" if model == "affine" else "reg_unet"
                assert values["model"]["name"] == want
                if want == "reg_unet":
                    assert values["model"]["options"]["field"] == model
