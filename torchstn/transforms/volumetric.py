"""The matrix families in 3-D: 4x4 matrices acting on ``(x, y, z, 1)``.

Convention (that of :mod:`torchstn.functional.coords`, extended): points are ``(x, y, z)`` with
``x`` along W, ``y`` along H and ``z`` along D of a ``(B, C, D, H, W)`` volume, exactly the order
in which :func:`torch.nn.functional.grid_sample` reads the last axis of a 5-D grid. As in 2-D, a
transform maps normalised *output* points to normalised *input* points.

Rotations are rotation vectors (axis times angle in radians, right-handed about the axis in
``(x, y, z)``), turned into matrices by Rodrigues' formula. Why this parametrisation:

* it has three numbers for three degrees of freedom, so a localisation head predicts it freely
  (no constraint to keep, unlike a quaternion's unit norm or a matrix's orthogonality);
* it cannot degenerate where a transformer lives: Euler angles lose a degree of freedom at a
  pitch of +-90 degrees (gimbal lock: two angles then turn about the same axis and the
  gradient of one direction vanishes), while the rotation vector's map to rotations is smooth
  and locally one-to-one for every angle below 360 degrees, the identity included (the
  derivative there is the three generators themselves);
* it is computed with ``sin(t) / t`` and ``2 sin(t / 2)^2 / t^2``, both free of cancellation,
  and exact at ``t = 0`` with a finite gradient (a float64 ``gradcheck`` passes at the identity).

The way back (:meth:`Rigid3D.from_matrix`) goes through the unit quaternion of the matrix, taken
from its largest diagonal combination (Shepperd's method), so that it is accurate at every angle,
180 degrees included, where the trace formula ``acos((tr - 1) / 2)`` loses all its digits.
"""

from __future__ import annotations

import torch

from .base import MatrixTransform, safe_denominator

__all__ = [
    "Affine3D",
    "Attention3D",
    "Projective3D",
    "Rigid3D",
    "Similarity3D",
    "Translation3D",
    "rotation_matrix",
    "rotation_vector",
]


def _last_row(params: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 4)``: the row ``(0, 0, 0, 1)`` of an affine 4x4 matrix."""
    row = torch.zeros(4, dtype=params.dtype, device=params.device)
    row[3] = 1
    return row.expand(params.shape[0], 1, 4)


def _affine(linear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``(B, 4, 4)`` from a ``(B, 3, 3)`` linear part and a ``(B, 3)`` shift."""
    top = torch.cat((linear, shift[:, :, None]), dim=2)
    return torch.cat((top, _last_row(shift)), dim=1)


def _normalised(matrix: torch.Tensor) -> torch.Tensor:
    """A homogeneous matrix scaled so that its corner entry is 1."""
    return matrix / matrix[:, 3:4, 3:4]


def rotation_matrix(vector: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(B, 3, 3)`` of rotation vectors ``(B, 3)`` (Rodrigues' formula).

    ``R = I + a K + b K^2`` with ``K`` the cross-product matrix of ``v``, ``t = |v|``,
    ``a = sin(t) / t`` and ``b = 2 sin(t / 2)^2 / t^2`` (1 and 1/2 at ``t = 0``).

    Example:
        >>> import math
        >>> rotation_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]])).round(decimals=6)[0] + 0.0
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]])
    """
    vx, vy, vz = vector.unbind(-1)
    t2 = (vector * vector).sum(-1)
    nonzero = t2 > 0
    t = torch.where(nonzero, t2, torch.ones_like(t2)).sqrt()  # no infinite slope at 0
    half = torch.sin(t / 2) / t
    a = torch.where(nonzero, torch.sin(t) / t, torch.ones_like(t))
    b = torch.where(nonzero, 2 * half * half, torch.full_like(t, 0.5))
    zero = torch.zeros_like(vx)
    k = torch.stack((zero, -vz, vy, vz, zero, -vx, -vy, vx, zero), dim=-1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=vector.dtype, device=vector.device)
    return eye + a[:, None, None] * k + b[:, None, None] * (k @ k)


def rotation_vector(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation vectors ``(B, 3)`` of rotation matrices ``(B, 3, 3)``, angles in ``[0, pi]``.

    Through the unit quaternion of the matrix, read from the largest of ``1 + tr``, ``1 + 2 R_ii
    - tr`` (Shepperd's method): accurate at every angle. A matrix that is not a rotation is
    projected on the way (the quaternion is normalised).

    Example:
        >>> v = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
        >>> torch.allclose(rotation_vector(rotation_matrix(v)), v)
        True
    """
    r = matrix
    r00, r01, r02 = r[:, 0, 0], r[:, 0, 1], r[:, 0, 2]
    r10, r11, r12 = r[:, 1, 0], r[:, 1, 1], r[:, 1, 2]
    r20, r21, r22 = r[:, 2, 0], r[:, 2, 1], r[:, 2, 2]
    trace = r00 + r11 + r22
    # 4 q_i^2 for each of w, x, y, z; the largest gives the best-conditioned formula
    diag = torch.stack((1 + trace, 1 + 2 * r00 - trace, 1 + 2 * r11 - trace, 1 + 2 * r22 - trace))
    root = diag.clamp_min(1e-30).sqrt()  # 2 |q_i|
    sx, sy, sz = r21 - r12, r02 - r20, r10 - r01  # 4 w (x, y, z)
    pxy, pxz, pyz = r01 + r10, r02 + r20, r12 + r21  # 4 (xy, xz, yz)
    candidates = torch.stack(
        (
            torch.stack((root[0], sx / root[0], sy / root[0], sz / root[0])),
            torch.stack((sx / root[1], root[1], pxy / root[1], pxz / root[1])),
            torch.stack((sy / root[2], pxy / root[2], root[2], pyz / root[2])),
            torch.stack((sz / root[3], pxz / root[3], pyz / root[3], root[3])),
        )
    )  # (4 cases, 4 components, B): each row is 2 q, (w, x, y, z)
    best = diag.argmax(0)  # (B,)
    q = candidates.permute(2, 0, 1)[torch.arange(r.shape[0], device=r.device), best]  # (B, 4)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)  # w >= 0: the angle in [0, pi]
    w, xyz = q[:, 0], q[:, 1:]
    sin_half = xyz.norm(dim=-1)
    angle = 2 * torch.atan2(sin_half, w)
    nonzero = sin_half > 0
    safe = torch.where(nonzero, sin_half, torch.ones_like(sin_half))
    factor = torch.where(nonzero, angle / safe, 2 / w.clamp_min(0.5))
    return xyz * factor[:, None]


class Affine3D(MatrixTransform):
    """The general 3-D affine map: 12 params, PyTorch's 3x4 ``theta`` of a 5-D
    :func:`torch.nn.functional.affine_grid`, row by row.

    Example:
        >>> t = Affine3D()
        >>> t.identity_params()
        tensor([1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1., 0.])
        >>> t.grid(t.identity_params()[None], (2, 2, 2)).shape
        torch.Size([1, 2, 2, 2, 3])
    """

    name = "affine3d"
    ndim = 3
    num_params = 12
    translation_indices = (3, 7, 11)

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        return torch.cat((params.reshape(-1, 3, 4), _last_row(params)), dim=1)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return _normalised(matrix)[:, :3, :].reshape(-1, 12)


class Translation3D(MatrixTransform):
    """A shift ``(tx, ty, tz)`` in normalised units.

    Example:
        >>> Translation3D().map_points(torch.tensor([[0.5, 0, -0.25]]), torch.zeros(1, 1, 3))
        tensor([[[ 0.5000,  0.0000, -0.2500]]])
    """

    name = "translation3d"
    ndim = 3
    num_params = 3
    translation_indices = (0, 1, 2)

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(3, dtype=params.dtype, device=params.device).expand(params.shape[0], 3, 3)
        return _affine(eye, params)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        return _normalised(matrix)[:, :3, 3]


class Attention3D(MatrixTransform):
    """An isotropic zoom and shift, params ``(s, tx, ty, tz)``: the window of half-size ``s``
    centred at ``(tx, ty, tz)`` (the 3-D counterpart of ``attention``).

    Example:
        >>> Attention3D().to_matrix(torch.tensor([[0.5, 0.1, 0.0, -0.2]]))[0]
        tensor([[ 0.5000,  0.0000,  0.0000,  0.1000],
                [ 0.0000,  0.5000,  0.0000,  0.0000],
                [ 0.0000,  0.0000,  0.5000, -0.2000],
                [ 0.0000,  0.0000,  0.0000,  1.0000]])
    """

    name = "attention3d"
    ndim = 3
    num_params = 4
    translation_indices = (1, 2, 3)
    scale_index = 0

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(3, dtype=params.dtype, device=params.device)
        return _affine(params[:, :1, None] * eye, params[:, 1:])

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = _normalised(matrix)
        s = torch.diagonal(matrix[:, :3, :3], dim1=1, dim2=2).mean(-1)
        return torch.cat((s[:, None], matrix[:, :3, 3]), dim=-1)


class Rigid3D(MatrixTransform):
    """A rotation and a shift, params ``(rx, ry, rz, tx, ty, tz)``: the rotation vector (see the
    module docstring) and the translation in normalised units. ``x' = R x + t``.

    The rotation acts in the normalised frame, where a non-cubic volume's axes have different
    lengths in voxels: on a ``(D, H, W)`` volume with unequal sides it is a rotation of the
    normalised cube, not of the voxel grid.

    Example:
        >>> import math
        >>> quarter = torch.tensor([[0.0, 0.0, math.pi / 2, 0.0, 0.0, 0.0]])  # about z
        >>> Rigid3D().map_points(quarter, torch.tensor([[[1.0, 0.0, 0.0]]])).round(decimals=6) + 0.0
        tensor([[[0., 1., 0.]]])
    """

    name = "rigid3d"
    ndim = 3
    num_params = 6
    translation_indices = (3, 4, 5)

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        return _affine(rotation_matrix(params[:, :3]), params[:, 3:])

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = _normalised(matrix)
        return torch.cat((rotation_vector(matrix[:, :3, :3]), matrix[:, :3, 3]), dim=-1)


class Similarity3D(MatrixTransform):
    """A rotation, an isotropic scale and a shift, params ``(rx, ry, rz, s, tx, ty, tz)`` (the
    order of the 2-D ``similarity``: angle, scale, shift). ``x' = s R x + t``.

    Example:
        >>> Similarity3D().identity_params()
        tensor([0., 0., 0., 1., 0., 0., 0.])
    """

    name = "similarity3d"
    ndim = 3
    num_params = 7
    translation_indices = (4, 5, 6)
    scale_index = 3

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        linear = params[:, 3:4, None] * rotation_matrix(params[:, :3])
        return _affine(linear, params[:, 4:])

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = _normalised(matrix)
        linear = matrix[:, :3, :3]
        scale = linear.norm(dim=1).mean(-1)  # the mean length of the three columns
        rotation = rotation_vector(linear / scale[:, None, None])
        return torch.cat((rotation, scale[:, None], matrix[:, :3, 3]), dim=-1)


class Projective3D(MatrixTransform):
    """A 3-D homography ``H`` (4x4) with ``H[3, 3] = 1``; params are its other 15 entries, row
    by row. Source points are ``(u, v, s) / w`` with ``(u, v, s, w) = H (x, y, z, 1)``, ``|w|``
    floored at ``eps`` with its sign kept, as in 2-D.

    Example:
        >>> Projective3D().num_params, Projective3D().identity_params()[:5]
        (15, tensor([1., 0., 0., 0., 0.]))
    """

    name = "projective3d"
    ndim = 3
    num_params = 15
    translation_indices = (3, 7, 11)
    is_affine = False

    def _to_matrix(self, params: torch.Tensor) -> torch.Tensor:
        one = torch.ones_like(params[:, :1])
        return torch.cat((params, one), dim=-1).reshape(-1, 4, 4)

    def from_matrix(self, matrix: torch.Tensor) -> torch.Tensor:
        matrix = matrix / safe_denominator(matrix[:, 3:4, 3:4], self.eps)
        return matrix.reshape(-1, 16)[:, :15]
