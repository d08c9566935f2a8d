"""Attention transform of the paper: isotropic scale plus translation (crop and zoom)."""

from __future__ import annotations

import torch

from .base import MatrixTransform

__all__ = ["Attention"]


class Attention(MatrixTransform):
    """``A = [[s, 0, tx], [0, s, ty]]`` with params ``(s, tx, ty)``.

    ``s < 1`` zooms in on a window of half-size ``s`` centred at ``(tx, ty)``. Use
    ``scale_range=(lo, hi)`` to keep ``s`` in bounds and ``max_translation`` to bound the window.

    Example:
        >>> Attention().to_matrix(torch.tensor([[0.5, 0.1, -0.2]]))[0]
        tensor([[ 0.5000,  0.0000,  0.1000],
                [ 0.0000,  0.5000, -0.2000],
                [ 0.0000,  0.0000,  1.0000]])
    """

    name = "attention"
    num_params = 3
    translation_indices = (1, 2)
    scale_index = 0

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        s, tx, ty = params.unbind(-1)
        zero, one = torch.zeros_like(s), torch.ones_like(s)
        rows = (s, zero, tx, zero, s, ty, zero, zero, one)
        return torch.stack(rows, dim=-1).reshape(-1, 3, 3)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / matrix[:, 2:3, 2:3]
        s = (matrix[:, 0, 0] + matrix[:, 1, 1]) / 2
        return torch.stack((s, matrix[:, 0, 2], matrix[:, 1, 2]), dim=-1)
