"""Matrix families (affine, attention, similarity, rotation, translation, projective): the
documented matrices, and property tests of map_points / grid / inverse_params / compose."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torchstn import InvalidInputError, transforms
from torchstn.functional import base_grid
from torchstn.transforms import MatrixTransform

MATRIX_FAMILIES = [
    n for n in transforms.names(ndim=2) if isinstance(transforms.get(n), MatrixTransform)
]
TOL = {"rtol": 1e-9, "atol": 1e-9}


def test_every_family_but_tps_is_a_matrix_family() -> None:
    assert sorted(MATRIX_FAMILIES) == [
        "affine",
        "attention",
        "projective",
        "rotation",
        "similarity",
        "translation",
    ]


def _family(name: str) -> MatrixTransform:
    t = transforms.get(name)
    assert isinstance(t, MatrixTransform)
    return t


@st.composite
def near_identity(draw: st.DrawFn, name: str, batch: int = 2, spread: float = 0.3) -> torch.Tensor:
    """``(batch, P)`` float64 params within ``spread`` of the identity (perspective terms within
    ``spread / 2``): well-conditioned, invertible matrices."""
    t = _family(name)
    n = batch * t.num_params
    delta = torch.tensor(
        draw(st.lists(st.floats(-spread, spread), min_size=n, max_size=n)), dtype=torch.float64
    )
    delta = delta.reshape(batch, t.num_params)
    if name == "projective":
        delta[:, 6:] /= 2
    return t.identity_params(torch.float64) + delta


@st.composite
def points(draw: st.DrawFn, batch: int = 2, n: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return torch.rand(batch, n, 2, generator=gen, dtype=torch.float64) * 3 - 1.5


@pytest.mark.parametrize("name", MATRIX_FAMILIES)
class TestMatrixProperties:
    @given(data=st.data(), h=st.integers(1, 6), w=st.integers(1, 6), align=st.booleans())
    def test_grid_is_map_points_on_the_base_grid(
        self, name: str, data: st.DataObject, h: int, w: int, align: bool
    ) -> None:
        t = _family(name)
        params = data.draw(near_identity(name))
        pts = base_grid((h, w), align, dtype=torch.float64).reshape(1, -1, 2).expand(2, -1, -1)
        torch.testing.assert_close(
            t.grid(params, (h, w), align), t.map_points(params, pts).reshape(2, h, w, 2), **TOL
        )

    @given(data=st.data())
    def test_map_points_is_the_matrix_action(self, name: str, data: st.DataObject) -> None:
        t = _family(name)
        params, pts = data.draw(near_identity(name)), data.draw(points())
        homo = torch.cat((pts, torch.ones_like(pts[..., :1])), dim=-1) @ t.to_matrix(
            params
        ).transpose(1, 2)
        torch.testing.assert_close(t.map_points(params, pts), homo[..., :2] / homo[..., 2:], **TOL)

    @given(data=st.data())
    def test_inverse_then_forward_returns_the_points(self, name: str, data: st.DataObject) -> None:
        t = _family(name)
        params, pts = data.draw(near_identity(name)), data.draw(points())
        inv = t.inverse_params(params)
        torch.testing.assert_close(t.map_points(params, t.map_points(inv, pts)), pts, **TOL)
        torch.testing.assert_close(t.map_points(inv, t.map_points(params, pts)), pts, **TOL)
        torch.testing.assert_close(t.inverse_params(inv), params, **TOL)

    @given(data=st.data())
    def test_compose_is_mapping_in_sequence(self, name: str, data: st.DataObject) -> None:
        t = _family(name)
        a, b, pts = (
            data.draw(near_identity(name)),
            data.draw(near_identity(name)),
            data.draw(points()),
        )
        torch.testing.assert_close(
            t.map_points(t.compose(a, b), pts), t.map_points(a, t.map_points(b, pts)), **TOL
        )

    @given(data=st.data())
    def test_compose_is_associative(self, name: str, data: st.DataObject) -> None:
        t = _family(name)
        a, b, c = (data.draw(near_identity(name, spread=0.2)) for _ in range(3))
        torch.testing.assert_close(
            t.compose(t.compose(a, b), c), t.compose(a, t.compose(b, c)), **TOL
        )

    @given(data=st.data())
    def test_identity_is_neutral_and_inverse_cancels(self, name: str, data: st.DataObject) -> None:
        t = _family(name)
        a = data.draw(near_identity(name))
        ident = t.identity_params(torch.float64).expand(2, -1)
        torch.testing.assert_close(t.compose(a, ident), a, **TOL)
        torch.testing.assert_close(t.compose(ident, a), a, **TOL)
        torch.testing.assert_close(t.compose(a, t.inverse_params(a)), ident, **TOL)
        torch.testing.assert_close(t.compose(t.inverse_params(a), a), ident, **TOL)

    @given(data=st.data())
    def test_matrix_round_trip(self, name: str, data: st.DataObject) -> None:
        t = _family(name)
        a = data.draw(near_identity(name))
        torch.testing.assert_close(t.from_matrix(t.to_matrix(a)), a, **TOL)

    def test_compose_broadcasts_a_single_row(self, name: str) -> None:
        t = _family(name)
        one = t.identity_params()[None] + 0.1 * torch.randn(1, t.num_params)
        many = t.identity_params()[None] + 0.1 * torch.randn(3, t.num_params)
        out = t.compose(one, many)
        assert out.shape == (3, t.num_params)
        torch.testing.assert_close(out[2:], t.compose(one, many[2:]))
        assert t.compose(many, one).shape == (3, t.num_params)

    def test_compose_exceptions(self, name: str) -> None:
        t = _family(name)
        p = t.num_params
        with pytest.raises(InvalidInputError, match="batch size mismatch"):
            t.compose(torch.zeros(2, p), torch.zeros(3, p))
        with pytest.raises(InvalidInputError, match="second"):
            t.compose(torch.zeros(2, p), torch.zeros(2, p + 1))
        with pytest.raises(InvalidInputError, match=r"first.*NaN"):
            t.compose(torch.full((2, p), float("nan")), torch.zeros(2, p))
        with pytest.raises(InvalidInputError, match="device"):
            t.compose(torch.zeros(2, p), torch.zeros(2, p, device="meta"))
        with pytest.raises(InvalidInputError, match="dtype"):
            t.compose(torch.zeros(2, p), torch.zeros(2, p, dtype=torch.float64))

    def test_inverse_exceptions(self, name: str) -> None:
        t = _family(name)
        with pytest.raises(InvalidInputError, match="params"):
            t.inverse_params(torch.zeros(t.num_params))


class TestDocumentedMatrices:
    """Each family's matrix, written out by hand from its docstring."""

    def test_attention(self) -> None:
        t = transforms.get("attention")
        torch.testing.assert_close(
            t.to_matrix(torch.tensor([[0.5, 0.1, -0.2]]))[0],
            torch.tensor([[0.5, 0.0, 0.1], [0.0, 0.5, -0.2], [0.0, 0.0, 1.0]]),
        )
        pts = torch.rand(1, 5, 2)
        torch.testing.assert_close(
            t.map_points(torch.tensor([[0.5, 0.1, -0.2]]), pts),
            0.5 * pts + torch.tensor([0.1, -0.2]),
        )
        torch.testing.assert_close(t.identity_params(), torch.tensor([1.0, 0.0, 0.0]))

    def test_similarity(self) -> None:
        t = transforms.get("similarity")
        out = t.map_points(
            torch.tensor([[math.pi / 2, 2.0, 0.1, 0.2]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        )
        torch.testing.assert_close(out, torch.tensor([[[0.1, 2.2], [-1.9, 0.2]]]))

    def test_rotation_is_counter_clockwise_in_xy(self) -> None:
        t = transforms.get("rotation")
        out = t.map_points(
            torch.tensor([[math.pi / 2]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
        )
        torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]]]))

    def test_translation(self) -> None:
        t = transforms.get("translation")
        pts = torch.rand(2, 4, 2)
        shift = torch.tensor([[0.5, -0.25], [0.0, 1.0]])
        torch.testing.assert_close(t.map_points(shift, pts), pts + shift[:, None])

    def test_projective(self) -> None:
        t = transforms.get("projective")
        params = torch.tensor([[1.0, 0.2, 0.1, -0.1, 0.9, 0.0, 0.3, -0.2]])
        pts = torch.tensor([[[0.5, -0.5]]])
        u, v, w = 0.5 + 0.2 * -0.5 + 0.1, -0.1 * 0.5 + 0.9 * -0.5, 0.3 * 0.5 - 0.2 * -0.5 + 1
        torch.testing.assert_close(t.map_points(params, pts), torch.tensor([[[u / w, v / w]]]))
