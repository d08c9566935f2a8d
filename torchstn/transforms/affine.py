"""General affine transform: 6 params, PyTorch's ``theta`` flattened row by row."""

from __future__ import annotations

import torch

from .base import MatrixTransform

__all__ = ["Affine"]


class Affine(MatrixTransform):
    """``A = [[a, b, tx], [c, d, ty]]`` with params ``(a, b, tx, c, d, ty)``.

    Exactly the ``theta`` of :func:`torch.nn.functional.affine_grid`, flattened row by row.

    Example:
        >>> t = Affine()
        >>> t.identity_params()
        tensor([1., 0., 0., 0., 1., 0.])
        >>> t.grid(t.identity_params()[None], (2, 2))[0, 0, 0]
        tensor([-0.5000, -0.5000])
    """

    name = "affine"
    num_params = 6
    translation_indices = (2, 5)

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        last = params.new_tensor([0.0, 0.0, 1.0]).expand(params.shape[0], 1, 3)
        return torch.cat((params.reshape(-1, 2, 3), last), dim=1)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / matrix[:, 2:3, 2:3]
        return matrix[:, :2, :].reshape(-1, 6)
