"""Learning-rate schedules, including the cosine that follows a time budget."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from torchstn.train import Trainer, config_from_dict
from torchstn.train.trainer import lr_factor


def _cfg(tiny_values, **optim):
    tiny_values["optim"].update(optim)
    return config_from_dict(tiny_values)


def test_step_decays_every_step_epochs(tiny_values):
    cfg = _cfg(tiny_values, schedule="step", step_epochs=3, gamma=0.1)
    assert [lr_factor(cfg, e) for e in (0, 2.9, 3, 5.5, 6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


def test_cosine_follows_epochs_without_budget(tiny_values):
    tiny_values["run"]["epochs"] = 10
    cfg = _cfg(tiny_values, schedule="cosine")
    assert lr_factor(cfg, 0) == pytest.approx(1.0)
    assert lr_factor(cfg, 5) == pytest.approx(0.5)
    assert lr_factor(cfg, 2.5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(cfg, 10) == pytest.approx(0.0, abs=1e-12)
    # time does not matter without a budget
    assert lr_factor(cfg, 5, elapsed=1e6) == pytest.approx(0.5)


def test_cosine_follows_the_time_budget_when_it_binds_first(tiny_values):
    tiny_values["run"].update(epochs=1000, minutes=2.0)
    cfg = _cfg(tiny_values, schedule="cosine")
    assert lr_factor(cfg, 1, elapsed=60.0) == pytest.approx(0.5)  # half the budget spent
    assert lr_factor(cfg, 1, elapsed=120.0) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(cfg, 1, elapsed=500.0) == pytest.approx(0.0, abs=1e-12)  # never rises again
    # whichever limit is closer sets the progress
    tiny_values["run"].update(epochs=4, minutes=60.0)
    cfg = config_from_dict(tiny_values)
    assert lr_factor(cfg, 2, elapsed=1.0) == pytest.approx(0.5)


def test_trainer_anneals_the_rate_over_the_run(tmp_path, tiny_values):
    tiny_values["run"]["epochs"] = 4
    cfg = _cfg(tiny_values, schedule="cosine", lr=0.02)
    Trainer(cfg, tmp_path / "r", progress=False).fit()
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "r" / "metrics.jsonl").open()]
    # metrics log the rate of each epoch's last step: strictly falling, ending near zero
    assert all(a > b for a, b in itertools.pairwise(lrs))
    assert lrs[0] < 0.02 and lrs[-1] < 0.02 * 0.05
