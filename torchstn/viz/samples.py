"""A labelled grid of samples as a PNG (``torchstn data preview``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.sample import Sample
from ..errors import InvalidInputError
from ._mpl import pyplot, save_figure

__all__ = ["sample_titles", "save_preview", "to_rgb"]


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` images to ``(N, H, W, 3)`` for display: 1 channel as gray, 2 channels as
    red and cyan (the first and second digit of the addition task), 3 as RGB, more as the mean.

    Example:
        >>> to_rgb(torch.ones(1, 2, 4, 4))[0, 0, 0].tolist()
        [1.0, 1.0, 1.0]
    """
    c = x.shape[1]
    if c == 1:
        rgb = x.expand(-1, 3, -1, -1)
    elif c == 2:
        rgb = torch.stack((x[:, 0], x[:, 1], x[:, 1]), dim=1)
    elif c == 3:
        rgb = x
    else:
        rgb = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return rgb.permute(0, 2, 3, 1).clamp(0, 1)


def sample_titles(sample: Sample, class_names: Sequence[str] | None = None) -> list[str]:
    """One short title per sample: the class (name), ``a+b=y`` for addition, the angle if known."""
    titles = []
    for i in range(len(sample)):
        label = int(sample.y[i])
        text = class_names[label] if class_names is not None else str(label)
        if "digits" in sample.params:
            a, b = (int(v) for v in sample.params["digits"][i])
            text = f"{a}+{b}={label}"
        angle = sample.params.get("angle")
        if angle is not None and angle.dim() == 1:
            text += f" {float(angle[i]):+.0f}°"
        titles.append(text)
    return titles


def save_preview(
    sample: Sample,
    path: str | os.PathLike[str],
    *,
    ncols: int = 8,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
    show_boxes: bool = True,
) -> Path:
    """Draw the samples in a grid with their labels (and boxes) and write a PNG atomically.

    Volumes ``(N, C, D, H, W)`` are drawn as their maximum over z (see
    :mod:`torchstn.viz.volumes`), their boxes by their ``(x, y)`` extent.

    Args:
        sample: the samples to draw (all of them; slice it first).
        path: the ``.png`` file.
        ncols: images per row.
        title: a title over the grid.
        class_names: names for the labels.
        show_boxes: outline ``sample.boxes`` (yellow) and ``params["ink_box"]`` (green) if present.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if len(sample) == 0:
        raise InvalidInputError("save_preview: the sample is empty")
    plt = pyplot()
    from matplotlib.patches import Rectangle

    n = len(sample)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.6 * ncols, 1.75 * nrows + (0.4 if title else 0))
    )
    axes_list = list(getattr(axes, "flat", [axes]))
    x = sample.x.detach().cpu()
    volumes = x.dim() == 5  # drawn as their maximum over z, with the boxes' (x, y) extent
    images = to_rgb(x.amax(2) if volumes else x).numpy()
    ink = sample.params.get("ink_box")
    for i, (ax, text) in enumerate(zip(axes_list, sample_titles(sample, class_names))):
        ax.imshow(
            images[i],
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(0, images.shape[2], images.shape[1], 0),
        )
        ax.set_title(text, fontsize=8)
        if show_boxes:
            boxes = [(sample.boxes[i], "yellow")]
            if ink is not None and ink.dim() == 2:
                boxes.append((ink[i], "lime"))
            for box, colour in boxes:
                if volumes:  # (x0, y0, z0, x1, y1, z1): the box seen from above
                    box = box[[0, 1, 3, 4]]
                x0, y0, x1, y1 = (float(v) for v in box)
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8, ec=colour))
    for ax in axes_list:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100, format="png")
