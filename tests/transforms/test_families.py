"""The transform registry and what every registered family must do (smoke, cardinality,
exceptions, gradcheck of the grid generator)."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck

from torchstn import (
    InvalidInputError,
    SpatialTransformer,
    TorchSTNError,
    UnknownNameError,
    transforms,
)
from torchstn.transforms import MatrixTransform, Transform

NAMES = transforms.names(ndim=2)


def _params(
    t: Transform, b: int, scale: float = 0.1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Params near the identity (well-conditioned for every family)."""
    ident = t.identity_params(dtype)
    return ident + scale * torch.randn(b, t.num_params, dtype=dtype)


class TestRegistry:
    def test_names(self) -> None:
        assert set(NAMES) == {
            "affine",
            "attention",
            "projective",
            "rotation",
            "similarity",
            "tps",
            "translation",
        }
        assert list(NAMES) == sorted(NAMES)

    @pytest.mark.parametrize("name", NAMES)
    def test_get_by_name_class_and_instance(self, name: str) -> None:
        t = transforms.get(name)
        assert isinstance(t, Transform) and t.name == name
        assert type(transforms.get(type(t))) is type(t)
        assert transforms.get(t) is t

    def test_options_reach_the_constructor(self) -> None:
        assert transforms.get("tps", grid_size=(3, 5), reg=0.1).num_params == 30
        assert transforms.get("affine", max_translation=0.5).max_translation == 0.5

    def test_unknown_name_lists_the_valid_ones(self) -> None:
        with pytest.raises(UnknownNameError) as err:
            transforms.get("afine")
        msg = str(err.value)
        assert "'afine'" in msg and all(n in msg for n in NAMES)
        assert isinstance(err.value, TorchSTNError) and isinstance(err.value, ValueError)
        with pytest.raises(UnknownNameError):
            transforms.get(3)  # type: ignore[arg-type]

    def test_bad_options(self) -> None:
        with pytest.raises(InvalidInputError, match=r"'affine'.*grid_size"):
            transforms.get("affine", grid_size=3)
        with pytest.raises(InvalidInputError, match="options"):
            transforms.get(transforms.get("affine"), max_translation=1.0)

    def test_register(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(transforms, "_REGISTRY", dict(transforms._REGISTRY))

        class Shift(transforms.Translation):
            name = "shift"

        assert transforms.register(Shift) is Shift
        assert "shift" in transforms.names(ndim=2)
        assert isinstance(transforms.get("shift"), Shift)
        with pytest.raises(InvalidInputError, match="Transform subclass"):
            transforms.register(int)  # type: ignore[arg-type]

    def test_a_new_family_needs_only_the_documented_hooks(self) -> None:
        """``identity_params`` and ``_map_points`` (or ``_to_matrix`` and ``from_matrix``) are all
        a family implements; validation, dtypes and ``grid`` come from the base class."""

        class Swirl(transforms.Transform):
            name, num_params = "swirl", 1

            def identity_params(
                self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
            ) -> torch.Tensor:
                return torch.zeros(1, dtype=dtype or torch.get_default_dtype(), device=device)

            def _map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
                a = params[:, None, :] * (1 - points.pow(2).sum(-1, keepdim=True))  # (B, N, 1)
                c, s = torch.cos(a), torch.sin(a)
                x, y = points.unbind(-1)
                return torch.stack(
                    (c[..., 0] * x - s[..., 0] * y, s[..., 0] * x + c[..., 0] * y), -1
                )

        class Scale(transforms.MatrixTransform):
            name, num_params = "scale", 1

            def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
                return torch.diag_embed(torch.cat((params, params, torch.ones_like(params)), 1))

            def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
                return matrix[:, :1, 0]

        for family in (Swirl(), Scale()):
            st = SpatialTransformer((1, 8, 8), family)
            x = torch.rand(2, 1, 8, 8)
            torch.testing.assert_close(st(x), x, rtol=0, atol=1e-5)  # starts at the identity
            params = family.identity_params()[None].expand(2, -1) + 0.3
            assert family.grid(params.half(), (4, 5)).dtype == torch.float16
            with pytest.raises(InvalidInputError, match="NaN or Inf"):
                family.grid(params * float("nan"), (4, 5))


@pytest.mark.parametrize("name", NAMES)
class TestFamily:
    def test_cardinality(self, name: str) -> None:
        t = transforms.get(name)
        ident = t.identity_params()
        assert ident.shape == (t.num_params,)
        assert t.grid(_params(t, 3), (4, 5)).shape == (3, 4, 5, 2)
        assert t.grid(_params(t, 1), 6).shape == (1, 6, 6, 2)
        assert t.map_points(_params(t, 2), torch.rand(2, 7, 2)).shape == (2, 7, 2)
        if isinstance(t, MatrixTransform):
            assert t.to_matrix(_params(t, 2)).shape == (2, 3, 3)

    def test_dtype_follows_params(self, name: str) -> None:
        t = transforms.get(name)
        ident = t.identity_params(torch.float64)
        assert ident.dtype == torch.float64
        assert t.grid(ident[None], (3, 3)).dtype == torch.float64

    def test_identity_grid_is_the_base_grid(self, name: str, align_corners: bool) -> None:
        from torchstn.functional import base_grid

        t = transforms.get(name)
        grid = t.grid(t.identity_params(torch.float64).expand(2, -1), (5, 7), align_corners)
        torch.testing.assert_close(
            grid, base_grid((5, 7), align_corners, dtype=torch.float64).expand(2, 5, 7, 2)
        )

    def test_grid_agrees_with_map_points(self, name: str, align_corners: bool) -> None:
        from torchstn.functional import base_grid

        t = transforms.get(name)
        params = _params(t, 3, dtype=torch.float64)
        pts = (
            base_grid((4, 6), align_corners, dtype=torch.float64)
            .reshape(1, -1, 2)
            .expand(3, -1, -1)
        )
        torch.testing.assert_close(
            t.grid(params, (4, 6), align_corners).reshape(3, -1, 2), t.map_points(params, pts)
        )

    def test_gradcheck_grid(self, name: str, align_corners: bool) -> None:
        t = transforms.get(name)
        params = _params(t, 2, dtype=torch.float64).requires_grad_()
        assert gradcheck(lambda p: t.grid(p, (3, 4), align_corners), (params,))

    def test_gradcheck_map_points(self, name: str) -> None:
        t = transforms.get(name)
        params = _params(t, 2, dtype=torch.float64).requires_grad_()
        pts = (torch.rand(2, 5, 2, dtype=torch.float64) * 2 - 1).requires_grad_()
        assert gradcheck(t.map_points, (params, pts))

    def test_exception_params(self, name: str) -> None:
        t = transforms.get(name)
        p = t.num_params
        with pytest.raises(InvalidInputError, match=f"takes {p} params"):
            t.grid(torch.zeros(2, p + 1), (3, 3))
        with pytest.raises(InvalidInputError, match="expected 2 dims"):
            t.grid(t.identity_params(), (3, 3))
        with pytest.raises(InvalidInputError, match="floating"):
            t.grid(torch.zeros(2, p, dtype=torch.int64), (3, 3))
        for bad in (float("nan"), float("inf"), -float("inf")):
            params = t.identity_params().repeat(2, 1)
            params[1, -1] = bad
            with pytest.raises(InvalidInputError, match="NaN or Inf"):
                t.grid(params, (3, 3))
            with pytest.raises(InvalidInputError, match="NaN or Inf"):
                t.map_points(params, torch.zeros(2, 1, 2))

    def test_exception_out_size(self, name: str) -> None:
        t = transforms.get(name)
        params = t.identity_params()[None]
        for bad in (0, (0, 3), (3, -1), (2.5, 3), (3,), (1, 2, 3), "3x3", None):
            with pytest.raises(InvalidInputError, match="out_size"):
                t.grid(params, bad)  # type: ignore[arg-type]

    def test_exception_points(self, name: str) -> None:
        t = transforms.get(name)
        params = t.identity_params().repeat(2, 1)
        with pytest.raises(InvalidInputError, match="points"):
            t.map_points(params, torch.zeros(2, 3))
        with pytest.raises(InvalidInputError, match="points"):
            t.map_points(params, torch.zeros(2, 3, 3))
        with pytest.raises(InvalidInputError, match="batch size mismatch"):
            t.map_points(params, torch.zeros(3, 4, 2))
        with pytest.raises(InvalidInputError, match="must match params"):
            t.map_points(params, torch.zeros(2, 4, 2, dtype=torch.float64))
        with pytest.raises(InvalidInputError, match="must match params"):
            t.map_points(params, torch.zeros(2, 4, 2, device="meta"))

    def test_repr(self, name: str) -> None:
        assert type(transforms.get(name)).__name__ in repr(transforms.get(name))
