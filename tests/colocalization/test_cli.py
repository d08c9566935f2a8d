"""Co-localisation through ``torchstn train``, ``eval`` and ``reproduce``: everything a
classification run has (saved config, metrics.jsonl, resume to the step, one-line errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from torchstn.cli import main
from torchstn.experiments import render_results
from torchstn.train import Trainer, TrainingInterrupted, config_from_dict, load_checkpoint


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_then_eval(tmp_path, tiny_yaml, capsys):
    run = tmp_path / "run"
    code, out, _ = _run(capsys, "train", "--config", str(tiny_yaml), "--out", str(run))
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result == json.loads((run / "result.json").read_text())
    assert result["objective"] == "colocalization" and result["data"] == "colocalization digit 1"
    assert result["test_error"] == pytest.approx(100 - result["test_localised"])
    assert 0 <= result["test_mean_iou"] <= 1 and result["epochs"] == 2
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"train_loss", "train_active", "val_error", "val_localised", "val_mean_iou"} <= set(
            r
        )
        assert r["val_error"] == pytest.approx(100 - r["val_localised"])
    best = min(rows, key=lambda r: r["val_error"])  # the first of the lowest
    assert (result["best_epoch"], result["val_error"]) == (best["epoch"], best["val_error"])
    saved = json.loads((run / "config.json").read_text())
    assert saved["objective"]["name"] == "colocalization"
    assert saved["objective"]["options"]["digit"] == 1

    # eval of the checkpoint: the localisation numbers of result.json (best weights)
    for split, want in (("test", result["test_localised"]), ("val", 100 - result["val_error"])):
        code, out, _ = _run(capsys, "eval", str(run / "checkpoint.pt"), "--split", split)
        scores = json.loads(out.strip().splitlines()[-1])
        assert code == 0 and scores["localised"] == pytest.approx(want)
        assert scores["error"] == pytest.approx(100 - want)
    assert scores.keys() >= {"mean_iou", "model", "data", "weights"}

    # visualize draws the crops (red) and the digits' boxes (green)
    png = tmp_path / "boxes.png"
    code, out, _ = _run(capsys, "visualize", str(run), "--out", str(png), "--num", "4")
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_to_the_step_gives_the_same_weights(tmp_path, tiny, tiny_yaml, capsys, monkeypatch):
    ref = tmp_path / "ref"
    assert _run(capsys, "train", "--config", str(tiny_yaml), "--out", str(ref))[0] == 0

    cut = tmp_path / "cut"
    trainer = Trainer(config_from_dict(tiny), cut, progress=False)
    original = Trainer._step
    calls = [0]

    def step_then_interrupt(self, *args):
        loss = original(self, *args)
        calls[0] += 1
        if calls[0] == 3:  # epoch 2, after its first of 2 steps
            self.interrupted = True
        return loss

    monkeypatch.setattr(Trainer, "_step", step_then_interrupt)
    with pytest.raises(TrainingInterrupted):
        trainer.fit()
    monkeypatch.setattr(Trainer, "_step", original)
    state = load_checkpoint(cut / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 1)
    code, out, _ = _run(capsys, "train", "--config", str(tiny_yaml), "--out", str(cut), "--resume")
    assert code == 0 and "resumed at epoch 2 step 1" in out
    a, b = (load_checkpoint(r / "checkpoint.pt") for r in (ref, cut))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for k, v in a["best"]["model"].items():
        assert torch.equal(v, b["best"]["model"][k]), k

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]

    assert strip(_rows(cut)) == strip(_rows(ref))  # epoch 2's statistics span the cut
    results = [json.loads((r / "result.json").read_text()) for r in (ref, cut)]
    assert results[0]["test_localised"] == results[1]["test_localised"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("objective: {name: colocalization, options: {wings: 2}}", "wings"),
        ("objective: {name: colocalization, options: {digit: 12}}", "digit"),
        ("objective: {name: colocalization}\ndata: {task: rotated}", "data.task"),
    ],
)
def test_bad_configs_fail_in_one_line(tmp_path, capsys, text, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text + "\n")
    code, _, err = _run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and match in err, err
    assert not (tmp_path / "r").exists()


def test_set_overrides_an_option(tmp_path, tiny_yaml, capsys):
    run = tmp_path / "run"
    argv = ["--config", str(tiny_yaml), "--out", str(run), "--epochs", "1"]
    code, _, _ = _run(capsys, "train", *argv, "--set", "objective.options.digit=7")
    assert code == 0
    assert json.loads((run / "result.json").read_text())["data"] == "colocalization digit 7"


def test_reproduce_runs_the_table_through_the_trainer(tmp_path, tiny_config_dir, capsys):
    argv = [
        "reproduce",
        "colocalization",
        "--digits",
        "1,2",
        "--configs",
        str(tiny_config_dir),
        "--runs-dir",
        str(tmp_path / "runs"),
        "--results-dir",
        str(tmp_path / "results"),
        "--results-md",
        str(tmp_path / "RESULTS.md"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results" / "colocalization.json").read_text())
    runs = record["runs"]
    assert sorted((r["column"], r["digit"]) for r in runs) == [
        ("T", 1),
        ("T", 2),
        ("TC", 1),
        ("TC", 2),
    ]
    for r in runs:
        folder = Path(r["run_dir"])
        result = json.loads((folder / "result.json").read_text())
        assert r["localised"] == result["test_localised"] and r["steps"] == 4
        assert (folder / "metrics.jsonl").is_file() and (folder / "config.json").is_file()
        assert (folder / "boxes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 0 <= r["start_localised"] <= 100
    md = (tmp_path / "RESULTS.md").read_text()
    assert md == render_results(tmp_path / "results")
    t_row = next(line for line in md.splitlines() if line.startswith("| T | 2 epochs |"))
    assert "| 100 |" in t_row  # the paper's T beside ours

    capsys.readouterr()
    assert main(argv) == 0  # a second call reuses the finished runs
    assert capsys.readouterr().out.count("reusing") == 4
    again = json.loads((tmp_path / "results" / "colocalization.json").read_text())
    assert [r["localised"] for r in again["runs"]] == [r["localised"] for r in runs]


def test_reproduce_errors(tmp_path, tiny_config_dir, capsys):
    common = ["reproduce", "colocalization", "--configs", str(tiny_config_dir)]
    assert main([*common, "--digits", "11"]) == 2
    assert "--digits" in capsys.readouterr().err
    assert main([*common, "--columns", "X"]) == 2
    assert "TC" in capsys.readouterr().err
    (tiny_config_dir / "colocalization" / "t.yaml").write_text(
        yaml.safe_dump({"objective": {"name": "colocalization", "options": {"wings": 1}}})
    )
    assert main([*common, "--columns", "T", "--runs-dir", str(tmp_path)]) == 2
    assert "wings" in capsys.readouterr().err
