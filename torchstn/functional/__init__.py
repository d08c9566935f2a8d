"""Stateless operations: coordinate conventions, grid sampling, the generic kernel sampler and
the one-call warp."""

from __future__ import annotations

from .coords import (
    base_grid,
    grid_axes,
    normalized_matrix_to_pixel,
    normalized_to_pixel,
    pixel_matrix_to_normalized,
    pixel_to_normalized,
)
from .kernel import KERNELS, influence_weights, kernel_sample
from .sample import FILL_PADDING_MODES, MODES, PADDING_MODES, sample, sampler_dtype
from .warp import warp

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
    "sample",
    "sampler_dtype",
    "warp",
]
