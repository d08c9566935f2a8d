"""Normalised offsets in input pixels: one convention (``pixels_per_unit``) for both
``align_corners``, checked against where ``grid_sample`` reads, and read by the report's
``learned_geometry``."""

from __future__ import annotations

import pytest
import torch

from torchstn import SpatialTransformer
from torchstn.functional import normalized_to_pixel, pixels_per_unit
from torchstn.viz.report import learned_geometry


@pytest.mark.parametrize("align_corners", [False, True])
def test_pixels_per_unit_is_the_pixel_offset_of_a_normalised_unit(align_corners: bool) -> None:
    size = (5, 9)  # non-square: the axes differ
    ends = normalized_to_pixel(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), size, align_corners)
    assert (ends[1] - ends[0]).tolist() == pixels_per_unit(size, align_corners)


@pytest.mark.parametrize("align_corners", [False, True])
def test_learned_geometry_translation_follows_align_corners(align_corners: bool) -> None:
    st = SpatialTransformer((1, 9, 21), "translation", align_corners=align_corners)
    geo = learned_geometry(st, torch.tensor([[0.5, -0.5]]))
    centre = normalized_to_pixel(torch.zeros(1, 2), (9, 21), align_corners)[0]
    moved = normalized_to_pixel(torch.tensor([[0.5, -0.5]]), (9, 21), align_corners)[0]
    assert float(geo["tx"]) == pytest.approx(float(moved[0] - centre[0]))  # old: 5.25 either way
    assert float(geo["ty"]) == pytest.approx(float(moved[1] - centre[1]))
