"""Registration pairs: packing, splits, and the user's NIfTI folders (hostile files included)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from torchstn.errors import ConfigError, DataError, InvalidInputError
from torchstn.registration import (
    Pairs,
    PairSplit,
    RegistrationData,
    pack,
    read_pair_folder,
    registration_options,
    unpack,
)
from torchstn.train import config_from_dict


def test_pack_unpack_round_trip():
    m = torch.randint(0, 256, (3, 2, 5, 6), dtype=torch.uint8)
    f = torch.rand(3, 2, 5, 6)
    ml = torch.randint(0, 4, (3, 1, 5, 6), dtype=torch.uint8)
    x = pack(m, f, ml, None)
    assert tuple(x.shape) == (3, 6, 5, 6) and x.dtype == torch.float32
    moving, fixed, a, b = unpack(x, channels=2)
    torch.testing.assert_close(moving, m.float() / 255)
    assert torch.equal(fixed, f) and torch.equal(a, ml.long()) and not b.any()
    with pytest.raises(InvalidInputError, match=r"\(B, 4, \*spatial\)"):
        unpack(x, channels=1)


def test_pair_split_batches_follow_the_fixed_index():
    moving = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    fixed = torch.tensor([10.0, 20.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    pairs = Pairs(moving, fixed, torch.tensor([1, 0, 1, 1]), None, None, torch.arange(4), 0)
    split = PairSplit(pairs)
    (batch,) = split.batches([[2, 1]])
    assert batch.y.tolist() == [2, 1]
    assert batch.x[:, 0, 0, 0].tolist() == [2.0, 1.0] and batch.x[:, 1, 0, 0].tolist() == [
        20.0,
        10.0,
    ]
    assert not split.has_labels and len(split) == 4


# ----------------------------------------------------------------------------- users' folders
def _save(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(a, np.eye(4)), str(path))


def _folder(root: Path, *, atlas: bool = False, fixed: bool = False, labels: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c", "d", "e"):
        _save(root / "moving" / f"{name}.nii.gz", rng.random((6, 7, 8)).astype(np.float32) * 100)
        if labels:
            _save(
                root / "moving_labels" / f"{name}.nii.gz",
                rng.integers(0, 3, (6, 7, 8)).astype(np.int16),
            )
        if fixed:
            _save(root / "fixed" / f"{name}.nii.gz", rng.random((6, 7, 8)).astype(np.float32))
            if labels:
                _save(
                    root / "fixed_labels" / f"{name}.nii.gz",
                    rng.integers(0, 4, (6, 7, 8)).astype(np.uint8),
                )
    if atlas:
        _save(root / "atlas.nii.gz", rng.random((6, 7, 8)).astype(np.float32))
        if labels:
            _save(root / "atlas_labels.nii.gz", rng.integers(0, 3, (6, 7, 8)).astype(np.uint8))
    return root


def test_atlas_folder(tmp_path):
    p = read_pair_folder(_folder(tmp_path, atlas=True), "atlas")
    assert tuple(p.moving.shape) == (5, 1, 8, 7, 6) and tuple(p.fixed.shape) == (1, 1, 8, 7, 6)
    assert p.fixed_index.tolist() == [0] * 5 and p.num_labels == 3
    assert float(p.moving.min()) == 0 and float(p.moving.max()) == 1  # each scan min-max scaled
    # torchstn reads (D, H, W) = the file's (k, j, i)
    raw = np.asarray(nib.load(str(tmp_path / "moving_labels" / "b.nii.gz")).dataobj)
    assert torch.equal(
        p.moving_labels[1, 0], torch.from_numpy(raw.transpose(2, 1, 0).astype(np.uint8))
    )
    with pytest.raises(ConfigError, match="set mode: atlas"):
        read_pair_folder(tmp_path, "pairwise")


def test_given_pairs_and_scans_paired_with_each_other(tmp_path):
    p = read_pair_folder(_folder(tmp_path / "given", fixed=True), "pairwise")
    assert p.fixed_index.tolist() == [0, 1, 2, 3, 4] and p.num_labels == 4
    with pytest.raises(ConfigError, match="atlas mode needs"):
        read_pair_folder(tmp_path / "given", "atlas")
    q = read_pair_folder(_folder(tmp_path / "self", labels=False), "pairwise")
    assert q.fixed_index.tolist() == [-1] * 5 and q.moving_labels is None and q.num_labels == 0


def test_registration_data_of_a_folder_holds_out_validation(tmp_path):
    root = _folder(tmp_path / "scans", labels=False)
    cfg = config_from_dict(
        {
            "objective": {"name": "registration", "options": {"mode": "pairwise"}},
            "data": {"task": None, "path": str(root), "val_fraction": 0.4},
        }
    )
    data = RegistrationData(cfg, registration_options(cfg.objective.options))
    train, val = data.train(0), data.eval_split("val")
    assert (len(train), len(val)) == (3, 2) and data.test_is_val
    assert data.in_shape == (1, 8, 7, 6) and (data.num_classes, data.label_classes) == (1, 0)
    # partners: another scan of the same split, drawn afresh each epoch
    for split in (train, data.train(1)):
        idx = split.pairs.fixed_index
        assert bool((idx != torch.arange(len(split))).all()) and int(idx.max()) < len(split)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (
            lambda r: (r / "moving" / "c.nii.gz").write_bytes(b"\x1f\x8b not really gzip"),
            "c.nii.gz",
        ),
        (lambda r: (r / "moving" / "c.nii.gz").write_bytes(b""), "c.nii.gz"),
        (lambda r: _save(r / "moving" / "c.nii.gz", np.zeros((6, 7, 9), np.float32)), "two sizes"),
        (lambda r: _save(r / "moving" / "c.nii.gz", np.full((6, 7, 8), np.nan, np.float32)), "NaN"),
        (
            lambda r: _save(r / "moving_labels" / "c.nii.gz", np.full((6, 7, 8), 1.5, np.float32)),
            "integer labels",
        ),
        (
            lambda r: _save(r / "moving_labels" / "c.nii.gz", np.full((6, 7, 8), 300, np.int16)),
            "integer labels",
        ),
        (lambda r: (r / "moving_labels" / "c.nii.gz").unlink(), "no label map named c.nii.gz"),
        (lambda r: (r / "atlas_labels.nii.gz").unlink(), "label maps for one side only"),
        (lambda r: _save(r / "atlas.nii", np.zeros((6, 7, 8), np.float32)), "keep one"),
    ],
)
def test_hostile_or_broken_folders_fail_in_one_line(tmp_path, damage, match):
    root = _folder(tmp_path, atlas=True)
    damage(root)
    with pytest.raises(DataError, match=match) as info:
        read_pair_folder(root, "atlas")
    assert "\n" not in str(info.value)


def test_missing_folders(tmp_path):
    with pytest.raises(DataError, match="expected a folder"):
        read_pair_folder(tmp_path / "nothing", "atlas")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no moving/ folder"):
        read_pair_folder(tmp_path / "empty", "atlas")


def test_one_scan_cannot_be_paired_with_itself(tmp_path):
    root = _folder(tmp_path / "scans", labels=False)
    cfg = config_from_dict(
        {
            "objective": {"name": "registration", "options": {"mode": "pairwise"}},
            "data": {"task": None, "path": str(root), "val_fraction": 0.1},
        }
    )
    with pytest.raises(DataError, match=r"raise data\.val_fraction"):
        RegistrationData(cfg, registration_options(cfg.objective.options))
