"""How cost grows with batch size and image size, for the sampler and a training step."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..functional import sample
from ..models import create_model
from ..transforms import get as get_transform
from ..viz._mpl import pyplot, save_figure
from .sampler import family_params
from .timing import Settings, measure
from .training import make_step

__all__ = ["COLUMNS", "DESCRIPTION", "TITLE", "draw", "run", "slope"]

TITLE = "How cost grows"
DESCRIPTION = """
Time against batch size and image size on log-log axes: affine grid + bilinear sampling
(forward+backward, one channel, the output as large as the input except at 60x60, which samples
30x30 as the cluttered ST-CNN's pooled classifier sees it) and a training step of the ST-CNN
(SGD with momentum, default memory format). `per image` is the time divided by the batch;
the notes give the exponent of a least-squares power law through each series (1: linear). The
ST-CNN averages its transformer's output over 2x2 from 42x42 up, as the configs do, so its 28x28
step (no pooling) costs more than its 42x42 one.
"""
COLUMNS = (
    ("series", "series", ""),
    ("batch", "batch", ""),
    ("size", "image", ""),
    ("ms", "ms", ".2f"),
    ("per_image_us", "per image us", ",.1f"),
)

#: (series, varies, [(batch, size)], what)
SERIES = (
    ("sampler, batch", "batch", [(b, 60) for b in (1, 4, 16, 64, 256)], "sampler"),
    ("sampler, size", "size", [(16, s) for s in (28, 56, 112, 224)], "sampler"),
    ("ST-CNN step, batch", "batch", [(b, 60) for b in (16, 32, 64, 128, 256)], "step"),
    ("ST-CNN step, size", "size", [(32, s) for s in (28, 42, 60, 84)], "step"),
)
QUICK_SERIES = (
    ("sampler, batch", "batch", [(1, 12), (4, 12)], "sampler"),
    ("ST-CNN step, size", "size", [(2, 12), (2, 16)], "step"),
)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares exponent ``p`` of ``y ~ x^p``."""
    lx, ly = [math.log(v) for v in xs], [math.log(v) for v in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / var if var > 0 else float("nan")


def _sampler_fn(batch: int, size: int, device: str, gen: torch.Generator) -> Any:
    out = size // 2 if size == 60 else size
    x = torch.rand(batch, 1, size, size, generator=gen).to(device).requires_grad_(True)
    params = family_params("affine", batch, gen).to(device).requires_grad_(True)
    affine = get_transform("affine")
    upstream = torch.randn(batch, 1, out, out, generator=gen).to(device)

    def fn() -> None:
        x.grad = params.grad = None
        sample(x, affine.grid(params, (out, out))).backward(upstream)

    return fn


def _step_fn(batch: int, size: int, device: str, gen: torch.Generator) -> Any:
    torch.manual_seed(0)
    pool = 2 if size >= 42 else 1
    model = create_model("st_cnn_affine", (1, size, size), 10, pool=pool).to(device)
    x = torch.rand(batch, 1, size, size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    return make_step(model, x, y)


def run(settings: Settings) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    notes = []
    for series, varies, points, what in QUICK_SERIES if settings.quick else SERIES:
        xs: list[float] = []
        ys: list[float] = []
        for batch, size in points:
            make = _sampler_fn if what == "sampler" else _step_fn
            t = measure(make(batch, size, settings.device, gen), settings)
            rows.append(
                {
                    "series": series,
                    "varies": varies,
                    "batch": batch,
                    "size": f"{size}x{size}",
                    "pixels": size * size,
                    "ms": t.ms(),
                    "per_image_us": t.median / batch * 1e6,
                }
            )
            xs.append(batch if varies == "batch" else size * size)
            ys.append(t.median)
        p = slope(xs, ys)
        per = "batch" if varies == "batch" else "pixel count"
        notes.append(f"{series}: time grows as ({per})^{p:.2f}.")
    return {"rows": rows, "notes": [" ".join(notes)]}


def draw(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """A log-log figure of ``rows`` (one panel per varied quantity), written atomically."""
    plt = pyplot()
    from matplotlib.ticker import NullFormatter  # optional, as pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    for ax, varies, label in zip(axes, ("batch", "size"), ("batch size", "pixels per image")):
        for series in dict.fromkeys(r["series"] for r in rows if r["varies"] == varies):
            sel = [r for r in rows if r["series"] == series]
            xs = [r["batch"] if varies == "batch" else r["pixels"] for r in sel]
            ax.loglog(xs, [r["ms"] for r in sel], "o-", label=series)
        for axis in (ax.xaxis, ax.yaxis):  # decades only: minor labels crowd short ranges
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("milliseconds")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
