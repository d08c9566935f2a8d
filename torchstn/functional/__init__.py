"""Stateless operations, the bottom of the core: the coordinate convention, grid sampling and the
generic kernel sampler. Nothing here knows a transform family: warping with one is
:func:`torchstn.warp` (:mod:`torchstn.transforms.warping`)."""

from __future__ import annotations

from .coords import (
    base_grid,
    grid_axes,
    normalized_matrix_to_pixel,
    normalized_to_pixel,
    pixel_matrix_to_normalized,
    pixel_to_normalized,
    pixels_per_unit,
)
from .kernel import KERNELS, influence_weights, kernel_sample
from .sample import FILL_PADDING_MODES, MODES, PADDING_MODES, sample, sampler_dtype

__all__ = [
    "FILL_PADDING_MODES",
    "KERNELS",
    "MODES",
    "PADDING_MODES",
    "base_grid",
    "grid_axes",
    "influence_weights",
    "kernel_sample",
    "normalized_matrix_to_pixel",
    "normalized_to_pixel",
    "pixel_matrix_to_normalized",
    "pixel_to_normalized",
    "pixels_per_unit",
    "sample",
    "sampler_dtype",
]
