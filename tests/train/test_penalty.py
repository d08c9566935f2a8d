"""The identity penalty in training: computed on the params each transformer reported during the
step's own forward pass (no second localisation), and it holds the transformer near identity."""

from __future__ import annotations

import copy

import torch

from torchstn.module import SpatialTransformer
from torchstn.train import Trainer, config_from_dict

from .conftest import TINY


def _values(weight: float) -> dict:
    values = copy.deepcopy(TINY)
    values["model"]["options"]["penalty_weight"] = weight
    values["optim"].update(lr=0.1, loc_lr_scale=3.0)  # let the localisation drift
    values["run"]["epochs"] = 1
    return values


def _drift(trainer: Trainer) -> float:
    """Mean distance of the transformer's params from identity on the validation images."""
    st = next(m for m in trainer.model.modules() if isinstance(m, SpatialTransformer))
    x = trainer.data.eval_split("val").head(64)[0]
    with torch.no_grad():
        params = st.localize(x)
    return float((params - st.transform.identity_params()).abs().mean())


def test_each_transformer_localises_once_per_step(tmp_path, monkeypatch):
    calls = []
    original = SpatialTransformer.localize

    def counting(self, x):
        calls.append(x.shape[0])
        return original(self, x)

    trainer = Trainer(config_from_dict(_values(1.0)), tmp_path / "r", progress=False)
    monkeypatch.setattr(SpatialTransformer, "localize", counting)
    steps = []
    original_step = Trainer._step

    def step(self, *args):
        before = len(calls)
        out = original_step(self, *args)
        steps.append(len(calls) - before)
        return out

    monkeypatch.setattr(Trainer, "_step", step)
    trainer.fit()
    assert steps and set(steps) == {1}  # one transformer, one localisation per step


def test_the_penalty_holds_the_transformer_near_identity(tmp_path):
    free = Trainer(config_from_dict(_values(0.0)), tmp_path / "free", progress=False)
    free.fit()
    held = Trainer(config_from_dict(_values(1.0)), tmp_path / "held", progress=False)
    held.fit()
    free_drift, held_drift = _drift(free), _drift(held)
    assert held_drift < 0.5 * free_drift
