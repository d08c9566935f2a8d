"""Coordinate conventions: pixel-centre <-> normalised frame, the base grid, pixel-space matrices.

The conventions are checked against what ``grid_sample`` actually reads, not against formulas
copied from the implementation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from torchstn import InvalidInputError, transforms
from torchstn.functional import (
    base_grid,
    normalized_matrix_to_pixel,
    normalized_to_pixel,
    pixel_matrix_to_normalized,
    pixel_to_normalized,
)

SIZES = [(1, 1), (1, 5), (5, 1), (2, 3), (4, 4), (7, 5)]


def _ramp(h: int, w: int, a: float = 0.3, b: float = -0.7, c: float = 2.0) -> torch.Tensor:
    """``(1, 1, H, W)`` float64 image ``a x + b y + c``: bilinear sampling inside it is exact."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return (a * xs + b * ys + c)[None, None]


def _pixel_centres(h: int, w: int) -> torch.Tensor:
    """``(H, W, 2)`` pixel-centre coordinates ``(x, y) = (j, i)`` built by hand."""
    out = torch.empty(h, w, 2, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = torch.tensor([j, i], dtype=torch.float64)
    return out


class TestPixelToNormalized:
    def test_smoke_shape(self, align_corners: bool) -> None:
        pts = torch.rand(3, 5, 2)
        assert pixel_to_normalized(pts, (4, 6), align_corners).shape == (3, 5, 2)

    @pytest.mark.parametrize("size", [(4, 6), (5, 3), (9, 9)])
    def test_documented_centres_and_edges(self, size: tuple[int, int]) -> None:
        h, w = size
        first = torch.tensor([[0.0, 0.0]])
        last = torch.tensor([[w - 1.0, h - 1.0]])
        edge = torch.tensor([[-0.5, -0.5], [w - 0.5, h - 0.5]])
        # align_corners=False: -1 and 1 are the outer edges, the first centre is half a pixel in.
        torch.testing.assert_close(
            pixel_to_normalized(first, size, False), torch.tensor([[-1 + 1 / w, -1 + 1 / h]])
        )
        torch.testing.assert_close(
            pixel_to_normalized(last, size, False), torch.tensor([[1 - 1 / w, 1 - 1 / h]])
        )
        torch.testing.assert_close(
            pixel_to_normalized(edge, size, False), torch.tensor([[-1.0, -1.0], [1.0, 1.0]])
        )
        # align_corners=True: -1 and 1 are the border pixels' centres.
        torch.testing.assert_close(
            pixel_to_normalized(first, size, True), torch.tensor([[-1.0, -1.0]])
        )
        torch.testing.assert_close(
            pixel_to_normalized(last, size, True), torch.tensor([[1.0, 1.0]])
        )

    @pytest.mark.parametrize("size", SIZES)
    def test_grid_sample_reads_the_pixel(self, size: tuple[int, int], align_corners: bool) -> None:
        """Sampling at the normalised position of pixel (i, j) returns exactly that pixel."""
        h, w = size
        img = torch.rand(1, 2, h, w, dtype=torch.float64)
        grid = pixel_to_normalized(_pixel_centres(h, w), size, align_corners)[None]
        out = F.grid_sample(img, grid, align_corners=align_corners)
        torch.testing.assert_close(out, img, rtol=0, atol=1e-12)

    def test_unit_side_with_align_corners(self) -> None:
        """A one-pixel side has no extent: its pixel sits at 0 (as in ``affine_grid``) and every
        normalised value reads it (as in ``grid_sample``)."""
        torch.testing.assert_close(
            pixel_to_normalized(torch.tensor([[0.0, 2.0]]), (5, 1), True),
            torch.tensor([[0.0, 0.0]]),
        )
        norm = torch.tensor([[-1.0, 0.5], [0.3, -0.2], [1.0, 1.0]])
        pix = normalized_to_pixel(norm, (5, 1), True)
        torch.testing.assert_close(pix[:, 0], torch.zeros(3))
        torch.testing.assert_close(pix[:, 1], (norm[:, 1] + 1) * 2)

    def test_batched_leading_dims(self) -> None:
        pts = torch.rand(2, 3, 4, 2) * 5
        out = pixel_to_normalized(pts, (6, 7))
        torch.testing.assert_close(out[1, 2], pixel_to_normalized(pts[1, 2], (6, 7)))

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="points"):
            pixel_to_normalized(torch.zeros(3, 3), (4, 4))
        with pytest.raises(InvalidInputError, match="floating"):
            pixel_to_normalized(torch.zeros(3, 2, dtype=torch.long), (4, 4))
        with pytest.raises(InvalidInputError, match="size"):
            pixel_to_normalized(torch.zeros(3, 2), (0, 4))
        with pytest.raises(InvalidInputError, match="size"):
            pixel_to_normalized(torch.zeros(3, 2), (4, 4, 4))


class TestNormalizedToPixel:
    def test_documented_edges(self) -> None:
        pts = torch.tensor([[-1.0, 1.0]])
        torch.testing.assert_close(normalized_to_pixel(pts, (4, 4)), torch.tensor([[-0.5, 3.5]]))
        torch.testing.assert_close(
            normalized_to_pixel(pts, (4, 4), True), torch.tensor([[0.0, 3.0]])
        )

    @pytest.mark.parametrize("size", SIZES)
    def test_matches_what_grid_sample_reads(
        self, size: tuple[int, int], align_corners: bool
    ) -> None:
        """On a ramp image ``a x + b y + c`` bilinear sampling returns ``a x_pix + b y_pix + c``."""
        h, w = size
        img = _ramp(h, w)
        pix = torch.rand(1, 20, 2, dtype=torch.float64) * torch.tensor([w - 1.0, h - 1.0])
        # Random normalised points whose pixel position lies inside [0, W-1] x [0, H-1].
        norm = torch.rand(1, 20, 2, dtype=torch.float64) * 2 - 1
        if not align_corners:
            norm = pixel_to_normalized(pix, size, False)
        pix_of = normalized_to_pixel(norm, size, align_corners)
        assert bool((pix_of >= -1e-9).all()) and bool(
            (pix_of <= torch.tensor([w - 1, h - 1]) + 1e-9).all()
        )
        out = F.grid_sample(img, norm[:, None], align_corners=align_corners)[0, 0, 0]
        torch.testing.assert_close(out, 0.3 * pix_of[0, :, 0] - 0.7 * pix_of[0, :, 1] + 2.0)

    @given(
        h=st.integers(2, 40),
        w=st.integers(2, 40),
        seed=st.integers(0, 2**31 - 1),
        align=st.booleans(),
    )
    def test_round_trips(self, h: int, w: int, seed: int, align: bool) -> None:
        gen = torch.Generator().manual_seed(seed)
        pix = torch.rand(10, 2, generator=gen, dtype=torch.float64) * 60 - 10
        torch.testing.assert_close(
            normalized_to_pixel(pixel_to_normalized(pix, (h, w), align), (h, w), align), pix
        )
        norm = torch.rand(10, 2, generator=gen, dtype=torch.float64) * 4 - 2
        torch.testing.assert_close(
            pixel_to_normalized(normalized_to_pixel(norm, (h, w), align), (h, w), align), norm
        )

    def test_int_size_means_square(self) -> None:
        pts = torch.rand(4, 2)
        torch.testing.assert_close(normalized_to_pixel(pts, 5), normalized_to_pixel(pts, (5, 5)))

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="points"):
            normalized_to_pixel(torch.zeros(3), (4, 4))
        with pytest.raises(InvalidInputError, match="size"):
            normalized_to_pixel(torch.zeros(3, 2), (2.5, 4))


class TestBaseGrid:
    @pytest.mark.parametrize("size", SIZES)
    @pytest.mark.filterwarnings("ignore:.*unit-size grids:UserWarning")
    def test_equals_affine_grid_identity(self, size: tuple[int, int], align_corners: bool) -> None:
        theta = torch.eye(2, 3, dtype=torch.float64)[None]
        ref = F.affine_grid(theta, (1, 1, *size), align_corners=align_corners)[0]
        got = base_grid(size, align_corners, dtype=torch.float64)
        assert got.shape == (*size, 2)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)

    @pytest.mark.parametrize("size", [(2, 3), (4, 4), (7, 5)])
    def test_holds_pixel_centres_in_xy_order(
        self, size: tuple[int, int], align_corners: bool
    ) -> None:
        expected = pixel_to_normalized(_pixel_centres(*size), size, align_corners)
        torch.testing.assert_close(base_grid(size, align_corners, dtype=torch.float64), expected)

    def test_dtype_and_device(self) -> None:
        g = base_grid((3, 4), dtype=torch.float64, device="cpu")
        assert g.dtype == torch.float64 and g.device.type == "cpu"
        assert base_grid((3, 4)).dtype == torch.get_default_dtype()

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="size"):
            base_grid((0, 3))
        with pytest.raises(InvalidInputError, match="size"):
            base_grid("big")  # type: ignore[arg-type]


class TestPixelMatrixToNormalized:
    def test_documented_example(self, align_corners: bool) -> None:
        """Shifting by 1.5 px sends output pixel (1, 1) to input point (2.5, 2.5)."""
        shift = torch.tensor([[[1.0, 0.0, 1.5], [0.0, 1.0, 1.5]]])
        m = pixel_matrix_to_normalized(shift, (4, 4), align_corners=align_corners)
        assert m.shape == (1, 3, 3)
        src = m[0] @ torch.cat(
            (pixel_to_normalized(torch.tensor([1.0, 1.0]), (4, 4), align_corners), torch.ones(1))
        )
        torch.testing.assert_close(
            src[:2], pixel_to_normalized(torch.tensor([2.5, 2.5]), (4, 4), align_corners)
        )

    @pytest.mark.parametrize(
        ("in_size", "out_size"), [((6, 7), (6, 7)), ((6, 7), (4, 5)), ((5, 9), (8, 3))]
    )
    @pytest.mark.parametrize("kind", ["affine", "projective"])
    def test_agrees_with_sampling_in_pixel_terms(
        self, in_size: tuple[int, int], out_size: tuple[int, int], kind: str, align_corners: bool
    ) -> None:
        """Output pixel (i, j) reads the input at ``M (j, i, 1)`` in pixel coordinates."""
        (h, w), (ho, wo) = in_size, out_size
        m = torch.zeros(2, 3, 3, dtype=torch.float64)
        m[:, :2, :2] = torch.rand(2, 2, 2, dtype=torch.float64) - 0.5
        m[:, 2, 2] = 1
        if kind == "projective":
            m[:, 2, :2] = (torch.rand(2, 2, dtype=torch.float64) - 0.5) * 0.05
        pts = _pixel_centres(ho, wo).reshape(-1, 2)
        homo = torch.cat((pts, torch.ones(len(pts), 1, dtype=torch.float64)), dim=1)
        # place the source points strictly inside the input, where the ramp is exact
        for b in range(2):
            src = homo @ m[b].T
            src = src[:, :2] / src[:, 2:]
            lo, hi = src.min(0).values, src.max(0).values
            room = torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)
            assert bool((hi - lo < room).all())
            t = -lo + (room - (hi - lo)) * 0.5
            m[b] = torch.tensor([[1, 0, t[0]], [0, 1, t[1]], [0, 0, 1]], dtype=torch.float64) @ m[b]
        src = homo @ m.transpose(1, 2)
        src = (src[..., :2] / src[..., 2:]).reshape(2, ho, wo, 2)  # (B, Ho, Wo, 2) pixel coords
        expected = 0.3 * src[..., 0] - 0.7 * src[..., 1] + 2.0

        matrix = m if kind == "projective" else m[:, :2, :]
        norm = pixel_matrix_to_normalized(matrix, in_size, out_size, align_corners)
        params = (
            (norm / norm[:, 2:, 2:]).reshape(2, 9)[:, :8]
            if kind == "projective"
            else norm[:, :2, :].reshape(2, 6)
        )
        grid = transforms.get(kind).grid(params, out_size, align_corners)
        out = F.grid_sample(_ramp(h, w).expand(2, 1, h, w), grid, align_corners=align_corners)
        torch.testing.assert_close(out[:, 0], expected, rtol=0, atol=1e-9)

    def test_accepts_2x3_and_3x3(self) -> None:
        a = torch.rand(3, 2, 3)
        full = torch.cat((a, torch.tensor([0.0, 0.0, 1.0]).expand(3, 1, 3)), dim=1)
        torch.testing.assert_close(
            pixel_matrix_to_normalized(a, (5, 6)), pixel_matrix_to_normalized(full, (5, 6))
        )

    def test_identity_stays_identity(self, align_corners: bool) -> None:
        eye = torch.eye(3)[None]
        torch.testing.assert_close(
            pixel_matrix_to_normalized(eye, (5, 7), None, align_corners), eye
        )

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="matrix"):
            pixel_matrix_to_normalized(torch.zeros(1, 3, 2), (4, 4))
        with pytest.raises(InvalidInputError, match="matrix"):
            pixel_matrix_to_normalized(torch.zeros(2, 3), (4, 4))
        with pytest.raises(InvalidInputError, match="floating"):
            pixel_matrix_to_normalized(torch.zeros(1, 2, 3, dtype=torch.int32), (4, 4))
        with pytest.raises(InvalidInputError, match="size"):
            pixel_matrix_to_normalized(torch.zeros(1, 2, 3), (4, -4))


def _random_matrices(b: int, projective: bool, gen: torch.Generator) -> torch.Tensor:
    """``(B, 3, 3)`` float64 matrices near the identity (projective: a small perspective row)."""
    m = torch.eye(3, dtype=torch.float64) + 0.3 * torch.randn(
        b, 3, 3, generator=gen, dtype=torch.float64
    )
    m[:, 2] = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    if projective:
        m[:, 2, :2] = 0.1 * torch.randn(b, 2, generator=gen, dtype=torch.float64)
    return m


class TestNormalizedMatrixToPixel:
    @pytest.mark.parametrize(
        ("in_size", "out_size"), [((6, 7), (6, 7)), ((6, 7), (4, 5)), ((5, 9), (8, 3))]
    )
    @pytest.mark.parametrize("name", ["affine", "projective", "similarity", "attention"])
    def test_maps_output_pixels_to_the_pixels_the_grid_reads(
        self, in_size: tuple[int, int], out_size: tuple[int, int], name: str, align_corners: bool
    ) -> None:
        """Output pixel centre ``(j, i)`` goes to the input pixel point the transform's grid reads."""
        t = transforms.get(name)
        params = t.identity_params(torch.float64) + 0.2 * torch.randn(
            3, t.num_params, dtype=torch.float64
        )
        if name == "projective":
            params[:, 6:] *= 0.1
        grid = t.grid(params, out_size, align_corners)  # (B, Ho, Wo, 2) normalised
        expected = normalized_to_pixel(grid, in_size, align_corners)
        m = normalized_matrix_to_pixel(t.to_matrix(params), in_size, out_size, align_corners)
        homo = torch.cat(
            (_pixel_centres(*out_size), torch.ones(*out_size, 1, dtype=torch.float64)), -1
        )
        got = torch.einsum("bij,hwj->bhwi", m, homo)
        torch.testing.assert_close(got[..., :2] / got[..., 2:], expected, rtol=0, atol=1e-10)

    @given(
        h=st.integers(1, 40),
        w=st.integers(1, 40),
        ho=st.integers(1, 40),
        wo=st.integers(1, 40),
        seed=st.integers(0, 2**31 - 1),
        align=st.booleans(),
        projective=st.booleans(),
    )
    def test_exact_inverse_of_pixel_matrix_to_normalized(
        self, h: int, w: int, ho: int, wo: int, seed: int, align: bool, projective: bool
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        m = _random_matrices(4, projective, gen)
        sizes = ((h, w), (ho, wo))
        there = normalized_matrix_to_pixel(m, *sizes, align_corners=align)
        torch.testing.assert_close(pixel_matrix_to_normalized(there, *sizes, align), m)
        back = pixel_matrix_to_normalized(m, *sizes, align_corners=align)
        torch.testing.assert_close(normalized_matrix_to_pixel(back, *sizes, align), m)

    def test_accepts_2x3_and_3x3_and_defaults_out_size(self) -> None:
        a = torch.rand(3, 2, 3)
        full = torch.cat((a, torch.tensor([0.0, 0.0, 1.0]).expand(3, 1, 3)), dim=1)
        torch.testing.assert_close(
            normalized_matrix_to_pixel(a, (5, 6)), normalized_matrix_to_pixel(full, (5, 6), (5, 6))
        )
        assert normalized_matrix_to_pixel(a, (5, 6)).shape == (3, 3, 3)

    def test_identity_stays_identity(self, align_corners: bool) -> None:
        eye = torch.eye(3)[None]
        torch.testing.assert_close(
            normalized_matrix_to_pixel(eye, (5, 7), None, align_corners), eye
        )

    def test_resize_is_a_pixel_scaling(self) -> None:
        """The identity between sizes, with align_corners=True, is the ratio of the pixel spans."""
        m = normalized_matrix_to_pixel(torch.eye(3)[None], (9, 5), (5, 3), align_corners=True)
        torch.testing.assert_close(m[0], torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 1]]))

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match=r"matrix: expected \(B, 2, 3\) or \(B, 3, 3\)"):
            normalized_matrix_to_pixel(torch.zeros(1, 3, 2), (4, 4))
        with pytest.raises(InvalidInputError, match="matrix: expected 3 dims"):
            normalized_matrix_to_pixel(torch.zeros(2, 3), (4, 4))
        with pytest.raises(InvalidInputError, match="floating"):
            normalized_matrix_to_pixel(torch.zeros(1, 2, 3, dtype=torch.int32), (4, 4))
        with pytest.raises(InvalidInputError, match="size"):
            normalized_matrix_to_pixel(torch.zeros(1, 2, 3), (4, 4), (0, 4))


class TestGridAxes:
    def test_axes_are_base_grid_and_kept(self) -> None:
        from torchstn.functional import grid_axes

        xs, ys = grid_axes((3, 5), False, dtype=torch.float64)
        grid = base_grid((3, 5), False, dtype=torch.float64)
        assert torch.equal(grid[0, :, 0], xs) and torch.equal(grid[:, 0, 1], ys)
        again = grid_axes((3, 5), False, dtype=torch.float64)
        assert again[0] is xs  # kept, not rebuilt
        assert grid_axes((3, 5), True, dtype=torch.float64)[0] is not xs

    def test_first_built_under_inference_mode_still_trains(self) -> None:
        from torchstn.transforms import get

        t = get("projective")
        params = t.identity_params(torch.float64)[None] + 0.01
        with torch.inference_mode():  # a size never seen before, first asked for in eval
            t.grid(params, (13, 17))
        trained = params.clone().requires_grad_()
        t.grid(trained, (13, 17)).sum().backward()
        assert trained.grad is not None and bool(torch.isfinite(trained.grad).all())
