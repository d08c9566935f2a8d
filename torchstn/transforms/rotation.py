"""Rotation about the image centre."""

from __future__ import annotations

import torch

from .base import MatrixTransform

__all__ = ["Rotation"]


class Rotation(MatrixTransform):
    """``A = [[cos a, -sin a, 0], [sin a, cos a, 0]]`` with the single param ``a`` (radians).

    Example:
        >>> Rotation().to_matrix(torch.tensor([[0.0]]))[0]
        tensor([[1., -0., 0.],
                [0., 1., 0.],
                [0., 0., 1.]])
    """

    name = "rotation"
    num_params = 1

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        a = params[:, 0]
        c, s = torch.cos(a), torch.sin(a)
        zero, one = torch.zeros_like(a), torch.ones_like(a)
        return torch.stack((c, -s, zero, s, c, zero, zero, zero, one), dim=-1).reshape(-1, 3, 3)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return torch.atan2(matrix[:, 1, 0], matrix[:, 0, 0])[:, None]
