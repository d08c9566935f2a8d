"""The generic kernel sampler of the paper (eq. 3) and its influence weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchstn import InvalidInputError, UnknownNameError
from torchstn.functional import (
    KERNELS,
    base_grid,
    influence_weights,
    kernel_sample,
    normalized_to_pixel,
)

SIZES = [(5, 6), (1, 4), (4, 1)]


def _grid(
    b: int, ho: int, wo: int, spread: float = 1.3, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return (torch.rand(b, ho, wo, 2, dtype=dtype) * 2 - 1) * spread


def _off_integer_grid(
    in_size: tuple[int, int], ho: int, wo: int, align_corners: bool
) -> torch.Tensor:
    """Float64 normalised points whose pixel coordinates are at least 0.1 from any integer, where
    the bilinear kernel is smooth (gradcheck needs that)."""
    h, w = in_size
    pix = (
        torch.randint(-1, max(h, w) + 1, (1, ho, wo, 2)).double()
        + 0.1
        + 0.8 * torch.rand(1, ho, wo, 2, dtype=torch.float64)
    )
    scale = torch.tensor([w, h], dtype=torch.float64)
    if align_corners:
        return pix * 2 / (scale - 1) - 1
    return (pix * 2 + 1) / scale - 1


class TestKernelSample:
    def test_smoke_shape(self) -> None:
        for kernel in KERNELS:
            assert kernel_sample(torch.rand(2, 3, 5, 6), _grid(2, 4, 7), kernel).shape == (
                2,
                3,
                4,
                7,
            )

    @pytest.mark.parametrize("size", SIZES)
    def test_bilinear_equals_grid_sample(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        x = torch.rand(2, 3, *size, device=device, requires_grad=True)
        grid = _grid(2, 4, 5).to(device).requires_grad_()
        ref = F.grid_sample(x, grid, "bilinear", "zeros", align_corners)
        out = kernel_sample(x, grid, "bilinear", align_corners=align_corners)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
        upstream = torch.randn_like(ref)
        ref_dx, ref_dg = torch.autograd.grad(ref, (x, grid), upstream)
        dx, dg = torch.autograd.grad(out, (x, grid), upstream)
        torch.testing.assert_close(dx, ref_dx, rtol=0, atol=1e-5)
        # grid gradients are in normalised units, i.e. W/2 times pixel gradients
        torch.testing.assert_close(dg, ref_dg, rtol=1e-5, atol=1e-5)

    def test_nearest_equals_grid_sample_away_from_ties(self, align_corners: bool) -> None:
        x = torch.rand(2, 3, 5, 6)
        grid = _grid(2, 4, 5)
        pix = normalized_to_pixel(grid, (5, 6), align_corners)
        assert bool(((pix - pix.floor() - 0.5).abs() > 1e-3).all())  # no ties in this draw
        ref = F.grid_sample(x, grid, "nearest", "zeros", align_corners)
        torch.testing.assert_close(
            kernel_sample(x, grid, "nearest", align_corners=align_corners), ref
        )

    def test_nearest_ties_round_up(self) -> None:
        """Documented: ``delta(floor(x + 0.5) - m)``, so x = 0.5 px reads pixel 1."""
        x = torch.tensor([[[[10.0, 20.0, 30.0, 40.0]]]])
        grid = torch.tensor([[[[-0.5, 0.0]]]])  # pixel x = (0.5 * 4 - 1) / 2 = 0.5 exactly
        assert kernel_sample(x, grid, "nearest").item() == 20.0

    @pytest.mark.parametrize("kernel", ["bilinear", "nearest"])
    def test_identity_grid_reproduces_input(self, kernel: str, align_corners: bool) -> None:
        x = torch.rand(2, 3, 5, 6)
        grid = base_grid((5, 6), align_corners).expand(2, 5, 6, 2)
        torch.testing.assert_close(kernel_sample(x, grid, kernel, align_corners=align_corners), x)

    def test_gaussian_keeps_a_constant_image_constant_far_from_borders(self) -> None:
        x = torch.full((1, 1, 31, 31), 3.0, dtype=torch.float64)
        grid = torch.tensor([[[[0.0, 0.0], [0.05, -0.03]]]], dtype=torch.float64)
        torch.testing.assert_close(
            kernel_sample(x, grid, "gaussian", sigma=1.5),
            torch.full((1, 1, 1, 2), 3.0, dtype=torch.float64),
        )

    def test_gaussian_weights_are_the_normal_density(self) -> None:
        grid = torch.zeros(1, 1, 1, 2, dtype=torch.float64)  # pixel (2, 2) of a 5x5 image
        w = influence_weights(grid, (5, 5), "gaussian", sigma=2.0)[0, 0, 0]
        n, m = torch.meshgrid(torch.arange(5.0), torch.arange(5.0), indexing="ij")
        d2 = ((m - 2) ** 2 + (n - 2) ** 2).double()
        torch.testing.assert_close(w, torch.exp(-d2 / 8) / (2 * math.pi * 4))
        assert bool((w > 0).all())  # every pixel influences the output

    def test_outside_reads_zeros(self) -> None:
        x = torch.rand(1, 2, 4, 4) + 1
        far = torch.full((1, 1, 1, 2), 3.0)
        for kernel in ("bilinear", "nearest"):
            assert bool((kernel_sample(x, far, kernel) == 0).all())

    @pytest.mark.parametrize("size", [(3, 4), (1, 3)])
    def test_gradcheck_bilinear(self, size: tuple[int, int], align_corners: bool) -> None:
        x = torch.rand(1, 2, *size, dtype=torch.float64, requires_grad=True)
        grid = _off_integer_grid(size, 3, 4, align_corners)
        if size[0] == 1 and align_corners:
            grid[..., 1] = 0.3  # a unit side reads its pixel whatever y is
        grid.requires_grad_()
        assert gradcheck(
            lambda a, g: kernel_sample(a, g, "bilinear", align_corners=align_corners), (x, grid)
        )

    def test_gradcheck_gaussian(self, align_corners: bool) -> None:
        x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        grid = _grid(1, 3, 4, dtype=torch.float64).requires_grad_()
        fn = lambda a, g: kernel_sample(a, g, "gaussian", sigma=0.8, align_corners=align_corners)  # noqa: E731
        assert gradcheck(fn, (x, grid))

    def test_nearest_passes_no_gradient_to_the_grid(self) -> None:
        x, grid = (
            torch.rand(1, 1, 4, 4, requires_grad=True),
            _grid(1, 2, 2, spread=0.9).requires_grad_(),
        )
        kernel_sample(x, grid, "nearest").sum().backward()
        assert x.grad is not None and float(x.grad.sum()) == 4.0  # each output reads one pixel
        assert grid.grad is None or bool((grid.grad == 0).all())

    @pytest.mark.filterwarnings(
        "ignore::torch.jit.TracerWarning",
        "ignore:`torch.jit.trace.* is deprecated:DeprecationWarning",
    )  # sizes: constants
    def test_jit_trace(self) -> None:
        x, grid = torch.rand(2, 1, 5, 5), _grid(2, 3, 3)
        fn = lambda a, g: kernel_sample(a, g, "gaussian", 0.7, True)  # noqa: E731
        traced = torch.jit.trace(fn, (x, grid))
        x2, grid2 = torch.rand(3, 1, 5, 5), _grid(3, 3, 3)
        torch.testing.assert_close(traced(x2, grid2), fn(x2, grid2))

    def test_exceptions(self) -> None:
        x, grid = torch.rand(1, 1, 4, 4), _grid(1, 2, 2)
        with pytest.raises(UnknownNameError, match="bilinear, gaussian, nearest"):
            kernel_sample(x, grid, "lanczos")
        for sigma in (0.0, -1.0, float("nan"), float("inf"), "1"):
            with pytest.raises(InvalidInputError, match="sigma"):
                kernel_sample(x, grid, "gaussian", sigma=sigma)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="batch size mismatch"):
            kernel_sample(x, _grid(2, 2, 2))
        with pytest.raises(InvalidInputError, match="floating"):
            kernel_sample(x.long(), grid)
        with pytest.raises(InvalidInputError, match="same device"):
            kernel_sample(x, grid.to("meta"))


class TestInfluenceWeights:
    def test_smoke_shape(self) -> None:
        assert influence_weights(_grid(2, 3, 4), (5, 6)).shape == (2, 3, 4, 5, 6)

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_weighted_sum_is_kernel_sample(self, kernel: str, align_corners: bool) -> None:
        x, grid = torch.rand(2, 3, 5, 6, dtype=torch.float64), _grid(2, 4, 3, dtype=torch.float64)
        w = influence_weights(grid, (5, 6), kernel, 0.7, align_corners)
        expected = torch.einsum("bijnm,bcnm->bcij", w, x)
        torch.testing.assert_close(kernel_sample(x, grid, kernel, 0.7, align_corners), expected)

    def test_bilinear_weights_inside_sum_to_one_on_four_pixels(self, align_corners: bool) -> None:
        grid = _off_integer_grid((5, 6), 3, 3, align_corners).clamp(-0.75, 0.75)
        w = influence_weights(grid, (5, 6), align_corners=align_corners)
        torch.testing.assert_close(w.sum((-1, -2)), torch.ones(1, 3, 3, dtype=torch.float64))
        assert bool(((w > 0).sum((-1, -2)) <= 4).all())

    def test_documented_example(self) -> None:
        w = influence_weights(torch.zeros(1, 1, 1, 2), (2, 2))[0, 0, 0]
        torch.testing.assert_close(w, torch.full((2, 2), 0.25))

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="grid"):
            influence_weights(torch.zeros(1, 2, 2), (4, 4))
        with pytest.raises(InvalidInputError, match="in_size"):
            influence_weights(torch.zeros(1, 2, 2, 2), (0, 4))
        with pytest.raises(UnknownNameError, match="valid choices"):
            influence_weights(torch.zeros(1, 2, 2, 2), (4, 4), "box")
