"""Boxes of attention crops and their overlap with ground-truth boxes.

Convention:
    Boxes are ``(x0, y0, x1, y1)`` in pixel-*edge* coordinates, the image spanning
    ``[0, W] x [0, H]`` (pixel column ``j`` covers ``[j, j + 1)``), as
    :class:`torchstn.data.Sample`'s boxes. Attention params ``(s, tx, ty)`` map the output frame
    ``[-1, 1]^2`` to the input window ``[tx - s, tx + s] x [ty - s, ty + s]`` of normalised
    coordinates with ``align_corners=False``, where -1 and 1 are the outer edges of the image, so
    ``x = (x_n + 1) * W / 2`` converts a window edge to pixels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .._checks import check_size, check_tensor

__all__ = ["box_iou", "crop_boxes"]


def crop_boxes(params: torch.Tensor, in_size: Sequence[int] | int) -> torch.Tensor:
    """Pixel boxes of the windows that attention params crop from an ``(H, W)`` image.

    Args:
        params: ``(B, 3)`` attention params ``(s, tx, ty)`` (normalised, ``align_corners=False``).
        in_size: ``(H, W)`` of the input image (or one int for a square image).

    Returns:
        ``(B, 4)`` boxes ``(x0, y0, x1, y1)`` in pixel-edge coordinates (not clipped: a window
        that reaches past the border gives a box that does too).

    Example:
        >>> crop_boxes(torch.tensor([[1.0, 0.0, 0.0], [1 / 3, 0.0, 0.0]]), (84, 84)).round()
        tensor([[ 0.,  0., 84., 84.],
                [28., 28., 56., 56.]])
    """
    check_tensor(params, "params", ndim=2, last_dim=3)
    h, w = check_size(in_size, "in_size")
    s, tx, ty = params.unbind(-1)
    half = params.new_tensor([w / 2, h / 2, w / 2, h / 2])
    normalised = torch.stack((tx - s, ty - s, tx + s, ty + s), dim=-1)
    return (normalised + 1) * half


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of corresponding boxes (broadcasting over leading dimensions).

    Args:
        a: ``(..., 4)`` boxes ``(x0, y0, x1, y1)``.
        b: ``(..., 4)`` boxes, broadcastable against ``a``.

    Returns:
        ``(...)`` IoU in ``[0, 1]``; 0 where both boxes are empty.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2], [0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2], [4, 4, 5, 5]]))
        tensor([0.3333, 0.0000])
    """
    check_tensor(a, "a", last_dim=4)
    check_tensor(b, "b", last_dim=4)
    lo = torch.maximum(a[..., :2], b[..., :2])
    hi = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (hi - lo).clamp_min(0).prod(-1)

    def area(box: torch.Tensor) -> torch.Tensor:
        return (box[..., 2:] - box[..., :2]).clamp_min(0).prod(-1)

    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(torch.finfo(union.dtype).tiny), 0.0)
