"""Sampling an image at a grid of normalised source coordinates (the sampler of the paper)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TypeAlias

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_same_device, check_tensor
from ..errors import InvalidInputError

__all__ = ["FILL_PADDING_MODES", "MODES", "PADDING_MODES", "Fill", "sample", "sampler_dtype"]

#: interpolation modes of ``grid_sample``.
MODES = ("bilinear", "nearest", "bicubic")
#: padding modes of ``grid_sample``.
PADDING_MODES = ("zeros", "border", "reflection")
#: the padding modes of :func:`sample`, :func:`~torchstn.warp` and
#: :class:`~torchstn.SpatialTransformer`: ``grid_sample``'s and ``"fill"`` (a constant).
FILL_PADDING_MODES = (*PADDING_MODES, "fill")

#: a fill value: one number for every channel, or one per channel.
Fill: TypeAlias = float | Sequence[float]

#: dtypes that :func:`sample` reads through a float32 ``grid_sample`` off CUDA (see "Precision").
_REDUCED = (torch.float16, torch.bfloat16)


def sampler_dtype(input: torch.Tensor) -> torch.dtype:
    """The dtype :func:`sample` runs ``grid_sample`` in for ``input``: float32 for float16 and
    bfloat16 inputs on every device but CUDA, ``input.dtype`` otherwise (see :func:`sample`,
    "Precision").

    Example:
        >>> sampler_dtype(torch.zeros(1, dtype=torch.float16))
        torch.float32
        >>> sampler_dtype(torch.zeros(1, dtype=torch.float64))
        torch.float64
    """
    if input.dtype in _REDUCED and input.device.type != "cuda":
        return torch.float32
    return input.dtype


def check_input_and_grid(input: torch.Tensor, grid: torch.Tensor) -> None:
    """Validate an image batch ``(B, C, H, W)`` against a grid ``(B, Ho, Wo, 2)``, or a volume
    batch ``(B, C, D, H, W)`` against a grid ``(B, Do, Ho, Wo, 3)``."""
    check_tensor(input, "input")
    if input.dim() not in (4, 5):
        raise InvalidInputError(
            f"input: expected 4 dims (B, C, H, W) or 5 dims (B, C, D, H, W), received "
            f"{input.dim()}-dim tensor of shape {tuple(input.shape)}"
        )
    dims = input.dim() - 2
    want = "(B, Ho, Wo, 2)" if dims == 2 else "(B, Do, Ho, Wo, 3)"
    check_tensor(grid, "grid")
    if grid.dim() != input.dim():
        raise InvalidInputError(
            f"grid: expected {input.dim()} dims {want} for a {input.dim()}-D input "
            f"{tuple(input.shape)}, got shape {tuple(grid.shape)}"
        )
    if grid.shape[-1] != dims:
        raise InvalidInputError(
            f"grid: expected last dimension {dims} {want} for a {input.dim()}-D input "
            f"{tuple(input.shape)}, got shape {tuple(grid.shape)}"
        )
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


def check_fill(fill: object, padding_mode: str, channels: int | None = None) -> Fill:
    """Validate a fill value: a finite number, or one per channel (``channels`` of them when
    known); a value other than 0 needs ``padding_mode="fill"``. Returns a float or a tuple."""
    bad = InvalidInputError(f"fill: expected a finite number or a sequence of them, got {fill!r}")
    per_channel = isinstance(fill, Sequence) and not isinstance(fill, str)
    values: list[float] = []
    for v in fill if isinstance(fill, Sequence) and per_channel else [fill]:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
            raise bad
        values.append(float(v))
    if not values:
        raise bad
    if channels is not None and len(values) not in (1, channels):
        raise InvalidInputError(
            f"fill: expected one value or {channels} (one per channel), got {len(values)}"
        )
    if padding_mode != "fill" and any(values):
        raise InvalidInputError(
            f"fill: only used with padding_mode='fill', got fill={fill!r} with "
            f"padding_mode={padding_mode!r}"
        )
    return tuple(values) if per_channel else values[0]


def sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    fill: Fill = 0.0,
) -> torch.Tensor:
    """Read ``input`` at the normalised source coordinates in ``grid``.

    A validated front end to :func:`torch.nn.functional.grid_sample` (same numbers, same speed),
    with one more padding mode, ``"fill"``: points outside the input read ``fill``, as if the
    image were surrounded by that constant. It is computed exactly as
    ``grid_sample(input - fill, grid, padding_mode="zeros") + fill``: the weights of every
    mode sum to 1 (for bicubic over its 16 taps), so a point whose taps are partly outside
    blends the inside pixels with ``fill`` in the proportions of the outside taps' weights.

    Convention:
        ``grid[b, i, j] = (x, y)`` in the normalised frame of ``input`` (see
        :mod:`torchstn.functional.coords`); ``align_corners`` must match the one the grid was
        built with.

    A common pitfall: images normalised by ``mean`` and ``std`` (``(x - mean) / std``) read 0
    outside with ``"zeros"`` padding, which is the *mean* intensity: a grey frame around the
    digits of black-background MNIST (the PyTorch spatial transformer tutorial has this bug).
    Pad with the normalised value of black instead: ``padding_mode="fill"``,
    ``fill=[-m / s for m, s in zip(mean, std)]``.

    Precision:
        float16 and bfloat16 inputs are sampled by a float32 ``grid_sample`` on every device but
        CUDA, and the result is cast back (gradients flow through both casts). PyTorch's
        reduced-precision CPU kernels differ by instruction set (``ATEN_CPU_CAPABILITY``) and
        fail far outside the image: in float16 the pixel coordinate ``(x + 1) W / 2`` overflows
        near ``x = 16`` for ``W = 4096`` and gives NaN (bilinear, bicubic and even nearest, any
        padding), and in bfloat16 a point at ``|x| >= 1e8`` reads a pixel of the image instead
        of the padding. The float32 kernel has neither fault and is also 3-6x faster than the
        reduced ones on a CPU (``benchmarks/bench_precision.py``), so the result is the float32
        one rounded once. On CUDA the native kernel runs (a reduced-precision model there is a
        choice for speed); :func:`sampler_dtype` tells which dtype runs.

    Volumes: a ``(B, C, D, H, W)`` input and a ``(B, Do, Ho, Wo, 3)`` grid of ``(x, y, z)``
    points (z along D) sample trilinearly (``"bilinear"``) or by nearest voxel; ``"bicubic"``
    is 2-D only, as in PyTorch.

    Args:
        input: ``(B, C, H, W)`` floating-point images, or ``(B, C, D, H, W)`` volumes.
        grid: ``(B, Ho, Wo, 2)`` (``(B, Do, Ho, Wo, 3)``) source coordinates, same dtype and
            device as ``input``.
        mode: ``"bilinear"``, ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"`` for points
            outside the input.
        align_corners: see :mod:`torchstn.functional.coords`.
        fill: with ``padding_mode="fill"``, the value outside: one number, or ``C`` numbers
            (one per channel). Must be 0 with the other padding modes.

    Returns:
        ``(B, C, Ho, Wo)`` sampled images (``(B, C, Do, Ho, Wo)`` volumes).

    Example:
        >>> from torchstn.functional import base_grid
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> torch.equal(sample(x, base_grid((2, 2))[None]), x)
        True
        >>> far = torch.full((1, 1, 1, 2), 5.0)  # well outside
        >>> sample(x, far, padding_mode="fill", fill=-0.5)
        tensor([[[[-0.5000]]]])
    """
    check_input_and_grid(input, grid)
    check_choice(mode, "mode", MODES)
    if mode == "bicubic" and input.dim() == 5:
        raise InvalidInputError(
            "mode: 'bicubic' samples 4-D images only; a 5-D volume takes 'bilinear' (trilinear) "
            "or 'nearest'"
        )
    check_choice(padding_mode, "padding_mode", FILL_PADDING_MODES)
    value = check_fill(fill, padding_mode, input.shape[1])
    work = sampler_dtype(input)
    if work != input.dtype:
        out = sample(input.to(work), grid.to(work), mode, padding_mode, align_corners, value)
        return out.to(input.dtype)
    if padding_mode != "fill":
        return F.grid_sample(
            input, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
        )
    shift = torch.tensor(value, dtype=input.dtype, device=input.device)
    shift = shift.reshape(1, -1, *([1] * (input.dim() - 2)))
    out = F.grid_sample(
        input - shift, grid, mode=mode, padding_mode="zeros", align_corners=align_corners
    )
    return out + shift
