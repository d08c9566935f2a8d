"""The identity penalty under torchrun: two processes train like one (the penalty is computed on
the params of DDP's own forward pass, so no localisation runs outside it)."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from torchstn.train import Trainer, config_from_dict, load_checkpoint

from .test_torchrun import TINY, torchrun

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def test_two_processes_with_a_penalty_train_like_one(tmp_path):
    values = copy.deepcopy(TINY)
    values["model"]["options"]["penalty_weight"] = 0.5
    values["run"]["epochs"] = 1
    cfg = tmp_path / "penalty.yaml"
    cfg.write_text(yaml.safe_dump(values))
    proc = torchrun(
        ["train", "--config", str(cfg), "--out", str(tmp_path / "two"), "--no-progress"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = Trainer(config_from_dict(values), tmp_path / "one", progress=False)
    one.fit()
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(v, two[k], atol=1e-3, rtol=0)
    # and the penalty mattered: without it the weights end elsewhere
    values["model"]["options"]["penalty_weight"] = 0.0
    free = Trainer(config_from_dict(values), tmp_path / "free", progress=False)
    free.fit()
    diff = max(float((v - free.model.state_dict()[k]).abs().max()) for k, v in two.items())
    assert diff > 1e-3
