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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_finite, check_positive, check_size, check_tensor
from ..errors import InvalidInputError
from ..functional.coords import base_grid

__all__ = ["MatrixTransform", "Transform"]


class Transform:
    """A family of spatial transformations with ``num_params`` parameters.

    Subclasses set ``name``, ``num_params``, implement ``identity_params`` and ``map_points``, and
    may override ``grid`` for speed.

    Args:
        max_translation: if given, bound the translation parameters to ``identity +- max_translation``
            (normalised units) through ``tanh``.
        scale_range: if given, ``(lo, hi)`` bounds for the scale parameter (families with one).
    """

    name: str = "transform"
    num_params: int = 0
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
        """Raw values that ``constrain`` maps to the identity (or, when the identity scale lies
        outside ``scale_range``, to the nearest scale inside it); the bias of a fresh localisation
        head."""
        raw = self.identity_params(dtype, device).clone()
        if self.scale_range is not None and self.scale_index is not None:
            lo, hi = self.scale_range
            frac = min(max((1.0 - lo) / (hi - lo), 1e-3), 1 - 1e-3)
            raw[self.scale_index] = math.log(frac / (1 - frac))
        return raw

    def check_params(self, params: torch.Tensor, name: str = "params") -> torch.Tensor:
        """Validate a ``(B, P)`` batch of params (shape, dtype, finiteness)."""
        check_tensor(params, name, ndim=2)
        if params.shape[1] != self.num_params:
            raise InvalidInputError(
                f"{name}: the {self.name!r} transform takes {self.num_params} params, "
                f"got shape {tuple(params.shape)}"
            )
        check_finite(params, name)
        return params

    # ----------------------------------------------------------------- geometry
    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Map ``(B, N, 2)`` normalised output-frame points to the input frame."""
        raise NotImplementedError

    def grid(
        self, params: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False
    ) -> torch.Tensor:
        """Sampling grid: normalised source coordinates ``(B, H, W, 2)`` of every output pixel.

        Args:
            params: ``(B, P)`` params.
            out_size: output size ``(H, W)``.
            align_corners: the convention of :func:`torch.nn.functional.grid_sample`.
        """
        self.check_params(params)
        h, w = check_size(out_size, "out_size")
        pts = base_grid((h, w), align_corners, dtype=params.dtype, device=params.device)
        pts = pts.reshape(1, h * w, 2).expand(params.shape[0], -1, -1)
        return self.map_points(params, pts).reshape(-1, h, w, 2)

    def _check_points(self, params: torch.Tensor, points: torch.Tensor) -> None:
        self.check_params(params)
        check_tensor(points, "points", ndim=3, last_dim=2)
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

    def __repr__(self) -> str:
        extra = []
        if self.max_translation is not None:
            extra.append(f"max_translation={self.max_translation}")
        if self.scale_range is not None:
            extra.append(f"scale_range={self.scale_range}")
        return f"{type(self).__name__}({', '.join(extra)})"


class MatrixTransform(Transform):
    """A family given by a 3x3 matrix acting on homogeneous points (all families but TPS).

    Subclasses implement ``to_matrix`` and ``from_matrix`` (the projection of a matrix of the
    family back to its params). ``is_affine`` families skip the perspective division.
    """

    is_affine: bool = True

    def to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` params to ``(B, 3, 3)`` matrices."""
        raise NotImplementedError

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 3)`` matrices of this family to ``(B, P)`` params."""
        raise NotImplementedError

    def identity_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        eye = torch.eye(3, dtype=dtype or torch.get_default_dtype(), device=device)[None]
        return self.from_matrix(eye)[0]

    def inverse_params(self, params: torch.Tensor) -> torch.Tensor:
        """Params of the inverse transform (maps input-frame points back to the output frame)."""
        self.check_params(params)
        return self.from_matrix(torch.linalg.inv(self.to_matrix(params)))

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
        return self.from_matrix(self.to_matrix(first) @ self.to_matrix(second))

    def map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        self._check_points(params, points)
        return self._apply(self.to_matrix(params), points)

    def grid(
        self, params: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False
    ) -> torch.Tensor:
        self.check_params(params)
        h, w = check_size(out_size, "out_size")
        pts = base_grid((h, w), align_corners, dtype=params.dtype, device=params.device)
        pts = pts.reshape(1, h * w, 2)
        return self._apply(self.to_matrix(params), pts).reshape(-1, h, w, 2)

    def _apply(self, matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Apply ``(B, 3, 3)`` matrices to ``(B or 1, N, 2)`` points (same arithmetic as
        ``affine_grid``: homogeneous points times the transposed matrix)."""
        ones = torch.ones_like(points[..., :1])
        homo = torch.cat((points, ones), dim=-1)  # (B, N, 3)
        if self.is_affine:
            return homo @ matrix[:, :2, :].transpose(1, 2)
        out = homo @ matrix.transpose(1, 2)  # (B, N, 3)
        return out[..., :2] / safe_denominator(out[..., 2:])


#: smallest magnitude of the homogeneous denominator of a projective map.
DENOMINATOR_EPS = 1e-6


def safe_denominator(w: torch.Tensor, eps: float = DENOMINATOR_EPS) -> torch.Tensor:
    """Clamp ``w`` away from zero keeping its sign (0 counts as positive): ``|w| >= eps``.

    Points on or near the projective horizon thus map far away (and sample zeros) instead of
    producing Inf or NaN.
    """
    sign = torch.where(w < 0, -torch.ones_like(w), torch.ones_like(w))
    return sign * w.abs().clamp_min(eps)
