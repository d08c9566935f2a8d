"""Section 2 of the guide: the worked example of the sampler, computed with the library.

A 4 x 4 image whose pixels are unit cells centred on their integer coordinates; a 2 x 3 affine
matrix (in pixel-centre coordinates) maps the target pixel (1, 1), made homogeneous (1, 1, 1), to
the source point (2.5, 2.5); the output there is the bilinear blend of the four surrounding pixels.
The influence of every input pixel on that output is the gradient of the output with respect to the
image (autograd), which is exactly the sampling weight: four bars of 1/4 for the bilinear kernel,
sixteen for the Gaussian kernel of the paper's generic formula (eq. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..functional import (
    influence_weights,
    kernel_sample,
    normalized_to_pixel,
    pixel_matrix_to_normalized,
    sample,
)
from ..transforms import get
from ._plot import COLOURS, plt, save

__all__ = ["GAUSSIAN_SIGMA", "WorkedExample", "plot_influence", "plot_worked", "worked_example"]

#: standard deviation (pixels) of the Gaussian kernel of the worked example.
GAUSSIAN_SIGMA = 1.0
_SIZE = (4, 4)


@dataclass(frozen=True)
class WorkedExample:
    """Every quantity of the worked example (float64 tensors).

    Attributes:
        image: ``(4, 4)`` intensities, ``image[n, m]`` at the pixel centre ``(x, y) = (m, n)``.
        matrix: ``(2, 3)`` affine matrix, target pixel coordinates to source pixel coordinates.
        target: ``(3,)`` the homogeneous target point ``(x_t, y_t, 1)``.
        source: ``(2,)`` ``matrix @ target``, by hand.
        theta: ``(2, 3)`` the same map in the normalised frame (``align_corners=False``).
        grid_source: ``(2,)`` the library's grid at the target pixel, back in pixel coordinates.
        hand_weights: ``(4, 4)`` ``max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|)``.
        hand_value: the weighted sum of the intensities with ``hand_weights``.
        value: the output of :func:`torchstn.functional.sample` (``grid_sample``) at the target.
        kernel_value: the output of :func:`torchstn.functional.kernel_sample` (eq. 3).
        bilinear: ``(4, 4)`` d output / d image, bilinear (autograd through ``grid_sample``).
        bilinear_table: ``(4, 4)`` :func:`torchstn.functional.influence_weights`, bilinear.
        gaussian: ``(4, 4)`` d output / d image, Gaussian kernel of ``sigma`` pixels.
        gaussian_value: the Gaussian kernel's output at the target.
        sigma: the Gaussian's standard deviation in pixels.
    """

    image: torch.Tensor
    matrix: torch.Tensor
    target: torch.Tensor
    source: torch.Tensor
    theta: torch.Tensor
    grid_source: torch.Tensor
    hand_weights: torch.Tensor
    hand_value: float
    value: float
    kernel_value: float
    bilinear: torch.Tensor
    bilinear_table: torch.Tensor
    gaussian: torch.Tensor
    gaussian_value: float
    sigma: float

    def neighbours(self) -> list[tuple[int, int, float, float]]:
        """``(m, n, weight, intensity)`` of the pixels with a non-zero bilinear weight."""
        return [
            (m, n, float(self.hand_weights[n, m]), float(self.image[n, m]))
            for n in range(_SIZE[0])
            for m in range(_SIZE[1])
            if self.hand_weights[n, m] != 0
        ]


def _influence(
    image: torch.Tensor, grid: torch.Tensor, kernel: str, sigma: float
) -> tuple[torch.Tensor, float]:
    """The output at target pixel (1, 1) and its gradient with respect to every input pixel."""
    u = image.clone().requires_grad_(True)
    if kernel == "gaussian":
        out = kernel_sample(u, grid, "gaussian", sigma=sigma)
    else:
        out = sample(u, grid, "bilinear")
    value = out[0, 0, 1, 1]
    (grad,) = torch.autograd.grad(value, u)
    return grad[0, 0], float(value.detach())


def worked_example(sigma: float = GAUSSIAN_SIGMA) -> WorkedExample:
    """Compute the worked example (deterministic: no randomness).

    Example:
        >>> w = worked_example()
        >>> w.source.tolist(), w.value, w.neighbours()[0]
        ([2.5, 2.5], 12.5, (2, 2, 0.25, 10.0))
    """
    dt = torch.float64
    image = torch.arange(16, dtype=dt).reshape(1, 1, *_SIZE)  # U, (B, C, H, W)
    matrix = torch.tensor([[1.0, 0.0, 1.5], [0.0, 1.0, 1.5]], dtype=dt)
    target = torch.tensor([1.0, 1.0, 1.0], dtype=dt)  # (x_t, y_t) made homogeneous
    source = matrix @ target
    theta = pixel_matrix_to_normalized(matrix[None], _SIZE, align_corners=False)[0, :2]
    grid = get("affine").grid(theta.reshape(1, 6), _SIZE, False)  # (1, 4, 4, 2)
    grid_source = normalized_to_pixel(grid[0, 1, 1], _SIZE, align_corners=False)
    ms = torch.arange(_SIZE[1], dtype=dt)
    ns = torch.arange(_SIZE[0], dtype=dt)
    wx = (1 - (source[0] - ms).abs()).clamp_min(0)
    wy = (1 - (source[1] - ns).abs()).clamp_min(0)
    hand = wy[:, None] * wx[None, :]
    bilinear, value = _influence(image, grid, "bilinear", sigma)
    gaussian, gaussian_value = _influence(image, grid, "gaussian", sigma)
    table = influence_weights(grid, _SIZE, "bilinear")[0, 1, 1]
    return WorkedExample(
        image=image[0, 0],
        matrix=matrix,
        target=target,
        source=source,
        theta=theta,
        grid_source=grid_source,
        hand_weights=hand,
        hand_value=float((hand * image[0, 0]).sum()),
        value=value,
        kernel_value=float(kernel_sample(image, grid)[0, 0, 1, 1]),
        bilinear=bilinear,
        bilinear_table=table,
        gaussian=gaussian,
        gaussian_value=gaussian_value,
        sigma=float(sigma),
    )


def _cells(ax: Any, title: str) -> None:
    """A 4 x 4 lattice of unit cells in pixel-centre coordinates, y pointing down."""
    h, w = _SIZE
    for k in range(w + 1):
        ax.axvline(k - 0.5, color="0.6", lw=0.8)
    for k in range(h + 1):
        ax.axhline(k - 0.5, color="0.6", lw=0.8)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    ax.set_title(title, fontsize=10)


def plot_worked(w: WorkedExample, path: Path) -> Path:
    """The target frame with pixel (1, 1), the input with its intensities, the source point and
    the four neighbours with their weights; the matrix product that links them."""
    p = plt()
    from matplotlib.patches import ConnectionPatch

    fig, (left, right) = p.subplots(1, 2, figsize=(10, 5.2))
    tx, ty = (int(v) for v in w.target[:2])
    sx, sy = (float(v) for v in w.source)
    _cells(left, f"output V: target pixel ({tx}, {ty})")
    for n in range(_SIZE[0]):
        for m in range(_SIZE[1]):
            hit = (m, n) == (tx, ty)
            left.plot(m, n, "o", color=COLOURS[1] if hit else "0.3", ms=9 if hit else 4)
            left.text(
                m, n + 0.3, f"({m}, {n})", ha="center", va="center", fontsize=7,
                color=COLOURS[1] if hit else "0.35",
            )  # fmt: skip
    left.add_patch(
        p.Rectangle((tx - 0.5, ty - 0.5), 1, 1, fill=False, ec=COLOURS[1], lw=2.2, zorder=3)
    )
    _cells(right, f"input U: source point ({sx:g}, {sy:g})")
    right.imshow(
        w.image.numpy(), cmap="Blues", vmin=-8, vmax=40, extent=(-0.5, 3.5, 3.5, -0.5), zorder=0
    )
    weights = {(m, n): weight for m, n, weight, _ in w.neighbours()}
    for n in range(_SIZE[0]):
        for m in range(_SIZE[1]):
            right.plot(m, n, "o", color="0.3", ms=3)
            right.text(m, n - 0.3, f"U = {w.image[n, m]:g}", ha="center", va="center", fontsize=8)
            if (m, n) in weights:  # the weight beside the centre, away from the dashed line
                right.plot([sx, m], [sy, n], color=COLOURS[0], lw=1.2, ls="--")
                right.text(
                    m - 0.08 if m < sx else m + 0.08, n + 0.28, f"{weights[m, n]:g}",
                    ha="right" if m < sx else "left", va="center", fontsize=8,
                    color=COLOURS[0], fontweight="bold",
                )  # fmt: skip
    right.plot(sx, sy, "X", color=COLOURS[1], ms=11, zorder=4)
    arrow = ConnectionPatch(
        xyA=(tx + 0.2, ty), coordsA="data", axesA=left, xyB=(sx - 0.15, sy), coordsB="data",
        axesB=right, arrowstyle="-|>", color=COLOURS[1], lw=1.6, mutation_scale=16,
        connectionstyle="arc3,rad=-0.3", zorder=5,
    )  # fmt: skip
    fig.add_artist(arrow)
    a = ", ".join("[" + ", ".join(f"{v:g}" for v in row.tolist()) + "]" for row in w.matrix)
    terms = " + ".join(f"{weight:g}*{u:g}" for _, _, weight, u in w.neighbours())
    fig.text(
        0.5, 0.01,
        f"A = [{a}]:   A (x_t, y_t, 1) = A ({tx}, {ty}, 1) = ({sx:g}, {sy:g})\n"
        f"V = sum of w U (w in blue) = {terms} = {w.hand_value:g}",
        ha="center", fontsize=10, family="monospace", linespacing=1.6,
    )  # fmt: skip
    fig.subplots_adjust(wspace=0.45, bottom=0.16)
    return save(fig, path)


def plot_influence(w: WorkedExample, path: Path) -> Path:
    """3-D bars: the weight of every input pixel on the output, bilinear and Gaussian."""
    p = plt()
    fig = p.figure(figsize=(11, 4.8))
    maps = (
        ("bilinear kernel", w.bilinear, COLOURS[0]),
        (f"Gaussian kernel, sigma = {w.sigma:g} px", w.gaussian, COLOURS[2]),
    )
    h, wd = _SIZE
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
    for k, (title, grad, colour) in enumerate(maps):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        dz = grad.flatten().numpy()
        nonzero = int((grad != 0).sum())
        colours = [colour if v > 0 else "0.8" for v in dz]
        ax.bar3d(
            xs.flatten().numpy() - 0.35,
            ys.flatten().numpy() - 0.35,
            0,
            0.7,
            0.7,
            dz,
            color=colours,
            shade=True,
            edgecolor="0.3",
            linewidth=0.3,
        )
        ax.set_xticks(range(wd))
        ax.set_yticks(range(h))
        ax.set_xlim(-0.5, wd - 0.5)
        ax.set_ylim(-0.5, h - 0.5)  # the tall bars at the back, the small ones in front
        ax.set_zlim(0, max(float(grad.max()) * 1.1, 1e-12))
        ax.set_xlabel("x (column)")
        ax.set_ylabel("y (row)")
        ax.set_zlabel("weight dV/dU")
        ax.view_init(elev=30, azim=-62)
        ax.set_title(f"{title}: {nonzero} of {h * wd} pixels count", fontsize=10)
    fig.suptitle(
        f"influence of every input pixel on output (1, 1), read at ({float(w.source[0]):g}, "
        f"{float(w.source[1]):g})",
        fontsize=11,
    )
    fig.subplots_adjust(left=0.02, right=0.95, wspace=0.15)
    return save(fig, path)
