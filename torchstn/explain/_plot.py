"""Drawing helpers shared by the guide's figures (matplotlib through
:func:`torchstn.viz.pyplot`, which names the package to install when it is missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..transforms import Transform
from ..transforms.warping import output_frame
from ..viz._mpl import pyplot, save_figure

__all__ = ["BOX", "COLOURS", "draw_region", "mesh_lines", "plt", "save", "show_image"]

#: line colour of a learned sampling region.
BOX = "#e4572e"
#: one colour per curve (colour-blind safe: Okabe and Ito).
COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


def plt() -> Any:
    """``matplotlib.pyplot`` (Agg backend), or a one-line :class:`TorchSTNError` naming the extra."""
    return pyplot()


def save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically, close it and return the path."""
    return save_figure(fig, path, format="png", bbox_inches="tight")


def show_image(ax: Any, image: torch.Tensor, title: str | None = None, fontsize: float = 8) -> None:
    """Draw a ``(H, W)`` image in ``[0, 1]`` in grey, square pixels, without ticks."""
    h, w = image.shape
    ax.imshow(
        image.detach().float().clamp(0, 1).numpy(),
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
    )
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def mesh_lines(
    transform: Transform,
    params: torch.Tensor,
    in_size: tuple[int, int],
    lines: int = 2,
    points: int = 33,
    align_corners: bool = False,
    out_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Where a ``lines x lines`` mesh of the output frame falls in the input: ``(P,)`` params
    through :func:`torchstn.output_frame` (``out_size`` defaults to ``in_size``).

    Returns:
        ``(2, lines, points, 2)``: horizontal then vertical lines, ``(x, y)`` in input
        pixel-centre coordinates.
    """
    p = params.detach().float()[None]
    size = in_size if out_size is None else out_size
    return output_frame(transform, p, in_size, size, align_corners, lines, points)[0]


def draw_region(
    ax: Any,
    transform: Transform,
    params: torch.Tensor,
    in_size: tuple[int, int],
    colour: str = BOX,
    lines: int = 2,
    lw: float = 1.4,
) -> None:
    """Draw the region sampled with ``(P,)`` ``params`` over the input: its border, and with
    ``lines > 2`` the inner lines of a mesh (thinner)."""
    mesh = mesh_lines(transform, params, in_size, lines).numpy()
    for d in range(2):
        for i in range(lines):
            border = i in (0, lines - 1)
            ax.plot(
                mesh[d, i, :, 0],
                mesh[d, i, :, 1],
                color=colour,
                lw=lw if border else 0.5 * lw,
                alpha=1.0 if border else 0.75,
            )
