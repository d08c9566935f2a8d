"""torchrun with two processes on streamed image files: each rank reads its own shard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from .test_torchrun import torchrun

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="torch.distributed is not available"
)


def _folder(root: Path, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = root / f"class{i % 3}" / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (12, 12), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_ranks_read_disjoint_shards_that_cover_the_split(tmp_path):
    train = _folder(tmp_path / "train", 64, 0)
    val = _folder(tmp_path / "val", 20, 1)
    cfg = tmp_path / "files.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "device": "cpu",
                "data": {
                    "task": None,
                    "path": str(tmp_path / "train"),
                    "val_path": str(tmp_path / "val"),
                    "cache": False,
                    "num_workers": 1,
                },
                "model": {"name": "fcn", "options": {"hidden": [8]}},
                "optim": {"batch_size": 16},
                "run": {"epochs": 1, "eval_batch_size": 8, "num_threads": 1},
            }
        )
    )
    reads = tmp_path / "reads"
    reads.mkdir()
    out = tmp_path / "run"
    proc = torchrun(
        ["train", "--config", str(cfg), "--out", str(out), "--no-progress"],
        FAULT_RECORD_READS=str(reads),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = {r: (reads / f"rank{r}.txt").read_text().split() for r in (0, 1)}
    for split, files in (("train", train), ("val", val)):
        mine = [[p for p in got[r] if f"/{split}/" in p] for r in (0, 1)]
        assert set(mine[0]).isdisjoint(mine[1])
        assert sorted(set(mine[0]) | set(mine[1])) == sorted(files)
        # training: each image once per epoch; validation: at the epoch's end and for the test
        # (the validation data stands in for test data here), half of it per rank
        assert len(mine[0]) == len(mine[1]) == (len(files) // 2) * (1 if split == "train" else 2)
    assert json.loads((out / "result.json").read_text())["world_size"] == 2


def test_an_unreadable_image_on_one_rank_stops_both(tmp_path):
    """With data.skip_bad off, a rank that meets an unreadable image stops with its message, and
    the other rank stops at the same batch with one line saying why. It used to wait forever: the
    bad rank's agreement met the other rank's DDP forward (which rebuilds its buckets with a
    collective on the second step)."""
    _folder(tmp_path / "train", 64, 0)
    (tmp_path / "train" / "class0" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cfg = tmp_path / "files.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "device": "cpu",
                "data": {"task": None, "path": str(tmp_path / "train"), "cache": False},
                "model": {"name": "fcn", "options": {"hidden": [8]}},
                "optim": {"batch_size": 16},
                "run": {"epochs": 1, "eval_batch_size": 8, "num_threads": 1},
            }
        )
    )
    proc = torchrun(
        ["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]
    )
    assert proc.returncode != 0
    err = proc.stderr
    # the rank that read it names the file (torchrun may stop it before its last line)
    assert "torchstn: rank " in err and "zz_broken.png: not an image file" in err, err[-3000:]
    assert "stopped: another process met an unreadable image" in err, err[-3000:]
