"""Co-localisation under torchrun (two CPU processes, gloo): the steps of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from torchstn.errors import ConfigError
from torchstn.train import Trainer, config_from_dict, load_checkpoint

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def test_two_processes_take_the_steps_of_one(tmp_path, tiny, tiny_yaml):
    # each rank takes 2 of every batch of 4 distinct images (one pair) and the rows of the
    # global batch's random crops: the gradients are the one-process mean, summed in another
    # order (float32 rounding only)
    out = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "torchstn",
        "train",
        "--config",
        str(tiny_yaml),
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = Trainer(config_from_dict(tiny), tmp_path / "one", progress=False)
    result = one.fit()
    two = load_checkpoint(out / "checkpoint.pt")
    assert two["world_size"] == 2
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(v, two["model"][k], atol=1e-4, rtol=0)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one.history, rows, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
        assert a["train_active"] == b["train_active"]
        assert a["val_mean_iou"] == pytest.approx(b["val_mean_iou"], abs=1e-4)
    # sharded localisation (3 + 3 validation images, 4 + 4 test images) equals one process's
    two_result = json.loads((out / "result.json").read_text())
    assert two_result["test_mean_iou"] == pytest.approx(result["test_mean_iou"], abs=1e-4)


def test_an_odd_share_is_refused(tmp_path, tiny, monkeypatch):
    # 3 images per process: one would have no partner. Refused before joining the group.
    tiny["optim"]["batch_size"] = 6
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="multiple of 4"):
        Trainer(config_from_dict(tiny), tmp_path / "r", progress=False)
