"""Base classes of the transform families: the grid generator of the paper.

Convention:
    A transform maps points of the *output* (target) frame to the *input* (source) frame, both in
    normalised ``(x, y)`` coordinates (see :mod:`torchstn.functional.coords`). ``grid`` applies it
    to every output pixel centre, giving the coordinates the sampler reads.

Parameters come in two flavours. *Params* are what the grid generator consumes (an affine ``theta``
flattened row by row, say). *Raw* values are what a localisation network outputs; ``constrain``
maps raw values to params. Without bounds the two are the same; with ``max_translation`` the
translation is ``identity + max_translation * tanh(raw - identity)``, and with ``scale_range=(lo,
hi)`` the scale is ``lo + (hi - lo) * sigmoid(raw)``, so a drifting localisation net can never zoom
out of the image or blow up.

Initialisation (:meth:`Transform.raw_identity`, the bias of a fresh localisation head): a bound
must not start where its squashing function is flat, or the localisation net cannot move it. The
translation bound is centred on the identity, where ``tanh`` is steepest (derivative
``max_translation``). The scale starts at the identity scale 1 when that lies at least
``SCALE_INIT_MARGIN`` (a tenth) of the range inside ``scale_range``, and otherwise at that margin
from the nearer bound: the fraction ``f = (1 - lo) / (hi - lo)`` is clamped to ``[0.1, 0.9]``, so
``d scale / d raw = (hi - lo) f (1 - f)`` is at least ``0.09 (hi - lo)``, 36% of its maximum. With
``scale_range=(0.3, 1.0)`` the scale starts at 0.93 (derivative 0.063), with ``(0.3, 0.36)`` at
0.354 (derivative 0.0054).

Transforms are :class:`torch.nn.Module` s without parameters: constant tensors (the TPS system)
are buffers, so ``.to()``, ``torch.compile``, ``torch.jit.trace`` and ``torch.export`` see them,
and ``forward`` is :meth:`Transform.grid`.

Precision:
    Grids and mapped points are finite for finite params in every floating dtype. float16 and
    bfloat16 params are promoted to float32 for the arithmetic, and the result is clamped to
    ``+-coordinate_limit(dtype)`` before it is cast back: ``finfo(dtype).max / 2**12``, 16 for
    float16 (pixel coordinates ``(x + 1) W / 2`` of a 4096-pixel side then stay below float16's
    largest value; a point that far out reads the padding, as it would further out), about 8e34
    for bfloat16 (overflow only). float32 and float64 run in their own dtype, unclamped. The
    sampler does not rely on the clamp alone: off CUDA, :func:`torchstn.functional.sample` reads
    float16 and bfloat16 images through a float32 ``grid_sample``, since PyTorch's
    reduced-precision CPU kernels give NaN or read the wrong pixel that far out, differently on
    each instruction set. The homogeneous denominator of a projective map is floored at
    ``MatrixTransform.eps`` (1e-6) in magnitude, whatever the dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_finite, check_positive, check_spatial_size, check_tensor
from ..errors import InvalidInputError
from ..functional.coords import base_grid, grid_axes
from ._fastgrid import (
    DENOMINATOR_EPS,
    homogeneous_planes,
    homogeneous_volume,
    projective_grid,
    safe_denominator,
)

__all__ = [
    "DENOMINATOR_EPS",
    "SCALE_INIT_MARGIN",
    "MatrixTransform",
    "Transform",
    "compute_dtype",
    "coordinate_limit",
    "safe_denominator",
]

#: fraction of ``scale_range`` that the initial scale keeps from either bound (see
#: "Initialisation" above).
SCALE_INIT_MARGIN = 0.1

#: dtypes whose grid arithmetic runs in float32 (see "Precision" above).
_REDUCED = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype grid arithmetic runs in for params of ``dtype``: float32 for float16 and
    bfloat16, ``dtype`` itself otherwise."""
    return torch.float32 if dtype in _REDUCED else dtype


def coordinate_limit(dtype: torch.dtype) -> float:
    """Largest coordinate magnitude a float16 or bfloat16 grid holds: ``finfo(dtype).max / 2**12``.

    Example:
        >>> coordinate_limit(torch.float16)
        15.9921875
    """
    return torch.finfo(dtype).max / 2**12


def _cast_coordinates(coords: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cast coordinates computed in :func:`compute_dtype` back to ``dtype`` (clamped if reduced)."""
    if coords.dtype == dtype:
        return coords
    limit = coordinate_limit(dtype)
    return coords.clamp(-limit, limit).to(dtype)


class Transform(nn.Module):
    """A family of spatial transformations with ``num_params`` parameters.

    An :class:`torch.nn.Module` with no learnable parameters; ``forward`` is :meth:`grid`.

    Subclasses set ``name``, ``num_params``, implement ``identity_params`` and ``_map_points``
    (the maths of :meth:`map_points` on validated inputs, float32 or float64), and may override
    ``_grid`` (the same for :meth:`grid`) for speed. Constant tensors belong in buffers.

    Args:
        max_translation: if given, bound the translation parameters to ``identity +- max_translation``
            (normalised units) through ``tanh``.
        scale_range: if given, ``(lo, hi)`` bounds for the scale parameter (families with one).
    """

    name: str = "transform"
    num_params: int = 0
    #: spatial axes the family acts on: 2 for images ``(x, y)``, 3 for volumes ``(x, y, z)``.
    ndim: int = 2
    #: indices of the params that are translations, bounded by ``max_translation``.
    translation_indices: tuple[int, ...] = ()
    #: index of the isotropic scale param, bounded by ``scale_range``; None if the family has none.
    scale_index: int | None = None

    def __init__(
        self,
        *,
        max_translation: float | None = None,
        scale_range: tuple[float, float] | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if max_translation is not None:
            max_translation = check_positive(max_translation, "max_translation")
        if scale_range is not None:
            if self.scale_index is None:
                raise InvalidInputError(
                    f"scale_range: the {self.name!r} transform has no scale parameter"
                )
            try:
                lo, hi = (float(v) for v in scale_range)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"scale_range: expected (lo, hi), got {scale_range!r}"
                ) from None
            if not (0 < lo < hi < math.inf):
                raise InvalidInputError(
                    f"scale_range: expected finite 0 < lo < hi, got {scale_range!r}"
                )
            scale_range = (lo, hi)
        self.max_translation = None if max_translation is None else float(max_translation)
        self.scale_range = scale_range

    # ----------------------------------------------------------------- parameters
    def identity_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The ``(P,)`` params of the identity transform."""
        raise NotImplementedError

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        """Map raw localisation outputs ``(B, P)`` to params ``(B, P)`` (applies the bounds)."""
        if self.max_translation is None and self.scale_range is None:
            return raw
        ident = self.identity_params(raw.dtype, raw.device)
        cols = list(raw.unbind(-1))
        if self.max_translation is not None:
            for i in self.translation_indices:
                cols[i] = ident[i] + self.max_translation * torch.tanh(cols[i] - ident[i])
        if self.scale_range is not None and self.scale_index is not None:
            lo, hi = self.scale_range
            cols[self.scale_index] = lo + (hi - lo) * torch.sigmoid(cols[self.scale_index])
        return torch.stack(cols, dim=-1)

    def raw_identity(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Raw values ``(P,)`` of the initial transform: the bias of a fresh localisation head.

        ``constrain`` maps them to the identity, except for a bounded scale whose identity value
        1 lies within ``SCALE_INIT_MARGIN * (hi - lo)`` of a bound of ``scale_range`` (or outside
        it): that scale starts at ``lo + 0.1 (hi - lo)`` or ``hi - 0.1 (hi - lo)``, whichever is
        nearer to 1, where the sigmoid still has 36% of its slope (see the module docstring,
        "Initialisation").

        Example:
            >>> from torchstn.transforms import get
            >>> t = get("attention", scale_range=(0.3, 1.0))
            >>> t.constrain(t.raw_identity()[None])
            tensor([[0.9300, 0.0000, 0.0000]])
            >>> t = get("attention", scale_range=(0.5, 2.0))
            >>> t.constrain(t.raw_identity()[None])
            tensor([[1., 0., 0.]])
        """
        raw = self.identity_params(dtype, device).clone()
        if self.scale_range is not None and self.scale_index is not None:
            lo, hi = self.scale_range
            frac = min(max((1.0 - lo) / (hi - lo), SCALE_INIT_MARGIN), 1 - SCALE_INIT_MARGIN)
            raw[self.scale_index] = math.log(frac / (1 - frac))
        return raw

    def check_params(self, params: torch.Tensor, name: str = "params") -> torch.Tensor:
        """Validate a ``(B, P)`` batch of params (shape, dtype and, unless switched off with
        :class:`torchstn.set_finite_checks`, finiteness)."""
        self._check_param_shape(params, name)
        check_finite(params, name)
        return params

    def _check_param_shape(self, params: torch.Tensor, name: str = "params") -> None:
        """:meth:`check_params` without the finiteness check (which reads a flag back from the
        device; the fused kernels check the matrix where they read it)."""
        check_tensor(params, name, ndim=2)
        if params.shape[1] != self.num_params:
            raise InvalidInputError(
                f"{name}: the {self.name!r} transform takes {self.num_params} params, "
                f"got shape {tuple(params.shape)}"
            )

    # ----------------------------------------------------------------- geometry
    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Map normalised output-frame points to the input frame.

        Args:
            params: ``(B, P)`` params.
            points: ``(B, N, 2)`` ``(x, y)`` points (``(B, N, 3)`` ``(x, y, z)`` points for a
                3-D family), same dtype and device as ``params``.

        Returns:
            Source points, the shape of ``points``, in the dtype of ``params``.
        """
        self._check_points(params, points)
        work = compute_dtype(params.dtype)
        return _cast_coordinates(self._map_points(params.to(work), points.to(work)), params.dtype)

    def grid(
        self, params: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False
    ) -> torch.Tensor:
        """Sampling grid: normalised source coordinates of every output pixel (voxel).

        Args:
            params: ``(B, P)`` params.
            out_size: output size ``(H, W)``, or ``(D, H, W)`` for a 3-D family.
            align_corners: the convention of :func:`torch.nn.functional.grid_sample`.

        Returns:
            ``(B, H, W, 2)`` grid (``(B, D, H, W, 3)`` for a 3-D family) in the dtype of
            ``params``.
        """
        self.check_params(params)
        size = self.check_out_size(out_size)
        work = compute_dtype(params.dtype)
        return _cast_coordinates(self._grid(params.to(work), size, align_corners), params.dtype)

    def forward(
        self, params: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False
    ) -> torch.Tensor:
        """:meth:`grid`: ``(B, P)`` params to the ``(B, H, W, 2)`` (or ``(B, D, H, W, 3)``)
        sampling grid."""
        return self.grid(params, out_size, align_corners)

    def check_out_size(self, out_size: Sequence[int] | int) -> tuple[int, ...]:
        """``out_size`` checked against the family's axes: ``(H, W)`` for a 2-D family,
        ``(D, H, W)`` for a 3-D one (one int stands for every side)."""
        if (
            isinstance(out_size, Sequence)
            and not isinstance(out_size, (str, bytes))
            and len(out_size) != self.ndim
        ):
            want = "(H, W)" if self.ndim == 2 else "(D, H, W)"
            raise InvalidInputError(
                f"out_size: the {self.name!r} transform is {self.ndim}-D and takes {want}, got "
                f"{tuple(out_size)!r}"
            )
        return check_spatial_size(out_size, "out_size", self.ndim)

    def _map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """:meth:`map_points` on validated ``(B, P)`` params and ``(B, N, ndim)`` points."""
        raise NotImplementedError

    def _grid(
        self, params: torch.Tensor, size: tuple[int, ...], align_corners: bool
    ) -> torch.Tensor:
        """:meth:`grid` on validated ``(B, P)`` params: ``(B, *size, ndim)``."""
        pts = base_grid(size, align_corners, dtype=params.dtype, device=params.device)
        pts = pts.reshape(1, -1, self.ndim).expand(params.shape[0], -1, -1)
        return self._map_points(params, pts).reshape(-1, *size, self.ndim)

    def _check_points(self, params: torch.Tensor, points: torch.Tensor) -> None:
        self.check_params(params)
        check_tensor(points, "points", ndim=3, last_dim=self.ndim)
        if points.shape[0] != params.shape[0]:
            raise InvalidInputError(
                f"batch size mismatch: params has {params.shape[0]} rows but points has "
                f"{points.shape[0]}"
            )
        if points.device != params.device or points.dtype != params.dtype:
            raise InvalidInputError(
                f"points ({points.dtype}, {points.device}) must match params "
                f"({params.dtype}, {params.device})"
            )

    def extra_repr(self) -> str:
        extra = []
        if self.max_translation is not None:
            extra.append(f"max_translation={self.max_translation}")
        if self.scale_range is not None:
            extra.append(f"scale_range={self.scale_range}")
        return ", ".join(extra)


class MatrixTransform(Transform):
    """A family given by a matrix acting on homogeneous points (all families but the splines):
    3x3 on ``(x, y, 1)`` for images, 4x4 on ``(x, y, z, 1)`` for volumes (``ndim = 3``).

    Subclasses implement ``_to_matrix`` (``(B, P)`` params to ``(B, n + 1, n + 1)`` matrices,
    on validated params) and ``from_matrix`` (the projection of a matrix of the family back to
    its params). ``is_affine`` families skip the perspective division; the others floor the
    denominator ``|w|`` at ``eps``.
    """

    is_affine: bool = True
    #: floor of ``|w|`` in ``(u / w, v / w)`` for the families that are not affine.
    eps: float = DENOMINATOR_EPS

    def to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` params to ``(B, 3, 3)`` matrices (``(B, 4, 4)`` for a 3-D family)."""
        self.check_params(params)
        return self._to_matrix(params)

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        """:meth:`to_matrix` on validated params."""
        raise NotImplementedError

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 3)`` (``(B, 4, 4)`` for 3-D) matrices of this family to ``(B, P)`` params."""
        raise NotImplementedError

    def identity_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        n = self.ndim + 1
        eye = torch.eye(n, dtype=dtype or torch.get_default_dtype(), device=device)[None]
        return self.from_matrix(eye)[0]

    def inverse_params(self, params: torch.Tensor) -> torch.Tensor:
        """Params of the inverse transform (maps input-frame points back to the output frame)."""
        self.check_params(params)
        matrix = self._to_matrix(params.to(compute_dtype(params.dtype)))
        return self.from_matrix(torch.linalg.inv(matrix)).to(params.dtype)

    def compose(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Params of ``first o second``: ``map_points(compose(a, b), p) == map_points(a,
        map_points(b, p))``. Associative, with ``identity_params`` as neutral element."""
        self.check_params(first, "first")
        self.check_params(second, "second")
        if first.device != second.device or first.dtype != second.dtype:
            raise InvalidInputError(
                f"second must have the dtype and device of first: got {second.dtype} on "
                f"{second.device}, expected {first.dtype} on {first.device}"
            )
        if first.shape[0] != second.shape[0] and 1 not in (first.shape[0], second.shape[0]):
            raise InvalidInputError(
                f"batch size mismatch: first has {first.shape[0]} rows, second {second.shape[0]}"
            )
        work = compute_dtype(first.dtype)
        product = self._to_matrix(first.to(work)) @ self._to_matrix(second.to(work))
        return self.from_matrix(product).to(first.dtype)

    def _map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self._transform_points(self._to_matrix(params), points)

    def _grid(
        self, params: torch.Tensor, size: tuple[int, ...], align_corners: bool
    ) -> torch.Tensor:
        # separable planes (see homogeneous_planes); the grid is their (B, H, W, 2) view, and
        # the axes depend on the size only, so they are kept between calls
        axes = grid_axes(size, align_corners, dtype=params.dtype, device=params.device)
        matrix = self._to_matrix(params)
        if self.ndim == 3:
            xs, ys, zs = axes
            if not self.is_affine:
                homo = homogeneous_volume(matrix, xs, ys, zs)  # (B, 4, D, H, W)
                out = homo[:, :3] / safe_denominator(homo[:, 3:], self.eps)
                return out.permute(0, 2, 3, 4, 1)
            return homogeneous_volume(matrix[:, :3, :], xs, ys, zs).permute(0, 2, 3, 4, 1)
        xs, ys = axes
        if not self.is_affine:
            return projective_grid(matrix, xs, ys, self.eps)
        return homogeneous_planes(matrix[:, :2, :], xs, ys).permute(0, 2, 3, 1)

    def _transform_points(self, matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Apply ``(B, n + 1, n + 1)`` matrices to ``(B or 1, N, n)`` points (same arithmetic as
        ``affine_grid``: homogeneous points times the transposed matrix)."""
        n = self.ndim
        ones = torch.ones_like(points[..., :1])
        homo = torch.cat((points, ones), dim=-1)  # (B, N, n + 1)
        if self.is_affine:
            return homo @ matrix[:, :n, :].transpose(1, 2)
        out = homo @ matrix.transpose(1, 2)  # (B, N, n + 1)
        return out[..., :n] / safe_denominator(out[..., n:], self.eps)
