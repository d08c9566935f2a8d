"""Dense families: a displacement or a stationary velocity field as the transform's params.

A dense transform's params are a field ``(B, N, *field_size)`` in pixels of its own grid
(:mod:`torchstn.fields`: ``(x, y[, z])`` channels, backward warping), not a flat ``(B, P)``
vector. ``field_size`` is the output size, or a coarser grid (VoxelMorph predicts at half
resolution): :meth:`DenseTransform.displacement` integrates a velocity at the field's size, then
resizes the displacement to the output with its units rescaled.

In a :class:`torchstn.SpatialTransformer` the localisation net outputs feature maps
``(B, F, *s)`` and the head is a 3x3(x3) convolution to ``N`` channels with weights drawn from
``N(0, 1e-5)`` and a zero bias (VoxelMorph's flow layer): a fresh transformer is the identity to
within a rounding error, and the gradient reaches the net from the first step.

Example:
    >>> from torchstn.transforms import get
    >>> t = get("velocity", steps=7, padding_mode="border")
    >>> v = torch.zeros(2, 2, 8, 8); v[:, 0] = 1.0   # one pixel to the right, everywhere
    >>> t.displacement(v, (16, 16))[0, :, 8, 8]     # at double resolution: two pixels
    tensor([2., 0.])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .._checks import check_choice, check_tensor
from ..errors import InvalidInputError
from ..fields import field as _field
from .base import Transform

__all__ = ["DenseTransform", "Displacement", "Displacement3D", "Velocity", "Velocity3D"]


class DenseTransform(Transform):
    """The base of the dense families: params are a field ``(B, N, *field_size)``.

    Args:
        steps: squarings of the integration (velocity families only; 7 as MONAI and
            voxelmorph).
        padding_mode: how the integration reads the field beyond its grid (``"zeros"`` as
            MONAI and voxelmorph, ``"border"`` or ``"reflection"``).
    """

    #: marks a family whose params are a field (the module builds a convolutional head).
    dense = True
    #: integrate the params as a stationary velocity field.
    velocity = False

    def __init__(self, *, steps: int = 7, padding_mode: str = "zeros") -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise InvalidInputError(f"steps: expected an integer >= 0, got {steps!r}")
        if not self.velocity and steps != 7:
            raise InvalidInputError(
                f"steps: only the velocity families integrate; {self.name!r} takes none"
            )
        self.steps = steps
        self.padding_mode = check_choice(
            padding_mode, "padding_mode", ("zeros", "border", "reflection")
        )
        self.num_params = self.ndim  # one channel per axis

    def identity_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Zeros ``(N,)``: the identity field's value at every pixel."""
        return torch.zeros(self.ndim, dtype=dtype, device=device)

    def constrain(self, raw: torch.Tensor) -> torch.Tensor:
        """The field as predicted (dense families take no bounds)."""
        return raw

    def check_params(self, params: torch.Tensor, name: str = "params") -> torch.Tensor:
        """Validate a field ``(B, N, *field_size)`` (shape, dtype and finiteness)."""
        check_tensor(params, name)
        n = _field.check_field(params, name)
        if n != self.ndim:
            raise InvalidInputError(
                f"{name}: the {self.name!r} transform takes a {self.ndim}-D field "
                f"{'(B, 2, H, W)' if self.ndim == 2 else '(B, 3, D, H, W)'}, got shape "
                f"{tuple(params.shape)} (a {n}-D field takes {self._other()!r})"
            )
        return params

    def _other(self) -> str:
        """The family of the same kind for the other number of axes."""
        return self.name[:-2] if self.name.endswith("3d") else self.name + "3d"

    def displacement(
        self, params: torch.Tensor, out_size: Sequence[int] | int, align_corners: bool = False
    ) -> torch.Tensor:
        """The displacement ``(B, N, *out_size)`` in output pixels: the velocity integrated at
        the field's own size (velocity families), then resized to ``out_size``
        (:func:`torchstn.fields.resize`; ``align_corners`` says whether the corner pixels'
        centres or their outer edges of the two grids coincide).

        Example:
            >>> from torchstn.transforms import get
            >>> get("displacement").displacement(torch.ones(1, 2, 4, 4), 8)[0, :, 0, 0]
            tensor([2., 2.])
        """
        self.check_params(params)
        size = self.check_out_size(out_size)
        u = (
            _field.integrate(params, self.steps, self.padding_mode, align_corners)
            if self.velocity
            else params
        )
        return _field.resize(u, size, align_corners)

    def _grid(
        self, params: torch.Tensor, size: tuple[int, ...], align_corners: bool
    ) -> torch.Tensor:
        return _field._to_grid(self.displacement(params, size, align_corners), align_corners)

    def _map_points(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Source points of normalised output points ``(B, M, N)``: the displacement, read
        bilinearly (border padding) at the points, added to them (in normalised units, where
        a coarse field and the output share one frame)."""
        u = self.displacement(params, tuple(params.shape[2:]))
        spatial = u.shape[2:]
        scale = _field._channel_view(_field._unit_scales(spatial, False), u, last=False)
        shape = (points.shape[0], points.shape[1], *([1] * (self.ndim - 1)), self.ndim)
        read = F.grid_sample(
            u * scale, points.view(shape), "bilinear", "border", align_corners=False
        )
        return points + read.flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"steps={self.steps}" if self.velocity else ""


class Displacement(DenseTransform):
    """``displacement``: a dense displacement field of images, ``(B, 2, h, w)`` params."""

    name = "displacement"
    ndim = 2
    num_params = 2


class Velocity(DenseTransform):
    """``velocity``: a stationary velocity field of images, integrated by scaling and squaring
    (:func:`torchstn.fields.integrate`): a diffeomorphism for fine enough steps."""

    name = "velocity"
    ndim = 2
    num_params = 2
    velocity = True


class Displacement3D(DenseTransform):
    """``displacement3d``: a dense displacement field of volumes, ``(B, 3, d, h, w)``."""

    name = "displacement3d"
    ndim = 3
    num_params = 3


class Velocity3D(DenseTransform):
    """``velocity3d``: a stationary velocity field of volumes (scaling and squaring)."""

    name = "velocity3d"
    ndim = 3
    num_params = 3
    velocity = True
