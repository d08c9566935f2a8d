"""Plane projective transform (homography), 8 params."""

from __future__ import annotations

import torch

from .base import DENOMINATOR_EPS, MatrixTransform, safe_denominator

__all__ = ["Projective"]


class Projective(MatrixTransform):
    """Homography ``H`` with ``H[2, 2] = 1``; params are its first 8 entries, row by row.

    Source points are ``(u / w, v / w)`` with ``(u, v, w) = H (x, y, 1)``. Near the horizon the
    denominator ``w`` is clamped away from zero with its sign kept (``|w| >= 1e-6``, see
    :func:`torchstn.transforms.base.safe_denominator`), so grids never hold Inf or NaN: such points
    land far outside the image and sample the padding.

    Example:
        >>> Projective().identity_params()
        tensor([1., 0., 0., 0., 1., 0., 0., 0.])
    """

    name = "projective"
    num_params = 8
    translation_indices = (2, 5)
    is_affine = False
    eps = DENOMINATOR_EPS

    def to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        self.check_params(params)
        one = torch.ones_like(params[:, :1])
        return torch.cat((params, one), dim=-1).reshape(-1, 3, 3)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / safe_denominator(matrix[:, 2:3, 2:3])
        return matrix.reshape(-1, 9)[:, :8]
