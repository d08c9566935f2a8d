"""One-call warp: a transform's sampling grid and the sampler (the spatial transformer without its
localisation net)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_choice, check_size, check_tensor
from ..errors import InvalidInputError
from ..transforms import Transform, get
from .sample import FILL_PADDING_MODES, MODES, Fill, check_fill, sample

__all__ = ["warp"]


def warp(
    x: torch.Tensor,
    params: torch.Tensor,
    transform: str | Transform | type[Transform],
    out_size: Sequence[int] | int | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    fill: Fill = 0.0,
) -> torch.Tensor:
    """Warp images with given transform params: ``sample(x, transform.grid(params, out_size))``.

    The grid generator and sampler of :class:`~torchstn.SpatialTransformer` as one function, for
    params from elsewhere (a known augmentation, a saved prediction, another network).

    Convention:
        ``params`` map normalised *output* coordinates to normalised *input* coordinates
        (:mod:`torchstn.transforms.base`), ``(x, y)`` order, and ``align_corners`` is that of
        :func:`torch.nn.functional.grid_sample` (:mod:`torchstn.functional.coords`). The params
        are used as given: a transform's bounds (``max_translation``, ``scale_range``) act in
        :meth:`~torchstn.transforms.Transform.constrain`, on a localisation net's raw output, not
        here. For a matrix in pixel coordinates, convert it with
        :func:`~torchstn.functional.pixel_matrix_to_normalized` first.

    With ``padding_mode="fill"`` points outside ``x`` read ``fill`` (see :func:`sample`). Images
    normalised by ``mean`` and ``std`` read the mean intensity outside with ``"zeros"``, a grey
    border around a black background (the PyTorch spatial transformer tutorial has this bug);
    ``fill=[-m / s for m, s in zip(mean, std)]`` pads with black.

    Args:
        x: ``(B, C, H, W)`` floating-point images.
        params: ``(B, P)`` transform params, same dtype and device as ``x``.
        transform: a registered name (:func:`torchstn.transforms.names`; built with default
            options), a :class:`~torchstn.transforms.Transform` class, or an instance (for
            options such as ``get("tps", grid_size=5)``, and to build it once).
        out_size: ``(Ho, Wo)`` of the output (or one int for a square), ``None`` for ``(H, W)``.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"`` (the Gaussian kernel sampler is
            :func:`~torchstn.functional.kernel_sample`).
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"``.
        align_corners: see :mod:`torchstn.functional.coords`.
        fill: with ``padding_mode="fill"``, the value outside: one number or ``C`` numbers.

    Returns:
        ``(B, C, Ho, Wo)`` warped images, in the dtype of ``x``.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> shift = torch.tensor([[0.5, 0.0]])  # read one pixel to the right (4 px = 2 units)
        >>> warp(x, shift, "translation", padding_mode="fill", fill=-1.0)[0, 0]
        tensor([[ 1.,  2.,  3., -1.],
                [ 5.,  6.,  7., -1.],
                [ 9., 10., 11., -1.],
                [13., 14., 15., -1.]])
    """
    check_tensor(x, "x", ndim=4)
    check_tensor(params, "params", ndim=2)
    if params.shape[0] != x.shape[0]:
        raise InvalidInputError(
            f"batch size mismatch: x has {x.shape[0]} images but params has {params.shape[0]} rows"
        )
    if params.dtype != x.dtype or params.device != x.device:
        raise InvalidInputError(
            f"params ({params.dtype}, {params.device}) must match x ({x.dtype}, {x.device})"
        )
    check_choice(mode, "mode", MODES)
    check_choice(padding_mode, "padding_mode", FILL_PADDING_MODES)
    check_fill(fill, padding_mode, x.shape[1])
    size = check_size(tuple(x.shape[-2:]) if out_size is None else out_size, "out_size")
    grid = get(transform).grid(params, size, align_corners)
    return sample(x, grid, mode, padding_mode, align_corners, fill)
