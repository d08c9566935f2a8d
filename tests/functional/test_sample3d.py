"""Volumes through the samplers and the coordinate converters: ``(B, C, D, H, W)`` inputs,
``(x, y, z)`` points with z along D, as ``grid_sample`` reads a 5-D grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn.errors import InvalidInputError
from torchstn.functional import normalized_to_pixel, pixel_to_normalized, sample


def _identity_grid(size: tuple[int, int, int], align_corners: bool) -> torch.Tensor:
    theta = torch.eye(3, 4, dtype=torch.float64)[None]
    return F.affine_grid(theta, (1, 1, *size), align_corners=align_corners)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_the_identity_grid_reads_the_volume_back(align_corners, mode):
    x = torch.rand(1, 2, 3, 4, 5, dtype=torch.float64)
    out = sample(x, _identity_grid((3, 4, 5), align_corners), mode, align_corners=align_corners)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_voxel_coordinates_round_trip_with_z_along_depth(align_corners):
    size = (3, 4, 5)  # D, H, W
    voxel = torch.tensor([[4.0, 0.0, 2.0]], dtype=torch.float64)  # x=4 (last column), z=2
    normalised = pixel_to_normalized(voxel, size, align_corners)
    torch.testing.assert_close(normalized_to_pixel(normalised, size, align_corners), voxel)
    # sampling there reads voxel [z, y, x] = [2, 0, 4]
    x = torch.rand(1, 1, *size, dtype=torch.float64)
    grid = normalised.reshape(1, 1, 1, 1, 3)
    value = sample(x, grid, "nearest", align_corners=align_corners)
    assert value.item() == x[0, 0, 2, 0, 4].item()


def test_fill_padding_in_a_volume():
    x = torch.rand(1, 2, 3, 3, 3)
    far = torch.full((1, 1, 1, 1, 3), 7.0)
    out = sample(x, far, padding_mode="fill", fill=(0.25, -1.0))
    assert out.flatten().tolist() == [0.25, -1.0]


def test_2d_only_pieces_say_so():
    x = torch.rand(1, 1, 3, 4, 5)
    grid = torch.zeros(1, 1, 1, 1, 3)
    with pytest.raises(InvalidInputError, match="'bicubic' samples 4-D images only"):
        sample(x, grid, "bicubic")
    with pytest.raises(InvalidInputError, match=r"points: .* need a size \(D, H, W\)"):
        pixel_to_normalized(torch.zeros(1, 3), (4, 5))
