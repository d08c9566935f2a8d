"""Stateless operations: coordinate conventions, grid sampling and the generic kernel sampler."""

from __future__ import annotations

from .coords import base_grid, normalized_to_pixel, pixel_matrix_to_normalized, pixel_to_normalized
from .kernel import KERNELS, influence_weights, kernel_sample
from .sample import MODES, PADDING_MODES, sample

__all__ = [
    "KERNELS",
    "MODES",
    "PADDING_MODES",
    "base_grid",
    "influence_weights",
    "kernel_sample",
    "normalized_to_pixel",
    "pixel_matrix_to_normalized",
    "pixel_to_normalized",
    "sample",
]
