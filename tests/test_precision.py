"""Reduced precision: every family's grid is finite in float16 and bfloat16 (and float32/64),
half and bfloat16 transformers give finite outputs, and autocast keeps grid and sampler in
float32."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn import SpatialTransformer, native, transforms
from torchstn.functional import MODES, PADDING_MODES, base_grid, sample
from torchstn.transforms import Projective
from torchstn.transforms.base import coordinate_limit

NAMES = transforms.names(ndim=2)
#: the families the fused CPU kernel warps (2-D, affine matrices)
FUSED_NAMES = ("affine", "attention", "rotation", "similarity", "translation", "projective")
REDUCED = [torch.float16, torch.bfloat16]
DTYPES = [*REDUCED, torch.float32, torch.float64]
#: large but finite param magnitudes per dtype (float16's largest value is 65504)
EXTREME = {torch.float16: 6e4, torch.bfloat16: 1e30, torch.float32: 1e30, torch.float64: 1e30}


def _random_params(name: str, b: int, scale: float, seed: int = 0) -> torch.Tensor:
    t = transforms.get(name)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(b, t.num_params, generator=gen, dtype=torch.float64)
    return t.identity_params(torch.float64) + scale * noise


def _extreme_params(name: str, dtype: torch.dtype) -> torch.Tensor:
    """Every param at +-the extreme magnitude, zeros, and (for the projective family) points on
    and just off the horizon ``w = 0`` of the grid."""
    t = transforms.get(name)
    big = EXTREME[dtype]
    p = t.num_params
    rows = [
        torch.full((p,), big),
        torch.full((p,), -big),
        torch.tensor([big if i % 2 else -big for i in range(p)]),
        torch.zeros(p),
        t.identity_params(torch.float64),
    ]
    if name == "projective":
        for g in (1.0, 1.0 - 1e-3, 1.0 + 1e-3, 2.0, big):
            rows.append(torch.tensor([1.0, 0, 0, 0, 1, 0, g, 0]))  # w = g x + 1
            rows.append(torch.tensor([1.0, 0, 0, 0, 1, 0, g, g]))  # w = g (x + y) + 1
    return torch.stack([r.to(torch.float64) for r in rows]).to(dtype)


class TestGridsAreFinite:
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("name", NAMES)
    def test_random_and_extreme_params(
        self, name: str, dtype: torch.dtype, align_corners: bool
    ) -> None:
        t = transforms.get(name)
        for params in (_random_params(name, 8, 2.0).to(dtype), _extreme_params(name, dtype)):
            assert bool(params.isfinite().all())
            grid = t.grid(params, (7, 9), align_corners)
            assert grid.dtype == dtype and grid.shape == (params.shape[0], 7, 9, 2)
            assert bool(grid.isfinite().all()), f"{name} {dtype}: {grid}"
            pts = base_grid((3, 4), align_corners, dtype=dtype).reshape(1, -1, 2)
            mapped = t.map_points(params, pts.expand(params.shape[0], -1, -1))
            assert mapped.dtype == dtype and bool(mapped.isfinite().all())

    @pytest.mark.parametrize("dtype", REDUCED, ids=str)
    @pytest.mark.parametrize("name", NAMES)
    def test_reduced_grid_is_the_float64_grid_rounded_and_clamped(
        self, name: str, dtype: torch.dtype
    ) -> None:
        """Finite is not enough: the grid must be the right one, to the dtype's precision."""
        t = transforms.get(name)
        params = _random_params(name, 6, 0.3).to(dtype)
        ref = t.grid(params.double(), (8, 8))
        limit = coordinate_limit(dtype)
        ref = ref.clamp(-limit, limit)
        tol = 8 * torch.finfo(dtype).eps
        torch.testing.assert_close(t.grid(params, (8, 8)).double(), ref, rtol=tol, atol=tol)

    @pytest.mark.parametrize("dtype", REDUCED, ids=str)
    def test_horizon_maps_to_the_clamp_with_the_sign_of_u_over_w(self, dtype: torch.dtype) -> None:
        """``w = x + 1`` is zero on the left column (align_corners=True): ``u = -1`` there, so
        the point goes to ``-1 / eps``, clamped to ``-limit``; elsewhere the grid is ``x / (x + 1)``."""
        params = torch.tensor([[1.0, 0, 0, 0, 1, 0, 1, 0]], dtype=dtype)
        grid = Projective().grid(params, (3, 5), align_corners=True)
        left = torch.tensor(max(-1 / Projective.eps, -coordinate_limit(dtype))).to(dtype)
        assert bool((grid[0, :, 0, 0] == left).all())  # -16 in float16, -1e6 in bfloat16
        x = base_grid((3, 5), True, dtype=torch.float64)[..., 0]
        expected = (x / (x + 1))[:, 1:]
        torch.testing.assert_close(
            grid[0, :, 1:, 0].double(), expected, rtol=0, atol=4 * torch.finfo(dtype).eps
        )

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_sampler_is_finite_at_the_float16_limit_up_to_4096_pixels(
        self, align_corners: bool
    ) -> None:
        """A float16 grid at ``+-coordinate_limit(float16)`` (the clamp of every grid) reads the
        padding, finite, in every mode, for a 4096-pixel side: on points and on whole rows."""
        limit = coordinate_limit(torch.float16)
        assert limit == torch.finfo(torch.float16).max / 2**12
        x = torch.rand(1, 1, 16, 4096, dtype=torch.float16)
        points = [(a * limit, b * limit) for a in (-1, 0, 1) for b in (-1, 0, 1)]
        for px, py in points:
            grid = torch.tensor([px, py]).to(torch.float16).expand(1, 16, 4096, 2)
            for mode in MODES:
                for padding_mode in PADDING_MODES:
                    out = sample(x, grid.contiguous(), mode, padding_mode, align_corners)
                    assert bool(out.isfinite().all()), (px, py, mode, padding_mode)
                    ref = sample(x.float(), grid.float(), mode, padding_mode, align_corners)
                    assert torch.equal(out, ref.half()), (px, py, mode, padding_mode)

    def test_projective_horizon_samples_finite_in_float16(self) -> None:
        """The issue's case: a 16x4096 image on the grid of ``w = x + 1`` (grid values up to the
        clamp, 16) gave NaN in float16 on CPU kernels of some instruction sets."""
        x = torch.rand(1, 1, 16, 4096, dtype=torch.float16)
        params = torch.tensor([[1.0, 0, 0, 0, 1, 0, 1, 0]], dtype=torch.float16)
        grid = Projective().grid(params, (16, 4096))
        assert float(grid.abs().max()) == coordinate_limit(torch.float16)
        for mode in MODES:
            for padding_mode in PADDING_MODES:
                out = sample(x, grid, mode, padding_mode)
                assert bool(out.isfinite().all()), (mode, padding_mode)

    @pytest.mark.parametrize("dtype", REDUCED, ids=str)
    def test_far_points_read_the_padding_as_in_float32(self, dtype: torch.dtype) -> None:
        """bfloat16 ``grid_sample`` read an image pixel at ``+-finfo(bfloat16).max / 4096`` under
        zeros padding where float32 reads 0; ``sample`` reads the padding at every magnitude."""
        x = torch.rand(2, 3, 4, 5).to(dtype) + 1  # no pixel is 0
        for big in (1e4, 1e8, 1e20, coordinate_limit(dtype)):
            if big > coordinate_limit(dtype):
                continue
            pts = [(big, big), (-big, -big), (big, -big), (-big, big), (big, 0), (0, -big)]
            grid = torch.tensor(pts, dtype=dtype).reshape(1, 1, 6, 2).expand(2, -1, -1, -1)
            for mode in MODES:
                out = sample(x, grid, mode, "zeros")
                assert bool((out == 0).all()), (big, mode, out)
                fill = sample(x, grid, mode, "fill", fill=[0.5, -2.0, 3.0])
                expected = torch.tensor([0.5, -2.0, 3.0], dtype=dtype).reshape(1, 3, 1, 1)
                assert torch.equal(fill, expected.expand_as(fill)), (big, mode)

    def test_reduced_sampling_is_float32_rounded_once_with_gradients(self) -> None:
        torch.manual_seed(0)
        for dtype in REDUCED:
            x = torch.rand(2, 2, 9, 7).to(dtype).requires_grad_()
            grid = (torch.rand(2, 5, 6, 2) * 2.4 - 1.2).to(dtype).requires_grad_()
            for mode in MODES:
                out = sample(x, grid, mode, "border")
                ref = F.grid_sample(x.float(), grid.float(), mode, "border", align_corners=False)
                assert out.dtype == dtype and torch.equal(out, ref.to(dtype))
                (gx, gg) = torch.autograd.grad(out.float().sum(), (x, grid))
                assert gx.dtype == dtype and gg.dtype == dtype
                assert bool(gx.isfinite().all()) and bool(gg.isfinite().all())

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    def test_full_precision_is_not_clamped(self, dtype: torch.dtype) -> None:
        params = torch.tensor([[1.0, 0, 0, 0, 1, 0, 1, 0]], dtype=dtype)
        grid = Projective().grid(params, (1, 2), align_corners=True)
        assert grid[0, 0, 0, 0] == -1 / Projective.eps  # u / w with |w| floored at eps

    def test_eps_is_the_denominator_floor(self) -> None:
        class Coarse(Projective):
            eps = 0.5

        params = torch.tensor([[1.0, 0, 0, 0, 1, 0, 1, 0]])  # w = x + 1
        pts = torch.tensor([[[-1.0, 0.0], [-0.8, 0.0], [1.0, 0.0]]])
        out = Coarse().map_points(params, pts)[0, :, 0]
        torch.testing.assert_close(out, torch.tensor([-1.0 / 0.5, -0.8 / 0.5, 0.5]))


def _perturbed(name: str, scale: float, **kwargs: object) -> SpatialTransformer:
    torch.manual_seed(0)
    st = SpatialTransformer((2, 16, 12), name, out_size=(8, 10), **kwargs)  # type: ignore[arg-type]
    with torch.no_grad():
        st.head.weight.normal_(0, 0.01)
        st.head.bias.add_(scale * torch.randn_like(st.head.bias).clamp(-1, 1))
    return st


class TestConvertedTransformers:
    @pytest.mark.parametrize("dtype", REDUCED, ids=str)
    @pytest.mark.parametrize("scale", [0.2, 3.0, 6e4])
    @pytest.mark.parametrize("name", NAMES)
    def test_outputs_and_gradients_are_finite(
        self, name: str, scale: float, dtype: torch.dtype
    ) -> None:
        st = _perturbed(name, scale).to(dtype)
        x = torch.rand(3, 2, 16, 12, dtype=dtype, requires_grad=True)
        seen: list[torch.Tensor] = []
        st.transform.register_forward_hook(lambda m, args, grid: seen.append(grid))
        y = st(x)
        assert y.dtype == dtype and y.shape == (3, 2, 8, 10)
        assert bool(y.isfinite().all())
        assert seen[0].dtype == dtype and bool(seen[0].isfinite().all())
        y.float().sum().backward()
        assert x.grad is not None and bool(x.grad.isfinite().all())
        assert st.head.bias.grad is not None and bool(st.head.bias.grad.isfinite().all())

    @pytest.mark.parametrize("mode", ["bicubic", "gaussian"])
    def test_half_projective_on_its_horizon(self, mode: str) -> None:
        """The reported bug: a ``.half()`` projective transformer gave -inf grids, NaN outputs."""
        st = SpatialTransformer((1, 16, 16), "projective", mode=mode, align_corners=True)
        with torch.no_grad():
            st.head.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0, 1, 0]))
        st = st.half()
        y = st(torch.rand(2, 1, 16, 16, dtype=torch.float16))
        assert bool(y.isfinite().all())
        assert bool((y[..., 0] == 0).all())  # the column on the horizon reads the padding

    def test_half_identity_reproduces_the_input(self) -> None:
        st = SpatialTransformer((1, 12, 12), "tps").half()
        x = torch.rand(2, 1, 12, 12, dtype=torch.float16)
        torch.testing.assert_close(st(x), x, rtol=0, atol=2e-3)


class TestAutocast:
    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
    def test_bfloat16_forward_backward_finite_with_a_float32_grid(
        self, name: str, fused: bool
    ) -> None:
        st = _perturbed(name, 0.2)
        seen: list[torch.Tensor] = []
        st.transform.register_forward_hook(lambda m, args, grid: seen.append(grid))
        x = torch.rand(3, 2, 16, 12, requires_grad=True)
        native.path_counts(reset=True)
        with native.use_fused(fused), torch.autocast("cpu", dtype=torch.bfloat16):
            y, params = st(x, return_params=True)
        took_fused = native.path_counts(reset=True) == {"fused": 1}
        assert took_fused == (fused and native.kernels() is not None and name in FUSED_NAMES)
        assert params.dtype == torch.bfloat16  # the localisation net ran in bfloat16
        # the fused kernel makes no grid (no hook call); it samples in float32 all the same
        assert [g.dtype for g in seen] == ([] if took_fused else [torch.float32])
        assert y.dtype == torch.float32
        assert bool(y.isfinite().all())
        y.sum().backward()
        assert x.grad is not None and bool(x.grad.isfinite().all())
        for p in st.parameters():
            assert p.grad is not None and bool(p.grad.isfinite().all())

    def test_reduced_precision_input_is_sampled_in_float32(self) -> None:
        st = _perturbed("affine", 0.2)
        x = torch.rand(2, 2, 16, 12)
        ref = st(x.bfloat16().float())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = st(x.bfloat16())
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, ref, rtol=0, atol=0.05)  # the head ran in bfloat16
