"""Pictures of volumes: orthogonal slices and maximum-intensity projections, with the box a 3-D
transformer samples drawn in each.

A volume ``(C, D, H, W)`` is shown through four 2-D views, all in the voxel-centre coordinates
of :mod:`torchstn.functional.coords` (``x`` along W, ``y`` along H, ``z`` along D):

* ``xy``: the slice through the middle of D (rows y, columns x), as an axial slice of a scan;
* ``xz``: the slice through the middle of H (rows z, columns x);
* ``yz``: the slice through the middle of W (rows z, columns y);
* ``mip``: the maximum over D (rows y, columns x): every voxel's brightest value along the
  depth, so that an object off the middle slices still shows.

The sampled box (:func:`torchstn.output_frame` of a 3-D family: its twelve edges in input
voxels) is drawn in each view as its projection onto the view's plane.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import TorchSTNError
from ..transforms.warping import output_frame
from ._mpl import pyplot
from ._transformers import transformer_outputs

__all__ = ["VIEWS", "draw_volume", "volume_figure", "volume_views"]

#: the views of a volume: name -> (the two axes drawn as (columns, rows), in (x, y, z) indices).
VIEWS: dict[str, tuple[int, int]] = {"xy": (0, 1), "xz": (0, 2), "yz": (1, 2), "mip": (0, 1)}

_COLOURS = ("#e4572e", "#29bf12", "#4f9dde", "#f3a712")


def volume_views(volume: torch.Tensor) -> dict[str, torch.Tensor]:
    """The four 2-D views of a ``(C, D, H, W)`` (or ``(D, H, W)``) volume, channels reduced by
    their maximum: ``xy`` ``(H, W)``, ``xz`` ``(D, W)``, ``yz`` ``(D, H)``, ``mip`` ``(H, W)``.

    Example:
        >>> v = torch.zeros(1, 4, 5, 6)
        >>> v[0, 3, 2, 1] = 1.0  # z = 3, y = 2, x = 1
        >>> {k: tuple(t.shape) for k, t in volume_views(v).items()}
        {'xy': (5, 6), 'xz': (4, 6), 'yz': (4, 5), 'mip': (5, 6)}
        >>> volume_views(v)["mip"][2, 1].item(), volume_views(v)["xy"].max().item()
        (1.0, 0.0)
    """
    if volume.dim() == 4:
        volume = volume.max(0).values
    if volume.dim() != 3:
        raise TorchSTNError(
            f"volume: expected (C, D, H, W) or (D, H, W), got {tuple(volume.shape)}"
        )
    d, h, w = volume.shape
    return {
        "xy": volume[d // 2],
        "xz": volume[:, h // 2, :],
        "yz": volume[:, :, w // 2],
        "mip": volume.max(0).values,
    }


def draw_volume(
    axes: Sequence[Any],
    volume: torch.Tensor,
    boxes: Sequence[torch.Tensor] = (),
    titles: bool = True,
) -> None:
    """Draw the four :func:`volume_views` of ``volume`` on four matplotlib axes, with each box of
    ``boxes`` (``(12, points, 3)`` edges in voxel coordinates, as :func:`torchstn.output_frame`
    gives them for one volume) projected on every view."""
    views = volume_views(volume.detach().float().cpu().clamp(0, 1))
    for ax, (name, image) in zip(axes, views.items()):
        ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        cols, rows = VIEWS[name]
        for j, box in enumerate(boxes):
            edges = box.detach().cpu().numpy()
            for edge in edges:
                ax.plot(edge[:, cols], edge[:, rows], color=_COLOURS[j % len(_COLOURS)], lw=1.2)
        n_rows, n_cols = image.shape
        pad = 0.12 * max(n_rows, n_cols)
        ax.set_facecolor("#c8c8c8")
        ax.set_xlim(-0.5 - pad, n_cols - 0.5 + pad)
        ax.set_ylim(n_rows - 0.5 + pad, -0.5 - pad)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(
                {"xy": "slice z = D/2", "xz": "slice y = H/2", "yz": "slice x = W/2"}.get(
                    name, "max over z"
                ),
                fontsize=7,
            )


@torch.no_grad()
def volume_figure(
    model: nn.Module,
    x: torch.Tensor,
    labels: Sequence[int | str] | None = None,
    predictions: Sequence[int | str] | None = None,
    title: str | None = None,
    max_volumes: int = 4,
) -> Any:
    """What :func:`torchstn.viz.plot_transformations` draws for volumes: for each of the first
    ``max_volumes`` volumes of ``x`` ``(N, C, D, H, W)``, a row of its four views with every
    input transformer's box, and a row per transformer of its output's views."""
    plt = pyplot()
    sts, outs = transformer_outputs(model, x)
    n = min(int(x.shape[0]), max_volumes)
    rows = n * (1 + len(sts))
    fig, grid = plt.subplots(rows, 4, figsize=(6.4, 1.7 * rows), squeeze=False)
    for i in range(n):
        top = i * (1 + len(sts))
        boxes = [
            output_frame(
                st.transform, p[i : i + 1], st.in_shape[1:], st.out_size, st.align_corners
            )[0]
            for st, (_, p) in zip(sts, outs)
        ]
        draw_volume(grid[top], x[i], boxes, titles=i == 0)
        text = []
        if labels is not None:
            text.append(f"label {labels[i]}")
        if predictions is not None:
            text.append(f"pred {predictions[i]}")
        grid[top, 0].set_ylabel("input + box\n" + ", ".join(text), fontsize=7)
        for j, (y, _) in enumerate(outs):
            draw_volume(grid[top + 1 + j], y[i], titles=False)
            name = f"ST {j + 1} output" if len(sts) > 1 else "ST output"
            grid[top + 1 + j, 0].set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
