"""Coordinate conventions: pixel-centre coordinates and the normalised [-1, 1] frame.

Convention (used everywhere in torchstn):
    * Points are ``(x, y)`` pairs: ``x`` indexes columns (width), ``y`` indexes rows (height).
    * Pixel frame: the centre of the pixel in row ``i`` and column ``j`` is at ``(x, y) = (j, i)``;
      the image covers ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
    * Normalised frame, exactly as :func:`torch.nn.functional.grid_sample`:
      with ``align_corners=False`` the values -1 and 1 are the outer *edges* of the border pixels
      (``x_n = (2 x + 1) / W - 1``); with ``align_corners=True`` they are the *centres* of the
      border pixels (``x_n = 2 x / (W - 1) - 1``).
    * A side of one pixel with ``align_corners=True`` has no extent: ``grid_sample`` reads its
      only pixel whatever the coordinate, so every normalised value maps to pixel 0 and pixel 0
      maps to 0, the value ``affine_grid`` uses for a unit-size grid.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from .._checks import check_size, check_spatial_size, check_tensor, is_scripting_or_tracing
from ..errors import InvalidInputError

__all__ = [
    "base_grid",
    "grid_axes",
    "normalized_matrix_to_pixel",
    "normalized_to_pixel",
    "pixel_matrix_to_normalized",
    "pixel_to_normalized",
    "pixels_per_unit",
]


def pixels_per_unit(size: Sequence[int], align_corners: bool = False) -> list[float]:
    """Input pixels per normalised unit along each axis, in ``(x, y, ...)`` order for ``size``
    ``(..., H, W)``: ``n / 2`` with ``align_corners=False``, ``(n - 1) / 2`` with
    ``align_corners=True`` (0 for a side of one pixel). A normalised offset times this is the
    offset in pixels.

    Example:
        >>> pixels_per_unit((4, 6)), pixels_per_unit((4, 6), align_corners=True)
        ([3.0, 2.0], [2.5, 1.5])
    """
    sizes = [int(n) for n in reversed(list(size))]
    return [(n - 1) / 2 if align_corners else n / 2 for n in sizes]


def _points(points: torch.Tensor) -> int:
    """The number of axes of ``points`` ``(..., 2)`` or ``(..., 3)``, checked."""
    check_tensor(points, "points")
    if points.dim() == 0 or points.shape[-1] not in (2, 3):
        raise InvalidInputError(
            f"points: expected last dimension 2 (x, y) or 3 (x, y, z), got shape "
            f"{tuple(points.shape)}"
        )
    return int(points.shape[-1])


def _scale(size: Sequence[int], align_corners: bool, like: torch.Tensor) -> torch.Tensor:
    """Pixels per two normalised units in ``(x, y[, z])`` order, ``(W, H[, D])`` or
    ``(W - 1, H - 1[, D - 1])`` (0 for a unit side); ``size`` has as many axes as ``like``'s
    points."""
    dims = like.shape[-1]
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) != dims:
        want = "(H, W)" if dims == 2 else "(D, H, W)"
        raise InvalidInputError(
            f"points: points of shape {tuple(like.shape)} ({dims} axes) need a size {want}, got "
            f"size {tuple(size)!r}"
        )
    sizes = check_spatial_size(size, "size", dims)[::-1]
    return torch.tensor(
        [n - 1 if align_corners else n for n in sizes], dtype=like.dtype, device=like.device
    )


def pixel_to_normalized(
    points: torch.Tensor, size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Convert pixel-centre coordinates to the normalised frame.

    Args:
        points: ``(..., 2)`` points in ``(x, y)`` order, pixel-centre coordinates (the centre of
            pixel row ``i``, column ``j`` is ``(j, i)``), or ``(..., 3)`` voxel-centre points in
            ``(x, y, z)`` order (voxel ``(k, i, j)`` of a ``(D, H, W)`` volume is at
            ``(j, i, k)``).
        size: image size ``(H, W)``, volume size ``(D, H, W)``, or one int for every side.
        align_corners: the :func:`torch.nn.functional.grid_sample` convention; see the module
            docstring.

    Returns:
        Normalised coordinates, the shape of ``points``.

    Example:
        >>> pixel_to_normalized(torch.tensor([[0.0, 3.0]]), (4, 4))
        tensor([[-0.7500,  0.7500]])
        >>> pixel_to_normalized(torch.tensor([[0.0, 3.0]]), (4, 4), align_corners=True)
        tensor([[-1.,  1.]])
        >>> pixel_to_normalized(torch.tensor([[0.0, 0.0, 1.0]]), (2, 4, 4))  # z along D
        tensor([[-0.7500, -0.7500,  0.5000]])
    """
    _points(points)
    scale = _scale(size, align_corners, points)
    if align_corners:
        # (2 x - (W - 1)) / (W - 1), with the unit side's single pixel at 0
        return (points * 2 - scale) / scale.clamp_min(1)
    return (points * 2 + 1) / scale - 1


def normalized_to_pixel(
    points: torch.Tensor, size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """Convert normalised coordinates to pixel-centre coordinates (inverse of
    :func:`pixel_to_normalized`).

    Args:
        points: ``(..., 2)`` normalised points in ``(x, y)`` order, or ``(..., 3)`` in
            ``(x, y, z)`` order.
        size: image size ``(H, W)`` or volume size ``(D, H, W)``.
        align_corners: see :func:`pixel_to_normalized`.

    Returns:
        Pixel-centre (voxel-centre) coordinates, the shape of ``points``.

    Example:
        >>> normalized_to_pixel(torch.tensor([[-1.0, 1.0]]), (4, 4))
        tensor([[-0.5000,  3.5000]])
    """
    _points(points)
    scale = _scale(size, align_corners, points)
    if align_corners:
        return (points + 1) * scale / 2
    return ((points + 1) * scale - 1) / 2


def base_grid(
    size: Sequence[int],
    align_corners: bool = False,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised coordinates of the pixel centres of an ``(H, W)`` image, or of the voxel
    centres of a ``(D, H, W)`` volume.

    Computed exactly as :func:`torch.nn.functional.affine_grid` does, so that grids built from it
    agree with PyTorch's bit for bit in the identity case.

    Returns:
        ``(H, W, 2)`` tensor of ``(x, y)`` points, or ``(D, H, W, 3)`` of ``(x, y, z)`` points.

    Example:
        >>> base_grid((1, 2))[..., 0]
        tensor([[-0.5000,  0.5000]])
        >>> base_grid((2, 1, 1))[..., 2]  # z runs along D
        tensor([[[-0.5000]],
        <BLANKLINE>
                [[ 0.5000]]])
    """
    axes = grid_axes(size, align_corners, dtype=dtype, device=device)
    if len(axes) == 2:
        xs, ys = axes
        ys, xs = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack((xs, ys), dim=-1)
    xs, ys, zs = axes
    zs, ys, xs = torch.meshgrid(zs, ys, xs, indexing="ij")
    return torch.stack((xs, ys, zs), dim=-1)


def _axis(
    n: int, align_corners: bool, dtype: torch.dtype, device: torch.device | str | None
) -> torch.Tensor:
    if n == 1:  # affine_grid puts a unit side's only point at the centre
        return torch.zeros(1, dtype=dtype, device=device)
    steps = torch.linspace(-1, 1, n, dtype=dtype, device=device)
    if not align_corners:
        steps = steps * (n - 1) / n
    return steps


#: (size, align_corners, dtype, device) -> axes; a few entries, most recently used last.
_AXES: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, ...]] = OrderedDict()
_AXES_KEPT = 32


def _sides(size: Sequence[int] | int, name: str) -> tuple[int, ...]:
    """``(H, W)`` or ``(D, H, W)`` checked; one int is a square ``(n, n)``."""
    if isinstance(size, Sequence) and not isinstance(size, (str, bytes)) and len(size) == 3:
        return check_spatial_size(size, name, 3)
    return check_size(size, name)


def grid_axes(
    size: Sequence[int],
    align_corners: bool = False,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, ...]:
    """The axes of :func:`base_grid`: ``xs`` ``(W,)`` and ``ys`` ``(H,)`` for an ``(H, W)``
    size (``base_grid(size)[i, j] == (xs[j], ys[i])``), and ``zs`` ``(D,)`` after them for a
    ``(D, H, W)`` size: the normalised coordinates of the columns, rows (and slices).

    They depend only on the size, the convention, the dtype and the device, so the grid
    generators keep the last few of them instead of rebuilding them on every call (not while
    tracing or compiling, where the values become part of the graph anyway). The returned
    tensors are shared: do not modify them in place.

    Example:
        >>> xs, ys = grid_axes((1, 4))
        >>> xs, ys
        (tensor([-0.7500, -0.2500,  0.2500,  0.7500]), tensor([0.]))
        >>> [len(a) for a in grid_axes((2, 3, 4))]  # (W, H, D)
        [4, 3, 2]
    """
    sides = _sides(size, "size")[::-1]  # (W, H[, D]): x, y[, z] order
    dtype = dtype or torch.get_default_dtype()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if is_scripting_or_tracing() or dev.type == "meta":
        return tuple(_axis(n, align_corners, dtype, dev) for n in sides)
    key = (sides, bool(align_corners), dtype, dev)
    axes = _AXES.get(key)
    if axes is None:
        # built outside inference mode: an inference tensor could not be saved for a later
        # backward pass
        with torch.inference_mode(False):
            axes = tuple(_axis(n, align_corners, dtype, dev) for n in sides)
        _AXES[key] = axes
        while len(_AXES) > _AXES_KEPT:
            _AXES.popitem(last=False)
    else:
        _AXES.move_to_end(key)
    return axes


def _pixel_to_normalized_matrix(
    size: Sequence[int], align_corners: bool, dtype: torch.dtype, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(n + 1, n + 1)`` matrix of :func:`pixel_to_normalized` for one image or volume
    size of ``n`` axes, and its inverse (the matrix of :func:`normalized_to_pixel`), both in
    closed form."""
    sides = _sides(size, "size")[::-1]  # (W, H[, D])
    n = len(sides)
    rows = torch.eye(n + 1, dtype=torch.float64)
    inv = torch.eye(n + 1, dtype=torch.float64)
    for i, side in enumerate(sides):
        if align_corners:  # as pixel_to_normalized: a unit side's pixel sits at 0
            scale, offset = 2 / max(side - 1, 1), -(side - 1) / max(side - 1, 1)
        else:
            scale, offset = 2 / side, 1 / side - 1
        rows[i, i], rows[i, n] = scale, offset
        inv[i, i], inv[i, n] = 1 / scale, -offset / scale
    return rows.to(dtype=dtype, device=device), inv.to(dtype=dtype, device=device)


def _homogeneous(matrix: torch.Tensor, dims: int) -> torch.Tensor:
    """Validate ``(B, 2, 3)`` or ``(B, 3, 3)`` matrices (``dims`` 2), or ``(B, 3, 4)`` or
    ``(B, 4, 4)`` (``dims`` 3), and return them as ``(B, dims + 1, dims + 1)``."""
    check_tensor(matrix, "matrix", ndim=3)
    if matrix.shape[1:] == (dims, dims + 1):
        last = torch.zeros(dims + 1, dtype=matrix.dtype, device=matrix.device)
        last[dims] = 1
        return torch.cat((matrix, last.expand(matrix.shape[0], 1, dims + 1)), dim=1)
    if matrix.shape[1:] != (dims + 1, dims + 1):
        kind = "" if dims == 2 else " for a volume size (D, H, W)"
        raise InvalidInputError(
            f"matrix: expected (B, {dims}, {dims + 1}) or (B, {dims + 1}, {dims + 1}){kind}, "
            f"got {tuple(matrix.shape)}"
        )
    return matrix


def _dims(in_size: Sequence[int], out_size: Sequence[int]) -> int:
    """2 for image sizes, 3 for volume sizes; both sizes must agree."""
    dims = len(_sides(in_size, "in_size"))
    if len(_sides(out_size, "out_size")) != dims:
        raise InvalidInputError(
            f"out_size: expected {dims} sizes as in_size {tuple(in_size)!r}, got "
            f"{tuple(out_size)!r}"
        )
    return dims


def pixel_matrix_to_normalized(
    matrix: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Express a transform written in pixel-centre coordinates in the normalised frame.

    ``matrix`` maps output pixel coordinates ``(x_t, y_t, 1)`` to input pixel coordinates
    ``(x_s, y_s, 1)``; the result does the same in normalised coordinates, ready for
    :func:`torch.nn.functional.affine_grid` (take ``[..., :2, :]`` for ``theta``) or for
    :class:`torchstn.transforms.Projective`. The exact inverse of
    :func:`normalized_matrix_to_pixel`.

    Args:
        matrix: ``(B, 2, 3)`` affine or ``(B, 3, 3)`` matrices in pixel coordinates; for
            volumes ``(B, 3, 4)`` or ``(B, 4, 4)`` acting on ``(x, y, z, 1)``.
        in_size: input ``(H, W)`` or ``(D, H, W)``.
        out_size: output ``(H, W)`` or ``(D, H, W)``; defaults to ``in_size``.
        align_corners: see the module docstring.

    Returns:
        ``(B, 3, 3)`` normalised matrices (``(B, 4, 4)`` for volumes).

    Example:
        >>> shift = torch.tensor([[[1.0, 0.0, 1.5], [0.0, 1.0, 1.5]]])  # (1, 1) -> (2.5, 2.5)
        >>> pixel_matrix_to_normalized(shift, (4, 4))[0]
        tensor([[1.0000, 0.0000, 0.7500],
                [0.0000, 1.0000, 0.7500],
                [0.0000, 0.0000, 1.0000]])
    """
    out_size = in_size if out_size is None else out_size
    matrix = _homogeneous(matrix, _dims(in_size, out_size))
    to_in, _ = _pixel_to_normalized_matrix(in_size, align_corners, matrix.dtype, matrix.device)
    _, from_out = _pixel_to_normalized_matrix(out_size, align_corners, matrix.dtype, matrix.device)
    return to_in @ matrix @ from_out


def normalized_matrix_to_pixel(
    matrix: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int] | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Express a normalised sampling matrix (what a spatial transformer learns) in pixel units.

    ``matrix`` maps normalised output coordinates to normalised input coordinates, the
    convention of every :class:`~torchstn.transforms.MatrixTransform` (``to_matrix(params)``) and
    of ``affine_grid``'s ``theta``; the result maps the output pixel centre ``(x, y, 1)`` (column
    ``x``, row ``y``) to the input pixel coordinates it reads (for a ``(B, 3, 3)`` projective
    matrix, up to the homogeneous factor: divide by the third coordinate). The exact inverse of
    :func:`pixel_matrix_to_normalized`.

    Args:
        matrix: ``(B, 2, 3)`` affine or ``(B, 3, 3)`` normalised matrices; for volumes
            ``(B, 3, 4)`` or ``(B, 4, 4)``.
        in_size: input ``(H, W)`` or ``(D, H, W)``.
        out_size: output ``(H, W)`` or ``(D, H, W)``; defaults to ``in_size``.
        align_corners: the convention the matrix was learned with (see the module docstring).

    Returns:
        ``(B, 3, 3)`` matrices in pixel coordinates (``(B, 4, 4)`` for volumes).

    Example:
        >>> from torchstn.transforms import get
        >>> params = torch.tensor([[0.5, 0.0, 0.25, 0.0, 0.5, 0.0]])  # half the width, right
        >>> # a 4x4 output of an 8x8 input reads the block from column 3, row 2, pixel for pixel
        >>> normalized_matrix_to_pixel(get("affine").to_matrix(params), (8, 8), (4, 4))[0]
        tensor([[1., 0., 3.],
                [0., 1., 2.],
                [0., 0., 1.]])
    """
    out_size = in_size if out_size is None else out_size
    matrix = _homogeneous(matrix, _dims(in_size, out_size))
    _, from_in = _pixel_to_normalized_matrix(in_size, align_corners, matrix.dtype, matrix.device)
    to_out, _ = _pixel_to_normalized_matrix(out_size, align_corners, matrix.dtype, matrix.device)
    return from_in @ matrix @ to_out
