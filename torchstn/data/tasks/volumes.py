"""RTS3D: MNIST digits lifted into volumes, rotated, scaled and translated in 3-D, with clutter.

Convention:
    Volumes are ``(D, H, W)`` cubes of side ``S`` (``canvas_size``); points are ``(x, y, z)`` in
    voxels with x along W, y along H and z along D (as a 5-D grid of
    :func:`torch.nn.functional.grid_sample` reads them), voxel ``[k, j, i]`` covering
    ``[i, i + 1) x [j, j + 1) x [k, k + 1)``.

    The *slab* is the 28 x 28 digit scaled to ``digit_size`` voxels (its columns along x, its rows
    along y) and extruded ``thickness`` voxels along z, centred on the origin: its frame is the
    box ``[-a, a] x [-a, a] x [-b, b]`` with ``a = digit_size / 2`` and ``b = thickness / 2``. A
    slab point ``p`` lands at ``c + t + s R p`` of the canvas, ``c = (S/2, S/2, S/2)`` its centre,
    ``R`` the rotation of the rotation vector ``rotation`` (radians, right-handed about its axis in
    ``(x, y, z)``: :func:`torchstn.transforms.volumetric.rotation_matrix`), ``s`` the ``scale`` and
    ``t`` the ``translation`` (voxels).

    In the normalised frames (``align_corners=False``) the digit's *cube* ``[-a, a]^3`` maps to
    the canvas by the ``similarity3d`` params of :func:`frame_params`: a transformer whose output
    is the digit's cube reads it with them (the convention of :mod:`torchstn.transforms`: output
    points to input points).

    The canvas is rendered by an inverse warp: one :class:`~torchstn.transforms.Affine3D` grid
    over the whole canvas and one trilinear :func:`~torchstn.functional.sample` call per chunk,
    reading a ``(thickness, 28, 28)`` slab volume of each source digit (zeros outside).

    Boxes are ``(x0, y0, z0, x1, y1, z1)`` voxel edges (see :class:`~torchstn.data.Sample`): the
    *frame box* is the axis-aligned box of the warped slab frame, clipped to the canvas; the
    *ink box* the tight box of the voxels brighter than :data:`~.canvas.INK_THRESHOLD` before
    clutter.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ...errors import InvalidInputError
from ...functional import sample
from ...transforms import Affine3D
from ...transforms.volumetric import rotation_matrix
from .base import Task, cycle_indices, uniform
from .canvas import DIGIT, INK_THRESHOLD, digits_to_float
from .cluttered import CLUTTER_MARGIN
from .options import as_canvas, as_int, as_range

__all__ = ["RTS3D", "frame_boxes3d", "frame_params", "ink_boxes3d", "place_slabs"]

_AFFINE3D = Affine3D()
#: smallest canvas side (a digit of at least 2 voxels in it).
_MIN_CANVAS = 4


def _int_or_default(value: Any, name: str, default: int, *, low: int, high: int) -> int:
    return default if value is None else as_int(value, name, low=low, high=high)


def frame_params(
    rotation: torch.Tensor,
    scale: torch.Tensor,
    translation: torch.Tensor,
    canvas_size: int,
    digit_size: int,
) -> torch.Tensor:
    """``(B, 7)`` ``similarity3d`` params mapping the digit's cube (normalised) to the canvas.

    Args:
        rotation: ``(B, 3)`` rotation vectors (radians).
        scale: ``(B,)`` scales.
        translation: ``(B, 3)`` offsets of the digit's centre from the canvas centre (voxels).
        canvas_size: ``S``.
        digit_size: the side of the undistorted digit in voxels.

    Returns:
        ``(rx, ry, rz, scale * digit_size / S, 2 tx / S, 2 ty / S, 2 tz / S)``.

    Example:
        >>> z = torch.zeros(1, 3)
        >>> frame_params(z, torch.ones(1), z + 4, 32, 16)
        tensor([[0.0000, 0.0000, 0.0000, 0.5000, 0.2500, 0.2500, 0.2500]])
    """
    s = scale[:, None] * (digit_size / canvas_size)
    return torch.cat((rotation, s, translation * (2 / canvas_size)), dim=-1)


def place_slabs(
    digits: torch.Tensor,
    rotation: torch.Tensor,
    scale: torch.Tensor,
    translation: torch.Tensor,
    canvas_size: int,
    digit_size: int,
    thickness: int,
) -> torch.Tensor:
    """Warp ``(B, 1, 28, 28)`` float digits, as slabs, into ``(B, 1, S, S, S)`` canvases (see
    the module docstring for the geometry).

    Example:
        >>> d = torch.rand(2, 1, 28, 28)
        >>> z = torch.zeros(2, 3)
        >>> v = place_slabs(d, z, torch.ones(2), z, 28, 28, 2)
        >>> torch.allclose(v[:, :, 13], d, atol=1e-5), float(v[:, :, :12].abs().max())
        (True, 0.0)
    """
    r = rotation_matrix(rotation.double())  # (B, 3, 3)
    half = canvas_size / 2
    # canvas normalised q -> slab normalised n: n = E^-1 R^T (half / s) (q - t / half), with
    # E = diag(a, a, b) the slab's half sides in voxels
    inv_half_sides = torch.tensor(
        [2 / digit_size, 2 / digit_size, 2 / thickness], dtype=torch.float64
    )
    linear = inv_half_sides[:, None] * r.transpose(1, 2) * (half / scale.double())[:, None, None]
    shift = -(linear @ (translation.double() / half)[:, :, None])
    theta = torch.cat((linear, shift), dim=2).reshape(-1, 12).float()
    slabs = digits[:, :, None].expand(-1, -1, thickness, -1, -1)  # (B, 1, T, 28, 28)
    grid = _AFFINE3D.grid(theta, (canvas_size,) * 3)
    return sample(slabs, grid)


def frame_boxes3d(
    rotation: torch.Tensor,
    scale: torch.Tensor,
    translation: torch.Tensor,
    canvas_size: int,
    digit_size: int,
    thickness: int,
) -> torch.Tensor:
    """``(B, 6)`` frame boxes of slabs placed by :func:`place_slabs`, clipped to the canvas."""
    r = rotation_matrix(rotation.double())
    half_sides = torch.tensor([digit_size / 2, digit_size / 2, thickness / 2], dtype=torch.float64)
    extent = scale.double()[:, None] * (r.abs() @ half_sides)  # (B, 3): the box's half sides
    centre = canvas_size / 2 + translation.double()
    boxes = torch.cat((centre - extent, centre + extent), dim=-1)
    return boxes.clamp(0.0, float(canvas_size)).float()


def ink_boxes3d(volumes: torch.Tensor, threshold: float = INK_THRESHOLD) -> torch.Tensor:
    """Tight ``(B, 6)`` boxes of the voxels of ``(B, D, H, W)`` volumes above ``threshold``
    (all zeros for a volume without ink).

    Example:
        >>> v = torch.zeros(1, 4, 5, 6)
        >>> v[0, 1:3, 2:5, 3:4] = 1.0
        >>> ink_boxes3d(v)
        tensor([[3., 2., 1., 4., 5., 3.]])
    """
    top = volumes.amax(dim=1)  # (B, H, W): one pass over the volumes for x and y
    lines = (top.amax(dim=1), top.amax(dim=2), volumes.amax(dim=(2, 3)))  # along W, H, D
    lows, highs = [], []
    for line in lines:
        ink = line > threshold  # (B, n)
        lows.append(ink.byte().argmax(dim=1))
        highs.append(ink.shape[1] - ink.flip(1).byte().argmax(dim=1))
    boxes = torch.stack(lows + highs, dim=-1).float()
    return boxes * (lines[0] > threshold).any(dim=1, keepdim=True)


def _add_clutter3d(
    canvas: torch.Tensor,
    pool: torch.Tensor,
    draws: dict[str, torch.Tensor],
    patch: int,
    thickness: int,
) -> None:
    """Paste the pieces of :meth:`RTS3D._draw` into ``(B, S, S, S)`` contiguous ``canvas`` (in
    place, by maximum): each a ``patch x patch`` crop of a pool digit extruded ``thickness``
    voxels, lying in the xy, xz or yz plane (``orientation`` 0, 1, 2)."""
    b, side = canvas.shape[0], canvas.shape[-1]
    source, crop, orientation, corner = (
        draws["_clutter_source"],
        draws["_clutter_crop"],
        draws["_clutter_orientation"],
        draws["_clutter_corner"],
    )
    if source.shape[1] == 0:
        return
    # piece voxel offsets (u along the crop's columns, v along its rows, w across the slab)
    u = torch.arange(patch).view(1, 1, 1, 1, patch)
    v = torch.arange(patch).view(1, 1, 1, patch, 1)
    w = torch.arange(thickness).view(1, 1, thickness, 1, 1)
    rows = crop[..., 1, None, None, None] + v  # (B, K, 1, p, 1)
    cols = crop[..., 0, None, None, None] + u  # (B, K, 1, 1, p)
    values = pool[source[..., None, None, None], rows, cols].float().div_(255.0)  # (B, K, 1, p, p)
    o = orientation[..., None, None, None]
    dx = torch.where(o == 2, w, u)
    dy = torch.where(o == 1, w, v)
    dz = torch.where(o == 0, w, torch.where(o == 1, v, u))
    x = corner[..., 0, None, None, None] + dx
    y = corner[..., 1, None, None, None] + dy
    z = corner[..., 2, None, None, None] + dz
    flat = (z * side + y) * side + x  # (B, K, T, p, p)
    values = values.expand(flat.shape)
    canvas.view(b, -1).scatter_reduce_(1, flat.reshape(b, -1), values.reshape(b, -1), "amax")


class RTS3D(Task):
    """Rotated, scaled and translated MNIST in 3-D (RTS3D), with optional clutter.

    Each digit becomes a slab (its 28 x 28 pixels scaled to ``digit_size`` voxels, extruded
    ``thickness`` voxels deep) in a cube of ``canvas_size`` voxels, turned about a random axis
    (uniform on the sphere) by an angle drawn uniformly from ``angle``, scaled by ``scale`` and
    moved by ``(tx, ty, tz)`` (each uniform in ``translation``) from the canvas centre. Then
    ``clutter`` pieces are added (combined by maximum): each a ``clutter_size`` square crop from
    the centre of another random digit of the split (drawn with replacement), extruded
    ``thickness`` voxels, lying in a random one of the xy, xz and yz planes at a random integer
    position where its bounding cube fits.

    Options:
        canvas_size: side of the cubic canvas; default 32.
        digit_size: side of the undistorted digit in voxels; default ``round(5 / 8 *
            canvas_size)`` (20 in 32^3, the 2-D RTS task's proportion).
        thickness: depth of the slab in voxels (before scaling); default ``max(1,
            round(canvas_size / 8))`` (4 in 32^3).
        angle: ``[lo, hi]`` degrees of the rotation, within ``[0, 180]`` (one number ``v``:
            ``[0, v]``); default ``[0, 45]``.
        scale: ``[lo, hi]``; default ``[0.7, 1.2]``.
        translation: ``[lo, hi]`` voxels, the same range for ``tx``, ``ty`` and ``tz``; default
            ``+-(canvas_size - digit_size) / 2``, so that the undistorted digit's cube stays
            inside the canvas (large, turned digits near a face may lose a few voxels).
        clutter: number of clutter pieces per volume; default 4.
        clutter_size: side of the pieces' crops (pixels of the 28 x 28 digits, voxels in the
            canvas); default ``max(1, round(0.3 * digit_size))`` (6 in 32^3).

    Ground truth: ``rotation`` ``(N, 3)`` (radians), ``scale`` ``(N,)``, ``translation``
    ``(N, 3)`` (voxels), ``source_index``, ``ink_box`` ``(N, 6)``, ``distractor_boxes``
    ``(N, K, 6)`` (the pieces' voxel boxes); ``boxes`` is the warped slab frame, clipped.
    :func:`frame_params` turns them into ``similarity3d`` params.

    Example:
        >>> task = RTS3D(canvas_size=16, clutter=2)
        >>> task.in_shape, task.options["translation"]
        ((1, 16, 16, 16), [-3.0, 3.0])
        >>> s = task.generate("test", num=2, seed=0)
        >>> s.x.shape, s.boxes.shape, s.params["distractor_boxes"].shape
        (torch.Size([2, 1, 16, 16, 16]), torch.Size([2, 6]), torch.Size([2, 2, 6]))
    """

    name = "rts3d"
    defaults: ClassVar[dict[str, Any]] = {
        "canvas_size": 32,
        "digit_size": None,
        "thickness": None,
        "angle": [0.0, 45.0],
        "scale": [0.7, 1.2],
        "translation": None,
        "clutter": 4,
        "clutter_size": None,
    }

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        side = as_canvas(options["canvas_size"], "canvas_size", low=_MIN_CANVAS)
        digit = _int_or_default(
            options["digit_size"], "digit_size", round(5 / 8 * side), low=2, high=side
        )
        thickness = _int_or_default(
            options["thickness"], "thickness", max(1, round(side / 8)), low=1, high=side
        )
        angle = options["angle"]
        if isinstance(angle, (int, float)) and not isinstance(angle, bool):
            angle = [0.0, abs(angle)]  # "up to v degrees" (the axis takes every direction)
        translation = options["translation"]
        if translation is None:
            translation = (side - digit) / 2
        patch = _int_or_default(
            options["clutter_size"],
            "clutter_size",
            max(1, round(0.3 * digit)),
            low=1,
            high=min(DIGIT, side),
        )
        if max(patch, thickness) > side:
            raise InvalidInputError(
                f"option 'clutter_size': pieces of {patch} x {patch} x {thickness} voxels do not "
                f"fit a canvas of side {side}"
            )
        return {
            "canvas_size": side,
            "digit_size": digit,
            "thickness": thickness,
            "angle": as_range(angle, "angle", low=0.0, high=180.0),
            "scale": as_range(options["scale"], "scale", low=1e-3),
            "translation": as_range(translation, "translation", low=-side / 2, high=side / 2),
            "clutter": as_int(options["clutter"], "clutter"),
            "clutter_size": patch,
        }

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        side = self.options["canvas_size"]
        return (1, side, side, side)

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        opts = self.options
        side, patch, k = opts["canvas_size"], opts["clutter_size"], opts["clutter"]
        index = cycle_indices(labels.shape[0], num, gen)
        axis = torch.randn(num, 3, generator=gen, dtype=torch.float64)
        axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
        angle = torch.deg2rad(uniform(opts["angle"], num, gen).double())
        scale = uniform(opts["scale"], num, gen)
        translation = uniform(opts["translation"], 3 * num, gen).view(num, 3)
        lo = CLUTTER_MARGIN if patch <= DIGIT - 2 * CLUTTER_MARGIN else 0
        source = torch.randint(0, labels.shape[0], (num, k), generator=gen)
        crop = torch.randint(lo, DIGIT - lo - patch + 1, (num, k, 2), generator=gen)
        orientation = torch.randint(0, 3, (num, k), generator=gen)
        fits = side - max(patch, opts["thickness"]) + 1
        corner = torch.randint(0, fits, (num, k, 3), generator=gen)
        draws = {
            "source_index": index,
            "rotation": (axis * angle[:, None]).float(),
            "scale": scale,
            "translation": translation,
            "distractor_boxes": self._piece_boxes(orientation, corner),
            "_clutter_source": source,
            "_clutter_crop": crop,
            "_clutter_orientation": orientation,
            "_clutter_corner": corner,
        }
        return labels[index], draws

    def _piece_boxes(self, orientation: torch.Tensor, corner: torch.Tensor) -> torch.Tensor:
        """``(N, K, 6)`` voxel boxes of the clutter pieces."""
        p, t = self.options["clutter_size"], self.options["thickness"]
        sides = torch.tensor([[p, p, t], [p, t, p], [t, p, p]])[orientation]  # (N, K, 3)
        return torch.cat((corner, corner + sides), dim=-1).float()

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        opts = self.options
        geometry = (draws["rotation"], draws["scale"], draws["translation"])
        sizes = (opts["canvas_size"], opts["digit_size"], opts["thickness"])
        digits = digits_to_float(images[draws["source_index"]])
        x = place_slabs(digits, *geometry, *sizes)
        ink = ink_boxes3d(x[:, 0])
        _add_clutter3d(x[:, 0], images, draws, opts["clutter_size"], opts["thickness"])
        return x, frame_boxes3d(*geometry, *sizes), {"ink_box": ink}
