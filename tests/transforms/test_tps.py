"""The thin plate spline family: interpolation, affine reproduction, regulariser, caching."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torchstn import InvalidInputError, transforms
from torchstn.functional import base_grid, sample
from torchstn.transforms import TPS

GRID_SIZES = [2, 3, 4, (3, 5), (5, 2)]


def _perturbed(t: TPS, b: int = 2, scale: float = 0.15) -> torch.Tensor:
    return t.identity_params(torch.float64) + scale * torch.randn(
        b, t.num_params, dtype=torch.float64
    )


class TestTPSConfiguration:
    @pytest.mark.parametrize("grid_size", GRID_SIZES)
    def test_cardinality(self, grid_size: int | tuple[int, int]) -> None:
        t = TPS(grid_size)
        gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
        assert t.num_params == 2 * gh * gw
        assert t.control_points().shape == (gh * gw, 2)
        assert t.grid(t.identity_params()[None], (3, 4)).shape == (1, 3, 4, 2)

    def test_default_is_the_papers_4x4(self) -> None:
        assert transforms.get("tps").num_params == 32

    def test_control_points_span_the_output_frame_row_major(self) -> None:
        cp = TPS((2, 3)).control_points()
        expected = torch.tensor(
            [[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
        )
        torch.testing.assert_close(cp, expected)

    def test_exceptions(self) -> None:
        for bad in (1, (1, 4), (4, 1), 0, "4", (2.5, 3)):
            with pytest.raises(InvalidInputError, match="grid_size"):
                TPS(bad)  # type: ignore[arg-type]
        for reg in (-0.1, float("nan"), float("inf"), "0.1"):
            with pytest.raises(InvalidInputError, match="reg"):
                TPS(reg=reg)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="scale_range"):
            transforms.get("tps", scale_range=(0.5, 2.0))

    def test_repr(self) -> None:
        assert (
            repr(TPS(3, 0.5, max_translation=0.2))
            == "TPS(grid_size=(3, 3), reg=0.5, max_translation=0.2)"
        )


class TestTPSWarp:
    @pytest.mark.parametrize("grid_size", GRID_SIZES)
    @pytest.mark.parametrize("reg", [0.0, 0.5])
    def test_identity_params_give_the_identity(
        self, grid_size: int | tuple[int, int], reg: float, align_corners: bool
    ) -> None:
        t = TPS(grid_size, reg)
        ident = t.identity_params().expand(2, -1)
        torch.testing.assert_close(
            t.grid(ident, (5, 6), align_corners),
            base_grid((5, 6), align_corners).expand(2, 5, 6, 2),
        )
        x = torch.rand(2, 3, 5, 6)
        torch.testing.assert_close(
            sample(x, t.grid(ident, (5, 6), align_corners), align_corners=align_corners),
            x,
            rtol=0,
            atol=1e-5,
        )
        pts = torch.rand(2, 9, 2) * 2 - 1
        torch.testing.assert_close(t.map_points(ident, pts), pts)

    @pytest.mark.parametrize("grid_size", GRID_SIZES)
    def test_control_points_map_to_the_given_sources(
        self, grid_size: int | tuple[int, int]
    ) -> None:
        t = TPS(grid_size)
        params = _perturbed(t)
        cp = t.control_points(torch.float64).expand(2, -1, -1)
        torch.testing.assert_close(t.map_points(params, cp), params.reshape(2, -1, 2))

    @pytest.mark.parametrize("grid_size", GRID_SIZES)
    def test_grid_through_control_points(self, grid_size: int | tuple[int, int]) -> None:
        """With align_corners=True and a grid of the control-point layout, the grid is the params."""
        t = TPS(grid_size)
        gh, gw = t.grid_size
        params = _perturbed(t)
        torch.testing.assert_close(t.grid(params, (gh, gw), True), params.reshape(2, gh, gw, 2))

    @given(
        seed=st.integers(0, 2**31 - 1),
        grid_size=st.sampled_from(GRID_SIZES),
        reg=st.sampled_from([0.0, 0.3]),
    )
    def test_reproduces_affine_maps(
        self, seed: int, grid_size: int | tuple[int, int], reg: float
    ) -> None:
        """Sources that are an affine image of the control points give that affine map everywhere
        (an affine map has zero bending energy, so even the regularised spline is exact)."""
        gen = torch.Generator().manual_seed(seed)
        t = TPS(grid_size, reg)
        a = torch.eye(2, 3, dtype=torch.float64) + 0.3 * torch.randn(
            2, 3, generator=gen, dtype=torch.float64
        )
        cp = t.control_points(torch.float64)
        params = (cp @ a[:, :2].T + a[:, 2]).reshape(1, -1)
        pts = torch.rand(1, 20, 2, generator=gen, dtype=torch.float64) * 2.4 - 1.2
        torch.testing.assert_close(t.map_points(params, pts), pts @ a[:, :2].T + a[:, 2])

    @pytest.mark.parametrize("reg", [0.0, 0.05, 2.0])
    def test_matches_a_direct_solve_of_bookstein_system(self, reg: float) -> None:
        """Reference: solve ``[[U + reg I, P], [P^T, 0]] [w; a] = [sources; 0]`` per batch with
        ``U_ij = r_ij^2 log r_ij^2`` and evaluate ``[U(p, c), 1, x, y] [w; a]``."""
        t = TPS((3, 4), reg)
        params = _perturbed(t, 2, 0.2)
        cp = t.control_points(torch.float64)  # (K, 2)
        k = len(cp)

        def u(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            d2 = torch.cdist(a, b) ** 2
            return torch.where(d2 > 0, d2 * torch.log(d2), torch.zeros_like(d2))

        lhs = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        lhs[:k, :k] = u(cp, cp) + reg * torch.eye(k, dtype=torch.float64)
        lhs[:k, k] = 1
        lhs[:k, k + 1 :] = cp
        lhs[k, :k] = 1
        lhs[k + 1 :, :k] = cp.T
        rhs = torch.zeros(2, k + 3, 2, dtype=torch.float64)
        rhs[:, :k] = params.reshape(2, k, 2)
        coeff = torch.linalg.solve(lhs, rhs)  # (B, K + 3, 2)
        pts = torch.rand(2, 30, 2, dtype=torch.float64) * 2.4 - 1.2
        basis = torch.cat(
            (u(pts, cp.expand(2, k, 2)), torch.ones(2, 30, 1, dtype=torch.float64), pts), dim=-1
        )
        torch.testing.assert_close(t.map_points(params, pts), basis @ coeff)

    def test_grid_agrees_with_map_points(self, align_corners: bool) -> None:
        t = TPS(4)
        params = _perturbed(t, 3)
        pts = (
            base_grid((7, 5), align_corners, dtype=torch.float64)
            .reshape(1, -1, 2)
            .expand(3, -1, -1)
        )
        torch.testing.assert_close(
            t.grid(params, (7, 5), align_corners).reshape(3, -1, 2), t.map_points(params, pts)
        )

    def test_float32_grid_close_to_float64(self) -> None:
        t = TPS(4)
        params = _perturbed(t)
        torch.testing.assert_close(
            t.grid(params.float(), (6, 6)), t.grid(params, (6, 6)).float(), rtol=0, atol=1e-5
        )

    def test_regulariser_changes_the_warp_but_not_the_identity(self) -> None:
        sharp, smooth = TPS(4), TPS(4, reg=1.0)
        params = _perturbed(sharp)
        g0, g1 = sharp.grid(params, (8, 8)), smooth.grid(params, (8, 8))
        assert (g0 - g1).abs().max() > 1e-3
        # the smoothed spline no longer passes through every control point
        cp = sharp.control_points(torch.float64).expand(2, -1, -1)
        assert (smooth.map_points(params, cp) - params.reshape(2, -1, 2)).abs().max() > 1e-3
        # and bends less: its displacement is closer to an affine fit
        ident = sharp.identity_params(torch.float64).expand(2, -1)
        torch.testing.assert_close(smooth.grid(ident, (8, 8)), sharp.grid(ident, (8, 8)))

    def test_larger_regulariser_bends_less(self) -> None:
        """The residual of the best affine fit to the warped grid shrinks as ``reg`` grows."""
        params = _perturbed(TPS(4), 1, 0.2)
        pts = base_grid((12, 12), dtype=torch.float64).reshape(-1, 2)
        design = torch.cat((pts, torch.ones(len(pts), 1, dtype=torch.float64)), dim=1)

        def nonaffine(reg: float) -> float:
            g = TPS(4, reg).grid(params, (12, 12)).reshape(-1, 2)
            fit = design @ torch.linalg.lstsq(design, g).solution
            return float((g - fit).norm())

        residuals = [nonaffine(r) for r in (0.0, 0.1, 1.0, 10.0)]
        assert residuals == sorted(residuals, reverse=True)
        assert residuals[-1] < 0.5 * residuals[0]


class TestTPSConstants:
    def test_system_is_solved_once_when_built_never_per_call(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[tuple[int, ...]] = []
        real_inv = torch.linalg.inv

        def counting_inv(a: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
            calls.append(tuple(a.shape))
            return real_inv(a, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(torch.linalg, "inv", counting_inv)
        t = TPS(4)
        assert calls == [(19, 19)]  # one solve of the (K + 3) x (K + 3) system
        for b, size, align in [(1, (5, 5), False), (7, (8, 6), True)]:
            t.grid(t.identity_params()[None].expand(b, -1) + 0.01, size, align)
        for dtype in (torch.float32, torch.float64):
            t.map_points(t.identity_params(dtype)[None], torch.rand(1, 5, 2, dtype=dtype))
        assert t.system_inverse(torch.float32).dtype == torch.float32
        assert calls == [(19, 19)]

    def test_constants_are_float64_non_persistent_buffers(self) -> None:
        t = TPS((3, 4), reg=0.2)
        buffers = dict(t.named_buffers())
        assert set(buffers) == {"centres", "system_inv"}
        assert buffers["centres"].shape == (12, 2) and buffers["system_inv"].shape == (15, 15)
        assert all(b.dtype == torch.float64 for b in buffers.values())
        assert t.state_dict() == {}  # derived from the configuration, not saved
        assert list(t.parameters()) == []
        torch.testing.assert_close(t.control_points(torch.float64), buffers["centres"])

    def test_system_inverse_inverts_the_system(self) -> None:
        t = TPS(3, reg=0.5)
        cp = t.control_points(torch.float64)
        k = len(cp)
        d2 = torch.cdist(cp, cp) ** 2
        u = torch.where(d2 > 0, d2 * torch.log(d2), torch.zeros_like(d2))
        lhs = torch.zeros(k + 3, k + 3, dtype=torch.float64)
        lhs[:k, :k] = u + 0.5 * torch.eye(k, dtype=torch.float64)
        lhs[:k, k] = lhs[k, :k] = 1
        lhs[:k, k + 1 :] = cp
        lhs[k + 1 :, :k] = cp.T
        torch.testing.assert_close(
            t.system_inverse() @ lhs, torch.eye(k + 3, dtype=torch.float64), rtol=0, atol=1e-10
        )

    def test_constants_are_per_instance_and_configuration(self) -> None:
        a, b = TPS(3), TPS(3, reg=1.0)
        assert not torch.allclose(a.system_inverse(), b.system_inverse())

    def test_any_number_of_grid_sizes_keeps_a_bounded_cache(self) -> None:
        t = TPS(2)
        ident = t.identity_params()[None]
        before = {k: v.clone() for k, v in t.named_buffers()}
        for n in range(1, 40):
            t.grid(ident, (n, 2))
        assert 0 < len(t._grid_cache) <= 8
        for k, v in t.named_buffers():
            assert torch.equal(v, before[k])
        torch.testing.assert_close(t.grid(ident, (3, 2)), base_grid((3, 2))[None])

    def test_kept_matrix_follows_dtype_device_and_inference_mode(self) -> None:
        """A size first seen under inference_mode still trains; a cast rebuilds the matrix."""
        t = TPS(3)
        params = (t.identity_params() + 0.05 * torch.randn(t.num_params))[None]
        with torch.inference_mode():
            first = t.grid(params, (5, 7))
        trained = params.clone().requires_grad_()
        again = t.grid(trained, (5, 7))
        again.sum().backward()
        assert trained.grad is not None and torch.equal(again.detach(), first)
        fresh = TPS(3).grid(params, (5, 7))
        assert torch.equal(fresh, first)  # kept values are the values a fresh build gives
        t.float()
        g32 = t.grid(params, (5, 7))
        assert len({k[-1] for k in t._grid_cache}) == 2  # float64 and float32 buffers, each kept
        torch.testing.assert_close(g32, first, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("size", [(1, 1), (1, 5), (6, 1), (7, 9)])
    def test_separable_grid_kernel_is_the_kernel(
        self, size: tuple[int, int], align_corners: bool
    ) -> None:
        """The grid's ``U(|p - c|)`` is built from per-axis squares: the same numbers, bit for bit."""
        from torchstn.transforms.tps import _radial, _radial_on_grid

        centres = TPS((3, 5)).centres
        pts = base_grid(size, align_corners, dtype=torch.float64)
        assert torch.equal(
            _radial_on_grid((pts[0, :, 0], pts[:, 0, 1]), centres),
            _radial(pts.reshape(-1, 2), centres),
        )

    def test_float32_constants_stay_within_a_few_ulps(self, align_corners: bool) -> None:
        t64, t32 = TPS(4), TPS(4).float()
        assert t32.centres.dtype == t32.system_inv.dtype == torch.float32
        params = _perturbed(t64, 3).float()
        g64, g32 = (
            t64.grid(params, (40, 37), align_corners),
            t32.grid(params, (40, 37), align_corners),
        )
        torch.testing.assert_close(g32, g64, rtol=0, atol=4e-6)  # float32 ulp at 1: 1.2e-7
        torch.testing.assert_close(
            t32.grid(t32.identity_params()[None], (5, 6), align_corners),
            base_grid((5, 6), align_corners)[None],
        )
