"""Pure translation."""

from __future__ import annotations

import torch

from .base import MatrixTransform

__all__ = ["Translation"]


class Translation(MatrixTransform):
    """``A = [[1, 0, tx], [0, 1, ty]]`` with params ``(tx, ty)`` in normalised units.

    Example:
        >>> Translation().map_points(torch.tensor([[0.5, 0.0]]), torch.zeros(1, 1, 2))
        tensor([[[0.5000, 0.0000]]])
    """

    name = "translation"
    num_params = 2
    translation_indices = (0, 1)

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        tx, ty = params.unbind(-1)
        zero, one = torch.zeros_like(tx), torch.ones_like(tx)
        return torch.stack((one, zero, tx, zero, one, ty, zero, zero, one), dim=-1).reshape(
            -1, 3, 3
        )

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / matrix[:, 2:3, 2:3]
        return matrix[:, :2, 2]
