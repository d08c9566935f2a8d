"""Thin plate splines (Bookstein 1989) on a regular grid of control points, in 2-D and 3-D.

The radial basis is the fundamental solution of the biharmonic equation in each dimension, so
that the interpolant is the one of least bending energy: ``U(r) = r^2 log r^2`` in the plane,
``U(r) = -r`` in space (Duchon's splines; the sign makes the kernel conditionally positive
definite, as ``r^2 log r^2`` is in 2-D, so that ``reg`` smooths in both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_positive, check_spatial_size, is_scripting_or_tracing
from ..errors import InvalidInputError
from ..functional.coords import base_grid, grid_axes
from .base import Transform, compute_dtype

__all__ = ["TPS", "TPS3D"]


def _kernel(d2: torch.Tensor, dims: int) -> torch.Tensor:
    """The radial basis of squared distances ``d2``: ``d2 log d2`` (2-D) or ``-sqrt(d2)``
    (3-D; the root's slope is kept finite at 0, where the kernel's own slope is 0 by
    symmetry)."""
    if dims == 2:
        return d2 * torch.log(d2.clamp_min(1e-30))
    return -d2.clamp_min(1e-30).sqrt()


def _radial(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``U(|p - c|)`` between ``(..., N, n)`` points and ``(K, n)`` centres: ``(..., N, K)``."""
    d2 = ((points[..., :, None, :] - centres) ** 2).sum(-1)
    return _kernel(d2, centres.shape[-1])


def _radial_on_grid(axes: tuple[torch.Tensor, ...], centres: torch.Tensor) -> torch.Tensor:
    """:func:`_radial` for the points of the grid of ``axes`` (``xs`` ``(W,)``, ``ys`` ``(H,)``
    and in 3-D ``zs`` ``(D,)``), row-major: ``(H W, K)`` or ``(D H W, K)``. Separable
    (``r^2 = dx^2 + dy^2 [+ dz^2]``), so the same numbers at a fraction of the cost."""
    dx2 = (axes[0][:, None] - centres[:, 0]) ** 2  # (W, K)
    dy2 = (axes[1][:, None] - centres[:, 1]) ** 2  # (H, K)
    d2 = dx2[None, :, :] + dy2[:, None, :]  # (H, W, K)
    if len(axes) == 3:
        dz2 = (axes[2][:, None] - centres[:, 2]) ** 2  # (D, K)
        d2 = d2[None] + dz2[:, None, None, :]  # (D, H, W, K)
    return _kernel(d2.reshape(-1, centres.shape[0]), centres.shape[-1])


def _basis(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Rows ``[U(|p - c_1|), ..., U(|p - c_K|), 1, x, y[, z]]`` for ``(..., N, n)`` points."""
    ones = torch.ones_like(points[..., :1])
    return torch.cat((_radial(points, centres), ones, points), dim=-1)


def _system_inverse(centres: torch.Tensor, reg: float) -> torch.Tensor:
    """``L^-1`` of the ``(K + n + 1, K + n + 1)`` system ``[[U + reg I, P], [P^T, 0]]`` for
    ``(K, n)`` float64 centres, ``P = [1, x, y[, z]]``."""
    k, n = centres.shape
    kernel = _radial(centres, centres) + reg * torch.eye(k, dtype=centres.dtype)
    p = torch.cat((torch.ones(k, 1, dtype=centres.dtype), centres), dim=1)  # (K, n + 1)
    system = torch.zeros(k + n + 1, k + n + 1, dtype=centres.dtype)
    system[:k, :k] = kernel
    system[:k, k:] = p
    system[k:, :k] = p.T
    return torch.linalg.inv(system)


class TPS(Transform):
    """Thin plate spline warp driven by a ``gh x gw`` grid of control points (4x4 by default).

    Params are the *source* positions of the control points, ``(x_1, y_1, ..., x_K, y_K)`` in the
    normalised frame; the control points themselves sit on a regular grid spanning ``[-1, 1]^2``
    of the *output* frame. The identity params are those grid positions. The spline maps every
    output point ``p`` to ``A (1, x, y) + sum_k w_k U(|p - c_k|)``, the interpolant of minimal
    bending energy (or, with ``reg > 0``, a smoothed approximant: the regulariser ``lambda`` is
    added to the kernel diagonal).

    The control-point system depends only on the configuration: its inverse is solved once, in
    float64, when the transform is built, and kept with the control points as non-persistent
    buffers (``centres`` ``(K, 2)`` and ``system_inv`` ``(K + 3, K + 3)``): they follow
    ``.to()``, ``torch.jit.trace``, ``torch.compile`` and ``torch.export`` read them as the
    module's buffers, and they stay out of ``state_dict``. The ``(H W, K)`` matrix taking
    control-point displacements to grid displacements is built from them (in the buffers' dtype,
    float32 at least) the first time a size is asked for, and kept (a few sizes, per dtype and
    device; not while tracing): a :meth:`grid` call is then one batched product, no solve and no
    rebuild.

    Args:
        grid_size: control points per side, an int or ``(gh, gw)``, each at least 2.
        reg: the regulariser ``lambda >= 0``.
        max_translation: bound each control point's offset from its identity position.

    Example:
        >>> t = TPS(grid_size=3)
        >>> t.num_params
        18
        >>> g = t.grid(t.identity_params()[None], (4, 4))
        >>> torch.allclose(g, base_grid((4, 4))[None])
        True
    """

    name = "tps"
    scale_index = None
    centres: torch.Tensor
    system_inv: torch.Tensor

    def __init__(
        self,
        grid_size: int | Sequence[int] = 4,
        reg: float = 0.0,
        *,
        max_translation: float | None = None,
    ) -> None:
        super().__init__(max_translation=max_translation)
        sides = check_spatial_size(grid_size, "grid_size", self.ndim)
        if min(sides) < 2:
            raise InvalidInputError(
                f"grid_size: expected at least 2 points per side, got {grid_size!r}"
            )
        reg = check_positive(reg, "reg", allow_zero=True)
        self.grid_size = sides
        self.reg = float(reg)
        self.num_params = self.ndim * math.prod(sides)
        self.translation_indices = tuple(range(self.num_params))
        # control points on the output frame, row-major, (x, y[, z]) order: (K, n) float64
        centres = base_grid(sides, align_corners=True, dtype=torch.float64)
        centres = centres.reshape(-1, self.ndim)
        self.register_buffer("centres", centres, persistent=False)
        self.register_buffer("system_inv", _system_inverse(centres, self.reg), persistent=False)
        # (H, W, align_corners, dtype, device, buffers' dtype) -> (points, matrix) of _grid
        self._grid_cache: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- constants
    def control_points(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The ``(K, n)`` control points in the output frame (default dtype, and the transform's
        device, unless given)."""
        return self.centres.to(dtype=dtype or torch.get_default_dtype(), device=device)

    def system_inverse(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The inverse ``L^-1`` of the ``(K + n + 1, K + n + 1)`` TPS system (solved in float64 when the
        transform was built), in ``dtype`` on ``device`` (by default those of the buffer)."""
        return self.system_inv.to(dtype=dtype, device=device)

    def _constants(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The centres ``(K, n)`` and ``L^-1[:, :K]`` ``(K + n + 1, K)`` on the device of ``like``,
        in the buffers' dtype (float32 at least)."""
        dtype = compute_dtype(self.centres.dtype)
        k = self.centres.shape[0]
        centres = self.centres.to(dtype=dtype, device=like.device)
        inv = self.system_inv[:, :k].to(dtype=dtype, device=like.device)
        return centres, inv

    # ---------------------------------------------------------------- transform API
    def identity_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        return self.control_points(dtype, device).reshape(-1)

    def _offsets(self, params: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """``(B, K, n)`` displacements of the control points from their identity positions."""
        ident = centres.to(params.dtype).reshape(-1)
        return (params - ident).reshape(params.shape[0], -1, self.ndim)

    def _grid(
        self, params: torch.Tensor, size: tuple[int, ...], align_corners: bool
    ) -> torch.Tensor:
        pts, mat = self._grid_constants(size, align_corners, params)
        grid = pts + mat @ self._offsets(params, self.centres.to(params.device))  # (B, HW, n)
        return grid.reshape(-1, *size, self.ndim)

    def _grid_constants(
        self, size: tuple[int, ...], align_corners: bool, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(H W, n)`` output points (``D H W`` of them in 3-D) and the ``(H W, K)`` matrix taking control-point
        offsets to grid offsets, in the dtype of ``params``: built from the buffers once per
        size, convention, dtype and device (they depend on nothing else), then kept."""
        key = (*size, bool(align_corners), params.dtype, params.device, self.centres.dtype)
        cached = None if is_scripting_or_tracing() else self._grid_cache.get(key)
        if cached is not None:
            return cached
        with torch.inference_mode(False):  # usable by a later backward pass
            centres, inv = self._constants(params)
            axes = grid_axes(size, align_corners, dtype=centres.dtype, device=params.device)
            radial = _radial_on_grid(axes, centres)  # (HW, K)
            pts = base_grid(size, align_corners, dtype=centres.dtype, device=params.device)
            pts = pts.reshape(-1, self.ndim)  # (HW, n)
            basis = torch.cat((radial, torch.ones_like(pts[:, :1]), pts), dim=1)  # (HW, K + n + 1)
            cached = (pts.to(params.dtype), (basis @ inv).to(params.dtype))
        if not is_scripting_or_tracing() and params.device.type != "meta":
            if len(self._grid_cache) >= 8:
                self._grid_cache.pop(next(iter(self._grid_cache)))
            self._grid_cache[key] = cached
        return cached

    def _map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        centres, inv = self._constants(params)
        centres, inv = centres.to(params.dtype), inv.to(params.dtype)
        coeff = inv @ self._offsets(params, centres)  # (B, K + n + 1, n)
        return points + _basis(points, centres) @ coeff

    def extra_repr(self) -> str:
        extra = f"grid_size={self.grid_size}, reg={self.reg}"
        if self.max_translation is not None:
            extra += f", max_translation={self.max_translation}"
        return extra


class TPS3D(TPS):
    """The thin plate spline of volumes: a ``gd x gh x gw`` grid of control points (3 per side
    by default, 81 params) spanning ``[-1, 1]^3`` of the output frame, with the 3-D radial basis
    ``U(r) = -r`` (see the module docstring).

    Params are the source positions ``(x_1, y_1, z_1, ..., x_K, y_K, z_K)`` of the control
    points, row-major over ``(D, H, W)``; otherwise as :class:`TPS`.

    Example:
        >>> t = TPS3D()
        >>> t.num_params, t.grid_size
        (81, (3, 3, 3))
        >>> g = t.grid(t.identity_params()[None], (2, 3, 4))
        >>> torch.allclose(g, base_grid((2, 3, 4))[None], atol=1e-6)
        True
    """

    name = "tps3d"
    ndim = 3

    def __init__(
        self,
        grid_size: int | Sequence[int] = 3,
        reg: float = 0.0,
        *,
        max_translation: float | None = None,
    ) -> None:
        super().__init__(grid_size, reg, max_translation=max_translation)
