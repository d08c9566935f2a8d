"""Similarity transform: rotation, isotropic scale and translation."""

from __future__ import annotations

import torch

from .base import MatrixTransform

__all__ = ["Similarity"]


class Similarity(MatrixTransform):
    """``A = [[s cos a, -s sin a, tx], [s sin a, s cos a, ty]]`` with params ``(a, s, tx, ty)``.

    The angle ``a`` is in radians, counter-clockwise in ``(x, y)`` coordinates (y points down, so
    it appears clockwise on screen) and acts in the normalised frame.

    Example:
        >>> Similarity().identity_params()
        tensor([0., 1., 0., 0.])
    """

    name = "similarity"
    num_params = 4
    translation_indices = (2, 3)
    scale_index = 1

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        a, s, tx, ty = params.unbind(-1)
        c, sn = s * torch.cos(a), s * torch.sin(a)
        zero, one = torch.zeros_like(a), torch.ones_like(a)
        return torch.stack((c, -sn, tx, sn, c, ty, zero, zero, one), dim=-1).reshape(-1, 3, 3)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / matrix[:, 2:3, 2:3]
        a = torch.atan2(matrix[:, 1, 0], matrix[:, 0, 0])
        s = torch.hypot(matrix[:, 0, 0], matrix[:, 1, 0])
        return torch.stack((a, s, matrix[:, 0, 2], matrix[:, 1, 2]), dim=-1)
