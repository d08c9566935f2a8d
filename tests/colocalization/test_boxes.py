from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from torchstn.colocalization import box_iou, crop_boxes
from torchstn.errors import InvalidInputError
from torchstn.transforms import get


class TestCropBoxes:
    def test_identity_is_whole_canvas(self):
        ident = get("attention").identity_params()[None]
        torch.testing.assert_close(crop_boxes(ident, (84, 84)), torch.tensor([[0.0, 0, 84, 84]]))

    def test_third_is_central_digit_box(self):
        box = crop_boxes(torch.tensor([[1 / 3, 0.0, 0.0]]), 84)
        torch.testing.assert_close(box, torch.tensor([[28.0, 28, 56, 56]]))

    def test_non_square_and_translation(self):
        # H = 40, W = 80; s = 0.5, tx = 0.5 (right), ty = -0.5 (up)
        box = crop_boxes(torch.tensor([[0.5, 0.5, -0.5]]), (40, 80))
        torch.testing.assert_close(box, torch.tensor([[40.0, 0, 80, 20]]))

    @pytest.mark.parametrize("corner", [(0, 0), (5, 17), (56, 56), (30, 2)])
    def test_box_matches_the_sampled_crop(self, corner):
        """The crop of params whose box is an integer 28 x 28 box equals that slice of the image."""
        x0, y0 = corner
        image = torch.rand(1, 1, 84, 84)
        s = 1 / 3
        tx, ty = (2 * x0 + 28) / 84 - 1, (2 * y0 + 28) / 84 - 1
        params = torch.tensor([[s, tx, ty]], dtype=torch.float64)
        box = crop_boxes(params, (84, 84))
        torch.testing.assert_close(
            box, torch.tensor([[x0, y0, x0 + 28, y0 + 28]], dtype=torch.float64)
        )
        from torchstn.functional import sample

        crop = sample(image.double(), get("attention").grid(params, (28, 28)))
        torch.testing.assert_close(crop, image.double()[..., y0 : y0 + 28, x0 : x0 + 28])

    def test_bad_params(self):
        with pytest.raises(InvalidInputError, match="params"):
            crop_boxes(torch.zeros(2, 6), 84)


class TestBoxIoU:
    def test_known_cases(self):
        a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4], [0, 0, 0, 0]])
        b = torch.tensor([[0.0, 0, 2, 2], [1, 0, 3, 2], [2, 2, 3, 3], [1, 1, 3, 3], [0, 0, 0, 0]])
        torch.testing.assert_close(box_iou(a, b), torch.tensor([1.0, 1 / 3, 0.0, 0.25, 0.0]))

    def test_identity_crop_vs_digit(self):
        """The whole-canvas crop against a 28 x 28 digit: 28^2 / 84^2 = 1/9."""
        iou = box_iou(torch.tensor([0.0, 0, 84, 84]), torch.tensor([10.0, 30, 38, 58]))
        assert iou.item() == pytest.approx(1 / 9)

    def test_broadcasts(self):
        boxes = torch.tensor([[0.0, 0, 1, 1], [0, 0, 2, 2]])
        assert box_iou(boxes, torch.tensor([0.0, 0, 1, 1])).tolist() == [1.0, 0.25]

    @given(
        st.lists(st.floats(0, 50), min_size=4, max_size=4),
        st.lists(st.floats(0, 50), min_size=4, max_size=4),
    )
    def test_symmetric_and_bounded(self, p, q):
        a = torch.tensor([min(p[0], p[2]), min(p[1], p[3]), max(p[0], p[2]), max(p[1], p[3])])
        b = torch.tensor([min(q[0], q[2]), min(q[1], q[3]), max(q[0], q[2]), max(q[1], q[3])])
        iou = box_iou(a, b)
        assert 0.0 <= iou.item() <= 1.0 + 1e-6
        torch.testing.assert_close(iou, box_iou(b, a))
