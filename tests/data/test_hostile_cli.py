"""The hostile data files of the data tests, through ``torchstn train``: one line on stderr, exit
status 2, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from test_hostile_arrays import archive, npy
from test_image_limits import declaring

from torchstn.cli import main


def config(tmp_path: Path, path: Path) -> Path:
    values = {
        "seed": 0,
        "device": "cpu",
        "data": {"task": None, "path": str(path)},
        "model": {"name": "st_cnn_affine", "options": {"channels": [4, 8], "loc_hidden": 8}},
        "optim": {"lr": 0.05, "batch_size": 8},
        "run": {"epochs": 1},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    return tmp_path / "c.yaml"


def folder(root: Path, *classes: str) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


X = np.zeros((12, 8, 8), np.uint8)


def make(kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """The data of ``kind`` and what its one line must name."""
    if kind == "one-class":
        return folder(tmp_path / "d", "only"), ["d", "1 class", "at least 2"]
    if kind == "huge-image":
        root = folder(tmp_path / "d", "a", "b")
        declaring(root / "a" / "0.png", 13000, 13000)  # the first image sizes the model
        return root, ["0.png", "13000x13000", "TORCHSTN_MAX_IMAGE_PIXELS"]
    if kind == "linked-class":
        root = folder(tmp_path / "d", "a", "b")
        os.symlink("..", root / "c")
        return root, ["c", "each class needs a folder of its own"]
    f = tmp_path / "d.npz"
    if kind == "label-2**40":
        np.savez(f, x=X, y=np.r_[np.zeros(11, int), 2**40])
        return f, ["d.npz", "'y'", "1099511627776", "below 100000"]
    if kind == "label-1e19":
        np.savez(f, x=X, y=np.r_[np.zeros(11), 1e19])
        return f, ["d.npz", "'y'", "1e+19", "below 100000"]
    archive(f, {"x": npy(X), "y": npy(np.zeros(12, np.int64), (10**11,))})
    return f, ["d.npz", "'y'", "(100000000000,)", "holds 96"]


@pytest.mark.parametrize(
    "kind",
    ["one-class", "huge-image", "linked-class", "label-2**40", "label-1e19", "declared-1e11"],
)
def test_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    data, parts = make(kind, tmp_path)
    run = tmp_path / "run"
    code = main(["train", "--config", str(config(tmp_path, data)), "--out", str(run)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    for part in parts:
        assert part in err, err
    assert not run.exists()


def test_a_bad_pixel_limit_in_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCHSTN_MAX_IMAGE_PIXELS", "-5")
    root = folder(tmp_path / "d", "a", "b")
    code = main(["train", "--config", str(config(tmp_path, root)), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "TORCHSTN_MAX_IMAGE_PIXELS='-5'" in err
