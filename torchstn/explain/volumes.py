"""Section 7 of the guide: the spatial transformer on volumes.

The guide's digit is extruded into a slab inside a cube, then warped by two 3-D families (a
turn, zoom and shift; an attention zoom). Every number is computed here: the boxes each samples,
and the check that quarter turns of a cube are exact permutations of its voxels.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..transforms import get
from ..transforms.volumetric import rotation_matrix
from ..transforms.warping import output_frame, warp
from ..viz.volumes import draw_volume
from ._data import test_digit
from ._plot import plt, save

__all__ = ["VolumeExample", "plot_volumes", "volume_example"]

#: the cube's side and the slab's thickness, voxels.
SIDE = 32
THICKNESS = 6

#: the example warps: family -> (params, what they do).
EXAMPLES: dict[str, tuple[list[float], str]] = {
    "similarity3d": (
        [0.0, math.radians(40), 0.0, 0.7, 0.1, 0.0, 0.0],
        "a turn of 40 degrees about the y axis (the slab tilts in depth), a scale of 0.7 (a zoom "
        "in) and a shift of 0.1 along x",
    ),
    "attention3d": ([0.55, 0.0, 0.0, 0.0], "a window 0.55 times each side at the centre: a zoom"),
}


@dataclass(frozen=True)
class VolumeExample:
    """The slab volume ``(1, D, H, W)``, each family's params, output and box, and the largest
    difference between a quarter turn (nearest and trilinear sampling) and the voxel
    permutation it should be, over the three axes, both ``align_corners``."""

    volume: torch.Tensor
    families: list[str]
    params: list[torch.Tensor]
    outputs: list[torch.Tensor]
    boxes: list[torch.Tensor]
    quarter_turn_error: dict[str, float]


def slab() -> torch.Tensor:
    """The guide's digit extruded ``THICKNESS`` voxels deep in the middle of a ``SIDE`` cube:
    ``(1, SIDE, SIDE, SIDE)`` float64."""
    digit, _ = test_digit()
    pad = (SIDE - digit.shape[0]) // 2
    image = torch.nn.functional.pad(digit, (pad, SIDE - 28 - pad, pad, SIDE - 28 - pad))
    volume = torch.zeros(1, SIDE, SIDE, SIDE, dtype=torch.float64)
    z0 = (SIDE - THICKNESS) // 2
    volume[0, z0 : z0 + THICKNESS] = image
    return volume


def _quarter_turn_errors() -> dict[str, float]:
    """Largest |warp - permutation| of a 7^3 random cube turned by 90, 180 and 270 degrees about
    each axis, per sampler."""
    n = 7
    x = torch.rand(1, 1, n, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = get("rigid3d")
    worst = {"nearest": 0.0, "bilinear": 0.0}
    c = (n - 1) / 2
    for axis, quarters, align in itertools.product(range(3), (1, 2, 3), (False, True)):
        v = torch.zeros(1, 3, dtype=torch.float64)
        v[0, axis] = quarters * math.pi / 2
        rot = rotation_matrix(v)[0].round()
        expected = torch.empty_like(x)
        for k, i, j in itertools.product(range(n), repeat=3):
            p = torch.tensor([j - c, i - c, k - c], dtype=torch.float64)
            sx, sy, sz = (rot @ p + c).round().long().tolist()
            expected[..., k, i, j] = x[..., sz, sy, sx]
        params = torch.cat((v, torch.zeros(1, 3, dtype=torch.float64)), dim=1)
        for mode in worst:
            out = warp(x, params, t, mode=mode, align_corners=align)
            worst[mode] = max(worst[mode], float((out - expected).abs().max()))
    return worst


def volume_example() -> VolumeExample:
    """Compute section 7 (no training; deterministic)."""
    volume = slab()
    families, params, outputs, boxes = [], [], [], []
    for family, (values, _) in EXAMPLES.items():
        t = get(family)
        p = torch.tensor([values], dtype=torch.float64)
        out_size = (SIDE, SIDE, SIDE)
        outputs.append(warp(volume[None], p, t, out_size)[0])
        boxes.append(output_frame(t, p, volume.shape[1:], out_size)[0])
        families.append(family)
        params.append(p[0])
    return VolumeExample(volume, families, params, outputs, boxes, _quarter_turn_errors())


def plot_volumes(example: VolumeExample, path: Path) -> Path:
    """The slab with both boxes, then each family's output: four views per row."""
    p = plt()
    rows = 1 + len(example.families)
    fig, axes = p.subplots(rows, 4, figsize=(7.2, 1.95 * rows), squeeze=False)
    draw_volume(axes[0], example.volume, example.boxes)
    axes[0, 0].set_ylabel("input + boxes", fontsize=8)
    for r, (family, out) in enumerate(zip(example.families, example.outputs), start=1):
        draw_volume(axes[r], out, titles=False)
        axes[r, 0].set_ylabel(f"{family} output", fontsize=8)
    fig.tight_layout()
    return save(fig, path)
