"""Warping with a transform: its sampling grid and the sampler, in one place.

The layers of the core, from the bottom: :mod:`torchstn.functional` is stateless grid maths and
sampling (the coordinate convention, ``grid_sample``, the generic kernel sampler), and knows no
transform; :mod:`torchstn.transforms` are the families, which own their grids; this module puts
the two together, and :class:`torchstn.SpatialTransformer` calls it. What it holds:

* :func:`resample`: the one dispatch from a sampler mode to its sampler (``grid_sample``'s modes
  and fill padding through :func:`~torchstn.functional.sample`, ``"gaussian"`` through
  :func:`~torchstn.functional.kernel_sample`);
* :func:`warp`: a transform's params to warped images, with the precision policy of the module
  (grid and sampler outside autocast);
* :func:`output_frame`: where the output frame lands in the input, in input pixels, for every
  picture of what a transformer samples.

Example:
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> shift = torch.tensor([[0.5, 0.0]])  # read one pixel to the right (4 px = 2 units)
    >>> warp(x, shift, "translation", padding_mode="fill", fill=-1.0)[0, 0]
    tensor([[ 1.,  2.,  3., -1.],
            [ 5.,  6.,  7., -1.],
            [ 9., 10., 11., -1.],
            [13., 14., 15., -1.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import torch

from .. import native
from .._checks import (
    check_finite,
    check_positive,
    check_tensor,
    finite_checks_enabled,
    is_scripting_or_tracing,
)
from ..errors import InvalidInputError, NonFiniteError
from ..functional.coords import grid_axes, normalized_to_pixel
from ..functional.resample import SAMPLER_MODES, check_sampler, resample
from ..functional.sample import Fill
from ..native import sample as native_sample
from ..native.sample import (
    affine2d_sample,
    affine3d_sample,
    can_fuse,
    can_fuse_triton,
    projective2d_sample,
)
from . import get
from .base import MatrixTransform, Transform

__all__ = ["SAMPLER_MODES", "check_input_dims", "output_frame", "resample", "warp"]


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (False for device types without autocast)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast, such as "meta"
        return False


def _autocast_off(device_type: str) -> AbstractContextManager[Any]:
    """Disable autocast for ``device_type`` if it is on (a no-op context otherwise)."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


def check_input_dims(x: torch.Tensor, transform: Transform, name: str = "x") -> None:
    """Check that ``x`` is a batch of what ``transform`` warps: ``(B, C, H, W)`` images for a
    2-D family, ``(B, C, D, H, W)`` volumes for a 3-D one.

    Raises:
        InvalidInputError: naming ``name``, the family, the expected and the actual shape.
    """
    want = transform.ndim + 2
    rank = x.dim() if isinstance(x, torch.Tensor) else -1
    check_tensor(x, name, ndim=None if rank in (4, 5) else want)  # its own wording otherwise
    if x.dim() != want:
        expected = "(B, C, H, W) images" if want == 4 else "(B, C, D, H, W) volumes"
        other = "volumes take a 3-D family" if x.dim() == 5 else "images take a 2-D family"
        raise InvalidInputError(
            f"{name}: the {transform.name!r} transform warps {want}-D {expected}, got shape "
            f"{tuple(x.shape)} ({other})"
        )


def warp_with(
    x: torch.Tensor,
    params: torch.Tensor,
    transform: Transform,
    out_size: tuple[int, ...],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    fill: Fill,
    sigma: float,
) -> torch.Tensor:
    """:func:`warp` without its checks, for callers that made them once (the module).

    Grid and sampler run outside autocast, in the dtype of ``x``, or, inside autocast, in
    float32 at least (``x`` and the params are cast; the output is then float32): a
    half-precision grid misplaces samples by about a pixel at 256 px, so under mixed precision
    only the localisation net runs in reduced precision.
    """
    dtype = x.dtype
    if autocast_enabled(x.device.type):
        dtype = torch.promote_types(dtype, torch.float32)
    with _autocast_off(x.device.type):
        x = x.to(dtype)
        params = params.to(dtype)
        kind = (
            _fused_kind(x, transform, mode, padding_mode) if params.shape[0] == x.shape[0] else None
        )
        if kind is not None:
            native.record_path(kind)
            return _fused_warp(
                x, params, cast(MatrixTransform, transform), out_size, mode, padding_mode,
                align_corners, fill,
            )  # fmt: skip
        native.record_path("unfused")
        grid = transform(params, out_size, align_corners)
        return resample(x, grid, mode, padding_mode, align_corners, fill, sigma)


def _fused_warp(
    x: torch.Tensor,
    params: torch.Tensor,
    matrix: MatrixTransform,
    out_size: tuple[int, ...],
    mode: str,
    padding_mode: str,
    align_corners: bool,
    fill: Fill,
) -> torch.Tensor:
    """The fused kernel's warp. The finite check runs in the kernel, where it reads the matrix:
    no flag is read back through the dispatcher (on a GPU that read would stall the stream);
    params with NaN or Inf raise the same :class:`NonFiniteError` as the unfused path."""
    matrix._check_param_shape(params)
    checking = finite_checks_enabled() and not is_scripting_or_tracing()  # as the unfused path
    if checking and x.device.type in native_sample.TRITON_DEVICES:
        check_finite(params, "params")  # the Triton kernels do not check (a read, as unfused)
        checking = False
    n = matrix.ndim
    axes = grid_axes(out_size, align_corners, dtype=x.dtype, device=x.device)
    try:
        if not matrix.is_affine:  # 2-D projective (see _fusable): the whole 3x3 matrix
            xs, ys = axes
            return projective2d_sample(
                x, matrix._to_matrix(params), xs, ys, padding_mode, align_corners,
                float(matrix.eps), fill, checking,
            )  # fmt: skip
        theta = matrix._to_matrix(params)[:, :n, :]
        if n == 3:
            xs, ys, zs = axes
            return affine3d_sample(
                x, theta, xs, ys, zs, padding_mode, align_corners, fill, checking
            )
        xs, ys = axes
        return affine2d_sample(x, theta, xs, ys, mode, padding_mode, align_corners, fill, checking)
    except RuntimeError as e:
        if "torchstn-nonfinite-matrix" not in str(e):
            raise
    check_finite(params, "params")  # the message of the unfused path, with the count
    raise NonFiniteError(
        f"params: finite, but the {matrix.name!r} matrix they give holds NaN or Inf"
    )


def _fused_kind(x: torch.Tensor, transform: Transform, mode: str, padding_mode: str) -> str | None:
    """Which fused kernel warps ``x``: ``"fused"`` (the C++ CPU kernels), ``"fused-triton"``
    (the Triton kernels, 2-D, opted in with :class:`torchstn.native.use_triton`) or ``None``
    (the grid and the sampler)."""
    if (
        native.fused_enabled()
        and isinstance(transform, MatrixTransform)
        and transform.is_affine
        and transform.ndim == 2
        and x.dim() == 4
        and can_fuse_triton(x, mode, padding_mode)
    ):
        return "fused-triton"
    if _fusable(x, transform, mode, padding_mode) and native.available():
        return "fused"
    return None


def _fusable(x: torch.Tensor, transform: Transform, mode: str, padding_mode: str) -> bool:
    """Whether the fused kernel (:mod:`torchstn.native`) warps ``x`` with ``transform``: an
    affine family, 2-D or 3-D (the matrix families without perspective division), a fused sampler setting
    and a CPU float tensor, outside TorchScript (``torch.compile`` and ``torch.export`` put the
    kernel into their graphs as an operator: :mod:`torchstn.native.ops`)."""
    return (
        native.fused_enabled()
        and isinstance(transform, MatrixTransform)
        # the affine families; the projective ones in 2-D, bilinear
        and (transform.is_affine or (transform.ndim == 2 and mode == "bilinear"))
        and x.dim() == transform.ndim + 2
        and can_fuse(x, mode, padding_mode)
    )


def warp(
    x: torch.Tensor,
    params: torch.Tensor,
    transform: str | Transform | type[Transform],
    out_size: Sequence[int] | int | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    fill: Fill = 0.0,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Warp images or volumes with given transform params: ``resample(x, transform.grid(params,
    out_size))``.

    The grid generator and sampler of :class:`~torchstn.SpatialTransformer` as one function (the
    module calls it), for params from elsewhere (a known augmentation, a saved prediction,
    another network).

    Convention:
        ``params`` map normalised *output* coordinates to normalised *input* coordinates
        (:mod:`torchstn.transforms.base`), ``(x, y)`` order (``(x, y, z)`` for volumes, z along
        D), and ``align_corners`` is that of
        :func:`torch.nn.functional.grid_sample` (:mod:`torchstn.functional.coords`). The params
        are used as given: a transform's bounds (``max_translation``, ``scale_range``) act in
        :meth:`~torchstn.transforms.Transform.constrain`, on a localisation net's raw output, not
        here. For a matrix in pixel coordinates, convert it with
        :func:`~torchstn.functional.pixel_matrix_to_normalized` first.

    With ``padding_mode="fill"`` points outside ``x`` read ``fill`` (see
    :func:`~torchstn.functional.sample`). Images normalised by ``mean`` and ``std`` read the mean
    intensity outside with ``"zeros"``, a grey border around a black background (the PyTorch
    spatial transformer tutorial has this bug); ``fill=[-m / s for m, s in zip(mean, std)]`` pads
    with black.

    Inside autocast the grid and the sampler run in float32 (see :func:`warp_with`).

    Args:
        x: ``(B, C, H, W)`` floating-point images, or ``(B, C, D, H, W)`` volumes for a 3-D
            family (``affine3d``...).
        params: ``(B, P)`` transform params, same dtype and device as ``x``.
        transform: a registered name (:func:`torchstn.transforms.names`; built with default
            options), a :class:`~torchstn.transforms.Transform` class, or an instance (for
            options such as ``get("tps", grid_size=5)``, and to build it once).
        out_size: ``(Ho, Wo)`` of the output (or one int for a square), ``(Do, Ho, Wo)`` for
            volumes, ``None`` for the input's size.
        mode: ``"bilinear"`` (trilinear for volumes), ``"nearest"``, ``"bicubic"`` (tricubic
            for volumes, zeros padding only: ``grid_sample`` has no tricubic mode, so volumes
            go through the kernel sampler, whose memory grows with ``(D + H + W)`` per output
            voxel) or ``"gaussian"`` (the paper's generic sampler with a Gaussian kernel,
            :func:`~torchstn.functional.kernel_sample`).
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"`` (``"gaussian"``:
            zeros only).
        align_corners: see :mod:`torchstn.functional.coords`.
        fill: with ``padding_mode="fill"``, the value outside: one number or ``C`` numbers.
        sigma: with ``mode="gaussian"``, the kernel's standard deviation in pixels.

    Returns:
        ``(B, C, Ho, Wo)`` warped images (``(B, C, Do, Ho, Wo)`` volumes), in the dtype of ``x``.
    """
    transform = get(transform)
    check_input_dims(x, transform)
    check_tensor(params, "params", ndim=2)
    if params.shape[0] != x.shape[0]:
        raise InvalidInputError(
            f"batch size mismatch: x has {x.shape[0]} images but params has {params.shape[0]} rows"
        )
    if params.dtype != x.dtype or params.device != x.device:
        raise InvalidInputError(
            f"params ({params.dtype}, {params.device}) must match x ({x.dtype}, {x.device})"
        )
    fill = check_sampler(mode, padding_mode, fill, x.shape[1], transform.ndim)
    if mode == "gaussian":
        check_positive(sigma, "sigma")
    size = transform.check_out_size(tuple(x.shape[2:]) if out_size is None else out_size)
    return warp_with(x, params, transform, size, mode, padding_mode, align_corners, fill, sigma)


def frame_edges(out_size: Sequence[int], align_corners: bool) -> list[float]:
    """The outer edges of an output of ``out_size`` pixels in its normalised frame, per axis in
    ``(x, y, ...)`` order: 1 with ``align_corners=False`` (the edges are at +-1), ``1 + 1/(n-1)``
    with ``align_corners=True`` (+-1 are the corner pixels' centres; 1 for a single pixel)."""
    sizes = list(reversed([int(s) for s in out_size]))  # (W, H, ...) in (x, y, ...) order
    if not align_corners:
        return [1.0] * len(sizes)
    return [1.0 + 1.0 / (n - 1) if n > 1 else 1.0 for n in sizes]


@torch.no_grad()
def output_frame(
    transform: Transform,
    params: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int],
    align_corners: bool = False,
    lines: int = 2,
    points: int = 33,
) -> torch.Tensor:
    """Where the output frame lands in the input: a ``lines x lines`` mesh of the output image's
    region mapped through ``params``, in input pixel-centre coordinates.

    The region is the output's pixels edge to edge (:func:`frame_edges`), so its border is the
    outline of everything the output samples, for either ``align_corners``, square or not.

    Args:
        transform: the transform family.
        params: ``(B, P)`` its params.
        in_size: ``(H, W)`` of the input.
        out_size: ``(Ho, Wo)`` of the output.
        align_corners: that of the sampler.
        lines: lines per direction; the first and last are the region's edges (``lines=2``:
            its border only).
        points: points per line.

    Returns:
        ``(B, 2, lines, points, 2)``: horizontal then vertical lines, ``(x, y)`` in input
        pixel-centre coordinates (:func:`~torchstn.functional.normalized_to_pixel`). For a 3-D
        family (``in_size`` and ``out_size`` ``(D, H, W)``): ``(B, 12, points, 3)``, the twelve
        edges of the output box, ``(x, y, z)`` in input voxel-centre coordinates (``lines`` is
        not used: a box has no inner mesh to draw on a slice).

    Example:
        >>> from torchstn.transforms import get
        >>> crop = torch.tensor([[0.5, 0.0, 0.0]])  # the central half
        >>> frame = output_frame(get("attention"), crop, (8, 8), (4, 4))
        >>> frame[0, 0, :, [0, -1]].tolist()  # the top and bottom lines' ends: the pixel edges
        [[[1.5, 1.5], [5.5, 1.5]], [[1.5, 5.5], [5.5, 5.5]]]
    """
    check_tensor(params, "params", ndim=2)
    if transform.ndim == 3:
        return _box_edges(transform, params, in_size, out_size, align_corners, points)
    ex, ey = frame_edges(out_size, align_corners)
    t = torch.linspace(-1, 1, points, dtype=params.dtype, device=params.device)
    k = torch.linspace(-1, 1, lines, dtype=params.dtype, device=params.device)
    horiz = torch.stack(torch.broadcast_tensors(t[None, :] * ex, k[:, None] * ey), dim=-1)
    vert = torch.stack(torch.broadcast_tensors(k[:, None] * ex, t[None, :] * ey), dim=-1)
    pts = torch.stack((horiz, vert)).reshape(1, -1, 2).expand(params.shape[0], -1, -1)
    src = transform.map_points(params, pts.contiguous())
    pix = normalized_to_pixel(src, in_size, align_corners)
    return pix.reshape(params.shape[0], 2, lines, points, 2)


def _box_edges(
    transform: Transform,
    params: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int],
    align_corners: bool,
    points: int,
) -> torch.Tensor:
    """:func:`output_frame` of a 3-D family: the twelve edges of the output box."""
    edges = torch.tensor(frame_edges(out_size, align_corners), dtype=params.dtype)
    corners = torch.tensor(
        [[(i >> a & 1) * 2 - 1 for a in range(3)] for i in range(8)], dtype=params.dtype
    )  # (8, 3): corner i has coordinate a at -1 or +1 by bit a of i
    pairs = [(i, i | 1 << a) for i in range(8) for a in range(3) if not i >> a & 1]  # 12 edges
    t = torch.linspace(0, 1, points, dtype=params.dtype)[None, :, None]
    start = corners[[p[0] for p in pairs]][:, None, :]
    end = corners[[p[1] for p in pairs]][:, None, :]
    lines = (start + (end - start) * t) * edges  # (12, points, 3), normalised output frame
    pts = lines.reshape(1, -1, 3).to(params.device).expand(params.shape[0], -1, -1)
    src = transform.map_points(params, pts.contiguous())
    return normalized_to_pixel(src, in_size, align_corners).reshape(params.shape[0], 12, points, 3)
