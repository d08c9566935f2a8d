"""The projective family near its horizon, and ``safe_denominator``."""

from __future__ import annotations

import pytest
import torch

from torchstn import transforms
from torchstn.functional import MODES, base_grid, sample
from torchstn.transforms import safe_denominator
from torchstn.transforms.base import DENOMINATOR_EPS


def _horizon_params(g: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Identity plus ``w = g x + 1``: zero on the line ``x = -1 / g``."""
    return torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, g, 0.0]], dtype=dtype)


class TestSafeDenominator:
    def test_keeps_the_sign_and_the_magnitude_floor(self) -> None:
        w = torch.tensor(
            [-2.0, -1e-3, -1e-7, -1e-30, 0.0, 1e-30, 1e-7, 1e-3, 2.0], dtype=torch.float64
        )
        out = safe_denominator(w)
        assert bool((out.abs() >= DENOMINATOR_EPS).all())
        nonzero = w != 0
        assert torch.equal(torch.sign(out[nonzero]), torch.sign(w[nonzero]))
        assert out[4] > 0  # zero counts as positive
        big = w.abs() >= DENOMINATOR_EPS
        assert torch.equal(out[big], w[big])  # untouched away from zero

    def test_custom_eps(self) -> None:
        torch.testing.assert_close(
            safe_denominator(torch.tensor([-0.01, 0.01]), eps=0.1), torch.tensor([-0.1, 0.1])
        )

    def test_gradient_is_finite_at_zero(self) -> None:
        w = torch.tensor([0.0, -0.0, 1e-9], requires_grad=True)
        (1.0 / safe_denominator(w)).sum().backward()
        assert w.grad is not None and bool(torch.isfinite(w.grad).all())


class TestProjectiveHorizon:
    @pytest.mark.parametrize("mode", MODES)
    def test_denominator_exactly_zero_on_grid_points(self, mode: str) -> None:
        """With align_corners=True the left column of the base grid is x = -1, where w = 0."""
        t = transforms.get("projective")
        params = _horizon_params().requires_grad_()
        pts = base_grid((4, 5), True).reshape(1, -1, 2)
        w = (pts @ params[0, 6:8, None]).squeeze(-1) + 1
        assert bool((w == 0).any())
        grid = t.grid(params, (4, 5), True)
        assert bool(torch.isfinite(grid).all())
        x = torch.rand(1, 2, 4, 5, requires_grad=True)
        out = sample(x, grid, mode, align_corners=True)
        assert bool(torch.isfinite(out).all())
        out.sum().backward()
        assert params.grad is not None and bool(torch.isfinite(params.grad).all())
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())

    @pytest.mark.parametrize("gap", [1e-3, 1e-6, 1e-9, 1e-20, 0.0, -1e-20, -1e-9, -1e-6, -1e-3])
    def test_denominator_approaching_zero(self, gap: float) -> None:
        """``w = 1 + g x`` at x = -1 equals ``gap``; the source point keeps the sign of ``u / w``."""
        t = transforms.get("projective")
        params = _horizon_params(1.0 - gap, torch.float64)
        pts = torch.tensor([[[-1.0, 0.5]]], dtype=torch.float64)
        out = t.map_points(params, pts)
        assert bool(torch.isfinite(out).all())
        w = 1 - float(params[0, 6])  # 1 + g x at x = -1, as the float64 params hold it
        expected_sign = -1.0 if w >= 0 else 1.0  # u = x = -1, v = 0.5, w counts as positive at 0
        assert torch.sign(out[0, 0, 0]).item() == expected_sign
        assert torch.sign(out[0, 0, 1]).item() == -expected_sign
        if abs(w) >= DENOMINATOR_EPS:
            torch.testing.assert_close(out, pts[..., :2] / w)
        else:
            torch.testing.assert_close(out.abs(), pts.abs() / DENOMINATOR_EPS)

    def test_points_past_the_horizon_sample_the_padding(self) -> None:
        t = transforms.get("projective")
        grid = t.grid(_horizon_params(), (4, 5), True)
        x = torch.rand(1, 1, 4, 5) + 1
        out = sample(x, grid, align_corners=True)
        assert bool((out[..., 0] == 0).all())  # the column on the horizon reads zeros
        assert bool((out[..., -1] > 0).all())

    def test_zero_perspective_is_affine(self, align_corners: bool) -> None:
        theta = torch.eye(2, 3) + 0.2 * torch.randn(3, 2, 3)
        params = torch.cat((theta.reshape(3, 6), torch.zeros(3, 2)), dim=1)
        torch.testing.assert_close(
            transforms.get("projective").grid(params, (5, 6), align_corners),
            transforms.get("affine").grid(theta.reshape(3, 6), (5, 6), align_corners),
        )

    def test_from_matrix_normalises_by_the_last_entry(self) -> None:
        m = torch.randn(2, 3, 3)
        m[:, 2, 2] = torch.tensor([2.0, -0.5])
        params = transforms.get("projective").from_matrix(m)
        torch.testing.assert_close(params, (m / m[:, 2:, 2:]).reshape(2, 9)[:, :8])
        # a zero last entry is clamped, not divided by
        m[:, 2, 2] = 0
        assert bool(torch.isfinite(transforms.get("projective").from_matrix(m)).all())


class TestHandWrittenBackward:
    """The projective grid's backward pass (transforms/_fastgrid.py) against autograd of the
    same arithmetic, horizon included."""

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_same_grid_and_gradient_as_autograd(
        self, dtype: torch.dtype, align_corners: bool
    ) -> None:
        from torchstn.functional import grid_axes
        from torchstn.transforms._fastgrid import _forward, _ProjectiveGrid

        gen = torch.Generator().manual_seed(3)
        xs, ys = grid_axes((7, 9), align_corners, dtype=dtype)
        mt = torch.eye(3, dtype=dtype)[None] + 0.2 * torch.randn(6, 3, 3, generator=gen).to(dtype)
        mt[:, 2, 2] = 1.0
        mt[0, 2, 0], mt[0, 2, 1] = 1.0, 0.0  # w = 1 + x: zero on the left edge (floored there)
        ours, ref = mt.clone().requires_grad_(), mt.clone().requires_grad_()
        grid = _ProjectiveGrid.apply(ours, xs, ys, DENOMINATOR_EPS)
        expected = _forward(ref, xs, ys, DENOMINATOR_EPS)[0]
        assert torch.equal(grid, expected)
        upstream = torch.randn(grid.shape, generator=gen).to(dtype)
        grid.backward(upstream)
        expected.backward(upstream)
        assert ours.grad is not None and ref.grad is not None
        scale = float(ref.grad.abs().max())
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(ours.grad, ref.grad, atol=tol * scale, rtol=0)

    def test_gradcheck_through_the_transform(self) -> None:
        t = transforms.get("projective")
        gen = torch.Generator().manual_seed(0)
        params = t.identity_params(torch.float64)[None] + 0.05 * torch.randn(
            3, 8, generator=gen, dtype=torch.float64
        )
        params.requires_grad_()
        assert torch.autograd.gradcheck(lambda p: t.grid(p, (4, 5)), (params,))


def test_affine_grid_keeps_the_generators_arithmetic() -> None:
    """The task generators draw their data through Affine.grid: its values must stay
    ``(a x + c) + b y`` rounded step by step (a fused multiply-add would move some grid points
    by one ulp and change the generated datasets that RESULTS.md reports)."""
    from torchstn.functional import grid_axes

    gen = torch.Generator().manual_seed(0)
    params = transforms.get("affine").identity_params()[None] + 0.3 * torch.randn(
        5, 6, generator=gen
    )
    for size in ((42, 42), (28, 60), (7, 3)):
        xs, ys = grid_axes(size)
        m = params.reshape(-1, 2, 3)
        expected = torch.stack(
            [
                (xs * m[:, k, 0, None] + m[:, k, 2, None])[:, None, :]
                + (ys * m[:, k, 1, None])[:, :, None]
                for k in range(2)
            ],
            dim=-1,
        )
        assert torch.equal(transforms.get("affine").grid(params, size), expected)
