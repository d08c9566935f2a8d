"""Scoring a co-localisation model: the share of images whose crop overlaps the digit's box."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .._checks import check_tensor
from ..data.loader import shard_batches
from ..errors import InvalidInputError
from ..models.encoder import AttentionEncoder
from ..train.distributed import all_reduce_sum
from ..train.evaluate import EvalSettings, autocast_context
from .boxes import box_iou, crop_boxes

if TYPE_CHECKING:
    from .data import BoxSplit

__all__ = ["evaluate_localization", "localization_scores", "predict_boxes"]


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
        >>> scores["localised"], round(scores["mean_iou"], 2)  # the starting 29.7 px central window
        (100.0, 0.89)
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


@torch.no_grad()
def localization_scores(
    model: AttentionEncoder,
    split: BoxSplit,
    settings: EvalSettings,
    threshold: float = 0.5,
) -> dict[str, float]:
    """:func:`evaluate_localization` of a split with boxes, sharded over the processes of
    ``settings.world`` (each rank scores a contiguous shard; the counts are summed, so every rank
    returns the numbers of one process).

    Returns:
        ``localised`` (%), ``mean_iou``, ``error`` (``100 - localised``: what a run minimises on
        validation) and ``skipped`` (0: the images are in memory).
    """
    world, device, precision = settings.world, settings.device, settings.precision
    batch_size = settings.batch_size
    was_training = model.training
    model.eval()
    hits, iou_sum = 0.0, 0.0
    n = len(split)
    for idx in shard_batches(n, batch_size, world.rank, world.size):
        i = torch.as_tensor(idx, dtype=torch.int64)
        x = split.x[i].to(device)
        with autocast_context(precision, device):
            params = model.localize(x)
        iou = box_iou(crop_boxes(params.float().cpu(), tuple(x.shape[-2:])), split.boxes[i])
        hits += float((iou > threshold).sum())
        iou_sum += float(iou.double().sum())
    model.train(was_training)
    hits, iou_sum = all_reduce_sum([hits, iou_sum], world, device)
    localised = 100.0 * round(hits) / max(n, 1)
    return {
        "localised": localised,
        "mean_iou": iou_sum / max(n, 1),
        "error": 100.0 - localised,
        "skipped": 0,
    }
