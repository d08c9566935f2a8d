"""The core's one way down: ``SpatialTransformer`` warps through ``torchstn.warp`` (every mode,
the Gaussian kernel included), and ``output_frame`` is where the output's region lands in the
input, edge to edge, for any output shape and either ``align_corners``."""

from __future__ import annotations

import pytest
import torch

import torchstn
from torchstn import SpatialTransformer, output_frame, warp
from torchstn.functional import kernel_sample, normalized_to_pixel
from torchstn.transforms import get


@pytest.mark.parametrize(
    ("mode", "padding_mode", "fill"),
    [
        ("bilinear", "zeros", 0.0),
        ("nearest", "border", 0.0),
        ("bicubic", "reflection", 0.0),
        ("bilinear", "fill", 0.25),
        ("gaussian", "zeros", 0.0),
    ],
)
@pytest.mark.parametrize("align_corners", [False, True])
def test_the_module_warps_through_warp(mode, padding_mode, fill, align_corners):
    torch.manual_seed(0)
    st = SpatialTransformer(
        (2, 12, 10), "affine", out_size=(7, 9), mode=mode, padding_mode=padding_mode,
        align_corners=align_corners, fill=fill, sigma=0.8,
    )  # fmt: skip
    with torch.no_grad():
        st.head.bias.add_(torch.tensor([0.1, 0.2, 0.1, -0.1, 0.9, -0.2]))
    x = torch.rand(3, 2, 12, 10)
    params = st.localize(x)
    expected = warp(
        x, params, st.transform, (7, 9), mode, padding_mode, align_corners, fill, sigma=0.8
    )
    torch.testing.assert_close(st(x), expected, rtol=0, atol=0)


def test_warp_takes_the_gaussian_kernel():
    x = torch.rand(2, 1, 9, 9)
    params = torch.tensor([[0.8, 0.1, 0.1, -0.1, 0.7, 0.0]]).expand(2, -1)
    grid = get("affine").grid(params, (5, 6))
    out = warp(x, params, "affine", (5, 6), mode="gaussian", sigma=1.5)
    torch.testing.assert_close(out, kernel_sample(x, grid, "gaussian", 1.5), rtol=0, atol=0)


def test_warp_under_autocast_samples_in_float32():
    x = torch.rand(1, 1, 8, 8)
    params = get("affine").identity_params()[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(x, params, "affine")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize(("out_size", "in_size"), [((4, 4), (8, 8)), ((3, 7), (9, 5))])
def test_the_identity_frame_is_the_outputs_pixel_edges(align_corners, out_size, in_size):
    """Identity params on an output of the input's size: the frame is the input's pixel edges,
    -0.5 and W - 0.5 (H - 0.5), whatever the shape and align_corners."""
    st = SpatialTransformer((1, *in_size), "affine", out_size=in_size, align_corners=align_corners)
    params = st.transform.identity_params()[None]
    frame = output_frame(st.transform, params, in_size, in_size, align_corners, points=5)
    h, w = in_size
    xs, ys = frame[0, ..., 0], frame[0, ..., 1]
    assert xs.min().item() == pytest.approx(-0.5) and xs.max().item() == pytest.approx(w - 0.5)
    assert ys.min().item() == pytest.approx(-0.5) and ys.max().item() == pytest.approx(h - 0.5)
    # the first and last horizontal lines run along the top and bottom edges
    torch.testing.assert_close(frame[0, 0, 0, :, 1], torch.full((5,), -0.5, dtype=xs.dtype))
    torch.testing.assert_close(frame[0, 0, -1, :, 1], torch.full((5,), h - 0.5, dtype=xs.dtype))


def test_a_non_square_frame_has_its_own_edges_per_axis():
    """A 3x7 output sampled with align_corners=True from a 9x5 input at the identity: the corner
    samples land on the corner pixels' centres and the frame one half-pixel of the output beyond
    them, per axis (the old mesh took max(out_size) for both axes)."""
    t = get("affine")
    params = t.identity_params()[None]
    frame = output_frame(t, params, (9, 5), (3, 7), align_corners=True, points=2)
    corners = frame[0, 0, :, :, :].reshape(-1, 2)
    # output pixel spacing in input pixels: 4/6 along x (W 5 <- 7), 8/2 along y (H 9 <- 3)
    expected_x = [-(4 / 6) / 2, 4 + (4 / 6) / 2]
    expected_y = [-(8 / 2) / 2, 8 + (8 / 2) / 2]
    assert sorted({round(v, 6) for v in corners[:, 0].tolist()}) == pytest.approx(expected_x)
    assert sorted({round(v, 6) for v in corners[:, 1].tolist()}) == pytest.approx(expected_y)


def test_a_crop_frame_is_its_box():
    crop = torch.tensor([[0.5, 0.25, -0.5]])  # half size, shifted right and up
    frame = output_frame(get("attention"), crop, (16, 16), (8, 8))
    box = normalized_to_pixel(torch.tensor([[-0.25, -1.0], [0.75, 0.0]]), (16, 16))
    lo, hi = frame.reshape(-1, 2).amin(0), frame.reshape(-1, 2).amax(0)
    torch.testing.assert_close(torch.stack((lo, hi)), box)


def test_top_level_names():
    assert torchstn.warp is warp and torchstn.output_frame is output_frame


@pytest.mark.parametrize("align_corners", [False, True])
def test_every_picture_draws_the_same_frame(align_corners):
    """The transformer picture's mesh, the guide's mesh and predict's outline all span the
    output's region edge to edge: at the identity, the input's pixel edges, on both axes of a
    non-square output (the mesh used max(out_size) for both axes, the others +-1 whatever
    align_corners was)."""
    pytest.importorskip("matplotlib")
    from torchstn.explain._plot import mesh_lines
    from torchstn.predict import _outline
    from torchstn.viz import sampling_mesh

    st = SpatialTransformer((1, 9, 5), "affine", out_size=(9, 5), align_corners=align_corners)
    params = st.transform.identity_params()[None]
    drawn = [
        sampling_mesh(st, params)[0],
        mesh_lines(st.transform, params[0], (9, 5), align_corners=align_corners),
        _outline(st, params.double()),
    ]
    for points in drawn:
        flat = points.reshape(-1, 2).double()
        assert flat.amin(0).tolist() == pytest.approx([-0.5, -0.5])
        assert flat.amax(0).tolist() == pytest.approx([4.5, 8.5])
