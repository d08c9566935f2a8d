"""Thin plate spline transform (Bookstein 1989) on a regular grid of control points."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .._checks import check_positive, check_size
from ..errors import InvalidInputError
from ..functional.coords import base_grid
from .base import Transform

__all__ = ["TPS"]

_CACHE_LIMIT = 32


def _untraced(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run ``fn`` (a cache fill) with TorchScript tracing paused.

    A trace then holds the cached tensor as a constant, the same graph whether the cache was
    cold or warm (``torch.jit.trace`` traces twice and compares), and does not redo the
    precomputation on every call.
    """
    state = torch._C._get_tracing_state()
    if state is None:
        return fn()
    torch._C._set_tracing_state(None)  # type: ignore[attr-defined]
    try:
        return fn()
    finally:
        torch._C._set_tracing_state(state)  # type: ignore[attr-defined]


def _radial(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``U(r) = r^2 log r^2`` between ``(..., N, 2)`` points and ``(K, 2)`` centres: ``(..., N, K)``."""
    d2 = ((points[..., :, None, :] - centres) ** 2).sum(-1)
    return d2 * torch.log(d2.clamp_min(1e-30))


def _basis(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Rows ``[U(|p - c_1|), ..., U(|p - c_K|), 1, x, y]`` for ``(..., N, 2)`` points."""
    ones = torch.ones_like(points[..., :1])
    return torch.cat((_radial(points, centres), ones, points), dim=-1)


class TPS(Transform):
    """Thin plate spline warp driven by a ``gh x gw`` grid of control points (4x4 by default).

    Params are the *source* positions of the control points, ``(x_1, y_1, ..., x_K, y_K)`` in the
    normalised frame; the control points themselves sit on a regular grid spanning ``[-1, 1]^2``
    of the *output* frame. The identity params are those grid positions. The spline maps every
    output point ``p`` to ``A (1, x, y) + sum_k w_k U(|p - c_k|)``, the interpolant of minimal
    bending energy (or, with ``reg > 0``, a smoothed approximant: the regulariser ``lambda`` is
    added to the kernel diagonal).

    The control-point system depends only on the configuration, so its inverse is computed once
    (in float64) and cached per device and dtype; a grid of a given size is then one ``(H W, K)``
    matrix, also cached, and each batch costs one matrix product: no per-batch linear solve.

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

    def __init__(
        self,
        grid_size: int | Sequence[int] = 4,
        reg: float = 0.0,
        *,
        max_translation: float | None = None,
    ) -> None:
        super().__init__(max_translation=max_translation)
        gh, gw = check_size(grid_size, "grid_size")
        if gh < 2 or gw < 2:
            raise InvalidInputError(
                f"grid_size: expected at least 2 points per side, got {grid_size!r}"
            )
        reg = check_positive(reg, "reg", allow_zero=True)
        self.grid_size = (gh, gw)
        self.reg = float(reg)
        self.num_params = 2 * gh * gw
        self.translation_indices = tuple(range(self.num_params))
        # control points on the output frame, row-major, (x, y) order: (K, 2) float64
        self._centres = base_grid((gh, gw), align_corners=True, dtype=torch.float64)
        self._centres = self._centres.reshape(-1, 2)
        self._inverse_cache: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._grid_cache: dict[tuple[int, int, bool, str, torch.dtype], torch.Tensor] = {}

    # ---------------------------------------------------------------- precomputation
    def control_points(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The ``(K, 2)`` control points in the output frame."""
        return self._centres.to(dtype=dtype or torch.get_default_dtype(), device=device)

    def system_inverse(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The inverse ``L^-1`` of the ``(K + 3, K + 3)`` TPS system, cached per device/dtype
        (solved once, in float64 on the CPU, then converted)."""
        key = (str(device), dtype)
        inv = self._inverse_cache.get(key)
        if inv is None:
            inv = _untraced(lambda: self._solve().to(dtype=dtype, device=device))
            self._inverse_cache[key] = inv
        return inv

    def _solve(self) -> torch.Tensor:
        key = ("cpu", torch.float64)
        inv = self._inverse_cache.get(key)
        if inv is None:
            k = self._centres.shape[0]
            kernel = _radial(self._centres, self._centres) + self.reg * torch.eye(
                k, dtype=torch.float64
            )
            p = torch.cat((torch.ones(k, 1, dtype=torch.float64), self._centres), dim=1)  # (K, 3)
            system = torch.zeros(k + 3, k + 3, dtype=torch.float64)
            system[:k, :k] = kernel
            system[:k, k:] = p
            system[k:, :k] = p.T
            inv = torch.linalg.inv(system)
            self._inverse_cache[key] = inv
        return inv

    def _grid_matrix(
        self, size: tuple[int, int], align_corners: bool, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(H W, K)`` matrix taking control-point displacements to grid displacements, and the
        ``(H W, 2)`` identity grid."""
        key = (size[0], size[1], align_corners, str(device), dtype)
        cached = self._grid_cache.get(key)
        if cached is None:

            def build() -> torch.Tensor:
                k = self._centres.shape[0]
                pts = base_grid(size, align_corners, dtype=torch.float64).reshape(-1, 2)
                mat = _basis(pts, self._centres) @ self._solve()[:, :k]  # (HW, K)
                return torch.cat((mat, pts), dim=1).to(dtype=dtype, device=device)

            cached = _untraced(build)
            if len(self._grid_cache) >= _CACHE_LIMIT:
                self._grid_cache.pop(next(iter(self._grid_cache)))
            self._grid_cache[key] = cached
        return cached[:, :-2], cached[:, -2:]

    # ---------------------------------------------------------------- transform API
    def identity_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        return self.control_points(dtype, device).reshape(-1)

    def grid(
        self, params: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False
    ) -> torch.Tensor:
        self.check_params(params)
        h, w = check_size(out_size, "out_size")
        mat, pts = self._grid_matrix((h, w), align_corners, params.dtype, params.device)
        offsets = params - self.identity_params(params.dtype, params.device)  # (B, 2K)
        grid = pts + mat @ offsets.reshape(params.shape[0], -1, 2)  # (B, HW, 2)
        return grid.reshape(-1, h, w, 2)

    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self._check_points(params, points)
        k = self._centres.shape[0]
        inv = self.system_inverse(params.dtype, params.device)
        centres = self.control_points(params.dtype, params.device)
        offsets = (params - centres.reshape(-1)).reshape(params.shape[0], k, 2)
        coeff = inv[:, :k] @ offsets  # (B, K + 3, 2)
        return points + _basis(points, centres) @ coeff

    def __repr__(self) -> str:
        extra = f"grid_size={self.grid_size}, reg={self.reg}"
        if self.max_translation is not None:
            extra += f", max_translation={self.max_translation}"
        return f"TPS({extra})"
