"""How close the sampler comes to the machine's memory bandwidth.

The sampler's effective bandwidth is the bytes it must move at the least (read the input and the
grid once, write the output once) divided by its time; beside it, a plain ``copy_`` of a tensor
of the same size, timed in the same run, moves bytes as fast as this machine does (read once,
write once). Their ratio says how much of the sampler's time is memory traffic and how much is
arithmetic and irregular access.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from ..functional import sample
from ..transforms import get as get_transform
from .sampler import family_params
from .timing import Settings, measure

__all__ = ["COLUMNS", "DESCRIPTION", "TITLE", "run"]

TITLE = "The limit: sampler bandwidth against a plain copy"
DESCRIPTION = """
Bilinear sampling (`torchstn.functional.sample` on a precomputed affine grid, forward only) at
batch 256, and, measured beside it, `dst.copy_(src)` of a float32 tensor as large as the
sampler's input plus grid. Sampler bytes = input + grid read once + output written once; copy
bytes = read + write. `fraction` = sampler GB/s / copy GB/s (target: at least 0.5, or the notes
say what holds it back). `ns/value` is the sampler's time per output value.
"""
COLUMNS = (
    ("shape", "input -> output", ""),
    ("megabytes", "MB moved", ".1f"),
    ("sample_ms", "sampler ms", ".2f"),
    ("sample_gbs", "sampler GB/s", ".2f"),
    ("copy_ms", "copy ms", ".2f"),
    ("copy_gbs", "copy GB/s", ".2f"),
    ("fraction", "fraction", ".2f"),
    ("ns_per_value", "ns/value", ".2f"),
)

SHAPES = (
    (256, 1, 60, 60, 30, 30),
    (256, 1, 42, 42, 42, 42),
    (256, 3, 224, 224, 224, 224),
    (256, 64, 28, 28, 28, 28),
)
QUICK_SHAPES = ((8, 2, 16, 16, 16, 16),)


def run(settings: Settings) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    affine = get_transform("affine")
    for b, c, h, w, ho, wo in QUICK_SHAPES if settings.quick else SHAPES:
        x = torch.rand(b, c, h, w, generator=gen).to(settings.device)
        params = family_params("affine", b, gen).to(settings.device)
        grid = affine.grid(params, (ho, wo))
        out_values = b * c * ho * wo
        sampler_bytes = 4 * (x.numel() + grid.numel() + out_values)
        with torch.no_grad():
            t_sample = measure(partial(sample, x, grid), settings)
        src = torch.empty(x.numel() + grid.numel(), device=settings.device).uniform_()
        dst = torch.empty_like(src)
        t_copy = measure(partial(dst.copy_, src), settings)
        copy_bytes = 2 * 4 * src.numel()
        sample_gbs = sampler_bytes / t_sample.median / 1e9
        copy_gbs = copy_bytes / t_copy.median / 1e9
        rows.append(
            {
                "shape": f"{b}x{c}x{h}x{w} -> {ho}x{wo}",
                "megabytes": sampler_bytes / 1e6,
                "sample_ms": t_sample.ms(),
                "sample_gbs": sample_gbs,
                "copy_ms": t_copy.ms(),
                "copy_gbs": copy_gbs,
                "fraction": sample_gbs / copy_gbs,
                "ns_per_value": t_sample.median / out_values * 1e9,
            }
        )
    return {"rows": rows, "notes": [_explain(rows)]}


def _explain(rows: list[dict[str, Any]]) -> str:
    low = [r for r in rows if r["fraction"] < 0.5]
    best = max(rows, key=lambda r: r["fraction"])
    if not low:
        return (
            f"Every shape reaches at least half of the copy's bandwidth (best "
            f"{best['fraction']:.2f} at {best['shape']}): the sampler is close to memory-bound."
        )
    ns = sorted(r["ns_per_value"] for r in rows)
    return (
        f"{len(low)} of {len(rows)} shapes stay below half of the copy's bandwidth (best "
        f"{best['fraction']:.2f} at {best['shape']}). What holds them back is not memory "
        f"traffic but work per output value: {ns[0]:.2f} to {ns[-1]:.2f} ns each, for "
        "unnormalising two coordinates, four bounds checks, four weights and four gathers from "
        "addresses that depend on the data (PyTorch's `grid_sample` kernel, which every "
        "library here calls). With one channel, the grid (8 bytes per output pixel) is read "
        "for 4 bytes of output, and the gathers touch cache lines the copy never waits for. "
        "A faster sampler needs a different kernel (several channels per gather in a "
        "channels-last layout, or a compiled fused grid and sampler), not less memory traffic."
    )
