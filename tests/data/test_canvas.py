"""Canvas helpers: the separable grid agrees with the library's, boxes, clutter pasting."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from torchstn.data.tasks.canvas import (
    add_clutter,
    affine_grid,
    clip_boxes,
    ink_boxes,
    place_similarity,
    similarity_frame_boxes,
    union_boxes,
)
from torchstn.functional import sample
from torchstn.transforms import Affine, Similarity


class TestAffineGrid:
    @given(b=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 1000))
    def test_agrees_with_the_library(self, b: int, h: int, w: int, seed: int) -> None:
        theta = torch.randn(b, 6, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(
            affine_grid(theta, (h, w)), Affine().grid(theta, (h, w)), atol=2e-6, rtol=1e-6
        )


class TestPlaceSimilarity:
    def test_matches_the_similarity_family(self) -> None:
        """The placement is a similarity of the normalised frames: compare with the library's."""
        g = torch.Generator().manual_seed(0)
        digits = torch.rand(6, 1, 28, 28, generator=g)
        angle = torch.rand(6, generator=g) * 180 - 90
        scale = torch.rand(6, generator=g) + 0.5
        tx, ty = torch.randn(6, generator=g) * 3, torch.randn(6, generator=g) * 3
        out = place_similarity(digits, angle, scale, tx, ty, (28, 28))
        # on a 28 x 28 canvas the digit's and the canvas's normalised frames coincide: the map is
        # n -> A^-1 (n - t / 14), A = s R(a) (counter-clockwise on screen is -a in (x, y) order)
        rad = torch.deg2rad(-angle)
        inverse = Similarity().inverse_params(torch.stack((rad, scale, tx / 14, ty / 14), dim=1))
        expected = sample(digits, Similarity().grid(inverse, (28, 28)))
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)

    def test_frame_boxes(self) -> None:
        z = torch.zeros(3)
        boxes = similarity_frame_boxes(
            torch.tensor([0.0, 45.0, 90.0]), torch.ones(3), z, z, (100, 100)
        )
        half = 14 * 2**0.5
        expected = torch.tensor(
            [
                [36.0, 36.0, 64.0, 64.0],
                [50 - half, 50 - half, 50 + half, 50 + half],
                [36.0, 36.0, 64.0, 64.0],
            ]
        )
        torch.testing.assert_close(boxes, expected)
        clipped = similarity_frame_boxes(
            z[:1], torch.ones(1), torch.tensor([40.0]), z[:1], (100, 100)
        )
        assert clipped.tolist() == [[76.0, 36.0, 100.0, 64.0]]


class TestBoxes:
    def test_ink_boxes(self) -> None:
        img = torch.zeros(3, 6, 7)
        img[0, 2:4, 1:6] = 0.5
        img[1, 0, 6] = 1.0
        img[2] = 0.05  # below the threshold: no ink
        assert ink_boxes(img).tolist() == [[1, 2, 6, 4], [6, 0, 7, 1], [0, 0, 0, 0]]

    def test_clip_and_union(self) -> None:
        boxes = torch.tensor([[[-3.0, 2.0, 10.0, 50.0], [5.0, -1.0, 8.0, 9.0]]])
        assert clip_boxes(boxes, (40, 30)).tolist() == [[[0, 2, 10, 40], [5, 0, 8, 9]]]
        assert union_boxes(boxes).tolist() == [[-3, -1, 10, 50]]


class TestClutter:
    def test_pastes_crops_by_maximum(self) -> None:
        pool = torch.arange(2 * 28 * 28).remainder(256).to(torch.uint8).reshape(2, 28, 28)
        canvas = torch.zeros(2, 10, 12)
        canvas[1, 0, 0] = 1.0
        source = torch.tensor([[1], [0]])
        crop = torch.tensor([[[3, 4]], [[0, 0]]])  # (x, y) in the source digit
        position = torch.tensor([[[5, 2]], [[0, 0]]])  # (x, y) in the canvas
        add_clutter(canvas, pool, source, crop, position, 3)
        torch.testing.assert_close(canvas[0, 2:5, 5:8], pool[1, 4:7, 3:6].float() / 255)
        assert int((canvas[0] > 0).sum()) == 9  # nothing outside the patch
        assert float(canvas[1, 0, 0]) == 1.0  # the maximum keeps the brighter pixel
        torch.testing.assert_close(canvas[1, 0, 1:3], pool[0, 0, 1:3].float() / 255)

    def test_no_distractors(self) -> None:
        canvas = torch.zeros(2, 5, 5)
        empty = torch.zeros(2, 0, dtype=torch.long)
        add_clutter(
            canvas,
            torch.zeros(1, 28, 28, dtype=torch.uint8),
            empty,
            empty[..., None].expand(2, 0, 2),
            empty[..., None].expand(2, 0, 2),
            3,
        )
        assert float(canvas.abs().sum()) == 0
