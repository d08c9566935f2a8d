"""The generic kernel sampler on volumes: ``(B, C, D, H, W)`` inputs read at ``(x, y, z)`` points,
checked against ``grid_sample``'s 5-D kernels and against the formula itself."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchstn import InvalidInputError
from torchstn.functional import (
    KERNELS,
    base_grid,
    influence_weights,
    kernel_sample,
    normalized_to_pixel,
    pixel_to_normalized,
)

SIZE = (5, 6, 7)  # (D, H, W): three different sides, so a swapped axis shows
SIGMAS = [0.1, 0.2, 0.49, 0.5, 1.0, 2.0]


def _grid(
    b: int, out: tuple[int, int, int], spread: float = 1.3, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Random ``(B, Do, Ho, Wo, 3)`` points, up to ``spread`` (outside the volume beyond 1)."""
    return (torch.rand(b, *out, 3, dtype=dtype) * 2 - 1) * spread


def _at_voxels(
    voxels: torch.Tensor, size: tuple[int, int, int], align_corners: bool
) -> torch.Tensor:
    """Normalised points of the voxel-centre points ``voxels`` ``(..., 3)`` in ``(x, y, z)`` order."""
    return pixel_to_normalized(voxels, size, align_corners)


def _identity_grid(b: int, size: tuple[int, int, int], align_corners: bool) -> torch.Tensor:
    """``affine_grid``'s identity grid, the voxel centres (where every transformer starts)."""
    theta = torch.eye(3, 4, dtype=torch.float64).expand(b, 3, 4)
    with warnings.catch_warnings():  # a unit side with align_corners: its one point at 0, wanted
        warnings.filterwarnings("ignore", "Since version 1.3.0, affine_grid", UserWarning)
        return F.affine_grid(theta, [b, 1, *size], align_corners=align_corners)


def _off_integer_grid(
    size: tuple[int, int, int], out: tuple[int, int, int], align_corners: bool
) -> torch.Tensor:
    """Points at least 0.1 voxel from every integer, inside and up to a voxel outside, where the
    trilinear kernel is smooth (gradcheck needs that)."""
    d, h, w = size
    upper = torch.tensor([w, h, d], dtype=torch.float64)
    cell = torch.floor(torch.rand(1, *out, 3, dtype=torch.float64) * (upper + 2)) - 1
    voxels = cell + 0.1 + 0.8 * torch.rand(1, *out, 3, dtype=torch.float64)
    return _at_voxels(voxels, size, align_corners)


def _edges(n: int, align_corners: bool) -> list[float]:
    """Normalised values on and around a side's border: the border voxel's centre and edge, one
    ulp either side of -1 and 1, and one and three voxels beyond."""
    step = 2 / max(n - 1, 1) if align_corners else 2 / n
    lo = -1.0 if align_corners else -1 + step / 2  # the first voxel's centre
    out = [lo, -lo, lo - step / 2, -lo + step / 2, -1.0, 1.0]
    out += [math.nextafter(v, s) for v in (-1.0, 1.0) for s in (-math.inf, math.inf)]
    return [*out, lo - step, -lo + step, lo - 3 * step, -lo + 3 * step, 0.1]


@functools.cache
def _grid_sample_3d_fuses(device: str) -> bool:
    """Whether this build's 3-D ``grid_sample`` rounds ``((g + 1) W - 1) / 2`` once (a fused
    multiply-add). Probe: voxel 4 of a 28-wide identity grid is 4 - 1 ulp rounded once (grid
    slope U[4] - U[3] = 7 on squares), exactly 4 rounded twice (slope U[5] - U[4] = 9)."""
    x = (torch.arange(28.0, dtype=torch.float64, device=device) ** 2).reshape(1, 1, 1, 1, 28)
    g = _identity_grid(1, (1, 1, 28), False)[:, :, :, 4:5].to(device).requires_grad_()
    F.grid_sample(x, g, "bilinear", "zeros", False).sum().backward()
    assert g.grad is not None
    return float(g.grad[0, 0, 0, 0, 0]) == 7 * 14


def _skip_unless_rounded_as_documented(device: torch.device, align_corners: bool) -> None:
    """``kernel_sample`` rounds volumes' voxel coordinates once on CUDA and twice elsewhere, as
    ``grid_sample``'s 3-D kernels of PyTorch's x86 and CUDA builds do; points at integers with
    align_corners=False need a ``grid_sample`` that does the same."""
    if not align_corners and _grid_sample_3d_fuses(str(device)) != (device.type == "cuda"):
        pytest.skip("this build's 3-D grid_sample rounds voxel coordinates differently")


def _keys(d: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution kernel, written out piecewise in ``|d|``."""
    s = d.abs()
    inner = (a + 2) * s**3 - (a + 3) * s**2 + 1
    outer = a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return torch.where(s <= 1, inner, torch.where(s < 2, outer, torch.zeros_like(s)))


def _assert_same_as_grid_sample(
    x: torch.Tensor, grid: torch.Tensor, align_corners: bool, atol: float = 1e-12
) -> None:
    """Forward and both gradients of ``kernel_sample(bilinear)`` against trilinear ``grid_sample``."""
    x = x.detach().requires_grad_()
    grid = grid.detach().requires_grad_()
    ref = F.grid_sample(x, grid, "bilinear", "zeros", align_corners)
    out = kernel_sample(x, grid, "bilinear", align_corners=align_corners)
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)
    upstream = torch.randn_like(ref)
    ref_dx, ref_dg = torch.autograd.grad(ref, (x, grid), upstream)
    dx, dg = torch.autograd.grad(out, (x, grid), upstream)
    torch.testing.assert_close(dx, ref_dx, rtol=0, atol=atol)
    torch.testing.assert_close(dg, ref_dg, rtol=0, atol=atol)


class TestKernelSample3d:
    @pytest.mark.parametrize("kernel", KERNELS)
    def test_smoke_shape(self, kernel: str) -> None:
        out = kernel_sample(
            torch.rand(2, 2, *SIZE), _grid(2, (3, 4, 5), dtype=torch.float32), kernel
        )
        assert out.shape == (2, 2, 3, 4, 5)

    @pytest.mark.parametrize("size", [SIZE, (1, 4, 5), (4, 1, 3), (3, 4, 1)])
    def test_bilinear_equals_trilinear_grid_sample_at_random_points(
        self, size: tuple[int, int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Inside and outside the volume (up to 0.3 beyond each face in normalised units)."""
        x = torch.rand(2, 2, *size, dtype=torch.float64, device=device)
        grid = _grid(2, (3, 4, 5)).to(device)
        assert bool((grid.abs() > 1).any() & (grid.abs() < 1).all(-1).any())
        _assert_same_as_grid_sample(x, grid, align_corners)

    @pytest.mark.parametrize("size", [SIZE, (2, 3, 28), (28, 2, 3), (1, 5, 6)])
    def test_bilinear_equals_trilinear_grid_sample_on_the_identity_grid(
        self, size: tuple[int, int, int], align_corners: bool, device: torch.device
    ) -> None:
        """All points at voxel centres, i.e. integers, where the kernel has its kinks; a side of
        28 has centres that one rounding puts an ulp off the integer and two put on it."""
        _skip_unless_rounded_as_documented(device, align_corners)
        x = torch.rand(2, 2, *size, dtype=torch.float64, device=device)
        _assert_same_as_grid_sample(
            x, _identity_grid(2, size, align_corners).to(device), align_corners
        )

    def test_the_identity_grid_reads_the_volume_back(self, align_corners: bool) -> None:
        x = torch.rand(2, 2, *SIZE, dtype=torch.float64)
        grid = _identity_grid(2, SIZE, align_corners)
        for kernel in ("bilinear", "nearest"):
            out = kernel_sample(x, grid, kernel, align_corners=align_corners)
            torch.testing.assert_close(out, x, rtol=0, atol=1e-15)

    @pytest.mark.parametrize("size", [SIZE, (4, 4, 4), (1, 3, 5)])
    def test_bilinear_equals_trilinear_grid_sample_at_integer_half_integer_and_random_points(
        self, size: tuple[int, int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Each coordinate independently an integer, a half-integer or random, from three voxels
        outside one face to three outside the other."""
        _skip_unless_rounded_as_documented(device, align_corners)
        ints = torch.arange(-3.0, max(size) + 3, dtype=torch.float64)
        pts = torch.cat(
            (ints, ints + 0.5, torch.rand(30, dtype=torch.float64) * (max(size) + 4) - 2)
        )
        voxels = pts[torch.randint(len(pts), (2, 3, 5, 6, 3))]
        grid = _at_voxels(voxels, size, align_corners)
        x = torch.rand(2, 2, *size, dtype=torch.float64)
        _assert_same_as_grid_sample(x.to(device), grid.to(device), align_corners)

    @pytest.mark.parametrize("size", [SIZE, (2, 2, 2), (1, 2, 3)])
    def test_bilinear_equals_trilinear_grid_sample_on_and_beyond_the_faces(
        self, size: tuple[int, int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Every combination of border centres and edges, one ulp either side of -1 and 1, and
        points one and three voxels outside, along the three axes."""
        _skip_unless_rounded_as_documented(device, align_corners)
        d, h, w = size
        axes = [torch.tensor(_edges(n, align_corners), dtype=torch.float64) for n in (d, h, w)]
        gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
        grid = torch.stack((gx, gy, gz), -1)[None]
        x = torch.rand(1, 2, *size, dtype=torch.float64)
        _assert_same_as_grid_sample(x.to(device), grid.to(device), align_corners)

    def test_trilinear_reproduces_an_affine_function_of_the_voxel_coordinates(
        self, align_corners: bool
    ) -> None:
        """``U[z, y, x] = 1 + 2x - 3y + 5z`` read at any point inside the voxel centres' box is
        ``1 + 2x - 3y + 5z`` of that point: the formula, not ``grid_sample``, as reference."""
        d, h, w = SIZE
        z, y, x = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float64) for n in SIZE), indexing="ij"
        )
        volume = (1 + 2 * x - 3 * y + 5 * z)[None, None]
        voxels = torch.rand(1, 3, 4, 5, 3, dtype=torch.float64) * torch.tensor(
            [w - 1, h - 1, d - 1], dtype=torch.float64
        )
        grid = _at_voxels(voxels, SIZE, align_corners)
        out = kernel_sample(volume, grid, align_corners=align_corners)[0, 0]
        px, py, pz = normalized_to_pixel(grid, SIZE, align_corners)[0].unbind(-1)
        torch.testing.assert_close(out, 1 + 2 * px - 3 * py + 5 * pz, rtol=0, atol=1e-12)

    @pytest.mark.parametrize("size", [(4, 4, 8), (5, 9, 5), (2, 4, 4)])
    def test_nearest_equals_grid_sample_including_ties(
        self, size: tuple[int, int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Half-integer voxel points are ties, rounded half to even by both. (A side of 2^k
        voxels, or 2^k + 1 with align_corners, makes every .5 exact in floating point.)"""
        _skip_unless_rounded_as_documented(device, align_corners)
        halves = torch.arange(-2.0, max(size) + 2, 0.5, dtype=torch.float64)
        pts = torch.cat((halves, torch.rand(20, dtype=torch.float64) * (max(size) + 2) - 1))
        voxels = pts[torch.randint(len(pts), (2, 4, 5, 6, 3))]
        grid = _at_voxels(voxels, size, align_corners)
        pix = normalized_to_pixel(grid, size, align_corners)
        upper = torch.tensor(size[::-1], dtype=torch.float64)
        ties = (pix - pix.floor() == 0.5) & (pix.floor() % 2 == 0) & (pix > -1) & (pix < upper)
        if size == (4, 4, 8) or (size == (5, 9, 5) and align_corners):
            assert int(ties.sum()) > 20  # ties that rounding half up would get wrong
        for dtype in (torch.float64, torch.float32):
            x = torch.rand(2, 2, *size, dtype=dtype, device=device)
            g = grid.to(dtype=dtype, device=device)
            ref = F.grid_sample(x, g, "nearest", "zeros", align_corners)
            out = kernel_sample(x, g, "nearest", align_corners=align_corners)
            torch.testing.assert_close(out, ref, rtol=0, atol=0)

    def test_nearest_reads_voxel_z_y_x_and_rounds_ties_to_even(self) -> None:
        """Voxel point (x, y, z) reads ``U[z, y, x]``; x = 0.5, 1.5, 2.5 read columns 0, 2, 2."""
        x = torch.arange(2.0 * 3 * 4).reshape(1, 1, 2, 3, 4)
        voxels = torch.tensor([[0.5, 2.0, 1.0], [1.5, 1.0, 0.0], [2.5, 0.0, 1.0], [3.0, 2.5, 0.5]])
        grid = _at_voxels(voxels, (2, 3, 4), False).reshape(1, 1, 1, 4, 3)
        out = kernel_sample(x, grid, "nearest").flatten().tolist()
        assert out == [
            x[0, 0, 1, 2, 0].item(),
            x[0, 0, 0, 1, 2].item(),
            x[0, 0, 1, 0, 2].item(),
            x[0, 0, 0, 2, 3].item(),
        ]

    @pytest.mark.parametrize("sigma", SIGMAS)
    def test_gaussian_keeps_a_constant_volume_constant_where_the_kernel_lies_inside(
        self, sigma: float, align_corners: bool
    ) -> None:
        """Voxel centres, half-voxel offsets and random points at least 8 sigma + 1 voxels from
        every face (the kernel left outside is below 1e-13) all read the constant."""
        margin = math.ceil(8 * sigma) + 1
        n = 2 * margin + 3
        x = torch.full((1, 2, n, n, n), 3.0, dtype=torch.float64)
        base = torch.tensor(
            [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.5, 0.5], [2.0, 1.0, 2.0]],
            dtype=torch.float64,
        )
        voxels = margin + torch.cat((base, 2 * torch.rand(11, 3, dtype=torch.float64)))
        grid = _at_voxels(voxels, (n, n, n), align_corners).reshape(1, 2, 2, 4, 3)
        out = kernel_sample(x, grid, "gaussian", sigma=sigma, align_corners=align_corners)
        torch.testing.assert_close(out, torch.full_like(out, 3.0), rtol=0, atol=1e-12)

    @pytest.mark.parametrize("sigma", [0.2, 0.5, 1.0])
    def test_gaussian_reads_half_on_a_face_a_quarter_on_an_edge_an_eighth_at_a_corner(
        self, sigma: float
    ) -> None:
        """At the volume's boundary half of each crossing axis' lattice lies outside; far outside
        nothing is read (align_corners=False: -1 and 1 are the faces)."""
        n = 2 * (math.ceil(8 * sigma) + 1) + 2
        x = torch.full((1, 1, n, n, n), 8.0, dtype=torch.float64)
        points = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 1.0]]
        points.append([0.0, 0.0, 1.0 + (10 * sigma + 2) * 2 / n])
        grid = torch.tensor(points, dtype=torch.float64).reshape(1, 1, 1, 5, 3)
        out = kernel_sample(x, grid, "gaussian", sigma=sigma).flatten()
        expected = torch.tensor([4.0, 4.0, 2.0, 1.0, 0.0], dtype=torch.float64)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)

    def test_gaussian_weights_are_the_separable_normal_density_for_a_wide_kernel(self) -> None:
        """For sigma >= 1.5 the lattice sum is sqrt(2 pi) sigma to rounding, so the weight of
        voxel (l, n, m) read at voxel point (2, 1, 3) is a 3-D normal density."""
        sigma = 2.0
        voxel = torch.tensor([[3.0, 1.0, 2.0]], dtype=torch.float64)  # (x, y, z)
        grid = _at_voxels(voxel, SIZE, False).reshape(1, 1, 1, 1, 3)
        w = influence_weights(grid, SIZE, "gaussian", sigma=sigma)[0, 0, 0, 0]
        z, y, x = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float64) for n in SIZE), indexing="ij"
        )
        d2 = (x - 3) ** 2 + (y - 1) ** 2 + (z - 2) ** 2
        density = torch.exp(-d2 / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** 1.5
        torch.testing.assert_close(w, density, rtol=1e-12, atol=0)

    def test_outside_reads_zeros(self) -> None:
        x = torch.rand(1, 2, 3, 4, 5) + 1
        far = torch.tensor([[3.0, 0.0, 0.0], [0.0, -3.0, 0.0], [0.0, 0.0, 3.0]]).view(1, 1, 1, 3, 3)
        for kernel in ("bilinear", "nearest"):
            assert bool((kernel_sample(x, far, kernel) == 0).all())

    def test_gradcheck_bilinear(self, align_corners: bool) -> None:
        size = (2, 3, 4)
        x = torch.rand(1, 2, *size, dtype=torch.float64, requires_grad=True)
        grid = _off_integer_grid(size, (2, 2, 3), align_corners).requires_grad_()
        fn = lambda a, g: kernel_sample(a, g, "bilinear", align_corners=align_corners)  # noqa: E731
        assert gradcheck(fn, (x, grid))

    @pytest.mark.parametrize("sigma", [0.3, 0.8])
    def test_gradcheck_gaussian(self, sigma: float, align_corners: bool) -> None:
        """Random points and voxel centres (smooth everywhere, unlike the trilinear kernel)."""
        size = (2, 3, 4)
        x = torch.rand(1, 2, *size, dtype=torch.float64, requires_grad=True)
        grid = _grid(1, (2, 2, 3))
        grid[0, 0] = _identity_grid(1, size, align_corners)[0, 0, :2, :3]  # integer points
        grid.requires_grad_()
        fn = lambda a, g: kernel_sample(a, g, "gaussian", sigma, align_corners)  # noqa: E731
        assert gradcheck(fn, (x, grid))

    def test_nearest_passes_no_gradient_to_the_grid(self) -> None:
        x = torch.rand(1, 1, 3, 4, 4, requires_grad=True)
        grid = _grid(1, (2, 2, 2), spread=0.9, dtype=torch.float32).requires_grad_()
        kernel_sample(x, grid, "nearest").sum().backward()
        assert x.grad is not None and float(x.grad.sum()) == 8.0  # each output reads one voxel
        assert grid.grad is None or bool((grid.grad == 0).all())

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
    @pytest.mark.parametrize("kernel", KERNELS)
    def test_reduced_precision_is_finite_and_close_to_float32(
        self, kernel: str, dtype: torch.dtype, align_corners: bool
    ) -> None:
        """As for images, float16 and bfloat16 volumes are sampled in their own dtype."""
        x = torch.rand(2, 2, *SIZE).to(dtype).requires_grad_()
        grid = _grid(2, (3, 4, 5), spread=1.1, dtype=torch.float32).to(dtype).requires_grad_()
        out = kernel_sample(x, grid, kernel, 0.7, align_corners)
        assert out.dtype == dtype and bool(out.isfinite().all())
        out.sum().backward()
        assert x.grad is not None and bool(x.grad.isfinite().all())
        ref = kernel_sample(x.detach().float(), grid.detach().float(), kernel, 0.7, align_corners)
        if kernel != "nearest":  # a rounded point may round to another voxel
            atol = 32 * torch.finfo(dtype).eps  # bicubic: 64 taps, some weights negative
            torch.testing.assert_close(out.float(), ref, rtol=0, atol=atol)

    @pytest.mark.filterwarnings(
        "ignore::torch.jit.TracerWarning",
        "ignore:`torch.jit.trace.* is deprecated:DeprecationWarning",
    )
    @pytest.mark.parametrize(("kernel", "sigma"), [("bilinear", 1.0), ("gaussian", 0.3)])
    def test_jit_trace(self, kernel: str, sigma: float, align_corners: bool) -> None:
        x, grid = torch.rand(2, 1, 3, 4, 5), _grid(2, (2, 3, 3), dtype=torch.float32)
        fn = lambda a, g: kernel_sample(a, g, kernel, sigma, align_corners)  # noqa: E731
        traced = torch.jit.trace(fn, (x, grid))
        x2, grid2 = torch.rand(3, 1, 3, 4, 5), _grid(3, (2, 3, 3), dtype=torch.float32)
        torch.testing.assert_close(traced(x2, grid2), fn(x2, grid2))

    def test_exceptions_name_the_argument_and_both_shapes(self) -> None:
        x = torch.rand(1, 1, *SIZE)
        cases = [
            (
                torch.zeros(1, 2, 2, 2),
                ["grid", "5 dims", "(B, Do, Ho, Wo, 3)", str(tuple(x.shape)), "(1, 2, 2, 2)"],
            ),
            (
                torch.zeros(1, 2, 2, 2, 2),
                ["grid", "last dimension 3", "(1, 2, 2, 2, 2)", str(tuple(x.shape))],
            ),
            (torch.zeros(2, 2, 2, 2, 3), ["batch size mismatch", "1", "2"]),
        ]
        for grid, words in cases:
            with pytest.raises(InvalidInputError) as info:
                kernel_sample(x, grid)
            message = str(info.value)
            assert "\n" not in message and all(word in message for word in words), message
        with pytest.raises(
            InvalidInputError, match=r"input: .*5 dims \(B, C, D, H, W\).*\(1, 2, 3, 4, 5, 6\)"
        ):
            kernel_sample(torch.rand(1, 2, 3, 4, 5, 6), torch.zeros(1, 2, 2, 2, 3))


class TestInfluenceWeights3d:
    def test_smoke_shape(self) -> None:
        assert influence_weights(_grid(2, (3, 4, 2)), SIZE).shape == (2, 3, 4, 2, *SIZE)

    @pytest.mark.parametrize("kernel", KERNELS)
    def test_weighted_sum_is_kernel_sample(self, kernel: str, align_corners: bool) -> None:
        x, grid = torch.rand(2, 2, *SIZE, dtype=torch.float64), _grid(2, (3, 2, 4))
        w = influence_weights(grid, SIZE, kernel, 0.7, align_corners)
        expected = torch.einsum("bijkdhw,bcdhw->bcijk", w, x)
        out = kernel_sample(x, grid, kernel, 0.7, align_corners)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)

    def test_trilinear_weights_are_the_product_of_the_tent_functions(
        self, align_corners: bool
    ) -> None:
        """``max(0, 1 - |x - m|) max(0, 1 - |y - n|) max(0, 1 - |z - l|)``, written out, at points
        off the kinks: at most eight voxels, summing to 1 inside."""
        grid = _off_integer_grid(SIZE, (2, 3, 4), align_corners)
        w = influence_weights(grid, SIZE, align_corners=align_corners)
        px, py, pz = normalized_to_pixel(grid, SIZE, align_corners)[..., None, None, None].unbind(
            -4
        )
        z, y, x = torch.meshgrid(
            *(torch.arange(n, dtype=torch.float64) for n in SIZE), indexing="ij"
        )
        tent = lambda d: (1 - d.abs()).clamp_min(0)  # noqa: E731
        torch.testing.assert_close(
            w, tent(px - x) * tent(py - y) * tent(pz - z), rtol=0, atol=1e-15
        )
        assert bool(((w > 0).sum((-1, -2, -3)) <= 8).all())
        inside = ((grid > -0.7) & (grid < 0.7)).all(-1)
        torch.testing.assert_close(
            w.sum((-1, -2, -3))[inside], torch.ones_like(w[..., 0, 0, 0][inside])
        )

    def test_exceptions_name_the_argument_and_both_shapes(self) -> None:
        cases = [
            (
                torch.zeros(1, 2, 2, 2, 2, 3),
                SIZE,
                ["grid", "4 dims", "5 dims", "(1, 2, 2, 2, 2, 3)"],
            ),
            (torch.zeros(1, 2, 2, 2, 2), SIZE, ["grid", "last dimension 3", "(1, 2, 2, 2, 2)"]),
            (torch.zeros(1, 2, 2, 2, 3), (6, 7), ["in_size", "(D, H, W)", "(6, 7)"]),
            (torch.zeros(1, 2, 2, 2, 3), (0, 6, 7), ["in_size", "positive", "(0, 6, 7)"]),
        ]
        for grid, size, words in cases:
            with pytest.raises(InvalidInputError) as info:
                influence_weights(grid, size)
            message = str(info.value)
            assert "\n" not in message and all(word in message for word in words), message


class TestBicubic:
    """Keys' cubic convolution (a = -0.75): ``grid_sample``'s bicubic for images, and its tensor
    product, tricubic sampling, for volumes."""

    @staticmethod
    def _compare(
        out: torch.Tensor,
        ref: torch.Tensor,
        inputs: tuple[torch.Tensor, torch.Tensor],
        grid_atol: float,
    ) -> None:
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        upstream = torch.randn_like(ref)
        ref_dx, ref_dg = torch.autograd.grad(ref, inputs, upstream, retain_graph=True)
        dx, dg = torch.autograd.grad(out, inputs, upstream)
        torch.testing.assert_close(dx, ref_dx, rtol=0, atol=1e-12)
        torch.testing.assert_close(dg, ref_dg, rtol=0, atol=grid_atol)

    @pytest.mark.parametrize("size", [(5, 6), (28, 28), (1, 4), (4, 1), (7, 3)])
    def test_images_equal_grid_sample_bicubic(
        self, size: tuple[int, int], align_corners: bool, device: torch.device
    ) -> None:
        """Random points inside and outside, the identity grid, and integer, half-integer and
        random pixel points from four pixels outside to four beyond: value and both gradients.
        (The kernel is C1, so a coordinate an ulp off an integer changes nothing visible.)"""
        h, w = size
        ints = torch.arange(-4.0, max(size) + 4, dtype=torch.float64)
        pts = torch.cat(
            (ints, ints + 0.5, torch.rand(30, dtype=torch.float64) * (max(size) + 6) - 3)
        )
        pixels = pts[torch.randint(len(pts), (2, 9, 12, 2))]
        grids = [
            (torch.rand(2, 4, 5, 2, dtype=torch.float64) * 2 - 1) * 1.5,
            base_grid(size, align_corners, dtype=torch.float64).expand(2, h, w, 2),
            pixel_to_normalized(pixels, size, align_corners),
        ]
        for grid in grids:
            x = torch.rand(2, 3, h, w, dtype=torch.float64, device=device, requires_grad=True)
            g = grid.to(device).requires_grad_()
            ref = F.grid_sample(x, g, "bicubic", "zeros", align_corners)
            out = kernel_sample(x, g, "bicubic", align_corners=align_corners)
            self._compare(out, ref, (x, g), grid_atol=1e-12 * max(size))

    @pytest.mark.parametrize("size", [SIZE, (1, 4, 5), (4, 1, 3), (3, 4, 1)])
    def test_volumes_are_the_tensor_product_along_z_of_bicubic_slices(
        self, size: tuple[int, int, int], align_corners: bool
    ) -> None:
        """Tricubic = ``sum_l k(z - l) * bicubic(U[l], (x, y))``: each depth slice read by
        ``grid_sample``'s bicubic, weighted by Keys' kernel written out in z. Value and both
        gradients, at random points inside and outside and at integer and half-integer ones."""
        ints = torch.arange(-3.0, max(size) + 3, dtype=torch.float64)
        pts = torch.cat(
            (ints, ints + 0.5, torch.rand(20, dtype=torch.float64) * (max(size) + 4) - 2)
        )
        voxels = pts[torch.randint(len(pts), (2, 2, 3, 4, 3))]
        for grid in (_grid(2, (2, 3, 4), spread=1.5), _at_voxels(voxels, size, align_corners)):
            b, do, ho, wo = grid.shape[:4]
            x = torch.rand(b, 2, *size, dtype=torch.float64, requires_grad=True)
            g = grid.clone().requires_grad_()
            gxy = g[..., :2].reshape(b, do * ho, wo, 2)
            slices = torch.stack(
                [
                    F.grid_sample(x[:, :, k], gxy, "bicubic", "zeros", align_corners)
                    for k in range(size[0])
                ],
                2,
            )  # (B, C, D, Do * Ho, Wo)
            pz = normalized_to_pixel(g, size, align_corners)[..., 2].reshape(b, 1, 1, do * ho, wo)
            depth = torch.arange(size[0], dtype=torch.float64).reshape(1, 1, -1, 1, 1)
            ref = (_keys(pz - depth) * slices).sum(2).reshape(b, 2, do, ho, wo)
            out = kernel_sample(x, g, "bicubic", align_corners=align_corners)
            self._compare(out, ref, (x, g), grid_atol=1e-12 * max(size))

    def test_a_constant_volume_reads_the_constant_where_all_taps_are_inside(self) -> None:
        x = torch.full((1, 2, *SIZE), 3.0, dtype=torch.float64)
        voxels = torch.tensor([2.0, 2.0, 2.0]) + torch.rand(1, 2, 3, 4, 3, dtype=torch.float64)
        grid = _at_voxels(voxels, SIZE, False)
        out = kernel_sample(x, grid, "bicubic")
        torch.testing.assert_close(out, torch.full_like(out, 3.0), rtol=0, atol=1e-14)

    def test_gradcheck(self, align_corners: bool) -> None:
        """Random points and voxel centres: the kernel is C1 everywhere."""
        size = (3, 3, 4)
        x = torch.rand(1, 2, *size, dtype=torch.float64, requires_grad=True)
        grid = _grid(1, (2, 2, 3))
        grid[0, 0] = _identity_grid(1, size, align_corners)[0, 1, :2, :3]
        grid.requires_grad_()
        fn = lambda a, g: kernel_sample(a, g, "bicubic", align_corners=align_corners)  # noqa: E731
        assert gradcheck(fn, (x, grid))
