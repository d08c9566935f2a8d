"""Sampling an image at a grid of normalised source coordinates (the sampler of the paper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_same_device, check_tensor
from ..errors import InvalidInputError

__all__ = ["MODES", "PADDING_MODES", "sample"]

MODES = ("bilinear", "nearest", "bicubic")
PADDING_MODES = ("zeros", "border", "reflection")


def check_input_and_grid(input: torch.Tensor, grid: torch.Tensor) -> None:
    """Validate an image batch ``(B, C, H, W)`` against a grid ``(B, Ho, Wo, 2)``."""
    check_tensor(input, "input", ndim=4)
    check_tensor(grid, "grid", ndim=4, last_dim=2)
    if input.shape[0] != grid.shape[0]:
        raise_batch_mismatch(input.shape[0], grid.shape[0])
    check_same_device(("input", input), ("grid", grid))
    if input.dtype != grid.dtype:
        raise InvalidInputError(
            f"input and grid must share a dtype, got input {input.dtype} and grid {grid.dtype}"
        )


def raise_batch_mismatch(b_input: int, b_other: int, other: str = "grid") -> None:
    raise InvalidInputError(
        f"batch size mismatch: input has {b_input} images but {other} has {b_other}"
    )


def sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """Read ``input`` at the normalised source coordinates in ``grid``.

    A validated front end to :func:`torch.nn.functional.grid_sample` (same numbers, same speed).

    Convention:
        ``grid[b, i, j] = (x, y)`` in the normalised frame of ``input`` (see
        :mod:`torchstn.functional.coords`); ``align_corners`` must match the one the grid was
        built with.

    Args:
        input: ``(B, C, H, W)`` floating-point images.
        grid: ``(B, Ho, Wo, 2)`` source coordinates, same dtype and device as ``input``.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` for points outside the input.
        align_corners: see :mod:`torchstn.functional.coords`.

    Returns:
        ``(B, C, Ho, Wo)`` sampled images.

    Example:
        >>> from torchstn.functional import base_grid
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> torch.equal(sample(x, base_grid((2, 2))[None]), x)
        True
    """
    check_input_and_grid(input, grid)
    check_choice(mode, "mode", MODES)
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    return F.grid_sample(
        input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
    )
