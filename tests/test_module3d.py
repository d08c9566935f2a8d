"""SpatialTransformer, composites, recording, penalty, bounds and parameter groups on volumes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchstn import (
    InvalidInputError,
    ParallelTransformers,
    SequentialTransformers,
    SpatialTransformer,
    recording_params,
    transforms,
    warp,
)
from torchstn.localization import ConvLocalization, FCLocalization, default_localization
from torchstn.optim import param_groups

VOLUME = (1, 8, 9, 10)
NAMES = transforms.names(ndim=3)


@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_transformer_is_the_identity_and_learns(name: str) -> None:
    torch.manual_seed(0)
    st = SpatialTransformer(VOLUME, name).double()
    x = torch.rand(2, *VOLUME, dtype=torch.float64)
    y, params = st(x, return_params=True)
    assert y.shape == x.shape and params.shape == (2, st.transform.num_params)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)
    # gradients reach the localisation net's head (its weight starts at zero)
    (y * torch.rand_like(y)).sum().backward()
    assert st.head.weight.grad is not None and st.head.weight.grad.abs().sum() > 0


def test_output_size_and_modes() -> None:
    st = SpatialTransformer(VOLUME, "affine3d", out_size=(4, 5, 6), mode="nearest")
    assert st(torch.rand(3, *VOLUME)).shape == (3, 1, 4, 5, 6)
    assert st.out_shape == (1, 4, 5, 6)
    st = SpatialTransformer(VOLUME, "attention3d", out_size=4, padding_mode="fill", fill=0.5)
    assert st(torch.rand(1, *VOLUME)).shape == (1, 1, 4, 4, 4)


def test_default_localisation_is_convolutional_for_large_volumes() -> None:
    assert isinstance(default_localization((1, 32, 32, 32)), ConvLocalization)
    assert isinstance(default_localization((1, 32, 32, 16)), FCLocalization)
    net = default_localization((2, 24, 20, 28))
    assert any(isinstance(m, nn.Conv3d) for m in net.modules())
    assert net(torch.zeros(3, 2, 24, 20, 28)).shape == (3, 20)


def test_zoom_of_a_known_volume() -> None:
    """attention3d with s = 0.5 reads the central half of each axis."""
    x = torch.arange(8.0**3).reshape(1, 1, 8, 8, 8)
    params = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    out = warp(x, params, "attention3d", out_size=(4, 4, 4))
    torch.testing.assert_close(out, x[..., 2:6, 2:6, 2:6])


def test_bounds_act_on_the_raw_output() -> None:
    st = SpatialTransformer(
        VOLUME,
        "similarity3d",
        transform_options={"max_translation": 0.2, "scale_range": (0.4, 1.0)},
    )
    with torch.no_grad():
        st.head.bias.fill_(50.0)
    params = st.localize(torch.rand(2, *VOLUME))
    assert (params[:, 4:].abs() <= 0.2 + 1e-6).all()
    assert ((params[:, 3] >= 0.4) & (params[:, 3] <= 1.0)).all()


def test_recording_penalty_and_param_groups() -> None:
    st = SpatialTransformer(VOLUME, "rigid3d", penalty_weight=2.0)
    model = nn.Sequential(st, nn.Flatten(), nn.Linear(720, 3))
    with recording_params(model) as records:
        model(torch.rand(2, *VOLUME))
    assert len(records) == 1 and records[0].params.shape == (2, 6)
    assert records[0].transformer is st
    shifted = torch.zeros(2, 6)
    shifted[:, 3] = 0.5
    torch.testing.assert_close(st.penalty(shifted), torch.tensor(2.0 * 0.25))
    groups = param_groups(model, lr=0.1)
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.01)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_composites_of_volume_transformers() -> None:
    a = SpatialTransformer(VOLUME, "attention3d", out_size=(6, 6, 6))
    b = SpatialTransformer((1, 6, 6, 6), "affine3d", out_size=(4, 4, 4))
    seq = SequentialTransformers(a, b)
    y, params = seq(torch.rand(2, *VOLUME), return_params=True)
    assert y.shape == (2, 1, 4, 4, 4) and [p.shape[1] for p in params] == [4, 12]
    par = ParallelTransformers.replicate(2, VOLUME, "translation3d", out_size=(4, 4, 4))
    assert par(torch.rand(2, *VOLUME)).shape == (2, 2, 4, 4, 4)


class TestErrors:
    def test_a_2d_family_for_a_volume(self) -> None:
        with pytest.raises(
            InvalidInputError,
            match=r"transform: 'affine' is a 2-D family but in_shape \(1, 8, 9, 10\) is a volume .*affine3d",
        ):
            SpatialTransformer(VOLUME, "affine")

    def test_a_3d_family_for_an_image(self) -> None:
        with pytest.raises(
            InvalidInputError,
            match=r"transform: 'affine3d' is a 3-D family but in_shape \(1, 8, 8\) is an image",
        ):
            SpatialTransformer((1, 8, 8), "affine3d")

    def test_out_size_of_the_wrong_length(self) -> None:
        with pytest.raises(
            InvalidInputError, match=r"out_size: .* takes \(D, H, W\), got \(4, 4\)"
        ):
            SpatialTransformer(VOLUME, "affine3d", out_size=(4, 4))

    def test_inputs_of_the_wrong_shape(self) -> None:
        st = SpatialTransformer(VOLUME, "affine3d")
        with pytest.raises(
            InvalidInputError,
            match=r"x: the 'affine3d' transform warps 5-D .* got shape \(2, 1, 8, 9\)",
        ):
            st(torch.rand(2, 1, 8, 9))
        with pytest.raises(
            InvalidInputError, match=r"x: expected \(B, 1, 8, 9, 10\), got \(2, 1, 8, 9, 9\)"
        ):
            st(torch.rand(2, 1, 8, 9, 9))

    def test_tricubic_pads_with_zeros_only(self) -> None:
        with pytest.raises(InvalidInputError, match=r"tricubic .* supports 'zeros' only"):
            SpatialTransformer(VOLUME, "affine3d", mode="bicubic", padding_mode="border")
        params = transforms.get("affine3d").identity_params()[None]
        with pytest.raises(InvalidInputError, match=r"tricubic .* supports 'zeros' only"):
            warp(torch.rand(1, *VOLUME), params, "affine3d", mode="bicubic", padding_mode="border")

    def test_in_shape_of_the_wrong_length(self) -> None:
        with pytest.raises(
            InvalidInputError, match=r"in_shape: expected \(C, H, W\) or \(C, D, H, W\)"
        ):
            SpatialTransformer((1, 2, 3, 4, 5), "affine3d")


def test_tricubic_sampling_of_volumes() -> None:
    """mode='bicubic' on a volume is the kernel sampler's tricubic: the identity reads the volume
    back, and a shift along x alone equals grid_sample's 2-D bicubic on every depth slice (the
    same Keys kernel, with y and z on voxel centres)."""
    import torch.nn.functional as F

    t = transforms.get("translation3d")
    x = torch.rand(1, 2, 5, 6, 7, dtype=torch.float64)
    ident = t.identity_params(torch.float64)[None]
    torch.testing.assert_close(warp(x, ident, t, mode="bicubic"), x, rtol=0, atol=1e-12)
    shift = torch.tensor([[0.37 * 2 / 7, 0.0, 0.0]], dtype=torch.float64)  # 0.37 voxels along x
    out = warp(x, shift, t, mode="bicubic")
    slices = x[0].permute(1, 0, 2, 3)  # (D, C, H, W): each depth slice an image
    theta = torch.tensor([[[1.0, 0.0, 0.37 * 2 / 7], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    grid = F.affine_grid(theta.expand(5, -1, -1), (5, 2, 6, 7), align_corners=False)
    ref = F.grid_sample(slices, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(out[0], ref.permute(1, 0, 2, 3), rtol=0, atol=1e-12)
