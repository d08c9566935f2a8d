"""Dense displacement and velocity fields: their convention, warping and algebra.

Convention (the one statement of it; every function of :mod:`torchstn.fields` follows it):
    * A displacement field ``u`` is a ``(B, N, *spatial)`` tensor: ``(B, 2, H, W)`` for images,
      ``(B, 3, D, H, W)`` for volumes.
    * Units are pixels (voxels) of the grid the field lives on, not the normalised ``[-1, 1]``
      frame.
    * Channel ``i`` is the displacement along the ``i``-th axis of torchstn's ``(x, y[, z])``
      order: channel 0 along W (columns), channel 1 along H (rows), channel 2 along D (slices).
      This is the order of the last dimension of a ``grid_sample`` grid, and the *reverse* of
      the index order that MONAI and voxelmorph use (:mod:`torchstn.fields.convert` translates).
    * Warping is backward: ``output(p) = input(p + u(p))``, where ``p`` is the pixel-centre
      coordinate of an output pixel (the pixel in row ``i``, column ``j`` is at
      ``(x, y) = (j, i)``; :mod:`torchstn.functional.coords`). A field of zeros is the identity;
      a constant field ``(k, 0)`` reads every pixel ``k`` columns to the right.
    * Because the units are pixels, a field means the same under both ``align_corners``
      conventions: the flag only changes how ``"reflection"`` padding reflects (about the edge
      of the border pixels, or about their centres) and the last bits of rounding.

A *velocity* field has the same layout; :func:`integrate` turns a stationary velocity field into
the displacement of its flow at time 1 (a diffeomorphism when the steps are fine enough).

Example:
    >>> x = torch.arange(12.0).view(1, 1, 3, 4)
    >>> u = torch.zeros(1, 2, 3, 4)
    >>> u[:, 0] = 1.0  # read one pixel to the right
    >>> warp(x, u)[0, 0]
    tensor([[ 1.,  2.,  3.,  0.],
            [ 5.,  6.,  7.,  0.],
            [ 9., 10., 11.,  0.]])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .. import native
from .._checks import (
    check_choice,
    check_finite,
    check_positive,
    check_spatial_size,
    check_tensor,
    is_scripting_or_tracing,
)
from ..errors import InvalidInputError
from ..functional.coords import base_grid, normalized_matrix_to_pixel
from ..functional.resample import check_sampler, resample
from ..functional.sample import PADDING_MODES, Fill
from ..native.sample import can_fuse, field_sample

__all__ = [
    "Inverse",
    "check_field",
    "compose",
    "folded_share",
    "from_grid",
    "from_matrix",
    "from_transform",
    "identity",
    "integrate",
    "inverse",
    "jacobian_determinant",
    "resize",
    "to_grid",
    "warp",
    "warp_labels",
]

_AXES = "xyz"


def _shape_words(n: int) -> str:
    return "(B, 2, H, W)" if n == 2 else "(B, 3, D, H, W)"


def check_field(u: Any, name: str = "u", *, like: torch.Tensor | None = None) -> int:
    """Check a displacement (or velocity) field and return its number of axes ``N`` (2 or 3).

    Args:
        u: the field, ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, floating point.
        name: the argument's name in messages.
        like: an image ``(B', C, *spatial)`` the field must match: same number of axes and
            spatial size, batch sizes equal or one of them 1.

    Raises:
        InvalidInputError: one line naming ``name`` and the shapes (wrong rank, channel count
            or spatial size); :class:`~torchstn.errors.NonFiniteError` for NaN or Inf (unless
            finite checks are off, :class:`torchstn.set_finite_checks`).

    Example:
        >>> check_field(torch.zeros(2, 3, 4, 5, 6))
        3
    """
    check_tensor(u, name)
    if u.dim() not in (4, 5):
        raise InvalidInputError(
            f"{name}: expected a displacement field (B, 2, H, W) for images or (B, 3, D, H, W) "
            f"for volumes, got shape {tuple(u.shape)}"
        )
    n = u.dim() - 2
    if u.shape[1] != n:
        raise InvalidInputError(
            f"{name}: a field of {n}-D {'images' if n == 2 else 'volumes'} is {_shape_words(n)} "
            f"with one channel per axis ({', '.join(_AXES[:n])}), got {u.shape[1]} channels in "
            f"shape {tuple(u.shape)}"
        )
    if like is not None:
        if like.dim() != u.dim():
            raise InvalidInputError(
                f"{name}: a field of shape {tuple(u.shape)} warps {n + 2}-D inputs, got an input "
                f"of shape {tuple(like.shape)}"
            )
        if tuple(like.shape[2:]) != tuple(u.shape[2:]):
            raise InvalidInputError(
                f"{name}: spatial size {tuple(u.shape[2:])} does not match the input's "
                f"{tuple(like.shape[2:])} (field {tuple(u.shape)}, input {tuple(like.shape)}); "
                "resize the field with torchstn.fields.resize"
            )
        if like.shape[0] != u.shape[0] and 1 not in (like.shape[0], u.shape[0]):
            raise InvalidInputError(
                f"{name}: batch size {u.shape[0]} does not match the input's {like.shape[0]} "
                f"(field {tuple(u.shape)}, input {tuple(like.shape)}; one of them may be 1)"
            )
        if like.device != u.device:
            raise InvalidInputError(f"{name} is on {u.device} but the input is on {like.device}")
    check_finite(u, name)
    return n


def _unit_scales(spatial: Sequence[int], align_corners: bool) -> list[float]:
    """Normalised units per pixel along ``(x, y[, z])`` for a grid of ``spatial`` ``(..., H, W)``.

    A side of one pixel with ``align_corners=True`` has no extent (``grid_sample`` reads its
    only pixel wherever the point is); its scale is 1, which keeps the conversions invertible.
    """
    out = []
    for n in reversed([int(s) for s in spatial]):
        if align_corners:
            out.append(2.0 / (n - 1) if n > 1 else 1.0)
        else:
            out.append(2.0 / n)
    return out


def _channel_view(values: Sequence[float], like: torch.Tensor, last: bool) -> torch.Tensor:
    """``values`` as a tensor broadcasting over the channel axis (dim 1) or the last one."""
    t = torch.tensor(list(values), dtype=like.dtype, device=like.device)
    if last:
        return t
    return t.view(1, -1, *([1] * (like.dim() - 2)))


#: (spatial, align_corners, dtype, device) -> the (1, *spatial, N) identity grid.
_GRIDS: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()
_GRIDS_KEPT = 4


def _identity_grid(
    spatial: Sequence[int], align_corners: bool, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The normalised identity grid ``(1, *spatial, N)``, kept for the last few sizes (not
    while tracing or compiling). Shared: never modify it in place."""
    size = tuple(int(s) for s in spatial)
    if is_scripting_or_tracing() or device.type == "meta":
        return base_grid(size, align_corners, dtype=dtype, device=device)[None]
    key = (size, bool(align_corners), dtype, device)
    grid = _GRIDS.get(key)
    if grid is None:
        with torch.inference_mode(False):
            grid = base_grid(size, align_corners, dtype=dtype, device=device)[None]
        _GRIDS[key] = grid
        while len(_GRIDS) > _GRIDS_KEPT:
            _GRIDS.popitem(last=False)
    else:
        _GRIDS.move_to_end(key)
    return grid


def identity(
    size: Sequence[int],
    *,
    batch: int = 1,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The identity displacement field (zeros) ``(batch, N, *size)`` for an ``(H, W)`` or
    ``(D, H, W)`` size.

    Example:
        >>> identity((3, 4), batch=2).shape
        torch.Size([2, 2, 3, 4])
    """
    sides = check_spatial_size(size, "size", 3 if len(tuple(size)) == 3 else 2)
    return torch.zeros(batch, len(sides), *sides, dtype=dtype, device=device)


def to_grid(u: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """The normalised sampling grid ``(B, *spatial, N)`` of a displacement field: what
    :func:`torch.nn.functional.grid_sample` reads to warp by ``u``.

    Example:
        >>> u = torch.zeros(1, 2, 2, 2)
        >>> to_grid(u)[0, 0, 0]  # the top-left pixel centre
        tensor([-0.5000, -0.5000])
    """
    check_field(u)
    return _to_grid(u, align_corners)


def _to_grid(u: torch.Tensor, align_corners: bool) -> torch.Tensor:
    spatial = u.shape[2:]
    base = _identity_grid(spatial, align_corners, u.dtype, u.device)
    scale = _channel_view(_unit_scales(spatial, align_corners), u, last=True)
    return torch.addcmul(base, u.movedim(1, -1), scale)


def from_grid(grid: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """The displacement field ``(B, N, *spatial)`` of a normalised sampling grid
    ``(B, *spatial, N)`` (the inverse of :func:`to_grid`), e.g. a grid of
    :meth:`torchstn.transforms.Transform.grid`.

    Example:
        >>> u = torch.randn(2, 2, 3, 5)
        >>> torch.allclose(from_grid(to_grid(u)), u, atol=1e-5)
        True
    """
    check_tensor(grid, "grid", ndim=(4, 5))
    n = grid.dim() - 2
    if grid.shape[-1] != n:
        raise InvalidInputError(
            f"grid: expected (B, H, W, 2) or (B, D, H, W, 3) normalised points, got shape "
            f"{tuple(grid.shape)}"
        )
    spatial = grid.shape[1:-1]
    base = _identity_grid(spatial, align_corners, grid.dtype, grid.device)
    scale = _channel_view(_unit_scales(spatial, align_corners), grid, last=True)
    return ((grid - base) / scale).movedim(-1, 1)


def _check_input(x: Any, name: str = "x") -> torch.Tensor:
    check_tensor(x, name, ndim=(4, 5))
    return x


def _batched(x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``u`` with one batch size (a batch of 1 is expanded)."""
    if x.shape[0] == u.shape[0]:
        return x, u
    b = max(x.shape[0], u.shape[0])
    return x.expand(b, *x.shape[1:]), u.expand(b, *u.shape[1:])


def warp(
    x: torch.Tensor,
    u: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
    fill: Fill = 0.0,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Warp ``x`` by the displacement field ``u``: ``output(p) = x(p + u(p))``.

    Args:
        x: ``(B, C, H, W)`` images or ``(B, C, D, H, W)`` volumes, floating point.
        u: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)`` displacements in pixels, ``(x, y[, z])``
            channel order, the spatial size of ``x``; batch sizes equal or one of them 1 (one
            field for a batch, or one image under many fields).
        mode: any sampler of :func:`torchstn.warp`: ``"bilinear"`` (trilinear for volumes),
            ``"nearest"``, ``"bicubic"`` (tricubic for volumes) or ``"gaussian"``. For label
            maps use :func:`warp_labels`.
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"``.
        align_corners: only changes ``"reflection"`` padding and rounding (the field is in
            pixels; see the module docstring).
        fill: with ``padding_mode="fill"``, the value outside.
        sigma: the Gaussian's standard deviation in pixels (``mode="gaussian"``).

    Returns:
        ``(B, C, *spatial)``, the dtype of ``x``.

    Example:
        >>> x = torch.rand(2, 3, 8, 9)
        >>> torch.allclose(warp(x, torch.zeros(2, 2, 8, 9)), x, atol=1e-6)
        True
    """
    _check_input(x)
    n = check_field(u, "u", like=x)
    value = check_sampler(mode, padding_mode, fill, x.shape[1], n)
    sigma = check_positive(sigma, "sigma")
    x, u = _batched(x, u)
    if _fusable(x, n, mode, padding_mode, align_corners):  # the fused kernel: no grid
        native.record_path("fused")
        return field_sample(x, u.to(x.dtype), padding_mode, align_corners, value)
    native.record_path("unfused")
    grid = _to_grid(u.to(x.dtype), align_corners)
    return resample(x, grid, mode, padding_mode, align_corners, value, sigma)


def _fusable(x: torch.Tensor, n: int, mode: str, padding_mode: str, align_corners: bool) -> bool:
    """Whether :func:`warp` takes the fused kernel of :mod:`torchstn.native` (2-D bilinear or
    3-D trilinear, CPU float, outside TorchScript; the rest takes the grid and the sampler). With
    ``align_corners`` a side of one pixel has no normalised extent (grid_sample reads pixel 0
    wherever the field points): those keep the unfused path's behaviour."""
    return (
        n in (2, 3)
        and x.dim() == n + 2
        and not (align_corners and min(x.shape[2:]) == 1)
        and mode == "bilinear"
        and native.fused_enabled()
        and can_fuse(x, mode, padding_mode)
        and native.available()
    )


def warp_labels(
    labels: torch.Tensor,
    u: torch.Tensor,
    method: str = "nearest",
    num_classes: int | None = None,
    align_corners: bool = False,
) -> torch.Tensor:
    """Warp an integer label map by ``u``; points outside read label 0 (background).

    Args:
        labels: ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer labels ``0..K-1``.
        u: the field (see :func:`warp`).
        method: ``"nearest"`` (the label of the nearest pixel) or ``"linear"`` (each label's
            one-hot map warped bilinearly / trilinearly, then the most likely label: smoother
            boundaries, ``K`` times the memory).
        num_classes: ``K`` for ``"linear"``; default ``labels.max() + 1``.

    Returns:
        Labels of the shape and dtype of ``labels``.

    Example:
        >>> lab = torch.tensor([[[0, 1, 2]]])
        >>> u = torch.zeros(1, 2, 1, 3); u[:, 0] = 1
        >>> warp_labels(lab, u)
        tensor([[[1, 2, 0]]])
    """
    check_tensor(labels, "labels", ndim=(3, 4, 5), floating=False)
    if labels.is_floating_point() or labels.is_complex():
        raise InvalidInputError(f"labels: expected an integer label map, got {labels.dtype}")
    n = u.dim() - 2 if isinstance(u, torch.Tensor) else 0
    squeeze = labels.dim() == n + 1
    lab = labels[:, None] if squeeze else labels
    if lab.dim() != n + 2 or lab.shape[1] != 1:
        raise InvalidInputError(
            f"labels: expected (B, 1, *spatial) or (B, *spatial) for the field of shape "
            f"{tuple(u.shape) if isinstance(u, torch.Tensor) else u!r}, got {tuple(labels.shape)}"
        )
    check_field(u, "u", like=lab)
    check_choice(method, "method", ("nearest", "linear"))
    work = u.dtype if u.is_floating_point() else torch.float32
    if method == "nearest":
        out = warp(lab.to(work), u, "nearest", "zeros", align_corners).round().to(labels.dtype)
    else:
        k = int(lab.max()) + 1 if num_classes is None else int(num_classes)
        if k < 1:
            raise InvalidInputError(f"num_classes: expected at least 1, got {num_classes!r}")
        onehot = F.one_hot(lab[:, 0].long().clamp(0, k - 1), k).movedim(-1, 1).to(work)
        probs = warp(onehot, u, "bilinear", "zeros", align_corners)
        # outside the image every class reads 0: give the background the missing mass
        probs[:, :1] += 1 - probs.sum(1, keepdim=True)
        out = probs.argmax(1, keepdim=True).to(labels.dtype)
    return out[:, 0] if squeeze else out


def integrate(
    v: torch.Tensor,
    steps: int = 7,
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """The displacement at time 1 of the flow of the stationary velocity field ``v``, by scaling
    and squaring: ``u = v / 2**steps``, then ``steps`` times ``u <- u + warp(u, u)``.

    The convention of MONAI's ``DVF2DDF(num_steps=steps)`` and voxelmorph's
    ``VecInt(nsteps=steps)``, with their default (zeros) padding, so the numbers agree with
    theirs (through :mod:`torchstn.fields.convert` for the channel order). Everything that
    depends only on the size (the identity grid, the unit scales) is built once, not per step,
    and the squarings run in normalised units, which saves one multiplication per step.

    Args:
        v: velocity ``(B, N, *spatial)`` in pixels per unit time (the field convention).
        steps: squarings; 0 returns ``v``.
        padding_mode: how the field is read outside the grid: ``"zeros"`` (as MONAI and
            voxelmorph), ``"border"`` or ``"reflection"``.
        align_corners: see the module docstring.

    Example:
        >>> v = torch.zeros(1, 2, 5, 5); v[:, 0] = 0.5  # a constant velocity: a translation
        >>> integrate(v, padding_mode="border")[0, 0, 2, 2]
        tensor(0.5000)
    """
    check_field(v, "v")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InvalidInputError(f"steps: expected an integer >= 0, got {steps!r}")
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    if steps == 0:
        return v
    if _fusable(v, v.dim() - 2, "bilinear", padding_mode, align_corners):
        # in pixels, each squaring one fused pass (no grid): u <- u + u(p + u(p))
        native.record_path("fused")
        u = v / 2**steps
        for _ in range(steps):
            u = u + field_sample(u, u, padding_mode, align_corners)
        return u
    native.record_path("unfused")
    spatial = v.shape[2:]
    scale = _channel_view(_unit_scales(spatial, align_corners), v, last=False)
    base = _identity_grid(spatial, align_corners, v.dtype, v.device)
    w = v * (scale / 2**steps)  # normalised units
    for _ in range(steps):
        grid = base + w.movedim(1, -1)
        w = w + F.grid_sample(
            w, grid, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners
        )
    return w / scale


def _is_matrix(t: torch.Tensor) -> bool:
    return t.dim() in (2, 3) and t.shape[-1] in (3, 4) and t.shape[-2] in (2, 3, 4)


def _pixel_matrix(matrix: torch.Tensor, n: int, name: str) -> torch.Tensor:
    """``(B, n + 1, n + 1)`` from ``(B, n, n + 1)``, ``(B, n + 1, n + 1)`` or unbatched."""
    check_tensor(matrix, name, ndim=(2, 3))
    m = matrix[None] if matrix.dim() == 2 else matrix
    if m.shape[1:] == (n, n + 1):
        last = torch.zeros(m.shape[0], 1, n + 1, dtype=m.dtype, device=m.device)
        last[..., n] = 1
        m = torch.cat((m, last), dim=1)
    if m.shape[1:] != (n + 1, n + 1):
        raise InvalidInputError(
            f"{name}: a {n}-D matrix is ({n}, {n + 1}) or ({n + 1}, {n + 1}), batched or not, "
            f"got shape {tuple(matrix.shape)}"
        )
    check_finite(m, name)
    return m


def _pixel_points(spatial: Sequence[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates ``(N, *spatial)`` in ``(x, y[, z])`` channel order."""
    axes = [torch.arange(int(s), dtype=dtype, device=device) for s in spatial]
    mesh = torch.meshgrid(*axes, indexing="ij")  # index order (z, y, x)
    return torch.stack(mesh[::-1], dim=0)


def _apply_matrix(m: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``m`` ``(B, n + 1, n + 1)`` applied to points ``(B or 1, n, *spatial)`` (homogeneous,
    divided by the last coordinate for a projective matrix)."""
    n = m.shape[1] - 1
    flat = points.flatten(2)  # (B, n, P)
    out = m[:, :n, :n] @ flat + m[:, :n, n:]
    if bool((m[:, n, :n] != 0).any()) or bool((m[:, n, n] != 1).any()):
        den = m[:, n : n + 1, :n] @ flat + m[:, n : n + 1, n:]
        out = out / den
    return out.view(out.shape[0], n, *points.shape[2:])


def from_matrix(
    matrix: torch.Tensor,
    size: Sequence[int],
    *,
    normalized: bool = False,
    align_corners: bool = False,
) -> torch.Tensor:
    """The displacement field ``(B, N, *size)`` of a matrix transform.

    Args:
        matrix: maps *output* pixel-centre coordinates to *input* ones (the direction of a
            sampling grid), homogeneous: ``(B, 3, 3)`` or ``(B, 2, 3)`` for images,
            ``(B, 4, 4)`` or ``(B, 3, 4)`` for volumes, or one unbatched matrix. With
            ``normalized=True`` it maps normalised coordinates instead: PyTorch's
            ``affine_grid`` ``theta`` or :meth:`torchstn.transforms.MatrixTransform.to_matrix`.
        size: ``(H, W)`` or ``(D, H, W)`` of the field (input and output).
        align_corners: the convention of a normalised matrix.

    Example:
        >>> shift = torch.tensor([[1.0, 0, 2], [0, 1, -1]])  # reads 2 px right, 1 px up
        >>> from_matrix(shift, (2, 3))[0, :, 0, 0]
        tensor([ 2., -1.])
    """
    sides = check_spatial_size(size, "size", 3 if len(tuple(size)) == 3 else 2)
    n = len(sides)
    m = _pixel_matrix(matrix, n, "matrix")
    if not m.is_floating_point():
        m = m.float()
    if normalized:
        m = normalized_matrix_to_pixel(m, sides, sides, align_corners)
    points = _pixel_points(sides, m.dtype, m.device)[None]
    return _apply_matrix(m, points) - points


def from_transform(
    transform: Any, params: torch.Tensor, size: Sequence[int], align_corners: bool = False
) -> torch.Tensor:
    """The displacement field ``(B, N, *size)`` of a torchstn transform (an instance of any
    family: matrices, splines and dense families, e.g. ``torchstn.transforms.get("tps")``) at
    ``params`` ``(B, P)``.

    Example:
        >>> from torchstn.transforms import get
        >>> u = from_transform(get("translation"), torch.tensor([[0.5, 0.0]]), (4, 4))
        >>> u[0, :, 1, 1]  # 0.5 normalised units of a 4-pixel side: one pixel
        tensor([1., 0.])
    """
    grid = getattr(transform, "grid", None)
    if not callable(grid):
        raise InvalidInputError(
            f"transform: expected a torchstn transform (torchstn.transforms.get(name)), got "
            f"{transform!r}"
        )
    return from_grid(grid(params, size, align_corners), align_corners)


def compose(
    u: torch.Tensor,
    w: torch.Tensor,
    padding_mode: str = "border",
    align_corners: bool = False,
) -> torch.Tensor:
    """The displacement of "apply ``w``, then ``u``": ``c(p) = u(p) + w(p + u(p))``, with one
    resampling (of ``w``), so that ``warp(warp(x, w), u)`` and ``warp(x, compose(u, w))`` agree
    (the second resamples ``x`` once, and is sharper).

    Either argument may be a pixel matrix instead of a field (output pixel to input pixel,
    :func:`from_matrix`): ``compose(u, M)`` is exact, ``M(p + u(p)) - p`` with no resampling;
    ``compose(M, w)`` reads ``w`` at ``M p``.

    Args:
        u, w: fields ``(B, N, *spatial)`` of one size (batch sizes equal or 1), or matrices.
        padding_mode: how ``w`` is read beyond its grid: ``"border"`` (the nearest border
            displacement, the default: a constant field stays constant), ``"zeros"`` or
            ``"reflection"``.

    Example:
        >>> a = torch.zeros(1, 2, 4, 4); a[:, 0] = 1
        >>> b = torch.zeros(1, 2, 4, 4); b[:, 1] = 2
        >>> compose(a, b)[0, :, 0, 0]
        tensor([1., 2.])
    """
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    for name, t in (("u", u), ("w", w)):
        check_tensor(t, name)
    if _is_matrix(u) and _is_matrix(w):
        raise InvalidInputError(
            f"compose: u {tuple(u.shape)} and w {tuple(w.shape)} are both matrices; multiply "
            "them (u's matrix @ ... is not a field): compose needs at least one field"
        )
    if _is_matrix(w):
        n = check_field(u, "u")
        m = _pixel_matrix(w, n, "w").to(u.dtype)
        points = _pixel_points(u.shape[2:], u.dtype, u.device)[None]
        return _apply_matrix(m, points + u) - points
    if _is_matrix(u):
        n = check_field(w, "w")
        m = _pixel_matrix(u, n, "u").to(w.dtype)
        points = _pixel_points(w.shape[2:], w.dtype, w.device)[None]
        field = _apply_matrix(m, points) - points
        return field + warp(w, field, "bilinear", padding_mode, align_corners)
    check_field(u, "u")
    check_field(w, "w", like=u)
    if w.dtype != u.dtype:
        raise InvalidInputError(f"compose: u is {u.dtype} but w is {w.dtype}")
    w, u = _batched(w, u)
    return u + warp(w, u, "bilinear", padding_mode, align_corners)


class Inverse(NamedTuple):
    """What :func:`inverse` returns."""

    #: the inverse displacement ``(B, N, *spatial)``.
    field: torch.Tensor
    #: ``(B,)`` the largest ``|compose(field, u)|`` (pixels) over the grid: how far the
    #: inverse is from exact (0 for an exact inverse).
    residual: torch.Tensor


def inverse(
    u: torch.Tensor,
    iterations: int = 20,
    *,
    velocity: bool = False,
    steps: int = 7,
    tolerance: float | None = None,
    padding_mode: str = "border",
    align_corners: bool = False,
) -> Inverse:
    """The inverse of a displacement field (``warp(warp(x, u), inverse)`` ~ ``x``), or of the
    flow of a velocity field.

    A displacement is inverted by the fixed-point iteration ``w <- -u(p + w(p))`` (the inverse
    ``p -> p + w(p)`` of ``p -> p + u(p)`` satisfies ``w(p) + u(p + w(p)) = 0``), which
    converges where ``u`` contracts (the Jacobian of ``u`` below 1 in norm, a map far from
    folding); the residual says how close it came. A velocity field (``velocity=True``) is
    inverted by negation: the result is ``integrate(-u, steps, padding_mode)`` and the residual
    is measured against ``integrate(u, steps, padding_mode)`` (exact but for the integration's
    discretisation).

    Args:
        u: the field ``(B, N, *spatial)``.
        iterations: fixed-point iterations (displacements).
        velocity: ``u`` is a stationary velocity field.
        steps: squarings of the velocity's integration.
        tolerance: stop early once every residual is below this many pixels.
        padding_mode: how ``u`` is read beyond the grid.

    Example:
        >>> u = torch.zeros(1, 2, 8, 8); u[:, 0] = 1.5
        >>> inv = inverse(u)
        >>> inv.field[0, 0, 4, 4], float(inv.residual)
        (tensor(-1.5000), 0.0)
    """
    check_field(u, "u")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InvalidInputError(f"iterations: expected an integer >= 1, got {iterations!r}")
    tol = None if tolerance is None else check_positive(tolerance, "tolerance")
    if velocity:
        forward = integrate(u, steps, padding_mode, align_corners)
        back = integrate(-u, steps, padding_mode, align_corners)
        return Inverse(back, _residual(back, forward, padding_mode, align_corners))
    w = -u
    for _ in range(iterations - 1):
        w = -warp(u, w, "bilinear", padding_mode, align_corners)
        if tol is not None and bool((_residual(w, u, padding_mode, align_corners) < tol).all()):
            break
    return Inverse(w, _residual(w, u, padding_mode, align_corners))


def _residual(
    w: torch.Tensor, u: torch.Tensor, padding_mode: str, align_corners: bool
) -> torch.Tensor:
    """``(B,)`` max over the grid of the length of ``compose(w, u)`` (0 for an exact inverse)."""
    c = w + warp(u, w, "bilinear", padding_mode, align_corners)
    return c.detach().norm(dim=1).flatten(1).amax(1)


def resize(u: torch.Tensor, size: Sequence[int] | int, align_corners: bool = False) -> torch.Tensor:
    """A field resampled to another grid ``size`` (linear interpolation), its displacements
    rescaled to the new pixels: channel ``i`` times ``new / old`` along axis ``i`` (with
    ``align_corners=True``, ``(new - 1) / (old - 1)``). A field predicted at half resolution,
    resized to the image, moves every point as far (in the image's extent) as it did.

    Example:
        >>> u = torch.ones(1, 2, 4, 4)
        >>> resize(u, (8, 8))[0, :, 3, 3]
        tensor([2., 2.])
    """
    n = check_field(u, "u")
    sides = check_spatial_size(size, "size", n)
    old = tuple(int(s) for s in u.shape[2:])
    if sides == old:
        return u
    out = F.interpolate(
        u, size=sides, mode="bilinear" if n == 2 else "trilinear", align_corners=align_corners
    )
    ratios = []
    for new_n, old_n in zip(reversed(sides), reversed(old), strict=True):
        if align_corners:
            ratios.append((new_n - 1) / (old_n - 1) if old_n > 1 and new_n > 1 else 1.0)
        else:
            ratios.append(new_n / old_n)
    return out * _channel_view(ratios, out, last=False)


def jacobian_determinant(u: torch.Tensor) -> torch.Tensor:
    """The Jacobian determinant ``(B, *spatial)`` of ``p -> p + u(p)``: ``det(I + grad u)``.

    Derivatives are finite differences in pixels (:func:`torch.gradient`: central inside,
    one-sided at the borders; 0 along an axis of one pixel), as voxelmorph's
    ``jacobian_determinant`` computes them. 1 is volume-preserving, above 1 expands, below 1
    shrinks, ``<= 0`` folds (:func:`folded_share`).

    Example:
        >>> u = from_matrix(torch.tensor([[2.0, 0, 0], [0, 3, 0]]), (5, 5))  # x2, x3 scaling
        >>> jacobian_determinant(u)[0, 2, 2]
        tensor(6.)
    """
    n = check_field(u, "u")
    spatial = u.shape[2:]
    # derivative along torchstn axis j (x, y, z) is along tensor dim 2 + n - 1 - j
    grads: list[torch.Tensor] = []
    for j in range(n):
        dim = 2 + n - 1 - j
        if u.shape[dim] < 2:
            grads.append(torch.zeros_like(u))
        else:
            grads.append(torch.gradient(u, dim=dim)[0])
    # J[i][j] = delta_ij + d u_i / d x_j
    jac = [[grads[j][:, i] + (1.0 if i == j else 0.0) for j in range(n)] for i in range(n)]
    if n == 2:
        det = jac[0][0] * jac[1][1] - jac[0][1] * jac[1][0]
    else:
        det = (
            jac[0][0] * (jac[1][1] * jac[2][2] - jac[1][2] * jac[2][1])
            - jac[0][1] * (jac[1][0] * jac[2][2] - jac[1][2] * jac[2][0])
            + jac[0][2] * (jac[1][0] * jac[2][1] - jac[1][1] * jac[2][0])
        )
    return det.view(u.shape[0], *spatial)


def folded_share(u: torch.Tensor) -> torch.Tensor:
    """``(B,)`` the fraction (0 to 1) of pixels (voxels) where ``u`` folds: Jacobian
    determinant ``<= 0`` (:func:`jacobian_determinant`).

    Example:
        >>> u = torch.zeros(1, 2, 4, 4)
        >>> u[0, 0, :, 1] = 3.0  # column 1 reads column 4, column 2 reads column 2: folded
        >>> folded_share(u)  # column 2: det = 1 + (0 - 3) / 2 < 0
        tensor([0.2500])
    """
    det = jacobian_determinant(u)
    return (det <= 0).flatten(1).to(torch.float32).mean(1)
