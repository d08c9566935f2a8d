"""Converters between torchstn's fields and matrices and the conventions users come from.

torchstn's two targets (:mod:`torchstn.fields.field`, :mod:`torchstn.functional.coords`):

* a **pixel matrix** maps *output* pixel-centre coordinates to *input* ones (backward, the
  direction of a sampling grid), homogeneous, in ``(x, y[, z])`` order (x along W, z along D):
  ``(B, 3, 3)`` or ``(B, 2, 3)`` for images, ``(B, 4, 4)`` or ``(B, 3, 4)`` for volumes, the
  pixel in row ``i``, column ``j`` at ``(x, y) = (j, i)``;
  :func:`~torchstn.fields.from_matrix` turns it into a field;
* a **displacement field** ``u`` ``(B, N, *spatial)`` in pixels, channels in ``(x, y[, z])``
  order, warping backward: ``output(p) = input(p + u(p))``.

The other side of each pair:

===========================  ==============================================================
``from_kornia``              kornia ``warp_affine`` / ``warp_perspective`` ``M`` (``(B, 2, 3)``
/ ``to_kornia``              / ``(B, 3, 3)``) and ``warp_affine3d`` / ``warp_perspective3d``
                             (``(B, 3, 4)`` / ``(B, 4, 4)``): *source* pixel to *destination*
                             pixel (forward), pixel centres, ``(x, y[, z])`` order. The
                             torchstn matrix is its inverse; no size enters.
``from_theta``               PyTorch's ``affine_grid`` ``theta`` (``(B, 2, 3)``, ``(B, 3, 4)``):
/ ``to_theta``               normalised output to normalised input coordinates, ``(x, y[, z])``,
                             ``[-1, 1]`` at the border pixels' edges (``align_corners=False``)
                             or centres (``True``).
``from_monai_ddf``           MONAI ``Warp`` / ``DVF2DDF`` dense displacement field: channel
/ ``to_monai_ddf``           ``i`` along spatial dimension ``i`` (index order: ``(y, x)`` for
                             ``(H, W)``, ``(z, y, x)`` for ``(D, H, W)``), voxels, backward.
``from_monai_affine``        MONAI ``Affine`` / ``AffineGrid`` ``affine``: ``(N+1, N+1)`` in index
/ ``to_monai_affine``        order on voxel coordinates *centred* on the image (``i - (n-1)/2``),
                             output to input; its ``align_corners=True`` rescales both sides.
``from_voxelmorph``          voxelmorph ``SpatialTransformer`` flow: index order, voxels,
/ ``to_voxelmorph``          backward (added to a grid of indices); channels first
                             ``(B, N, *spatial)`` (PyTorch) or last ``(B, *spatial, N)``
                             (TensorFlow).
``from_scipy_affine``        ``scipy.ndimage.affine_transform`` ``matrix`` and ``offset``:
/ ``to_scipy_affine``        index order, output index ``o`` to input index ``M o + offset``.
``from_scipy_coordinates``  ``scipy.ndimage.map_coordinates`` ``coordinates`` ``(N, *spatial)``:
/ ``to_scipy_coordinates``  the absolute input index each output pixel reads, index order.
===========================  ==============================================================

Index order is the reverse of ``(x, y[, z])``: an index-order field is the torchstn field
with its channels reversed, an index-order matrix the torchstn matrix with its rows and columns
reversed (the homogeneous coordinate kept last). Pixel (index) coordinates are the same number on
both sides: every library here puts sample ``k`` of an axis at coordinate ``k``.

Matrices keep their form: a batch stays a batch and one matrix stays one matrix, an affine
``(N, N + 1)`` stays affine. Fields from MONAI and voxelmorph are ``(B, N, *spatial)``;
scipy's arrays have no batch, and a field for them must have a batch of 1.

Example:
    >>> import torch
    >>> from torchstn import fields
    >>> ddf = torch.zeros(1, 2, 4, 5)
    >>> ddf[:, 0] = 1.0  # MONAI: one pixel down (along H, the first spatial dimension)
    >>> u = from_monai_ddf(ddf)
    >>> u[0, :, 0, 0]  # torchstn: (x, y) = (0, 1)
    tensor([0., 1.])
    >>> x = torch.arange(20.0).view(1, 1, 4, 5)
    >>> fields.warp(x, u)[0, 0, 0]  # the first row reads the second
    tensor([5., 6., 7., 8., 9.])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._checks import check_finite, check_spatial_size, check_tensor
from ..errors import InvalidInputError
from ..functional.coords import normalized_matrix_to_pixel, pixel_matrix_to_normalized
from .field import _pixel_points, check_field

__all__ = [
    "from_kornia",
    "from_monai_affine",
    "from_monai_ddf",
    "from_scipy_affine",
    "from_scipy_coordinates",
    "from_theta",
    "from_voxelmorph",
    "to_kornia",
    "to_monai_affine",
    "to_monai_ddf",
    "to_scipy_affine",
    "to_scipy_coordinates",
    "to_theta",
    "to_voxelmorph",
]

#: the shapes of a matrix (its last two dimensions) -> its number of axes
_MATRIX_AXES = {(2, 3): 2, (3, 3): 2, (3, 4): 3, (4, 4): 3}


# ----------------------------------------------------------------------------- helpers


def _tensor(x: Any, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    """``x`` (a tensor, array or nested sequence) as a floating-point tensor: a floating tensor
    keeps its dtype unless ``dtype`` is given, anything else becomes ``dtype`` or torch's
    default dtype."""
    if isinstance(x, torch.Tensor) and x.is_floating_point() and dtype is None:
        return x
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInputError(
            f"{name}: expected a tensor or an array of numbers, got {type(x).__name__}"
        ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise InvalidInputError(f"{name}: expected real numbers, got dtype {t.dtype}")
    keep = isinstance(x, torch.Tensor) and t.is_floating_point()
    return t.to(dtype or (t.dtype if keep else torch.get_default_dtype()))


class _Form:
    """How a matrix was given: its axes, whether it is affine ``(N, N + 1)`` and batched."""

    def __init__(self, matrix: torch.Tensor, name: str) -> None:
        if matrix.dim() not in (2, 3) or tuple(matrix.shape[-2:]) not in _MATRIX_AXES:
            raise InvalidInputError(
                f"{name}: expected (B, 2, 3) or (B, 3, 3) for images, (B, 3, 4) or (B, 4, 4) for "
                f"volumes, batched or not, got shape {tuple(matrix.shape)}"
            )
        self.n = _MATRIX_AXES[(int(matrix.shape[-2]), int(matrix.shape[-1]))]
        self.affine = matrix.shape[-2] == self.n
        self.batched = matrix.dim() == 3

    def square(self, matrix: torch.Tensor) -> torch.Tensor:
        """``(B, N + 1, N + 1)``."""
        m = matrix if self.batched else matrix[None]
        if self.affine:
            last = torch.zeros(m.shape[0], 1, self.n + 1, dtype=m.dtype, device=m.device)
            last[..., self.n] = 1
            m = torch.cat((m, last), dim=1)
        return m

    def restore(self, square: torch.Tensor) -> torch.Tensor:
        """``square`` ``(B, N + 1, N + 1)`` back in the form the matrix was given in."""
        m = square[:, : self.n] if self.affine else square
        return m if self.batched else m[0]


def _matrix(matrix: Any, name: str, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, _Form]:
    m = _tensor(matrix, name, dtype)
    form = _Form(m, name)
    check_finite(m, name)
    return form.square(m), form


def _is_affine(square: torch.Tensor) -> bool:
    n = square.shape[-1] - 1
    bottom = torch.zeros(n + 1, dtype=square.dtype, device=square.device)
    bottom[n] = 1
    return bool((square[:, n] == bottom).all())


def _invert(square: torch.Tensor) -> torch.Tensor:
    """The inverse of ``(B, N + 1, N + 1)`` matrices; an affine one's bottom row stays exact."""
    inv = torch.linalg.inv(square)
    if _is_affine(square):
        n = square.shape[-1] - 1
        inv = torch.cat((inv[:, :n], square[:, n:]), dim=1)
    return inv


def _reverse_axes(square: torch.Tensor) -> torch.Tensor:
    """A ``(B, N + 1, N + 1)`` matrix in ``(x, y[, z])`` order to index order or back: the
    first ``N`` rows and columns reversed, the homogeneous coordinate kept last."""
    n = square.shape[-1] - 1
    order = [*range(n - 1, -1, -1), n]
    return square[:, order][:, :, order]


def _sizes(
    in_size: Sequence[int], out_size: Sequence[int] | None, n: int
) -> tuple[tuple[int, ...], ...]:
    """Checked ``(H, W)`` or ``(D, H, W)`` input and output sizes for ``n``-axis matrices."""
    sides_in = check_spatial_size(in_size, "in_size", n)
    sides_out = sides_in if out_size is None else check_spatial_size(out_size, "out_size", n)
    return sides_in, sides_out


def _diag_shift(scale: Sequence[float], shift: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """The ``(1, N + 1, N + 1)`` matrix of ``c -> scale * c + shift`` (per axis)."""
    n = len(scale)
    m = torch.eye(n + 1, dtype=torch.float64)
    for i in range(n):
        m[i, i], m[i, n] = scale[i], shift[i]
    return m.to(dtype=like.dtype, device=like.device)[None]


def _single(square: torch.Tensor, form: _Form, name: str, library: str) -> torch.Tensor:
    """The one ``(N + 1, N + 1)`` matrix of an unbatched matrix or a batch of one."""
    if square.shape[0] != 1:
        raise InvalidInputError(
            f"{name}: {library} takes one matrix, got a batch of {square.shape[0]}; "
            "convert them one at a time"
        )
    return square[0]


def _projective_error(name: str, target: str, matrix: torch.Tensor) -> InvalidInputError:
    return InvalidInputError(
        f"{name}: {target} is affine, got a projective matrix (bottom row "
        f"{matrix[0, -1].tolist()}, expected [0, ..., 0, 1])"
    )


# ----------------------------------------------------------------------------- kornia


def from_kornia(matrix: torch.Tensor) -> torch.Tensor:
    """A kornia pixel matrix as a torchstn pixel matrix (its inverse).

    kornia's ``warp_affine(src, M, dsize)`` and ``warp_perspective`` (and the 3-D
    ``warp_affine3d``, ``warp_perspective3d``) take ``M`` mapping *source* pixel coordinates to
    *destination* pixel coordinates (forward), pixel centres at integers, ``(x, y[, z])``
    order. torchstn's matrix maps output (destination) pixels to input (source) pixels, so it is
    ``M``'s inverse; neither side depends on the image sizes.

    kornia's ``align_corners`` (default ``True`` in ``warp_affine``, ``warp_perspective`` and
    ``warp_affine3d``, ``False`` in ``warp_perspective3d``): the 2-D functions normalise with the
    same convention they sample with, so both values give the same warp (they differ only with
    ``padding_mode="reflection"``) and this conversion holds for both. kornia's 3-D functions
    always normalise corner-aligned (``normalize_homography3d`` has no ``align_corners``), so
    with ``align_corners=False`` they sample a warp stretched by ``(n - 1) / n`` about the image
    centre on each axis, which no pixel matrix of ``M`` alone describes: the conversion holds
    for the 3-D functions with ``align_corners=True`` (pass it to ``warp_perspective3d``).

    Args:
        matrix: ``(B, 2, 3)`` (``warp_affine``), ``(B, 3, 3)`` (``warp_perspective``),
            ``(B, 3, 4)`` (``warp_affine3d``) or ``(B, 4, 4)`` (``warp_perspective3d``), or one
            unbatched matrix.

    Returns:
        The torchstn pixel matrix (output pixel to input pixel), in the form ``matrix`` was
        given in (an affine ``(B, 2, 3)`` stays ``(B, 2, 3)``), for
        :func:`torchstn.fields.from_matrix` or
        :func:`~torchstn.functional.pixel_matrix_to_normalized`. The exact inverse of
        :func:`to_kornia`.

    Example:
        >>> m = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]])  # kornia: moves right by 2
        >>> from_kornia(m)  # torchstn: reads 2 pixels to the left
        tensor([[[ 1.,  0., -2.],
                 [ 0.,  1.,  0.]]])
    """
    square, form = _matrix(matrix, "matrix")
    return form.restore(_invert(square))


def to_kornia(matrix: torch.Tensor) -> torch.Tensor:
    """A torchstn pixel matrix (output to input) as kornia's ``M`` (source to destination):
    its inverse, in the same form (``(B, 2, 3)`` for ``warp_affine``, ``(B, 3, 3)`` for
    ``warp_perspective``, ``(B, 3, 4)`` / ``(B, 4, 4)`` for the 3-D functions, which agree with
    torchstn only with ``align_corners=True``; see :func:`from_kornia`).

    Example:
        >>> m = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])  # reads twice as far out
        >>> to_kornia(m)  # kornia: shrinks by half
        tensor([[[0.5000, 0.0000, 0.0000],
                 [0.0000, 0.5000, 0.0000]]])
    """
    square, form = _matrix(matrix, "matrix")
    return form.restore(_invert(square))


# ----------------------------------------------------------------------------- PyTorch theta


def from_theta(
    theta: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int] | None = None,
    *,
    align_corners: bool = False,
) -> torch.Tensor:
    """PyTorch's ``affine_grid`` ``theta`` as a torchstn pixel matrix.

    ``F.grid_sample(x, F.affine_grid(theta, (B, C, *out_size), align_corners), ...,
    align_corners)``: ``theta`` maps the normalised coordinates of the output to those of the
    input (``(x, y[, z])`` order; ``-1`` and ``1`` at the outer edges of the border pixels with
    ``align_corners=False``, at their centres with ``True``). Unlike a pixel matrix, ``theta``
    depends on both sizes and on ``align_corners``.

    Args:
        theta: ``(B, 2, 3)`` or ``(B, 3, 4)`` (or a square ``(B, N + 1, N + 1)`` normalised
            matrix, e.g. :meth:`torchstn.transforms.MatrixTransform.to_matrix`), or one
            unbatched matrix.
        in_size: the input's ``(H, W)`` or ``(D, H, W)``.
        out_size: the output's (the grid's) size; defaults to ``in_size``.
        align_corners: the flag given to ``affine_grid`` and ``grid_sample``.

    Returns:
        The pixel matrix (output pixel to input pixel) in ``theta``'s form. The exact inverse of
        :func:`to_theta`.

    Example:
        >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])  # a quarter width right
        >>> from_theta(theta, (4, 8))
        tensor([[[1., 0., 2.],
                 [0., 1., 0.]]])
    """
    square, form = _matrix(theta, "theta")
    sides_in, sides_out = _sizes(in_size, out_size, form.n)
    return form.restore(normalized_matrix_to_pixel(square, sides_in, sides_out, align_corners))


def to_theta(
    matrix: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int] | None = None,
    *,
    align_corners: bool = False,
) -> torch.Tensor:
    """A torchstn pixel matrix as PyTorch's ``theta`` for ``affine_grid`` (see
    :func:`from_theta`): ``(B, 2, 3)`` or ``(B, 3, 4)`` (unbatched for one unbatched matrix).

    Raises:
        InvalidInputError: for a projective matrix, which ``affine_grid`` cannot express.

    Example:
        >>> import torch.nn.functional as F
        >>> m = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # read one pixel right
        >>> theta = to_theta(m, (3, 4))
        >>> x = torch.arange(12.0).view(1, 1, 3, 4)
        >>> F.grid_sample(x, F.affine_grid(theta, (1, 1, 3, 4), False), align_corners=False)[0, 0, 0]
        tensor([1., 2., 3., 0.])
    """
    square, form = _matrix(matrix, "matrix")
    if not _is_affine(square):
        raise _projective_error("matrix", "PyTorch's theta", square)
    sides_in, sides_out = _sizes(in_size, out_size, form.n)
    theta = pixel_matrix_to_normalized(square, sides_in, sides_out, align_corners)[:, : form.n]
    return theta if form.batched else theta[0]


# ----------------------------------------------------------------------------- MONAI, voxelmorph


def _reverse_channels(u: Any, name: str) -> torch.Tensor:
    check_field(u, name)
    return u.flip(1)  # (B, N, *spatial), channels reversed


def from_monai_ddf(ddf: torch.Tensor) -> torch.Tensor:
    """A MONAI dense displacement field as a torchstn field.

    ``monai.networks.blocks.Warp()(image, ddf)`` (and ``DVF2DDF``) reads ``image`` at the voxel
    index ``i + ddf(i)``: ``ddf`` ``(B, N, *spatial)`` in voxels with channel ``k`` along
    spatial dimension ``k`` (index order: ``(dy, dx)`` for ``(H, W)`` images, ``(dz, dy, dx)``
    for ``(D, H, W)`` volumes), normalised with ``align_corners=True``. torchstn's field is the
    same displacement with its channels in ``(x, y[, z])`` order; since both are in voxels,
    ``align_corners`` changes nothing but ``"reflection"`` padding (MONAI reflects about the
    border voxels' centres: :func:`torchstn.fields.warp` with ``align_corners=True`` does the
    same). MONAI's default padding is ``"border"``, torchstn's ``"zeros"``: pass one of them to
    the other to get the same image.

    Args:
        ddf: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``.

    Returns:
        ``(B, N, *spatial)`` torchstn field (a new tensor, channels reversed). The exact inverse
        of :func:`to_monai_ddf`.

    Example:
        >>> ddf = torch.zeros(1, 3, 2, 3, 4)
        >>> ddf[:, 0] = 1.0  # one slice deeper (along D)
        >>> from_monai_ddf(ddf)[0, :, 0, 0, 0]  # (x, y, z)
        tensor([0., 0., 1.])
    """
    return _reverse_channels(ddf, "ddf")


def to_monai_ddf(u: torch.Tensor) -> torch.Tensor:
    """A torchstn field as a MONAI dense displacement field (channels in index order, voxels;
    see :func:`from_monai_ddf`).

    Example:
        >>> u = torch.zeros(1, 2, 3, 4)
        >>> u[:, 0] = 2.0  # two pixels right (x)
        >>> to_monai_ddf(u)[0, :, 0, 0]  # (dy, dx)
        tensor([0., 2.])
    """
    return _reverse_channels(u, "u")


def from_voxelmorph(flow: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """A voxelmorph flow (displacement or velocity field) as a torchstn field.

    voxelmorph's ``SpatialTransformer`` adds the flow to a grid of voxel indices
    (``meshgrid(..., indexing="ij")``), normalises the sum with ``align_corners=True`` and
    samples with zeros padding: the flow is in voxels, channel ``k`` along spatial dimension
    ``k`` (index order, as MONAI's), backward. ``VecInt`` / ``integrate_vec`` integrate a
    velocity flow in the same layout. torchstn's field is the same numbers with the channels in
    ``(x, y[, z])`` order (a velocity converts the same way).

    Args:
        flow: ``(B, N, *spatial)`` (PyTorch voxelmorph), or with ``channels_last=True``
            ``(B, *spatial, N)`` (TensorFlow voxelmorph and neurite).
        channels_last: where the flow's channels are.

    Returns:
        ``(B, N, *spatial)`` torchstn field. The exact inverse of :func:`to_voxelmorph` with
        the same ``channels_last``.

    Example:
        >>> flow = torch.zeros(1, 5, 6, 2)  # TensorFlow layout, (B, H, W, 2)
        >>> flow[..., 1] = -1.0  # one pixel left (along W, the second spatial dimension)
        >>> from_voxelmorph(flow, channels_last=True)[0, :, 0, 0]
        tensor([-1.,  0.])
    """
    if channels_last:
        check_tensor(flow, "flow", ndim=(4, 5))
        flow = flow.movedim(-1, 1)
    return _reverse_channels(flow, "flow")


def to_voxelmorph(u: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """A torchstn field as a voxelmorph flow: index order, voxels, ``(B, N, *spatial)`` or
    with ``channels_last=True`` ``(B, *spatial, N)`` (see :func:`from_voxelmorph`).

    Example:
        >>> u = torch.zeros(1, 2, 3, 4)
        >>> u[:, 1] = 1.0  # one pixel down (y)
        >>> to_voxelmorph(u, channels_last=True).shape, to_voxelmorph(u)[0, :, 0, 0]
        (torch.Size([1, 3, 4, 2]), tensor([1., 0.]))
    """
    flow = _reverse_channels(u, "u")
    return flow.movedim(1, -1) if channels_last else flow


def _monai_frames(
    sides_in: Sequence[int], sides_out: Sequence[int], align_corners: bool, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index-order matrices ``L`` and ``R`` with ``pixel matrix = L @ affine @ R``: ``R`` takes
    an output voxel index to the centred coordinate MONAI's affine reads (``AffineGrid``: the
    centred grid, times ``n / (n - 1)`` per axis with ``align_corners=True``), ``L`` the
    centred coordinate it returns to the input voxel index (``Resample``: ``2 / n`` to the
    normalised frame, ``grid_sample`` back; sides of one voxel as MONAI, ``n`` read as 2)."""
    k_in = [(n - 1 if align_corners else n) / max(n, 2) for n in sides_in]
    left = _diag_shift(k_in, [(n - 1) / 2 for n in sides_in], like)
    g_out = [max(n, 2) / (max(n, 2) - 1) if align_corners else 1.0 for n in sides_out]
    right = _diag_shift(g_out, [-g * (n - 1) / 2 for g, n in zip(g_out, sides_out)], like)
    return left, right


def from_monai_affine(
    affine: Any,
    in_size: Sequence[int],
    out_size: Sequence[int] | None = None,
    *,
    align_corners: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """A MONAI affine matrix (``monai.transforms.Affine(affine=...)``, ``AffineGrid``) as a
    torchstn pixel matrix.

    MONAI's matrix acts on voxel coordinates in index order (``(row, column)``, or
    ``(slice, row, column)``) *centred* on the image, ``c = i - (n - 1) / 2``, and maps the
    output's centred coordinates to the input's (backward; ``Resample`` then normalises with
    ``2 / n``). With ``align_corners=True`` (``Affine``'s default is ``False``) MONAI also
    scales the output grid by ``n / (n - 1)`` before the matrix and the input by ``(n - 1) / n``
    after it, so the same matrix is a slightly different warp; both are reproduced exactly.

    Args:
        affine: ``(N + 1, N + 1)`` (or ``(N, N + 1)``), a tensor or an array, or a batch
            ``(B, N + 1, N + 1)``.
        in_size: the input image's spatial size ``(H, W)`` or ``(D, H, W)`` (the tensor's).
        out_size: the output's (``Affine``'s ``spatial_size``); defaults to ``in_size``.
        align_corners: the ``align_corners`` given to ``Affine``.
        dtype: the result's dtype (default: the tensor's, or torch's default for an array).

    Returns:
        The torchstn pixel matrix (output pixel to input pixel, ``(x, y[, z])``) in
        ``affine``'s form. The exact inverse of :func:`to_monai_affine`.

    Example:
        >>> a = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # flip columns
        >>> from_monai_affine(a, (4, 6))  # x -> 5 - x
        tensor([[-1.,  0.,  5.],
                [ 0.,  1.,  0.],
                [ 0.,  0.,  1.]])
    """
    square, form = _matrix(affine, "affine", dtype)
    sides_in, sides_out = _sizes(in_size, out_size, form.n)
    left, right = _monai_frames(sides_in, sides_out, align_corners, square)
    return form.restore(_reverse_axes(left @ square @ right))


def to_monai_affine(
    matrix: torch.Tensor,
    in_size: Sequence[int],
    out_size: Sequence[int] | None = None,
    *,
    align_corners: bool = False,
) -> torch.Tensor:
    """A torchstn pixel matrix as MONAI's affine (index order, centred voxel coordinates,
    output to input; see :func:`from_monai_affine`), in the matrix's form.

    Raises:
        InvalidInputError: for a projective matrix (MONAI's ``Affine`` is affine), or, with
            ``align_corners=True``, an input side of one voxel (MONAI reads it whatever the
            matrix says).

    Example:
        >>> m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # 1 px right
        >>> to_monai_affine(m, (4, 6))  # the column index, second in MONAI's order
        tensor([[1., 0., 0.],
                [0., 1., 1.],
                [0., 0., 1.]])
    """
    square, form = _matrix(matrix, "matrix")
    if not _is_affine(square):
        raise _projective_error("matrix", "MONAI's affine", square)
    sides_in, sides_out = _sizes(in_size, out_size, form.n)
    if align_corners and min(sides_in) == 1:
        raise InvalidInputError(
            f"in_size: with align_corners=True MONAI ignores the matrix along a side of one "
            f"voxel, got in_size {tuple(sides_in)}"
        )
    left, right = _monai_frames(sides_in, sides_out, align_corners, square)
    return form.restore(torch.linalg.inv(left) @ _reverse_axes(square) @ torch.linalg.inv(right))


# ----------------------------------------------------------------------------- scipy.ndimage


def _scipy_axes(shape: tuple[int, ...], ndim: int | None, offset: torch.Tensor) -> int:
    """The number of axes of a scipy ``matrix`` of ``shape`` (see :func:`from_scipy_affine`);
    a ``(3, 3)`` matrix with three offsets is 3-D."""
    if ndim is None and shape == (3, 3) and offset.dim() == 1 and offset.shape[0] == 3:
        ndim = 3
    if ndim is not None:
        if ndim not in (2, 3):
            raise InvalidInputError(f"ndim: expected 2 or 3, got {ndim!r}")
        fits = shape in ((ndim,), (ndim, ndim), (ndim, ndim + 1), (ndim + 1, ndim + 1))
        if not fits:
            raise InvalidInputError(
                f"matrix: a {ndim}-D scipy matrix is ({ndim},), ({ndim}, {ndim}), "
                f"({ndim}, {ndim + 1}) or ({ndim + 1}, {ndim + 1}), got shape {shape}"
            )
        return ndim
    known = {(2,): 2, (2, 2): 2, (2, 3): 2, (3,): 3, (3, 4): 3, (4, 4): 3}
    if shape == (3, 3):
        raise InvalidInputError(
            "matrix: a (3, 3) scipy matrix is a 3-D linear map or a 2-D homogeneous one; "
            "pass ndim=3 or ndim=2 (or three offsets)"
        )
    if shape not in known:
        raise InvalidInputError(
            f"matrix: expected a scipy matrix (N,), (N, N), (N, N + 1) or (N + 1, N + 1) for "
            f"N = 2 or 3, got shape {shape}"
        )
    return known[shape]


def from_scipy_affine(
    matrix: Any,
    offset: Any = 0.0,
    *,
    ndim: int | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``scipy.ndimage.affine_transform``'s ``matrix`` and ``offset`` as a torchstn pixel matrix.

    ``affine_transform(input, matrix, offset)`` reads, for the output index ``o`` (index order:
    ``(row, column)`` or ``(slice, row, column)``), the input at ``matrix @ o + offset``:
    backward, indices at the pixel centres, as torchstn, but in index order, so the torchstn
    matrix is scipy's with its axes reversed. ``order=1`` interpolation with
    ``mode="grid-constant"`` and ``cval=0`` is :func:`torchstn.fields.warp`'s bilinear
    ``"zeros"`` padding (scipy's ``mode="constant"`` instead gives ``cval`` to every point
    beyond the outer pixel centres without blending).

    Args:
        matrix: as scipy takes it: ``(N,)`` (a diagonal), ``(N, N)``, ``(N, N + 1)`` (its
            last column the offset) or ``(N + 1, N + 1)`` (homogeneous), an array or a tensor.
        offset: a number or ``(N,)``, added after the matrix; ignored, as by scipy, when
            ``matrix`` has the offset column.
        ndim: 2 or 3; needed only for a ``(3, 3)`` matrix without three offsets, which scipy
            reads as a 3-D linear map for a volume and as a 2-D homogeneous matrix for an
            image.
        dtype: the result's dtype (default: the tensor's, or torch's default for an array).

    Returns:
        ``(N + 1, N + 1)`` torchstn pixel matrix (output pixel to input pixel, ``(x, y[, z])``).
        The exact inverse of :func:`to_scipy_affine`.

    Example:
        >>> import numpy as np
        >>> from_scipy_affine(np.diag([1.0, 0.5]), offset=(2.0, 0.0))  # rows + 2, columns / 2
        tensor([[0.5000, 0.0000, 0.0000],
                [0.0000, 1.0000, 2.0000],
                [0.0000, 0.0000, 1.0000]])
    """
    m = _tensor(matrix, "matrix", dtype)
    off = _tensor(offset, "offset", m.dtype)
    n = _scipy_axes(tuple(m.shape), ndim, off)
    if m.dim() == 1:
        m = torch.diag(m)
    if m.shape == (n, n):
        if off.dim() > 1 or (off.dim() == 1 and off.shape[0] not in (1, n)):
            raise InvalidInputError(
                f"offset: expected a number or ({n},) for a {n}-D matrix, got shape "
                f"{tuple(off.shape)}"
            )
        m = torch.cat((m, off.expand(n)[:, None].to(m.device)), dim=1)
    square, _ = _matrix(m, "matrix")
    if not _is_affine(square):
        raise _projective_error("matrix", "scipy's affine_transform", square)
    return _reverse_axes(square)[0]


def to_scipy_affine(matrix: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """A torchstn pixel matrix as ``scipy.ndimage.affine_transform``'s ``matrix`` ``(N, N)``
    and ``offset`` ``(N,)`` (index order, float64 arrays; see :func:`from_scipy_affine`).

    Args:
        matrix: one ``(N + 1, N + 1)`` or ``(N, N + 1)`` pixel matrix, or a batch of one.

    Raises:
        InvalidInputError: for a projective matrix or a batch of several.

    Example:
        >>> import numpy as np
        >>> from scipy import ndimage
        >>> m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # read one pixel right
        >>> mat, off = to_scipy_affine(m)
        >>> off
        array([0., 1.])
        >>> x = np.arange(12.0).reshape(3, 4)
        >>> ndimage.affine_transform(x, mat, off, order=1, mode="grid-constant")[0]
        array([1., 2., 3., 0.])
    """
    square, form = _matrix(matrix, "matrix")
    one = _single(square, form, "matrix", "scipy.ndimage.affine_transform")
    if not _is_affine(one[None]):
        raise _projective_error("matrix", "scipy's affine_transform", one[None])
    index = _reverse_axes(one[None])[0].detach().cpu().double().numpy()
    n = form.n
    return index[:n, :n].copy(), index[:n, n].copy()


def from_scipy_coordinates(coordinates: Any, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``scipy.ndimage.map_coordinates``'s ``coordinates`` as a torchstn field.

    ``map_coordinates(input, coordinates)`` gives, for each output position ``p`` of
    ``coordinates`` ``(N, *spatial)``, the input read at the absolute index
    ``coordinates[:, p]`` (index order). The torchstn field is that point in ``(x, y[, z])``
    order minus the output pixel's own coordinate (it warps an input of the output's size;
    ``order=1``, ``mode="grid-constant"`` as in :func:`from_scipy_affine`).

    Args:
        coordinates: ``(2, H, W)`` or ``(3, D, H, W)``, an array or a tensor.
        dtype: the result's dtype (default: the tensor's, or torch's default for an array).

    Returns:
        ``(1, N, *spatial)`` torchstn field. The exact inverse of :func:`to_scipy_coordinates`.

    Example:
        >>> import numpy as np
        >>> rows, cols = np.meshgrid(np.arange(2.0), np.arange(3.0), indexing="ij")
        >>> from_scipy_coordinates(np.stack([rows, cols + 1]))[0, :, 0, 0]  # one column right
        tensor([1., 0.])
    """
    c = _tensor(coordinates, "coordinates", dtype)
    if c.dim() not in (3, 4) or c.shape[0] != c.dim() - 1:
        raise InvalidInputError(
            f"coordinates: expected (2, H, W) or (3, D, H, W) index-order points, got shape "
            f"{tuple(c.shape)}"
        )
    check_finite(c, "coordinates")
    points = c.flip(0)  # (x, y[, z])
    return (points - _pixel_points(c.shape[1:], c.dtype, c.device))[None]


def to_scipy_coordinates(u: torch.Tensor) -> np.ndarray:
    """A torchstn field (a batch of one) as ``scipy.ndimage.map_coordinates``'s absolute
    index-order ``coordinates`` ``(N, *spatial)``, a float64 array (see
    :func:`from_scipy_coordinates`).

    Example:
        >>> import numpy as np
        >>> from scipy import ndimage
        >>> u = torch.zeros(1, 2, 3, 4)
        >>> u[:, 0] = 1.0  # read one pixel right
        >>> x = np.arange(12.0).reshape(3, 4)
        >>> ndimage.map_coordinates(x, to_scipy_coordinates(u), order=1, mode="grid-constant")[0]
        array([1., 2., 3., 0.])
    """
    check_field(u)
    if u.shape[0] != 1:
        raise InvalidInputError(
            f"u: scipy.ndimage.map_coordinates takes one field, got a batch of {u.shape[0]} "
            f"(shape {tuple(u.shape)}); convert them one at a time"
        )
    field = u[0].detach().cpu().double()
    points = field + _pixel_points(field.shape[1:], field.dtype, field.device)
    return points.flip(0).numpy().copy()
