"""``torchstn bench --only fields``: every row runs at tiny sizes, ours and MONAI's Warp and
DVF2DDF give the same numbers through the channel-order convention, and without MONAI the rows
are skipped. Timings are never checked."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from torchstn import fields as torchstn_fields
from torchstn import native
from torchstn.bench import GROUPS, fields, group_module
from torchstn.bench.markdown import render
from torchstn.bench.timing import Settings
from torchstn.cli import main

needs_monai = pytest.mark.skipif(
    fields.monai_or_none() is None, reason="MONAI is not installed (pip install monai)"
)


@pytest.fixture(scope="module")
def quick() -> dict:
    return fields.run(Settings.make(True))


def test_the_group_is_registered() -> None:
    assert GROUPS["fields"] == "fields" and group_module("fields") is fields


@needs_monai
def test_every_row_runs_at_tiny_sizes_and_agrees_with_monai(quick) -> None:
    ops = (*fields.OPS, fields.NET)
    expected = {(name, op) for name, _, _ in fields.QUICK_SHAPES for op in ops}
    assert {(r["shape"], r["family"]) for r in quick["rows"]} == expected
    layers = [r for r in quick["rows"] if r["family"] != fields.NET]
    for row in quick["rows"]:
        assert row["baseline"] == "monai" and "skipped" not in row
        for key in ("fwd_ms", "base_fwd_ms", "fwd_bwd_ms", "base_fwd_bwd_ms"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    for row in layers:
        assert row["saved_mb"] > 0
        assert row["max_abs_diff"] < 1e-4, row  # float32, pixels
    assert {r["input"] for r in layers} == {"2x9x10", "2x5x6x7"}
    nets = [r for r in quick["rows"] if r["family"] == fields.NET]
    assert {r["input"] for r in nets} == {"2x2x16x16", "2x2x16x16x16"}
    assert all(r["params"] > 1000 and r["base_params"] > 1000 for r in nets)
    assert len(quick["headline"]) == 3 and "DVF2DDF" in quick["headline"][1]
    assert "VoxelMorph" in quick["headline"][2]
    assert any("agree with ours in float64" in note for note in quick["notes"])


@needs_monai
def test_the_note_measures_float64_agreement() -> None:
    gaps = fields.monai_gaps(fields.monai_or_none())
    assert set(gaps) == {"warp", "integrate"} and max(gaps.values()) < 1e-10


@needs_monai
@pytest.mark.parametrize("size", [(6, 7), (4, 5, 6)])
def test_monai_convention(size) -> None:
    """MONAI's fields are ours with the channels reversed; Warp reads with border padding and
    DVF2DDF with zeros, both with align_corners=True. A field that is not symmetric in its
    channels shows a swapped order: the unconverted field disagrees."""
    from monai.networks.blocks import DVF2DDF, Warp

    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, *size, generator=gen, dtype=torch.float64)
    u = fields.smooth_field(2, size, 1.5, gen, torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warp, dvf2ddf = Warp(), DVF2DDF(num_steps=7)
    ours = torchstn_fields.warp(x, u, padding_mode="border", align_corners=True)
    assert (warp(x, torchstn_fields.to_monai_ddf(u)) - ours).abs().max() < 1e-10
    assert (warp(x, u) - ours).abs().max() > 1e-2
    ours = torchstn_fields.integrate(u, 7, align_corners=True)
    assert (
        torchstn_fields.from_monai_ddf(dvf2ddf(torchstn_fields.to_monai_ddf(u))) - ours
    ).abs().max() < 1e-10
    # our fields are in pixels: align_corners does not change zeros or border padding
    assert (torchstn_fields.integrate(u, 7) - ours).abs().max() < 1e-10
    # the padding does: MONAI's DVF2DDF reads zeros outside, not the border
    assert (torchstn_fields.integrate(u, 7, padding_mode="border") - ours).abs().max() > 1e-3


def test_rows_are_skipped_without_monai(monkeypatch) -> None:
    monkeypatch.setattr(fields, "monai_or_none", lambda: None)
    result = fields.run(Settings.make(True))
    assert len(result["rows"]) == len(fields.QUICK_SHAPES) * (len(fields.OPS) + 1)
    assert all(r["skipped"] == "no monai" for r in result["rows"])
    assert any("pip install monai" in note for note in result["notes"])
    assert result["headline"] == []


@needs_monai
def test_the_cli_runs_only_fields(tmp_path) -> None:
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--only", "fields", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["groups"]) == ["fields"]
    assert doc["groups"]["fields"]["command"] == "torchstn bench --quick --only fields"
    text = render({"cpu-quick": doc})
    assert f"## {fields.TITLE}" in text and "| case | input | op | path | baseline |" in text
    # images and volumes take the fused kernel where it builds, and the rows say so
    path = "fused" if native.kernels() is not None else "unfused"
    assert f"| quick 3-D | 2x5x6x7 | integrate | {path} | monai |" in text
    assert f"| warp | {path} | monai |" in text
