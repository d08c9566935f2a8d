"""The affine family against PyTorch's own ``affine_grid``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn import transforms
from torchstn.functional import sample


class TestAffineGrid:
    @pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1), (3, 4), (7, 2), (16, 16)])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.filterwarnings("ignore:.*unit-size grids:UserWarning")
    def test_equals_affine_grid(
        self, size: tuple[int, int], dtype: torch.dtype, align_corners: bool
    ) -> None:
        theta = torch.randn(4, 2, 3, dtype=dtype)  # general matrices, not only near identity
        ref = F.affine_grid(theta, (4, 1, *size), align_corners=align_corners)
        got = transforms.get("affine").grid(theta.reshape(4, 6), size, align_corners)
        assert got.shape == ref.shape and got.dtype == dtype
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)

    def test_sampling_equals_the_pytorch_pipeline(self, align_corners: bool) -> None:
        theta = torch.eye(2, 3) + 0.2 * torch.randn(2, 2, 3)
        x = torch.rand(2, 3, 9, 8)
        ref = F.grid_sample(
            x,
            F.affine_grid(theta, (2, 3, 5, 6), align_corners=align_corners),
            align_corners=align_corners,
        )
        grid = transforms.get("affine").grid(theta.reshape(2, 6), (5, 6), align_corners)
        torch.testing.assert_close(
            sample(x, grid, align_corners=align_corners), ref, rtol=0, atol=1e-5
        )

    def test_params_are_theta_row_by_row(self) -> None:
        theta = torch.randn(3, 2, 3)
        m = transforms.get("affine").to_matrix(theta.reshape(3, 6))
        torch.testing.assert_close(m[:, :2], theta)
        torch.testing.assert_close(m[:, 2], torch.tensor([0.0, 0.0, 1.0]).expand(3, 3))
        torch.testing.assert_close(transforms.get("affine").from_matrix(m), theta.reshape(3, 6))

    def test_identity_params(self) -> None:
        torch.testing.assert_close(
            transforms.get("affine").identity_params(), torch.eye(2, 3).reshape(6)
        )
