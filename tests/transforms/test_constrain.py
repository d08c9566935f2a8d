"""Bounded params against localisation drift: ``max_translation``, ``scale_range``, ``constrain``
and ``raw_identity``."""

from __future__ import annotations

import pytest
import torch

from torchstn import InvalidInputError, transforms

NAMES = transforms.names(ndim=2)
WITH_TRANSLATION = [n for n in NAMES if transforms.get(n).translation_indices]
WITH_SCALE = [n for n in NAMES if transforms.get(n).scale_index is not None]


def _raw(t: transforms.Transform, values: list[float]) -> torch.Tensor:
    """Raw localisation outputs: every entry of every row set to one of ``values``, plus noise rows."""
    rows = [torch.full((t.num_params,), v) for v in values]
    return torch.cat((torch.stack(rows), 50 * torch.randn(8, t.num_params)))


def test_families_with_bounds() -> None:
    assert set(WITH_TRANSLATION) == {
        "affine",
        "attention",
        "projective",
        "similarity",
        "tps",
        "translation",
    }
    assert set(WITH_SCALE) == {"attention", "similarity"}


@pytest.mark.parametrize("name", NAMES)
def test_without_bounds_constrain_is_the_identity_function(name: str) -> None:
    t = transforms.get(name)
    raw = torch.randn(4, t.num_params) * 100
    assert torch.equal(t.constrain(raw), raw)
    torch.testing.assert_close(t.raw_identity(), t.identity_params())


class TestMaxTranslation:
    @pytest.mark.parametrize("name", WITH_TRANSLATION)
    @pytest.mark.parametrize("bound", [0.05, 0.5, 2.0])
    def test_bounds_translations_for_any_raw_input(self, name: str, bound: float) -> None:
        t = transforms.get(name, max_translation=bound)
        raw = _raw(t, [1e6, -1e6, 0.0, 1e30])
        params = t.constrain(raw)
        assert bool(torch.isfinite(params).all())
        ident = t.identity_params()
        idx = list(t.translation_indices)
        assert bool(((params[:, idx] - ident[idx]).abs() <= bound + 1e-6).all())
        # the extremes reach the bound
        torch.testing.assert_close(params[0, idx], ident[idx] + bound)
        torch.testing.assert_close(params[1, idx], ident[idx] - bound)
        # the other params pass through unchanged
        others = [i for i in range(t.num_params) if i not in idx]
        assert torch.equal(params[:, others], raw[:, others])

    @pytest.mark.parametrize("name", ["affine", "translation", "tps"])
    def test_bounds_where_the_grid_moves(self, name: str) -> None:
        """Geometric check: a pure shift of the identity can move the image centre by at most the bound."""
        t = transforms.get(name, max_translation=0.25)
        raw = t.identity_params() + torch.zeros(3, t.num_params)
        for i in t.translation_indices:
            raw[:, i] += torch.tensor([1e6, -1e6, 3.0])
        grid = t.grid(t.constrain(raw), (9, 9), align_corners=True)
        assert bool((grid[:, 4, 4].abs() <= 0.25 + 1e-6).all())

    def test_small_raw_offsets_are_nearly_unchanged(self) -> None:
        t = transforms.get("translation", max_translation=1.0)
        raw = torch.tensor([[1e-3, -2e-3]])
        torch.testing.assert_close(t.constrain(raw), raw, rtol=1e-5, atol=1e-8)

    def test_gradient_flows_and_is_finite(self) -> None:
        t = transforms.get("affine", max_translation=0.5)
        raw = torch.tensor([[1.0, 0.0, 1e6, 0.0, 1.0, -3.0]], requires_grad=True)
        t.constrain(raw).sum().backward()
        assert raw.grad is not None and bool(torch.isfinite(raw.grad).all())
        assert raw.grad[0, 5] > 0

    @pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "1", True])
    def test_exceptions(self, bad: object) -> None:
        with pytest.raises(InvalidInputError, match="max_translation"):
            transforms.get("affine", max_translation=bad)


class TestScaleRange:
    @pytest.mark.parametrize("name", WITH_SCALE)
    @pytest.mark.parametrize("bounds", [(0.2, 2.0), (0.3, 1.0), (0.5, 0.6)])
    def test_keeps_the_scale_in_range(self, name: str, bounds: tuple[float, float]) -> None:
        t = transforms.get(name, scale_range=bounds)
        raw = _raw(t, [1e6, -1e6, 0.0])
        params = t.constrain(raw)
        s = params[:, t.scale_index]
        lo, hi = bounds
        assert bool(((s >= lo) & (s <= hi)).all())
        torch.testing.assert_close(s[:2], torch.tensor([hi, lo]))

    @pytest.mark.parametrize("name", WITH_SCALE)
    @pytest.mark.parametrize("max_translation", [None, 0.5])
    def test_raw_identity_maps_to_the_identity(
        self, name: str, max_translation: float | None
    ) -> None:
        t = transforms.get(name, scale_range=(0.2, 2.0), max_translation=max_translation)
        torch.testing.assert_close(t.constrain(t.raw_identity()[None])[0], t.identity_params())

    @pytest.mark.parametrize("name", WITH_SCALE)
    @pytest.mark.parametrize(
        "bounds", [(0.3, 1.0), (0.3, 0.36), (0.3, 0.8), (1.5, 3.0), (0.95, 2.0)]
    )
    def test_scale_starts_with_a_healthy_gradient(
        self, name: str, bounds: tuple[float, float]
    ) -> None:
        """Where the identity scale 1 sits at or past a bound (the README's ``(0.3, 1.0)``, the
        co-localisation ``(0.3, 0.36)``), the scale starts a tenth of the range inside it, where
        d(scale)/d(raw) is 36% of the sigmoid's best, ``(hi - lo) / 4`` (it was 0.4%)."""
        t = transforms.get(name, scale_range=bounds, max_translation=0.5)
        raw = t.raw_identity(torch.float64)[None].requires_grad_()
        scale = t.constrain(raw)[0, t.scale_index]
        (grad,) = torch.autograd.grad(scale, raw)
        lo, hi = bounds
        assert grad[0, t.scale_index] >= 0.1 * (hi - lo) / 4
        torch.testing.assert_close(grad[0, t.scale_index].item(), 0.09 * (hi - lo))
        nearer = hi - 0.1 * (hi - lo) if abs(hi - 1) < abs(lo - 1) else lo + 0.1 * (hi - lo)
        torch.testing.assert_close(scale.item(), nearer)
        # the other params still start at the identity, with their full slope
        others = [i for i in range(t.num_params) if i != t.scale_index]
        torch.testing.assert_close(
            t.constrain(raw)[0, others].detach(), t.identity_params(torch.float64)[others]
        )

    @pytest.mark.parametrize("name", WITH_SCALE)
    @pytest.mark.parametrize("bounds", [(0.2, 2.0), (0.5, 1.5), (0.9, 1.9), (0.1, 1.1)])
    def test_identity_is_exact_when_well_inside(
        self, name: str, bounds: tuple[float, float]
    ) -> None:
        """1 at least a tenth of the range from both bounds: the start is the identity itself."""
        t = transforms.get(name, scale_range=bounds)
        raw = t.raw_identity(torch.float64)[None].requires_grad_()
        params = t.constrain(raw)
        torch.testing.assert_close(
            params[0].detach(), t.identity_params(torch.float64), rtol=0, atol=1e-12
        )
        (grad,) = torch.autograd.grad(params[0, t.scale_index], raw)
        assert grad[0, t.scale_index] >= 0.36 * (bounds[1] - bounds[0]) / 4 - 1e-12

    def test_translation_bound_starts_at_full_slope(self) -> None:
        """``max_translation`` is centred on the identity: d(t)/d(raw) = max_translation there."""
        t = transforms.get("attention", scale_range=(0.3, 0.36), max_translation=0.25)
        raw = t.raw_identity(torch.float64)[None].requires_grad_()
        (grad,) = torch.autograd.grad(t.constrain(raw)[0, 1:].sum(), raw)
        torch.testing.assert_close(grad[0, 1:], torch.full((2,), 0.25, dtype=torch.float64))

    @pytest.mark.parametrize("name", [n for n in NAMES if n not in WITH_SCALE])
    def test_families_without_scale_refuse_it(self, name: str) -> None:
        with pytest.raises(InvalidInputError, match="scale_range"):
            transforms.get(name, scale_range=(0.5, 2.0))

    @pytest.mark.parametrize(
        "bad",
        [
            (0.0, 1.0),
            (-1.0, 1.0),
            (2.0, 1.0),
            (1.0, 1.0),
            (0.5,),
            (0.5, 1.0, 2.0),
            "ab",
            1.0,
            (0.5, float("inf")),
            (float("nan"), 1.0),
        ],
    )
    def test_exceptions(self, bad: object) -> None:
        with pytest.raises(InvalidInputError, match="scale_range"):
            transforms.get("attention", scale_range=bad)
