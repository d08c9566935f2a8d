"""A time budget that ends inside an epoch: the partial epoch is validated and may be the best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchstn.cli import main
from torchstn.train import Trainer, config_from_dict, load_checkpoint

STEPS_PER_EPOCH = 6  # 192 training samples, batch 32


def _budgeted(tmp_path: Path, tiny_values: dict, monkeypatch, steps: int, val_errors: list) -> dict:
    """Train the tiny config with a budget of ``steps`` steps on a clock that ticks one second
    per step; validation reports ``val_errors`` in turn (the test error is the real one)."""
    values = tiny_values
    values["optim"]["schedule"] = "cosine"  # annealed over the budget
    values["run"].update(epochs=1000, minutes=steps / 60)

    def spent(self: Trainer, start: float) -> float:  # one second per step, this one included
        return float(self.epoch * STEPS_PER_EPOCH + self.step + 1)

    original = Trainer._evaluate
    errors = iter(val_errors)

    def evaluate(self: Trainer, model, split):
        scores = original(self, model, split)
        return {**scores, "error": next(errors)} if split == "val" else scores

    monkeypatch.setattr(Trainer, "_spent", spent)
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    return Trainer(config_from_dict(values), tmp_path / "run", progress=False).fit()


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_partial_epoch_is_validated_and_can_be_best(tmp_path, tiny_values, monkeypatch, capsys):
    # 15 steps: epochs 1 and 2 (6 steps each), then 3 steps of epoch 3, at the lowest rates
    result = _budgeted(tmp_path, tiny_values, monkeypatch, 15, [50.0, 40.0, 30.0])
    run = tmp_path / "run"
    rows = _rows(run)
    assert [(r["epoch"], r.get("partial"), r.get("steps")) for r in rows] == [
        (1, None, None),
        (2, None, None),
        (3, True, 3),
    ]
    assert rows[2]["val_error"] == 30.0 and rows[2]["lr"] < rows[1]["lr"]
    assert (result["epochs"], result["steps_in_partial_epoch"]) == (2, 3)
    assert (result["best_epoch"], result["best_partial_steps"], result["val_error"]) == (3, 3, 30.0)
    # the best weights are the partial epoch's (the last ones), and the test error is theirs
    state = load_checkpoint(run / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (2, 3)
    for k, v in state["model"].items():
        assert torch.equal(v, state["best"]["model"][k]), k
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoint.pt"), "--split", "test"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["error"] == result["test_error"] and scores["weights"] == "best"


def test_an_older_epoch_stays_best_when_the_partial_one_is_worse(
    tmp_path, tiny_values, monkeypatch
):
    result = _budgeted(tmp_path, tiny_values, monkeypatch, 15, [30.0, 40.0, 50.0])
    assert [r.get("partial") for r in _rows(tmp_path / "run")] == [None, None, True]
    assert (result["best_epoch"], result["best_partial_steps"], result["val_error"]) == (
        1,
        None,
        30.0,
    )
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert not all(torch.equal(v, state["best"]["model"][k]) for k, v in state["model"].items())


def test_a_budget_ending_with_an_epoch_leaves_no_partial_record(tmp_path, tiny_values, monkeypatch):
    result = _budgeted(tmp_path, tiny_values, monkeypatch, 12, [50.0, 40.0])
    assert [(r["epoch"], r.get("partial")) for r in _rows(tmp_path / "run")] == [
        (1, None),
        (2, None),
    ]
    assert (result["epochs"], result["steps_in_partial_epoch"], result["best_epoch"]) == (2, 0, 2)


def test_interrupted_epoch_is_not_validated(tmp_path, tiny_values, monkeypatch):
    # Ctrl-C is not the end of the run: the epoch is resumed later, and validated when complete
    original = Trainer._step

    def step_then_interrupt(self, *args):
        loss = original(self, *args)
        if self.epoch == 1 and self.step == 2:
            self.interrupted = True
        return loss

    monkeypatch.setattr(Trainer, "_step", step_then_interrupt)
    trainer = Trainer(config_from_dict(tiny_values), tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="--resume"):
        trainer.fit()
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == [1]


def test_a_validation_that_spends_the_budget_ends_the_run(tmp_path, tiny_values, monkeypatch):
    # the first epoch's validation takes "100 s" of a 60 s budget: the run stops there, without a
    # step of epoch 2 (and a partial record for it)
    import time

    real = time.perf_counter
    offset = [0.0]
    original = Trainer._evaluate

    def slow_evaluate(self: Trainer, model, split):
        if split == "val":
            offset[0] += 100.0
        return original(self, model, split)

    monkeypatch.setattr(time, "perf_counter", lambda: real() + offset[0])
    monkeypatch.setattr(Trainer, "_evaluate", slow_evaluate)
    values = tiny_values
    values["run"].update(epochs=1000, minutes=1.0)
    result = Trainer(config_from_dict(values), tmp_path / "run", progress=False).fit()
    rows = _rows(tmp_path / "run")
    assert [(r["epoch"], r.get("partial")) for r in rows] == [(1, None)]
    assert (result["epochs"], result["steps_in_partial_epoch"]) == (1, 0)
    assert rows[0]["elapsed"] >= 100.0


def test_the_budget_counts_making_the_epochs_data(tmp_path, tiny_values, monkeypatch):
    # generating each epoch's fresh distortions "takes 50 s" of a 60 s budget: the first epoch's
    # clock includes it (elapsed >= 50 after epoch 1) and the second epoch's generation spends the
    # rest, so the run ends one step into epoch 2
    import time

    from torchstn.train.datamodule import DataModule

    real = time.perf_counter
    offset = [0.0]
    original = DataModule.train

    def slow_train(self, epoch):
        offset[0] += 50.0
        return original(self, epoch)

    monkeypatch.setattr(time, "perf_counter", lambda: real() + offset[0])
    monkeypatch.setattr(DataModule, "train", slow_train)
    values = tiny_values
    values["run"].update(epochs=1000, minutes=1.0)
    result = Trainer(config_from_dict(values), tmp_path / "run", progress=False).fit()
    rows = _rows(tmp_path / "run")
    assert rows[0]["elapsed"] >= 50.0
    assert [(r["epoch"], r.get("partial"), r.get("steps")) for r in rows] == [
        (1, None, None),
        (2, True, 1),
    ]
    assert result["epochs"] == 1
