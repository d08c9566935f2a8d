"""Section 4 of the guide: every registered transform family applied to the same digit.

Each family gets example params (chosen to show what the family can do; a family registered by
the user gets its identity plus a small seeded perturbation), its sampling grid drawn over the
input and the warped output beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..functional import normalized_to_pixel
from ..transforms import TPS, Transform, get, names
from ..transforms.warping import warp
from ._data import DIGIT_INDEX, test_digit
from ._plot import BOX, draw_region, mesh_lines, plt, save, show_image

__all__ = ["GalleryEntry", "gallery", "plot_gallery"]

#: the digit is read from a canvas this much larger on each side, so that warps that zoom out
#: or move it show the digit whole.
_PAD = 6


@dataclass(frozen=True)
class GalleryEntry:
    """One family: its name, ``(P,)`` params, what they mean, and the ``(H, W)`` output."""

    family: str
    params: torch.Tensor
    meaning: str
    output: torch.Tensor


#: example params of the built-in families (chosen to show what each can do).
_EXAMPLES: dict[str, list[float]] = {
    "affine": [0.9, 0.35, 0.0, -0.15, 0.85, 0.0],
    "attention": [0.6, 0.1, 0.05],
    "projective": [0.95, 0.1, 0.0, 0.0, 0.9, 0.0, 0.25, 0.1],
    "rotation": [0.5],
    "similarity": [-0.4, 1.25, 0.1, -0.05],
    "translation": [0.2, -0.15],
}
#: standard deviation of the random params of the other families (TPS, user-registered).
_NOISE = 0.08


def _meaning(family: str, p: list[float]) -> str:
    """What the params ``p`` of a family do, in words (from the values themselves)."""
    if family == "affine":
        return f"the matrix [[{p[0]:g}, {p[1]:g}], [{p[3]:g}, {p[4]:g}]]: a shear and a scale"
    if family == "attention":
        return f"a window {p[0]:g} times the side, centred at ({p[1]:g}, {p[2]:g}): a zoom in"
    if family == "projective":
        return f"perspective terms ({p[6]:g}, {p[7]:g}): a tilt"
    if family == "rotation":
        return f"a rotation by {p[0]:g} rad ({math.degrees(p[0]):.0f} degrees) about the centre"
    if family == "similarity":
        return (
            f"a rotation by {p[0]:g} rad ({math.degrees(p[0]):.0f} degrees), a scale of "
            f"{p[1]:g} (a zoom out) and a shift of ({p[2]:g}, {p[3]:g})"
        )
    if family == "translation":
        return f"a shift of ({p[0]:g}, {p[1]:g}) normalised units"
    if family == "tps":
        return f"the control points' sources moved at random (sd {_NOISE:g})"
    return f"the identity plus random noise (sd {_NOISE:g})"


def _example(family: str, transform: Transform, gen: torch.Generator) -> tuple[list[float], str]:
    """Example params of a family, and a sentence on what they do."""
    if family in _EXAMPLES:
        params = _EXAMPLES[family]
    else:
        ident = transform.identity_params(torch.float64)
        params = (
            ident + _NOISE * torch.randn(ident.shape, generator=gen, dtype=ident.dtype)
        ).tolist()
    return params, _meaning(family, params)


def gallery(seed: int = 0) -> list[GalleryEntry]:
    """Warp the digit with every registered family (deterministic for a ``seed``).

    Example:
        >>> [e.family for e in gallery()][:3]
        ['affine', 'attention', 'projective']
    """
    digit, _ = test_digit()
    image = torch.nn.functional.pad(digit, (_PAD,) * 4)[None, None]  # (1, 1, H, W)
    gen = torch.Generator().manual_seed(seed)
    entries = []
    for family in names(ndim=2):  # images: the guide's volumes have a section of their own
        transform = get(family)
        values, meaning = _example(family, transform, gen)
        params = torch.tensor(values, dtype=torch.float64)
        out = warp(image, params[None], transform)[0, 0]
        entries.append(GalleryEntry(family, params, meaning, out))
    return entries


def plot_gallery(entries: list[GalleryEntry], path: Path) -> Path:
    """One column per family: the input with the sampling grid, and the output below it."""
    p = plt()
    digit, label = test_digit()
    image = torch.nn.functional.pad(digit, (_PAD,) * 4)
    size = (int(image.shape[0]), int(image.shape[1]))
    n = len(entries)
    fig, axes = p.subplots(2, n, figsize=(2.05 * n, 4.5), squeeze=False)
    meshes = [mesh_lines(get(e.family), e.params, size, lines=7) for e in entries]
    corners = torch.tensor([[-0.5, -0.5], [size[1] - 0.5, size[0] - 0.5]])
    points = torch.cat([corners] + [m.reshape(-1, 2).float() for m in meshes])
    lo, hi = points.amin(0) - 1, points.amax(0) + 1  # every grid whole, on one scale
    for k, e in enumerate(entries):
        top, bottom = axes[0, k], axes[1, k]
        transform = get(e.family)
        show_image(top, image, e.family, 10)
        draw_region(top, transform, e.params, size, lines=7, lw=1.3)
        top.set_xlim(float(lo[0]), float(hi[0]))
        top.set_ylim(float(hi[1]), float(lo[1]))
        if isinstance(transform, TPS):
            pts = e.params.reshape(-1, 2)[None].float()  # the control points' sources
            src = normalized_to_pixel(pts, size)[0]
            top.plot(src[:, 0].numpy(), src[:, 1].numpy(), "o", color=BOX, ms=3)
        show_image(bottom, e.output)
    axes[0, 0].set_ylabel("input + sampling grid", fontsize=9)
    axes[1, 0].set_ylabel("output", fontsize=9)
    fig.suptitle(
        f"every transform family on MNIST test digit #{DIGIT_INDEX} (a {label}), "
        f"padded to {size[1]} x {size[0]}",
        fontsize=11,
    )
    fig.tight_layout()
    return save(fig, path)
