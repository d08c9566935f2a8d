"""Plane projective transform (homography), 8 params."""

from __future__ import annotations

import torch

from .base import MatrixTransform, safe_denominator

__all__ = ["Projective"]


class Projective(MatrixTransform):
    """Homography ``H`` with ``H[2, 2] = 1``; params are its first 8 entries, row by row.

    Source points are ``(u / w, v / w)`` with ``(u, v, w) = H (x, y, 1)``. Near the horizon the
    denominator ``w`` is clamped away from zero with its sign kept (``|w| >= eps``, the class
    attribute ``Projective.eps = 1e-6``, see :func:`torchstn.transforms.base.safe_denominator`),
    so grids never hold Inf or NaN: such points land far outside the image and sample the
    padding. float16 and bfloat16 params are divided in float32 and the coordinates clamped to
    ``+-coordinate_limit(dtype)`` (16 for float16) before the cast back; see
    :mod:`torchstn.transforms.base`, "Precision".

    Example:
        >>> Projective().identity_params()
        tensor([1., 0., 0., 0., 1., 0., 0., 0.])
        >>> horizon = torch.tensor([[1.0, 0, 0, 0, 1, 0, 1, 0]], dtype=torch.float16)  # w = x + 1
        >>> Projective().grid(horizon, (1, 2), align_corners=True)
        tensor([[[[-15.9922,   0.0000],
                  [  0.5000,   0.0000]]]], dtype=torch.float16)
    """

    name = "projective"
    num_params = 8
    translation_indices = (2, 5)
    is_affine = False

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        one = torch.ones_like(params[:, :1])
        return torch.cat((params, one), dim=-1).reshape(-1, 3, 3)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / safe_denominator(matrix[:, 2:3, 2:3], self.eps)
        return matrix.reshape(-1, 9)[:, :8]
