"""Section 3 of the guide: the sampling kernels side by side, and their gradients.

The same digit is read on the same grid (a magnifying, rotating similarity) with every kernel the
library offers: ``grid_sample``'s nearest, bilinear and bicubic (:func:`torchstn.functional.sample`)
and the Gaussian kernel of the paper's generic formula (:func:`torchstn.functional.kernel_sample`).
Then one row of the digit is read along a fine 1-D sweep of the source coordinate ``x``, and
autograd gives ``dV / dx``: the signal a localisation net gets from the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..functional import kernel_sample, pixel_to_normalized, sample
from ..transforms import get
from ._data import test_digit
from ._plot import BOX, COLOURS, draw_region, plt, save, show_image

__all__ = [
    "KERNEL_SIGMA",
    "SAMPLERS",
    "KernelComparison",
    "compare_kernels",
    "plot_gradients",
    "plot_kernels",
]

#: the samplers compared, in order: ``(name, function, kernel or mode)``.
SAMPLERS = ("nearest", "bilinear", "bicubic", "gaussian")
#: Gaussian standard deviation (pixels) of this section.
KERNEL_SIGMA = 0.5
#: output size of the magnified read.
_OUT = (42, 42)
#: sweep points per pixel.
_STEPS = 50


@dataclass(frozen=True)
class KernelComparison:
    """What section 3 computes (float64).

    Attributes:
        image: ``(28, 28)`` the digit; ``label`` its class.
        params: ``(4,)`` similarity params ``(angle, scale, tx, ty)`` of the magnified read.
        outputs: sampler name -> ``(42, 42)`` the digit read on that grid.
        row: the image row of the sweep (the one with the most ink transitions).
        xs: ``(N,)`` source ``x`` of the sweep, pixel-centre coordinates.
        values: sampler name -> ``(N,)`` the value read at ``(x, row)``.
        slopes: sampler name -> ``(N,)`` ``dV / dx`` (per pixel) from autograd.
    """

    image: torch.Tensor
    label: int
    params: torch.Tensor
    outputs: dict[str, torch.Tensor]
    row: int
    xs: torch.Tensor
    values: dict[str, torch.Tensor]
    slopes: dict[str, torch.Tensor]
    sigma: float

    def centre_error(self, name: str) -> float:
        """Largest ``|V(m, row) - U[row, m]|`` over the pixel centres ``m`` of the sweep."""
        at = (self.xs * _STEPS).round().long() % _STEPS == 0
        cols = self.xs[at].round().long()
        inside = (cols >= 0) & (cols < self.image.shape[1])
        got = self.values[name][at][inside]
        return float((got - self.image[self.row, cols[inside]]).abs().max())


def _read(name: str, image: torch.Tensor, grid: torch.Tensor, sigma: float) -> torch.Tensor:
    if name == "gaussian":
        return kernel_sample(image, grid, "gaussian", sigma=sigma)
    return sample(image, grid, name)


def compare_kernels(sigma: float = KERNEL_SIGMA) -> KernelComparison:
    """Read the digit with every sampler (deterministic).

    Example:
        >>> k = compare_kernels()
        >>> k.centre_error("bilinear") < 1e-12, float(k.slopes["nearest"].abs().max())
        (True, 0.0)
    """
    digit, label = test_digit()
    h, w = digit.shape
    image = digit[None, None]  # (1, 1, H, W)
    # magnify the region around the ink's centre of mass: half the side, turned by 0.35 rad
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=digit.dtype), torch.arange(w, dtype=digit.dtype), indexing="ij"
    )
    mass = digit.sum()
    centre = torch.stack(((digit * xs).sum() / mass, (digit * ys).sum() / mass))
    shift = pixel_to_normalized(centre, (h, w))
    params = torch.cat((torch.tensor([0.35, 0.5], dtype=digit.dtype), shift))
    grid = get("similarity").grid(params[None], _OUT, False)
    outputs = {name: _read(name, image, grid, sigma)[0, 0] for name in SAMPLERS}

    row = int(digit.diff(dim=1).abs().sum(1).argmax())
    ink = (digit[row] > 0).nonzero()[:, 0]
    lo, hi = int(ink.min()) - 2, int(ink.max()) + 2
    sweep = torch.arange(lo * _STEPS, hi * _STEPS + 1, dtype=digit.dtype) / _STEPS
    values, slopes = {}, {}
    for name in SAMPLERS:
        x = sweep.clone().requires_grad_(True)
        pts = torch.stack((x, torch.full_like(x, float(row))), dim=-1)  # (N, 2) pixels
        g = pixel_to_normalized(pts, (h, w))[None, None]  # (1, 1, N, 2)
        v = _read(name, image, g, sigma)[0, 0, 0]
        (slope,) = torch.autograd.grad(v.sum(), x, allow_unused=True)
        values[name] = v.detach()
        slopes[name] = torch.zeros_like(sweep) if slope is None else slope
    return KernelComparison(
        image=digit,
        label=label,
        params=params,
        outputs=outputs,
        row=row,
        xs=sweep,
        values=values,
        slopes=slopes,
        sigma=float(sigma),
    )


def _title(name: str, sigma: float) -> str:
    return f"Gaussian, sigma = {sigma:g} px" if name == "gaussian" else name


def plot_kernels(k: KernelComparison, path: Path) -> Path:
    """The digit with the sampled region, and what each sampler reads there."""
    p = plt()
    fig, axes = p.subplots(1, 1 + len(SAMPLERS), figsize=(2.3 * (1 + len(SAMPLERS)), 2.8))
    show_image(axes[0], k.image, f"input ({k.image.shape[0]} x {k.image.shape[1]})", 9)
    h, w = k.image.shape
    draw_region(axes[0], get("similarity"), k.params, (int(h), int(w)))
    axes[0].axhline(k.row, color=COLOURS[0], lw=0.8, ls=":")
    for ax, name in zip(axes[1:], SAMPLERS):
        show_image(ax, k.outputs[name], _title(name, k.sigma), 9)
        for side in ax.spines.values():
            side.set_edgecolor(BOX)
            side.set_linewidth(1.4)
    fig.tight_layout()
    return save(fig, path)


def plot_gradients(k: KernelComparison, path: Path) -> Path:
    """``V(x)`` and ``dV/dx`` along the sweep, one curve per sampler."""
    p = plt()
    fig, (top, bottom) = p.subplots(2, 1, figsize=(11, 6), sharex=True)
    xs = k.xs.numpy()
    cols = torch.arange(int(k.xs[0].ceil()), int(k.xs[-1].floor()) + 1)
    inside = cols[(cols >= 0) & (cols < k.image.shape[1])]
    top.stem(
        inside.numpy(),
        k.image[k.row, inside].numpy(),
        linefmt="0.75",
        markerfmt="o",
        basefmt=" ",
        label="pixel values U",
    )
    for colour, name in zip(COLOURS, SAMPLERS):
        top.plot(xs, k.values[name].numpy(), color=colour, lw=1.4, label=_title(name, k.sigma))
        note = " (no gradient)" if not k.slopes[name].any() else ""
        bottom.plot(
            xs, k.slopes[name].numpy(), color=colour, lw=1.4, label=_title(name, k.sigma) + note
        )
    top.set_ylabel(f"V(x, y = {k.row})")
    top.set_title(f"reading row {k.row} of the digit at every x (step 1/{_STEPS} px)", fontsize=10)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bottom.axhline(0, color="0.5", lw=0.6)
    bottom.set_ylabel("dV/dx (per pixel)")
    bottom.set_xlabel("source x (pixel-centre coordinates; integers are pixel centres)")
    bottom.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bottom.set_xticks(range(int(cols[0]), int(cols[-1]) + 1, 2))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)
