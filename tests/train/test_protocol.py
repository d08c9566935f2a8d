"""`torchstn reproduce TABLE --protocol paper`: the paper's optimiser and schedule in every run,
its own budget in the records and RESULTS.md, and the options it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchstn.cli import main
from torchstn.experiments import get_table, render_results
from torchstn.experiments.tables import PAPER_BUDGET, Options, paper_values

from .test_reproduce import _argv, _tiny_configs


def test_paper_protocol_trains_with_the_papers_schedule(tmp_path, tiny_values, capsys):
    configs = _tiny_configs(tmp_path, tiny_values)
    # one epoch instead of 200,000 (--set comes after the protocol); seeds 0,1,2 by default
    argv = [*_argv(tmp_path, configs, "cnn"), "--protocol", "paper", "--set", "run.epochs=1"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert sorted(r["seed"] for r in record["runs"]) == [0, 1, 2]
    train_size = tiny_values["data"]["train_size"]
    for entry in record["runs"]:
        assert entry["budget"] == PAPER_BUDGET[0] and entry["schedule"] == "step"
        assert Path(entry["run_dir"]).name == f"cnn-seed{entry['seed']}-paper"
        optim = json.loads((Path(entry["run_dir"]) / "config.json").read_text())["optim"]
        assert (optim["name"], optim["lr"], optim["batch_size"], optim["gamma"]) == (
            "sgd",
            0.01,
            256,
            0.1,
        )
        assert optim["step_epochs"] == round(50_000 * 256 / train_size)
        assert entry["device"] == "cpu"
    md = (tmp_path / "RESULTS.md").read_text()
    assert md == render_results(tmp_path / "results")
    assert "### The paper's protocol: 150,000 iterations of 256 per run" in md
    assert "(n=3)" in next(ln for ln in md.splitlines() if ln.startswith("| cnn |"))


def test_paper_values_follow_the_training_set_size():
    values = paper_values({"data": {"train_size": 60_000}, "run": {"minutes": 5, "epochs": 3}})
    # 38.4M images: 640 epochs of 60,000; a step every 12.8M images: 213 epochs
    assert values["run"] == {"epochs": 640}
    assert values["optim"]["step_epochs"] == 213
    assert paper_values({"data": {"train_size": 7}})["run"]["epochs"] == -(-38_400_000 // 7)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget-minutes", "3"], "leave out --budget-minutes and --epochs"),
        (["--epochs", "2"], "leave out --budget-minutes and --epochs"),
    ],
)
def test_paper_protocol_refuses_a_budget_of_its_own(tmp_path, tiny_values, capsys, extra, message):
    argv = [*_argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn"), "--protocol", "paper"]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["volumes", "colocalization", "registration"])
def test_paper_protocol_only_for_the_papers_tables(name):
    table = get_table(name)
    with pytest.raises(Exception, match="the paper trained no"):
        table.check(Options(columns=tuple(table.columns), protocol="paper"))


def test_cells_trained_on_a_gpu_are_marked(tmp_path):
    base = {
        "column": "TC",
        "budget": "10 min",
        "schedule": "cosine",
        "world_size": 1,
        "config": "c",
        "run_dir": "r",
        "git_commit": None,
        "config_sha256": "x",
        "val_error": 2.0,
        "epochs": 3,
        "best_epoch": 3,
        "train_seconds": 60.0,
        "params": 10,
        "command": "torchstn reproduce cluttered",
        "wall_seconds": 60.0,
    }
    runs = [
        {**base, "model": "cnn", "seed": 0, "test_error": 3.0, "device": "cpu", "hardware": "x"},
        {
            **base,
            "model": "st_cnn_affine",
            "seed": 0,
            "test_error": 1.0,
            "device": "cuda:0",
            "hardware": "NVIDIA H200",
        },
    ]
    (tmp_path / "cluttered.json").write_text(json.dumps({"runs": runs}))
    md = render_results(tmp_path)
    rows = {ln.split(" |")[0]: ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "1.00¹ ᴳ" in rows["| st_cnn_affine"] and "ᴳ" not in rows["| cnn"]
    assert "ᴳ trained on a GPU" in md
    assert "test 1.00%, on NVIDIA H200" in md
