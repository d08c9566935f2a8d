"""Registration through ``torchstn train`` and ``eval``: 2-D MNIST pairs, the 3-D MNI152 task and
users' NIfTI folders, with the trainer's records and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchstn.cli import main
from torchstn.train import Trainer, TrainingInterrupted, config_from_dict, load_checkpoint

from .conftest import write_yaml
from .test_data import _folder, _save

_METRICS = {"val_error", "val_dice", "val_dice_before", "val_similarity", "val_folded"}
_RESULT = {"test_dice", "test_dice_before", "test_similarity", "test_folded", "test_jacobian_std"}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("which", ["2d", "3d"])
def test_train_then_eval(tmp_path, capsys, tiny_2d, tiny_3d, which):
    values = tiny_2d if which == "2d" else tiny_3d
    run = tmp_path / "run"
    config = write_yaml(tmp_path, values)
    code, out, err = _run(
        capsys, "train", "--config", str(config), "--out", str(run), "--no-progress"
    )
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == json.loads((run / "result.json").read_text())
    assert result["objective"] == "registration" and result["epochs"] == 2
    assert _RESULT <= set(result) and result["test_ms_per_pair"] > 0
    assert result["test_error"] == pytest.approx(100 * (1 - result["test_dice"]))
    assert 0 <= result["test_dice"] <= 1 and 0 <= result["test_folded"] <= 100
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert _METRICS | {"train_loss", "train_folded"} <= set(r)
        assert r["val_error"] == pytest.approx(100 * (1 - r["val_dice"]))
    best = min(rows, key=lambda r: r["val_error"])
    assert (result["best_epoch"], result["val_error"]) == (best["epoch"], best["val_error"])
    # eval of the checkpoint: the numbers of result.json (best weights)
    code, out, _ = _run(capsys, "eval", str(run / "checkpoint.pt"), "--split", "test")
    scores = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and scores["dice"] == pytest.approx(result["test_dice"])
    assert scores["dice_before"] == pytest.approx(result["test_dice_before"])


def test_users_folder_trains(tmp_path, capsys, tiny_3d):
    root = _folder(tmp_path / "scans", atlas=True)
    values = tiny_3d
    values["data"] = {"task": None, "path": str(root), "val_fraction": 0.4}
    values["objective"]["options"] = {"similarity": "mse", "dice_weight": 0.1}
    run = tmp_path / "run"
    config = write_yaml(tmp_path, values)
    code, _out, err = _run(
        capsys, "train", "--config", str(config), "--out", str(run), "--no-progress"
    )
    assert code == 0, err
    result = json.loads((run / "result.json").read_text())
    assert result["data"] == "scans" and result["test_is_val"] and "test_dice" in result


def test_a_folder_without_labels_trains_loads_and_evaluates(tmp_path, capsys, tiny_3d):
    """No label maps: scored by the similarity alone, and the run still loads (its checkpoint
    records one output, not 0) for eval and the pictures."""
    import torchstn

    root = _folder(tmp_path / "scans", atlas=True, labels=False)
    values = tiny_3d
    values["data"] = {"task": None, "path": str(root), "val_fraction": 0.4}
    values["objective"]["options"] = {"similarity": "mse"}
    run = tmp_path / "run"
    config = write_yaml(tmp_path, values)
    code, _out, err = _run(
        capsys, "train", "--config", str(config), "--out", str(run), "--no-progress"
    )
    assert code == 0, err
    result = json.loads((run / "result.json").read_text())
    assert "test_dice" not in result and "test_similarity" in result
    model = torchstn.load(run)
    x = torch.rand(1, 1, 8, 7, 6)  # the scans of _folder
    assert model(x, x).field.shape == (1, 3, 8, 7, 6)
    code, out, err = _run(capsys, "eval", str(run / "checkpoint.pt"))
    assert code == 0, err
    assert "similarity" in out


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"objective": {"name": "registration", "options": {"wings": 2}}}, "wings"),
        ({"objective": {"name": "registration", "options": {"window": 2}}}, "window"),
        ({"data": {"task": "rotated"}}, "data.task"),
        ({"data": {"task": "mni152", "options": {"size": 4}}}, "data.options.size"),
        ({"model": {"name": "cnn"}}, "forward(moving, fixed)"),
    ],
)
def test_bad_configs_fail_in_one_line(tmp_path, capsys, tiny_2d, change, match):
    for key, value in change.items():
        tiny_2d[key] = value
    config = write_yaml(tmp_path, tiny_2d)
    code, _, err = _run(capsys, "train", "--config", str(config), "--out", str(tmp_path / "r"))
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and match in err, err


def test_a_hostile_scan_stops_the_run_in_one_line(tmp_path, capsys, tiny_3d):
    root = _folder(tmp_path / "scans", atlas=True)
    _save(root / "moving" / "b.nii.gz", np.full((6, 7, 8), np.inf, np.float32))
    tiny_3d["data"] = {"task": None, "path": str(root)}
    config = write_yaml(tmp_path, tiny_3d)
    code, _, err = _run(capsys, "train", "--config", str(config), "--out", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "b.nii.gz" in err, err


def test_resume_to_the_step_gives_the_same_weights(tmp_path, capsys, tiny_2d, monkeypatch):
    tiny_2d["objective"]["options"]["mode"] = "pairwise"  # partners drawn per epoch
    config = write_yaml(tmp_path, tiny_2d)
    ref = tmp_path / "ref"
    assert (
        _run(capsys, "train", "--config", str(config), "--out", str(ref), "--no-progress")[0] == 0
    )
    cut = tmp_path / "cut"
    trainer = Trainer(config_from_dict(tiny_2d), cut, progress=False)
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
    argv = ["train", "--config", str(config), "--out", str(cut), "--resume", "--no-progress"]
    assert _run(capsys, *argv)[0] == 0
    a, b = (load_checkpoint(r / "checkpoint.pt") for r in (ref, cut))
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
