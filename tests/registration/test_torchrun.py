"""Registration under torchrun (two CPU processes, gloo): the steps of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from torchstn.train import Trainer, config_from_dict, load_checkpoint

from .conftest import write_yaml

pytestmark = [
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="torch.distributed is not available"
    ),
]  # two processes started by torchrun: about 13 s, in CI (the distributed path's one test)


def test_two_processes_take_the_steps_of_one(tmp_path, tiny_2d):
    # pairwise mode: the partners of an epoch come from (seed, epoch), the same on both ranks;
    # each rank takes half of every batch of 8 pairs, DDP averages the halves' gradients
    tiny_2d["objective"]["options"]["mode"] = "pairwise"
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
        str(write_yaml(tmp_path, tiny_2d)),
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = Trainer(config_from_dict(tiny_2d), tmp_path / "one", progress=False)
    result = one.fit()
    two = load_checkpoint(out / "checkpoint.pt")
    assert two["world_size"] == 2
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(v, two["model"][k], atol=1e-4, rtol=0)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(one.history, rows, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        assert a["val_dice"] == pytest.approx(b["val_dice"], abs=1e-4)
    # sharded scores (4 + 4 validation and test pairs) equal one process's
    two_result = json.loads((out / "result.json").read_text())
    for key in ("test_dice", "test_dice_before", "test_similarity", "test_jacobian_std"):
        assert two_result[key] == pytest.approx(result[key], abs=1e-4), key
