"""``torchstn bench --only volumes``: every 3-D row runs on a tiny volume, each baseline reads
the same voxels as ours where the conventions agree, and the conventions found for kornia and
MONAI hold. Timings are never checked."""

from __future__ import annotations

import json
import math

import pytest
import torch

from torchstn import native
from torchstn.bench import GROUPS, group_module, volumes
from torchstn.bench.markdown import render
from torchstn.bench.timing import Settings
from torchstn.cli import main
from torchstn.transforms import get

needs_kornia = pytest.mark.skipif(
    volumes.kornia_or_none() is None, reason="kornia is not installed (pip install kornia)"
)
needs_monai = pytest.mark.skipif(
    volumes.monai_or_none() is None, reason="MONAI is not installed (pip install monai)"
)
SIZE = (5, 6, 7)  # three sizes: a swapped pair of axes cannot agree by symmetry


@pytest.fixture(scope="module")
def quick() -> dict:
    return volumes.run(Settings.make(True))


def _rows(result: dict, family: str, baseline: str) -> list[dict]:
    return [r for r in result["rows"] if r["family"] == family and r["baseline"] == baseline]


def _params(name: str, batch: int = 2) -> torch.Tensor:
    return volumes.volume_params(name, batch, torch.Generator().manual_seed(3)).double()


def _ours(name: str, x: torch.Tensor, params: torch.Tensor, align_corners: bool) -> torch.Tensor:
    from torchstn.functional import sample

    grid = get(name).grid(params, SIZE, align_corners)
    return sample(x, grid, align_corners=align_corners)


def test_the_group_is_registered() -> None:
    assert GROUPS["volumes"] == "volumes" and group_module("volumes") is volumes


def test_every_row_runs_on_a_tiny_volume(quick) -> None:
    expected = {(f, b) for f, bs in volumes.BASELINES.items() for b in bs}
    assert {(r["family"], r["baseline"]) for r in quick["rows"]} == expected
    for row in quick["rows"]:
        if "skipped" in row:
            continue
        for key in ("fwd_ms", "base_fwd_ms", "fwd_bwd_ms", "base_fwd_bwd_ms", "max_abs_diff"):
            assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
        assert row["input"] == "2x2x6x7x8" and row["output"] == "6x7x8"
    pytorch = _rows(quick, "affine3d", "pytorch")
    assert all(r["max_abs_diff"] < 1e-5 for r in pytorch)
    # the fused kernel's row beside the unfused one, saying which path ran
    want = "fused" if native.kernels() is not None else "unfused"
    assert sorted(r["path"] for r in pytorch) == sorted(["unfused", want])


@needs_kornia
def test_kornia_rows_read_the_same_voxels(quick) -> None:
    for family in ("affine3d", "projective3d"):
        (row,) = _rows(quick, family, "kornia")
        assert row["max_abs_diff"] < 1e-5, row
    assert any("kornia#4503" in note for note in quick["notes"])


@needs_monai
def test_monai_rows_read_the_same_voxels(quick) -> None:
    (row,) = _rows(quick, "affine3d", "monai")
    assert row["max_abs_diff"] < 1e-5, row


def test_rows_are_skipped_without_kornia_and_monai(monkeypatch) -> None:
    monkeypatch.setattr(volumes, "kornia_or_none", lambda: None)
    monkeypatch.setattr(volumes, "monai_or_none", lambda: None)
    result = volumes.run(Settings.make(True))
    skipped = {(r["family"], r["baseline"]): r.get("skipped") for r in result["rows"]}
    assert skipped == {
        ("affine3d", "pytorch"): None,
        ("affine3d", "kornia"): "no kornia",
        ("affine3d", "monai"): "no monai",
        ("projective3d", "kornia"): "no kornia",
    }
    assert any("pip install monai" in note for note in result["notes"])
    # PyTorch's rows only: one headline per path (unfused, fused)
    assert len(result["headline"]) == 2 and all("PyTorch" in h for h in result["headline"])


@needs_kornia
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("family", ["affine3d", "projective3d"])
def test_kornia_convention(family: str, align_corners: bool) -> None:
    """kornia 0.9 takes the input-to-output voxel matrix in (x, y, z) order and samples it
    right only with its own align_corners=True, whatever ours was (kornia#4503)."""
    warps = volumes.kornia_or_none().geometry.transform
    warp = warps.warp_affine3d if family == "affine3d" else warps.warp_perspective3d
    x = torch.rand(2, 1, *SIZE, dtype=torch.float64)
    params = _params(family)
    ours = _ours(family, x, params, align_corners)
    matrix = volumes.kornia_matrix(family, params, SIZE, align_corners)
    assert matrix.shape == ((2, 3, 4) if family == "affine3d" else (2, 4, 4))
    assert (warp(x, matrix, SIZE, align_corners=True) - ours).abs().max() < 1e-10
    assert (warp(x, matrix, SIZE, align_corners=False) - ours).abs().max() > 1e-2


@needs_kornia
def test_the_kornia_note_measures_both_settings() -> None:
    gaps = volumes.kornia_gaps(volumes.kornia_or_none())
    assert all(gaps[f, True] < 1e-10 and gaps[f, False] > 1e-2 for f in volumes.BASELINES)


@needs_monai
@pytest.mark.parametrize("align_corners", [False, True])
def test_monai_convention(align_corners: bool) -> None:
    """MONAI's default AffineTransform takes the output-to-input voxel matrix in (z, y, x)
    order; its align_corners only says how it normalises, so both settings agree."""
    from monai.networks.layers import AffineTransform

    x = torch.rand(2, 1, *SIZE, dtype=torch.float64)
    params = _params("affine3d")
    ours = _ours("affine3d", x, params, align_corners)
    matrix = volumes.monai_matrix(params, SIZE, align_corners)
    for theirs in (False, True):
        out = AffineTransform(SIZE, align_corners=theirs)(x, matrix)
        assert (out - ours).abs().max() < 1e-10


def test_the_cli_runs_only_volumes(tmp_path) -> None:
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--only", "volumes", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["groups"]) == ["volumes"]
    group = doc["groups"]["volumes"]
    assert group["command"] == "torchstn bench --quick --only volumes"
    text = render({"cpu-quick": doc})
    assert f"## {volumes.TITLE}" in text and "| case | input | output | family |" in text
    assert "| quick | 2x2x6x7x8 | 6x7x8 | affine3d | unfused | pytorch |" in text
