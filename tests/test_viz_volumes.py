"""Pictures of volumes: the views, the box a 3-D transformer samples, and the figure."""

from __future__ import annotations

import pytest
import torch

from torchstn import output_frame, transforms
from torchstn.models import create_model
from torchstn.viz import identity_offsets, untrained_warnings, volume_views


def test_views_are_the_middle_slices_and_the_projection() -> None:
    v = torch.rand(2, 5, 6, 7)
    views = volume_views(v)
    grey = v.max(0).values
    assert torch.equal(views["xy"], grey[2])
    assert torch.equal(views["xz"], grey[:, 3, :])
    assert torch.equal(views["yz"], grey[:, :, 3])
    assert torch.equal(views["mip"], grey.max(0).values)


@pytest.mark.parametrize("align_corners", [False, True])
def test_the_box_of_a_crop_is_its_voxel_edges(align_corners: bool) -> None:
    """attention3d at scale 1/2 samples the central half of each axis: its box runs from voxel
    edge n/4 to 3n/4 (minus the half voxel of centre coordinates), per axis."""
    size = (8, 12, 16)  # D, H, W
    params = torch.tensor([[0.5, 0.0, 0.0, 0.0]], dtype=torch.float64)
    edges = output_frame(transforms.get("attention3d"), params, size, (4, 6, 8), align_corners)
    assert edges.shape == (1, 12, 33, 3)
    lo, hi = edges.reshape(-1, 3).amin(0), edges.reshape(-1, 3).amax(0)
    n = torch.tensor([16.0, 12.0, 8.0], dtype=torch.float64)  # x, y, z
    if align_corners:  # +-1 are voxel centres: the box spans the output's voxels edge to edge
        out = torch.tensor([8.0, 6.0, 4.0], dtype=torch.float64)
        half = (n - 1) / 2 * 0.5 * (1 + 1 / (out - 1))
        centre = (n - 1) / 2
        torch.testing.assert_close(lo, centre - half)
        torch.testing.assert_close(hi, centre + half)
    else:
        torch.testing.assert_close(lo, n / 4 - 0.5)
        torch.testing.assert_close(hi, 3 * n / 4 - 0.5)
    # every edge is a straight segment between two of the eight corners
    corners = {tuple(p) for p in edges[0, :, [0, -1]].reshape(-1, 3).tolist()}
    assert len(corners) == 8


def test_identity_offsets_and_warnings_in_voxels() -> None:
    m = create_model("st_cnn3d_affine", (1, 8, 8, 8), 10)
    st = m.transformer
    still = st.transform.identity_params()[None].repeat(2, 1)
    moved = still.clone()
    moved[1, 11] = 0.25  # z shift of an eighth of the depth: 1 voxel
    assert identity_offsets(st, moved).tolist() == pytest.approx([0.0, 1.0])
    assert untrained_warnings([st], [still])
    assert not untrained_warnings([st], [moved])


def test_the_figure_is_written(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from torchstn.viz import plot_predictions

    model = create_model("st_cnn3d_rigid", (1, 8, 8, 8), 10)
    out = plot_predictions(
        model, torch.rand(2, 1, 8, 8, 8), torch.tensor([1, 2]), tmp_path / "v.png"
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["v.png"]


def test_learned_geometry_of_a_volume_transformer() -> None:
    import math

    from torchstn.viz import learned_geometry

    st = create_model("st_cnn3d_similarity", (1, 16, 16, 16), 10).transformer
    # rotation vector of 30 degrees about a tilted axis, scale 0.5, shift of 0.25 along z
    axis = torch.tensor([1.0, 2.0, 2.0]) / 3
    params = torch.cat((axis * math.radians(30), torch.tensor([0.5, 0.0, 0.0, 0.25])))[None]
    geo = learned_geometry(st, params)
    assert geo["rotation"].item() == pytest.approx(30.0, abs=1e-4)
    assert geo["scale"].item() == pytest.approx(0.5, abs=1e-6)
    assert [geo[k].item() for k in ("tx", "ty", "tz")] == pytest.approx([0.0, 0.0, 2.0])
