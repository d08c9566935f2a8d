"""The one dispatch from a sampler mode to its sampler, below the transforms (which use it to
warp with a family) and the dense fields (which use it to warp with a field).

``grid_sample``'s modes and fill padding go through :func:`~torchstn.functional.sample`;
``"gaussian"`` and tricubic sampling of volumes (``"bicubic"`` on a 5-D input) through
:func:`~torchstn.functional.kernel_sample`.
"""

from __future__ import annotations

import torch

from .._checks import check_choice
from ..errors import InvalidInputError
from .kernel import kernel_sample
from .sample import FILL_PADDING_MODES, MODES, Fill, check_fill, sample

__all__ = ["SAMPLER_MODES", "check_sampler", "resample"]

#: sampler modes: ``grid_sample``'s, plus ``"gaussian"`` (the generic kernel sampler).
SAMPLER_MODES = (*MODES, "gaussian")


def check_sampler(
    mode: str, padding_mode: str, fill: Fill, channels: int | None, dims: int = 2
) -> Fill:
    """Check a sampler's settings for ``dims``-D inputs (2: images, 3: volumes); returns the
    checked ``fill``.

    Raises:
        UnknownNameError: an unknown mode or padding mode.
        InvalidInputError: ``"gaussian"``, or ``"bicubic"`` for volumes, with a padding
            other than zeros, or a bad ``fill``.
    """
    check_choice(mode, "mode", SAMPLER_MODES)
    check_choice(padding_mode, "padding_mode", FILL_PADDING_MODES)
    if mode == "bicubic" and dims == 3 and padding_mode != "zeros":
        raise InvalidInputError(
            "padding_mode: tricubic sampling of volumes (mode 'bicubic', through the kernel "
            f"sampler) supports 'zeros' only, got {padding_mode!r}"
        )
    if mode == "gaussian" and padding_mode != "zeros":
        raise InvalidInputError("padding_mode: the gaussian sampler supports 'zeros' only")
    return check_fill(fill, padding_mode, channels)


def resample(
    x: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    fill: Fill = 0.0,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Sample ``x`` at ``grid`` with the sampler of ``mode``: ``grid_sample``'s modes (and fill
    padding) through :func:`~torchstn.functional.sample`, ``"gaussian"`` (a kernel of standard
    deviation ``sigma`` pixels, zeros outside) and tricubic sampling of volumes (``"bicubic"``
    on a 5-D ``x``: Keys' cubic in each axis, zeros outside) through
    :func:`~torchstn.functional.kernel_sample`.
    Settings are used as given (see :func:`check_sampler`)."""
    if mode == "gaussian":
        return kernel_sample(x, grid, "gaussian", sigma, align_corners)
    if mode == "bicubic" and x.dim() == 5:  # tricubic: grid_sample has none
        return kernel_sample(x, grid, "bicubic", align_corners=align_corners)
    return sample(x, grid, mode, padding_mode, align_corners, fill)
