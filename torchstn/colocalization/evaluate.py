"""Scoring a co-localisation model: the share of images whose crop overlaps the digit's box."""

from __future__ import annotations

import torch

from .._checks import check_tensor
from ..errors import InvalidInputError
from ..models.encoder import AttentionEncoder
from .boxes import box_iou, crop_boxes

__all__ = ["evaluate_localization", "predict_boxes"]


@torch.no_grad()
def predict_boxes(model: AttentionEncoder, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pixel boxes ``(N, 4)`` (on the CPU) of the windows the model crops from images
    ``(N, C, H, W)`` (on any device; batches are moved to the model's)."""
    check_tensor(x, "x", ndim=4)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        params = torch.cat(
            [
                model.localize(x[i : i + batch_size].to(device)).cpu()
                for i in range(0, len(x), batch_size)
            ]
        )
    finally:
        model.train(was_training)
    return crop_boxes(params, tuple(x.shape[-2:]))


def evaluate_localization(
    model: AttentionEncoder,
    x: torch.Tensor,
    boxes: torch.Tensor,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Share of images localised (IoU of the crop box with the true box ``> threshold``).

    Args:
        model: the co-localisation model.
        x: ``(N, C, H, W)`` images.
        boxes: ``(N, 4)`` true boxes (pixel edges).
        threshold: the IoU a crop must exceed (the paper: 0.5).

    Returns:
        ``{"localised": percent, "mean_iou": mean IoU}``.

    Example:
        >>> from torchstn.models import create_model
        >>> model = create_model("st_attention_encoder", (1, 84, 84), 8)
        >>> centre = torch.tensor([[28.0, 28.0, 56.0, 56.0]])
        >>> scores = evaluate_localization(model, torch.zeros(1, 1, 84, 84), centre)
        >>> scores["localised"], round(scores["mean_iou"], 2)  # the starting 30 px central window
        (100.0, 0.86)
    """
    check_tensor(boxes, "boxes", ndim=2, last_dim=4)
    if boxes.shape[0] != x.shape[0]:
        raise InvalidInputError(
            f"boxes: expected {x.shape[0]} rows (one per image), got {tuple(boxes.shape)}"
        )
    iou = box_iou(predict_boxes(model, x), boxes.float().cpu())
    return {
        "localised": 100.0 * int((iou > threshold).sum()) / max(iou.numel(), 1),
        "mean_iou": float(iou.mean()),
    }
