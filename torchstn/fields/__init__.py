"""Dense spatial transformers: displacement and velocity fields, their algebra, the losses of
learned registration and converters to other libraries' conventions.

The convention, once (details in :mod:`torchstn.fields.field`): a field is ``(B, N, *spatial)``
(``N`` = 2 for images, 3 for volumes) in pixels (voxels), channel ``i`` along the ``i``-th axis
of ``(x, y[, z])`` (x along W), and warping is backward: ``output(p) = input(p + u(p))``.

>>> from torchstn import fields
>>> x = torch.rand(1, 1, 16, 16)
>>> v = 0.5 * torch.randn(1, 2, 16, 16)
>>> u = fields.integrate(v)                   # a velocity field's displacement (scaling and squaring)
>>> y = fields.warp(x, u)                     # output(p) = x(p + u(p))
>>> inv = fields.inverse(v, velocity=True)    # the inverse flow: integrate(-v)
>>> back = fields.warp(y, inv.field)          # ~ x, away from the border
>>> float(fields.folded_share(u)[0])          # no folds in a smooth small flow
0.0
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest)

from .convert import (
    from_kornia,
    from_monai_affine,
    from_monai_ddf,
    from_scipy_affine,
    from_scipy_coordinates,
    from_theta,
    from_voxelmorph,
    to_kornia,
    to_monai_affine,
    to_monai_ddf,
    to_scipy_affine,
    to_scipy_coordinates,
    to_theta,
    to_voxelmorph,
)
from .field import (
    Inverse,
    check_field,
    compose,
    folded_share,
    from_grid,
    from_matrix,
    from_transform,
    identity,
    integrate,
    inverse,
    jacobian_determinant,
    resize,
    to_grid,
    warp,
    warp_labels,
)
from .losses import bending_energy, dice, diffusion_loss, mse_loss, ncc, ncc_loss, soft_dice_loss
from .optimize import FitResult, fit_field

__all__ = [
    "FitResult",
    "Inverse",
    "bending_energy",
    "check_field",
    "compose",
    "dice",
    "diffusion_loss",
    "fit_field",
    "folded_share",
    "from_grid",
    "from_kornia",
    "from_matrix",
    "from_monai_affine",
    "from_monai_ddf",
    "from_scipy_affine",
    "from_scipy_coordinates",
    "from_theta",
    "from_transform",
    "from_voxelmorph",
    "identity",
    "integrate",
    "inverse",
    "jacobian_determinant",
    "mse_loss",
    "ncc",
    "ncc_loss",
    "resize",
    "soft_dice_loss",
    "to_grid",
    "to_kornia",
    "to_monai_affine",
    "to_monai_ddf",
    "to_scipy_affine",
    "to_scipy_coordinates",
    "to_theta",
    "to_voxelmorph",
    "warp",
    "warp_labels",
]
