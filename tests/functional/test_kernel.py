"""The generic kernel sampler of the paper (eq. 3) and its influence weights."""

from __future__ import annotations

import functools
import math
from fractions import Fraction

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
    pixel_to_normalized,
)
from torchstn.functional.kernel import _source_pixels

SIZES = [(5, 6), (1, 4), (4, 1)]
SIGMAS = [0.1, 0.2, 0.5, 1.0, 2.0]


def _grid(
    b: int, ho: int, wo: int, spread: float = 1.3, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return (torch.rand(b, ho, wo, 2, dtype=dtype) * 2 - 1) * spread


def _off_integer_grid(
    in_size: tuple[int, int], ho: int, wo: int, align_corners: bool, offset: float = 0.0
) -> torch.Tensor:
    """Float64 normalised points whose pixel coordinates are at least 0.1 from any integer (plus
    ``offset``), where the bilinear kernel is smooth (gradcheck needs that; nearest's kinks are at
    ``offset=0.5``)."""
    h, w = in_size
    pix = (
        torch.randint(-1, max(h, w) + 1, (1, ho, wo, 2)).double()
        + offset
        + 0.1
        + 0.8 * torch.rand(1, ho, wo, 2, dtype=torch.float64)
    )
    scale = torch.tensor([w, h], dtype=torch.float64)
    if align_corners:
        return pix * 2 / (scale - 1) - 1
    return (pix * 2 + 1) / scale - 1


def _at_pixels(
    px: torch.Tensor, py: torch.Tensor, in_size: tuple[int, int], align_corners: bool
) -> torch.Tensor:
    """The ``(B, Ho, Wo, 2)`` normalised grid of the pixel points ``(px, py)``, each ``(B, Ho, Wo)``."""
    return pixel_to_normalized(torch.stack((px, py), -1), in_size, align_corners)


def _edges(n: int, align_corners: bool) -> list[float]:
    """Normalised values on and around a side's border: the border pixel's centre and edge, one
    ulp either side of -1 and 1, and one and three pixels beyond (pixels at integer and .5)."""
    step = 2 / max(n - 1, 1) if align_corners else 2 / n
    lo = -1.0 if align_corners else -1 + step / 2  # the first pixel's centre
    out = [lo, -lo, lo - step / 2, -lo + step / 2, -1.0, 1.0]
    out += [math.nextafter(v, math.inf) for v in (-1.0, 1.0)]
    out += [math.nextafter(v, -math.inf) for v in (-1.0, 1.0)]
    out += [lo - step, -lo + step, lo - 3 * step, -lo + 3 * step, lo - 1.5 * step, -lo + 0.5 * step]
    return out


@functools.cache
def _grid_sample_fuses(device: str) -> bool:
    """Whether this build's ``grid_sample`` rounds ``((g + 1) W - 1) / 2`` once (a fused
    multiply-add: CUDA, PyTorch's AVX2/AVX-512 CPU kernels), as ``kernel_sample`` does. Probe:
    pixel 4 of a 28-wide identity grid is 4 - 1 ulp rounded once (grid slope U[4] - U[3] = 7 on
    squares), exactly 4 rounded twice (slope U[5] - U[4] = 9)."""
    x = (torch.arange(28.0, dtype=torch.float64, device=device) ** 2).reshape(1, 1, 1, 28)
    g = base_grid((1, 28), dtype=torch.float64)[None, :, 4:5]  # made on the CPU: CUDA's
    g = g.to(device).requires_grad_()  # linspace rounds differently
    F.grid_sample(x, g, "bilinear", "zeros", False).sum().backward()
    assert g.grad is not None
    return float(g.grad[0, 0, 0, 0]) == 7 * 14


def _skip_unless_rounded_alike(device: torch.device, align_corners: bool) -> None:
    """Points at integers with align_corners=False need ``grid_sample``'s fused rounding."""
    if not align_corners and not _grid_sample_fuses(str(device)):
        pytest.skip("this build's grid_sample rounds twice (ATEN_CPU_CAPABILITY=default)")


def _assert_same_as_grid_sample(
    x: torch.Tensor, grid: torch.Tensor, align_corners: bool, atol: float = 1e-10
) -> None:
    """Forward and both gradients of ``kernel_sample(bilinear)`` against ``grid_sample``'s."""
    x = x.detach().requires_grad_()
    grid = grid.detach().requires_grad_()
    ref = F.grid_sample(x, grid, "bilinear", "zeros", align_corners)
    out = kernel_sample(x, grid, "bilinear", align_corners=align_corners)
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)
    upstream = torch.randn_like(ref)
    ref_dx, ref_dg = torch.autograd.grad(ref, (x, grid), upstream)
    dx, dg = torch.autograd.grad(out, (x, grid), upstream)
    torch.testing.assert_close(dx, ref_dx, rtol=0, atol=atol)
    torch.testing.assert_close(dg, ref_dg, rtol=0, atol=atol * max(x.shape[-2:]))


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

    @pytest.mark.parametrize("size", SIZES)
    def test_bilinear_equals_grid_sample_float64(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        x = torch.rand(2, 3, *size, dtype=torch.float64, device=device)
        grid = _grid(2, 4, 5, dtype=torch.float64).to(device)
        _assert_same_as_grid_sample(x, grid, align_corners)

    @pytest.mark.parametrize("size", [(8, 8), (28, 28), (5, 7), (1, 6), (6, 1)])
    def test_bilinear_equals_grid_sample_on_the_identity_grid(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Where every transformer starts: all points at pixel centres, i.e. integers."""
        _skip_unless_rounded_alike(device, align_corners)
        x = torch.rand(2, 3, *size, dtype=torch.float64, device=device)
        grid = base_grid(size, align_corners, dtype=torch.float64, device=device)  # = affine_grid's
        grid = grid.expand(2, *size, 2)
        _assert_same_as_grid_sample(x, grid, align_corners)
        # the grid gradient is really there: a ramp 1, 2, ..., 28 along x has slope 1 px per px
        # up to the last column (also from a centre that rounds to an ulp left of its integer)
        if size == (28, 28):
            ramp = torch.arange(1.0, 29, dtype=torch.float64, device=device).expand(1, 1, 28, 28)
            g = grid[:1].clone().requires_grad_()
            kernel_sample(ramp, g, align_corners=align_corners).sum().backward()
            assert g.grad is not None
            pixel_slope = g.grad[0, :, :-1, 0] / ((27 if align_corners else 28) / 2)
            torch.testing.assert_close(pixel_slope, torch.ones_like(pixel_slope))

    @pytest.mark.parametrize("size", [(6, 7), (4, 4), (1, 5)])
    def test_bilinear_equals_grid_sample_at_integer_half_integer_and_random_points(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        _skip_unless_rounded_alike(device, align_corners)
        h, w = size
        ints = torch.arange(-3.0, max(h, w) + 3, dtype=torch.float64)
        pts = torch.cat((ints, ints + 0.5, torch.rand(40, dtype=torch.float64) * (w + 4) - 2))
        pick = torch.randint(len(pts), (2, 2, 9, 12))
        grid = _at_pixels(pts[pick[0]], pts[pick[1]], size, align_corners)
        x = torch.rand(2, 3, h, w, dtype=torch.float64)
        _assert_same_as_grid_sample(x.to(device), grid.to(device), align_corners)

    @pytest.mark.parametrize("size", [(5, 6), (2, 2), (1, 3)])
    def test_bilinear_equals_grid_sample_on_and_beyond_the_border(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Border centres and edges, one ulp either side of -1 and 1, points one pixel and more
        outside: each paired with every other, and with an interior point."""
        _skip_unless_rounded_alike(device, align_corners)
        h, w = size
        xs = torch.tensor([*_edges(w, align_corners), 0.1], dtype=torch.float64)
        ys = torch.tensor([*_edges(h, align_corners), -0.2], dtype=torch.float64)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((gx, gy), -1)[None].expand(2, -1, -1, -1)
        x = torch.rand(2, 3, h, w, dtype=torch.float64)
        _assert_same_as_grid_sample(x.to(device), grid.to(device), align_corners)

    def test_bilinear_grid_gradient_at_integer_points_is_the_right_hand_derivative(self) -> None:
        """Row [1, 2, 4, 8, 16]: at pixel x the grid gets U[x + 1] - U[x] (zeros outside), the
        slope to the right, where ``relu(1 - |d|)`` gave 0; at x = -1 the image's first pixel."""
        x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64).reshape(1, 1, 1, 5)
        px = torch.tensor([[[-1.0, 0.0, 2.0, 4.0, 5.0, 2.5]]], dtype=torch.float64)
        grid = _at_pixels(px, torch.zeros_like(px), (1, 5), True).requires_grad_()
        out = kernel_sample(x, grid, align_corners=True)
        torch.testing.assert_close(
            out.flatten(), torch.tensor([0.0, 1, 4, 16, 0, 6], dtype=torch.float64)
        )
        (dg,) = torch.autograd.grad(out.sum(), grid)
        expected = torch.tensor([1.0, 1, 4, -16, 0, 4], dtype=torch.float64) * 2  # (W - 1) / 2
        torch.testing.assert_close(dg[0, 0, :, 0], expected, rtol=0, atol=1e-12)

    @pytest.mark.parametrize(
        ("size", "dtype"), [((28, 28), torch.float32), ((5, 7), torch.float32)]
    )
    def test_bilinear_equals_grid_sample_on_the_identity_grid_float32(
        self, size: tuple[int, int], dtype: torch.dtype, align_corners: bool
    ) -> None:
        _skip_unless_rounded_alike(torch.device("cpu"), align_corners)
        x = torch.rand(2, 3, *size, dtype=dtype)
        grid = base_grid(size, align_corners, dtype=dtype).expand(2, *size, 2)
        _assert_same_as_grid_sample(x, grid, align_corners, atol=1e-5)

    @pytest.mark.parametrize("size", [(4, 8), (5, 9), (6, 7), (1, 4)])
    def test_nearest_equals_grid_sample_including_ties(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Half-integer pixel points are ties: both round half to even. (A side of 2^k pixels,
        or 2^k + 1 with align_corners, makes every .5 exact in floating point.)"""
        _skip_unless_rounded_alike(device, align_corners)
        h, w = size
        halves = torch.arange(-2.0, max(h, w) + 2, 0.5, dtype=torch.float64)
        pts = torch.cat((halves, torch.rand(20, dtype=torch.float64) * (w + 2) - 1))
        pick = torch.randint(len(pts), (2, 3, 7, 10))
        grid = _at_pixels(pts[pick[0]], pts[pick[1]], size, align_corners)
        pix = normalized_to_pixel(grid, size, align_corners)
        exact_ties = (pix - pix.floor() == 0.5) & (pix.floor() % 2 == 0) & (pix > -1) & (pix < w)
        if size in ((4, 8),) or (size == (5, 9) and align_corners):
            assert int(exact_ties.sum()) > 20  # ties that rounding up would get wrong
        for dtype in (torch.float64, torch.float32):
            x = torch.rand(3, 2, h, w, dtype=dtype, device=device)
            g = grid.to(dtype=dtype, device=device)
            ref = F.grid_sample(x, g, "nearest", "zeros", align_corners)
            out = kernel_sample(x, g, "nearest", align_corners=align_corners)
            torch.testing.assert_close(out, ref, rtol=0, atol=0)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_pixel_coordinates_are_rounded_once(self, dtype: torch.dtype) -> None:
        """``((g + 1) W - 1) / 2`` correctly rounded (after ``g + 1``), checked in exact rational
        arithmetic at pixel centres, half-pixels and their ulp neighbours, and random points."""
        for w in (1, 5, 7, 28, 100, 999):
            centres = (torch.arange(-3, w + 3, 0.5, dtype=torch.float64) * 2 + 1) / w - 1
            around = [torch.nextafter(centres, centres.new_tensor(d)) for d in (-9.0, 9.0)]
            rand = (torch.rand(200, dtype=torch.float64) * 2 - 1) * 1.5
            tiny = (torch.rand(50, dtype=torch.float64) - 0.5) * 10.0 ** -torch.randint(
                1, 30, (50,)
            )
            g = torch.cat((centres, *around, rand, tiny - 1)).to(dtype)
            grid = torch.stack((g, torch.zeros_like(g)), -1).reshape(1, 1, -1, 2)
            pix = _source_pixels(grid, (1, w), False)[0, :, 0]
            exact = [Fraction(v) * w - 1 for v in (g + 1).tolist()]  # g + 1 rounded, as grid_sample
            if dtype != torch.float64:  # exact in float64, so the cast rounds once
                assert all(Fraction(float(q)) == q for q in exact)
            expected = torch.tensor([float(q) for q in exact], dtype=dtype) / 2
            assert torch.equal(pix, expected), w

    def test_nearest_ties_round_half_to_even(self) -> None:
        """x = 0.5 px reads pixel 0, 1.5 and 2.5 read pixel 2 (``grid_sample``'s nearbyint)."""
        x = torch.tensor([[[[10.0, 20.0, 30.0, 40.0]]]])
        grid = torch.tensor([[[[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]]]])  # pixels 0.5, 1.5, 2.5
        assert kernel_sample(x, grid, "nearest").flatten().tolist() == [10.0, 30.0, 30.0]

    @pytest.mark.parametrize("kernel", ["bilinear", "nearest"])
    def test_identity_grid_reproduces_input(self, kernel: str, align_corners: bool) -> None:
        x = torch.rand(2, 3, 5, 6)
        grid = base_grid((5, 6), align_corners).expand(2, 5, 6, 2)
        torch.testing.assert_close(kernel_sample(x, grid, kernel, align_corners=align_corners), x)

    @pytest.mark.parametrize("sigma", [*SIGMAS, 0.49])
    def test_gaussian_keeps_a_constant_image_constant_away_from_borders(
        self, sigma: float, align_corners: bool
    ) -> None:
        """Pixel centres, half-pixel offsets in x, y and both, and random points: all read the
        constant, whatever sigma (a density normalisation read 12 at a centre for sigma = 0.1)."""
        size = (48, 48)  # 24 px (12 sigma) or more from every point to the borders
        x = torch.full((1, 2, *size), 3.0, dtype=torch.float64)
        base = torch.tensor([[22.0, 23.0], [22.5, 23.0], [22.0, 23.5], [22.5, 23.5], [24.0, 24.0]])
        pts = torch.cat((base.double(), 22 + 3 * torch.rand(20, 2, dtype=torch.float64)))
        grid = _at_pixels(pts[:, 0], pts[:, 1], size, align_corners).reshape(1, 5, 5, 2)
        out = kernel_sample(x, grid, "gaussian", sigma=sigma, align_corners=align_corners)
        torch.testing.assert_close(out, torch.full_like(out, 3.0), rtol=0, atol=1e-12)

    @pytest.mark.parametrize("sigma", SIGMAS)
    def test_gaussian_fades_to_zero_outside_like_zeros_padding(self, sigma: float) -> None:
        """At the image's edge half the lattice lies outside: a constant reads half of itself
        there and a quarter at a corner (a normalisation over in-image weights would read it
        whole), and nothing far outside."""
        x = torch.full((1, 1, 48, 48), 3.0, dtype=torch.float64)
        edges = [[-1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [1.0, 1.0]]  # align_corners=False edges
        far = [[-1.0 - 20 * sigma / 24, 0.0], [0.0, 1.0 + 20 * sigma / 24], [5.0, 5.0]]
        grid = torch.tensor([edges + far], dtype=torch.float64)[:, None]
        out = kernel_sample(x, grid, "gaussian", sigma=sigma).flatten()
        expected = torch.tensor([1.5, 1.5, 0.75, 0.75, 0, 0, 0], dtype=torch.float64)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)

    def test_gaussian_reads_the_pixel_itself_as_sigma_shrinks(self, align_corners: bool) -> None:
        x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
        grid = base_grid((5, 6), align_corners, dtype=torch.float64).expand(2, 5, 6, 2)
        out = kernel_sample(x, grid, "gaussian", sigma=0.1, align_corners=align_corners)
        torch.testing.assert_close(out, x, rtol=0, atol=1e-12)

    def test_gaussian_is_continuous_in_sigma(self) -> None:
        """The lattice sum is summed directly below sigma = 0.5 and by Poisson's formula from
        there: both must give the same function."""
        x = torch.rand(1, 2, 9, 9, dtype=torch.float64)
        grid = _grid(1, 6, 6, spread=1.2, dtype=torch.float64)
        below = kernel_sample(x, grid, "gaussian", sigma=0.5 - 1e-12)
        at = kernel_sample(x, grid, "gaussian", sigma=0.5)
        torch.testing.assert_close(below, at, rtol=0, atol=1e-11)

    def test_gaussian_weights_are_the_normal_density_for_a_wide_kernel(self) -> None:
        """For sigma >= 1.5 the lattice sum is sqrt(2 pi) sigma to rounding."""
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

    @pytest.mark.parametrize("sigma", [0.3, 0.8])
    def test_gradcheck_gaussian(self, sigma: float, align_corners: bool) -> None:
        x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        grid = _grid(1, 3, 4, dtype=torch.float64)
        grid[0, 0] = base_grid((3, 4), align_corners, dtype=torch.float64)[0]  # integer points
        grid.requires_grad_()
        fn = lambda a, g: kernel_sample(a, g, "gaussian", sigma, align_corners)  # noqa: E731
        assert gradcheck(fn, (x, grid))

    def test_gradcheck_nearest(self, align_corners: bool) -> None:
        """Off the ties (half-integers): linear in the input, constant in the grid."""
        x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        grid = _off_integer_grid((3, 4), 3, 4, align_corners, offset=0.5).requires_grad_()
        fn = lambda a, g: kernel_sample(a, g, "nearest", align_corners=align_corners)  # noqa: E731
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
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    @pytest.mark.parametrize(
        ("kernel", "sigma"), [("bilinear", 1.0), ("gaussian", 0.3), ("gaussian", 0.7)]
    )
    def test_jit_trace(
        self, kernel: str, sigma: float, dtype: torch.dtype, align_corners: bool
    ) -> None:
        x, grid = torch.rand(2, 1, 5, 5, dtype=dtype), _grid(2, 3, 3, dtype=dtype)
        fn = lambda a, g: kernel_sample(a, g, kernel, sigma, align_corners)  # noqa: E731
        traced = torch.jit.trace(fn, (x, grid))
        x2, grid2 = torch.rand(3, 1, 5, 5, dtype=dtype), _grid(3, 3, 3, dtype=dtype)
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
