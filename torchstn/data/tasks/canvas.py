"""Placing digits into canvases with the library's grids and sampler, and the boxes of the result.

Convention:
    A digit is placed by a similarity about its centre: a point ``p`` of the 28 x 28 digit (pixel
    units, centre ``(14, 14)``) lands at ``(W / 2 + tx, H / 2 + ty) + A (p - (14, 14))`` of the
    ``H x W`` canvas, with ``A = scale * [[cos a, sin a], [-sin a, cos a]]``: positive angles
    (degrees) turn the digit counter-clockwise as displayed (y points down), ``scale > 1``
    enlarges it, ``(tx, ty)`` moves its centre right and down from the canvas centre (pixels).
    The canvas is rendered by an inverse warp: one affine grid over the whole canvas (the grid of
    :class:`~torchstn.transforms.Affine`, built separably by :func:`affine_grid`) and one
    :func:`~torchstn.functional.sample` call per batch.

    Boxes are ``(x0, y0, x1, y1)`` with the canvas spanning ``[0, W] x [0, H]`` (see
    :class:`~torchstn.data.Sample`). The *frame box* is the axis-aligned box of the digit's
    28 x 28 frame after the warp, clipped to the canvas; the *ink box* is the tight box of the
    pixels brighter than :data:`INK_THRESHOLD` in the rendered digit (before any clutter).
"""

from __future__ import annotations

import torch

from ...functional import sample
from ...transforms import Affine

__all__ = [
    "DIGIT",
    "INK_THRESHOLD",
    "add_clutter",
    "affine_grid",
    "clip_boxes",
    "digits_to_float",
    "ink_boxes",
    "place_similarity",
    "similarity_frame_boxes",
    "union_boxes",
]

_AFFINE = Affine()
#: side of an MNIST digit in pixels.
DIGIT = 28
#: intensity above which a pixel counts as ink for the ink box.
INK_THRESHOLD = 0.1


def affine_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The grid of :meth:`torchstn.transforms.Affine.grid` (``align_corners=False``): the
    library's own separable construction, shared by the generators and the models.

    Args:
        theta: ``(B, 6)`` affine params ``(a, b, tx, c, d, ty)``.
        size: ``(H, W)``.

    Returns:
        ``(B, H, W, 2)`` normalised source coordinates.
    """
    return _AFFINE.grid(theta, size)


def digits_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 28, 28)`` digits to float32 ``(B, 1, 28, 28)`` in ``[0, 1]``."""
    return images[:, None].float().div_(255.0)


def place_similarity(
    digits: torch.Tensor,
    angle: torch.Tensor,
    scale: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    size: tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Warp ``(B, 1, 28, 28)`` float digits into ``(B, 1, H, W)`` canvases (see the module
    docstring for the meaning of the ``(B,)`` parameters).

    Example:
        >>> d = torch.rand(2, 1, 28, 28)
        >>> z = torch.zeros(2)
        >>> torch.allclose(place_similarity(d, z, z + 1, z, z, (28, 28)), d, atol=1e-5)
        True
    """
    h, w = size
    rad = torch.deg2rad(angle.double())
    c, s = torch.cos(rad) / scale.double(), torch.sin(rad) / scale.double()
    # inverse of A, mapping canvas offsets (pixels) to digit offsets, then both to the normalised
    # frames: digit offset = 14 * n_digit, canvas offset = (W / 2, H / 2) * n_canvas - (tx, ty).
    half = DIGIT / 2
    theta = torch.stack(
        (
            c * (w / 2) / half,
            -s * (h / 2) / half,
            -(c * tx - s * ty) / half,
            s * (w / 2) / half,
            c * (h / 2) / half,
            -(s * tx + c * ty) / half,
        ),
        dim=-1,
    ).float()
    return sample(digits, affine_grid(theta, (h, w)), mode=mode)


def clip_boxes(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Clip ``(..., 4)`` boxes to an ``(H, W)`` canvas."""
    h, w = size
    limit = boxes.new_tensor([w, h, w, h])
    return torch.minimum(boxes.clamp_min(0.0), limit)


def similarity_frame_boxes(
    angle: torch.Tensor,
    scale: torch.Tensor,
    tx: torch.Tensor,
    ty: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """``(B, 4)`` frame boxes of digits placed by :func:`place_similarity`, clipped."""
    h, w = size
    rad = torch.deg2rad(angle.double())
    half = DIGIT / 2 * scale.double() * (rad.cos().abs() + rad.sin().abs())
    cx, cy = w / 2 + tx.double(), h / 2 + ty.double()
    boxes = torch.stack((cx - half, cy - half, cx + half, cy + half), dim=-1)
    return clip_boxes(boxes, size).float()


def ink_boxes(layer: torch.Tensor, threshold: float = INK_THRESHOLD) -> torch.Tensor:
    """Tight ``(B, 4)`` boxes of the pixels of ``(B, H, W)`` images above ``threshold``
    (all zeros for an image without ink).

    Example:
        >>> img = torch.zeros(1, 5, 6)
        >>> img[0, 1:3, 2:5] = 1.0
        >>> ink_boxes(img)
        tensor([[2., 1., 5., 3.]])
    """
    cols = layer.amax(dim=1) > threshold  # (B, W)
    rows = layer.amax(dim=2) > threshold  # (B, H)
    h, w = layer.shape[-2:]
    x0 = cols.byte().argmax(dim=1)
    x1 = w - cols.flip(1).byte().argmax(dim=1)
    y0 = rows.byte().argmax(dim=1)
    y1 = h - rows.flip(1).byte().argmax(dim=1)
    boxes = torch.stack((x0, y0, x1, y1), dim=-1).float()
    return boxes * cols.any(dim=1, keepdim=True)


def union_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """The union ``(B, 4)`` of ``(B, K, 4)`` boxes."""
    return torch.cat((boxes[..., :2].amin(dim=1), boxes[..., 2:].amax(dim=1)), dim=-1)


def add_clutter(
    canvas: torch.Tensor,
    pool: torch.Tensor,
    source: torch.Tensor,
    crop: torch.Tensor,
    position: torch.Tensor,
    patch: int,
) -> None:
    """Paste ``patch x patch`` crops of pool digits into ``canvas`` (in place, by maximum).

    Args:
        canvas: ``(B, H, W)`` contiguous float images in ``[0, 1]``.
        pool: ``(M, 28, 28)`` uint8 digits.
        source: ``(B, K)`` int64 indices into ``pool``.
        crop: ``(B, K, 2)`` int64 ``(x, y)`` top-left corners of the crops in the source digits.
        position: ``(B, K, 2)`` int64 ``(x, y)`` top-left corners of the patches in the canvas.
        patch: the side of the patches.
    """
    b, _, w = canvas.shape
    if source.shape[1] == 0:
        return
    step = torch.arange(patch)
    rows = (crop[..., 1, None] + step)[..., :, None]  # (B, K, p, 1)
    cols = (crop[..., 0, None] + step)[..., None, :]  # (B, K, 1, p)
    patches = pool[source[..., None, None], rows, cols].float().div_(255.0)  # (B, K, p, p)
    flat = (position[..., 1, None] + step)[..., :, None] * w + (position[..., 0, None] + step)[
        ..., None, :
    ]  # (B, K, p, p)
    canvas.view(b, -1).scatter_reduce_(1, flat.reshape(b, -1), patches.reshape(b, -1), "amax")
