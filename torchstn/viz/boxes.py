"""A picture of co-localisation: images with the crop box (red) and the true box (green)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from .._checks import check_tensor
from ..colocalization.boxes import box_iou
from ..colocalization.evaluate import predict_boxes
from ..errors import InvalidInputError
from ..inference import load_with_info
from ..models.encoder import AttentionEncoder
from ..train.objective import get_objective
from ._mpl import pyplot, save_figure

__all__ = ["save_boxes_png", "save_run_boxes"]


def save_boxes_png(
    path: str | Path,
    images: torch.Tensor,
    crop_boxes: torch.Tensor,
    true_boxes: torch.Tensor,
    *,
    num: int = 8,
    columns: int = 4,
    titles: Sequence[str] | None = None,
) -> Path:
    """Draw the first ``num`` images with their crop box (red) and true box (green) to a PNG.

    Written atomically (a temporary file, then ``os.replace``); matplotlib is imported here, with
    the Agg backend.

    Args:
        path: the PNG to write (folders are created).
        images: ``(N, C, H, W)`` images in ``[0, 1]`` (the first channel is shown).
        crop_boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)``, pixel edges, of the transformer's crops.
        true_boxes: ``(N, 4)`` ground-truth boxes, pixel edges.
        num: how many images to draw.
        columns: images per row.
        titles: optional title per image (e.g. the IoU).

    Returns:
        ``path``.
    """
    check_tensor(images, "images", ndim=4)
    check_tensor(crop_boxes, "crop_boxes", ndim=2, last_dim=4)
    check_tensor(true_boxes, "true_boxes", ndim=2, last_dim=4)
    n = min(int(num), images.shape[0])
    if n < 1 or crop_boxes.shape[0] < n or true_boxes.shape[0] < n:
        raise InvalidInputError(
            f"expected at least one image and a crop and true box per drawn image, got "
            f"{images.shape[0]} images, {crop_boxes.shape[0]} and {true_boxes.shape[0]} boxes"
        )
    plt = pyplot()
    from matplotlib.patches import Rectangle

    cols = max(1, min(int(columns), n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    try:
        for ax in axes.flat:
            ax.axis("off")
        for i in range(n):
            ax = axes.flat[i]
            ax.imshow(images[i, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            for box, color in ((true_boxes[i], "lime"), (crop_boxes[i], "red")):
                x0, y0, x1, y1 = (float(v) for v in box)
                # imshow puts pixel j's centre at j: edge coordinate x is drawn at x - 0.5
                ax.add_patch(
                    Rectangle(
                        (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, lw=1.5
                    )
                )
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=8)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    return save_figure(fig, path, dpi=80, format="png")


def save_run_boxes(
    checkpoint: str | Path,
    path: str | Path,
    *,
    split: str = "test",
    num: int = 8,
    weights: str = "best",
) -> Path:
    """Draw the crops a co-localisation run's model picks on the first ``num`` images of one of
    its splits (``test``: the images co-localised; ``val``: the validation images), titled with
    their IoU, with :func:`save_boxes_png`.

    Args:
        checkpoint: the run's ``checkpoint.pt`` (or its folder).
        path: the PNG to write.
        split: ``train``, ``val`` or ``test``.
        num: how many images.
        weights: ``best`` (on validation) or ``last``.

    Returns:
        ``path``.
    """
    model, info = load_with_info(checkpoint, weights)
    if info.config.objective.name != "colocalization" or not isinstance(model, AttentionEncoder):
        raise InvalidInputError(f"{checkpoint}: not a co-localisation run")
    data = get_objective(info.config).build_data()
    images = data.eval_split(split)
    x, boxes = images.x[:num], images.boxes[:num]
    pred = predict_boxes(model, x)
    titles = [f"IoU {v:.2f}" for v in box_iou(pred, boxes).tolist()]
    return save_boxes_png(path, x, pred, boxes, num=num, titles=titles)
