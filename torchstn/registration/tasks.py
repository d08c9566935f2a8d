"""The generated registration tasks: pairs of MNIST digits (2-D) and the MNI152 template under
random smooth diffeomorphisms (3-D).

``mnist_pairs`` (the classic VoxelMorph demo): moving images are MNIST digits scaled to
``[0, 1]`` and padded to ``size x size``; in atlas mode each is registered to its class's atlas
(the mean of the class's training digits, or its first one), in pairwise mode to another digit
of its class from the same split. A digit's label map is its foreground (intensity ``> 0.5``),
so Dice is the overlap of the digit masks. Splits are those of
:func:`torchstn.data.tasks.base.source_digits`.

``mni152``: the MNI152 2009a symmetric template (T1) and its grey- and white-matter probability
maps, as nilearn ships them inside its package (``nilearn/datasets/data/``, found without
importing nilearn; ``pip install 'torchstn[atlas]'``). The head's bounding box is padded to a
cube and resampled (area averaging) to ``size^3``. A moving volume is the template deformed by a
random stationary velocity field (Gaussian draws on a ``coarse^3`` grid, upsampled by
:func:`torchstn.fields.resize`, scaled so that its largest vector is between half and all of
``max_displacement`` voxels, integrated by :func:`torchstn.fields.integrate`), with a random
gamma, a smooth multiplicative bias and Gaussian noise; its labels are those of the deformed
probability maps (0 background, 1 grey matter, 2 white matter: the larger probability where it
exceeds ``label_threshold``). The fixed volume is the template (atlas mode) or another deformed
template (pairwise). Every volume depends only on ``(seed, split, index)``: the chunk size
changes nothing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .._checks import check_choice
from ..data.seeding import generator
from ..data.tasks.base import SPLITS, cycle_indices, source_digits
from ..data.volumes import read_nifti
from ..errors import DataError
from ..fields import integrate, resize, warp
from .config import MODES, Mni152Options, MnistPairsOptions

__all__ = [
    "MNI152_FILES",
    "Pairs",
    "labels_of_probabilities",
    "mni152_folder",
    "mni152_pairs",
    "mni152_template",
    "mnist_atlases",
    "mnist_pairs",
]

#: the files of nilearn's package folder ``datasets/data`` that the ``mni152`` task reads.
MNI152_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_ATLAS_HINT = "pip install 'torchstn[atlas]'"


@dataclass
class Pairs:
    """Registration pairs: moving image ``i`` goes with fixed image ``fixed_index[i]``.

    Attributes:
        moving: ``(N, C, *spatial)`` float32 in ``[0, 1]``, or uint8 (``0..255``).
        fixed: ``(M, C, *spatial)``, the same dtype (atlas mode: one per class).
        fixed_index: ``(N,)`` int64 into ``fixed``.
        moving_labels: ``(N, 1, *spatial)`` uint8 label maps, or ``None``.
        fixed_labels: ``(M, 1, *spatial)`` uint8, or ``None``.
        y: ``(N,)`` int64, the class of each pair (0 where there are no classes).
        num_labels: label values ``0..num_labels - 1`` (0 is background); 0 without labels.
    """

    moving: torch.Tensor
    fixed: torch.Tensor
    fixed_index: torch.Tensor
    moving_labels: torch.Tensor | None
    fixed_labels: torch.Tensor | None
    y: torch.Tensor
    num_labels: int

    def __len__(self) -> int:
        return int(self.moving.shape[0])


# --------------------------------------------------------------------------- MNIST (2-D)
def _pad(digits: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, 28, 28)`` uint8 digits as ``(N, 1, size, size)`` float32 in ``[0, 1]``, centred."""
    lo = (size - 28) // 2
    hi = size - 28 - lo
    return F.pad(digits.float().div(255.0)[:, None], (lo, hi, lo, hi))


@functools.lru_cache(maxsize=4)
def _atlases(size: int, kind: str, root: str | None) -> torch.Tensor:
    images, labels, _ = source_digits("train", root)
    out = torch.empty(10, 1, size, size)
    for c in range(10):
        members = images[labels == c]
        out[c] = _pad(members[:1], size)[0] if kind == "first" else _pad(members, size).mean(0)
    return out


def mnist_atlases(
    options: MnistPairsOptions, root: str | os.PathLike[str] | None = None
) -> torch.Tensor:
    """The ten classes' atlases ``(10, 1, size, size)`` (float32 in ``[0, 1]``), from the
    training split: each class's mean digit (``atlas: mean``) or first digit (``first``).

    Example:
        >>> a = mnist_atlases(MnistPairsOptions(size=32))
        >>> tuple(a.shape), bool(a[:, :, :2].eq(0).all())  # padded with zeros
        ((10, 1, 32, 32), True)
    """
    return _atlases(options.size, options.atlas, None if root is None else str(root))


def mnist_pairs(
    split: str,
    num: int,
    seed: int,
    options: MnistPairsOptions,
    mode: str = "atlas",
    root: str | os.PathLike[str] | None = None,
) -> Pairs:
    """``num`` same-class pairs of MNIST digits of ``split`` (see the module docstring).

    The moving digits are a seeded permutation of the split's digits of ``options.digits``
    (every digit once before any twice); pairwise partners are drawn uniformly among the other
    digits of the class. Everything depends only on ``(seed, split)``.

    Example:
        >>> p = mnist_pairs("val", 4, seed=0, options=MnistPairsOptions(digits=[3]))
        >>> tuple(p.moving.shape), tuple(p.fixed.shape), p.y.tolist(), p.num_labels
        ((4, 1, 32, 32), (10, 1, 32, 32), [3, 3, 3, 3], 2)
        >>> q = mnist_pairs("val", 4, seed=0, options=MnistPairsOptions(digits=[3]), mode="pairwise")
        >>> torch.equal(q.moving, p.moving), tuple(q.fixed.shape)
        (True, (4, 1, 32, 32))
    """
    check_choice(split, "split", SPLITS)
    check_choice(mode, "mode", MODES)
    images, labels, _ = source_digits(split, root)
    classes = torch.tensor(options.digits if options.digits is not None else list(range(10)))
    # the split's digits of those classes, grouped by class (stable: file order within a class)
    keep = torch.isin(labels, classes).nonzero()[:, 0]
    pool = keep[torch.argsort(labels[keep], stable=True)]  # (P,) image indices
    counts = torch.bincount(labels[pool], minlength=10)  # (10,)
    starts = torch.cumsum(counts, 0) - counts  # first position of each class in pool
    gen = generator(seed, "mnist_pairs", split)
    at = cycle_indices(len(pool), num, gen)  # (num,) positions in pool
    y = labels[pool[at]]
    moving = _pad(images[pool[at]], options.size)
    digit_labels = moving.gt(0.5).to(torch.uint8)
    if mode == "atlas":
        fixed = mnist_atlases(options, root)
        return Pairs(moving, fixed, y.clone(), digit_labels, fixed.gt(0.5).to(torch.uint8), y, 2)
    n = counts[y]  # (num,) digits in each pair's class
    if int(n.min()) < 2:
        raise DataError(f"split {split!r}: a class has fewer than two digits to pair")
    rank = at - starts[y]
    shift = 1 + (torch.rand(num, generator=gen, dtype=torch.float64) * (n - 1)).long()
    partner = pool[starts[y] + (rank + shift) % n]
    fixed = _pad(images[partner], options.size)
    index = torch.arange(num)
    return Pairs(moving, fixed, index, digit_labels, fixed.gt(0.5).to(torch.uint8), y, 2)


# --------------------------------------------------------------------------- MNI152 (3-D)
def mni152_folder() -> Path:
    """nilearn's package folder ``datasets/data``, which holds the MNI152 files, found without
    importing nilearn.

    Raises:
        DataError: nilearn is not installed, or the folder lacks a file; one line saying what to
            install.
    """
    spec = importlib.util.find_spec("nilearn")
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    if not places:
        raise DataError(f"the mni152 task reads nilearn's MNI152 template: {_ATLAS_HINT}")
    folder = Path(places[0]) / "datasets" / "data"
    for name in MNI152_FILES.values():
        if not (folder / name).is_file():
            raise DataError(
                f"{folder / name}: not found (nilearn {spec.origin if spec else ''} lacks its "
                f"MNI152 template; {_ATLAS_HINT} --upgrade)"
            )
    return folder


def labels_of_probabilities(prob: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Label maps ``(B, 1, *spatial)`` uint8 of probability maps ``(B, K, *spatial)``: ``k + 1``
    where map ``k`` is the largest and above ``threshold``, else 0 (background).

    Example:
        >>> p = torch.tensor([[[0.1, 0.7, 0.4]], [[0.2, 0.2, 0.45]]])  # (K=2, 1, 3)
        >>> labels_of_probabilities(p[None])[0, 0].tolist()
        [[0, 1, 0]]
    """
    best, k = prob.max(dim=1, keepdim=True)
    return torch.where(best > threshold, k + 1, 0).to(torch.uint8)


@dataclass(frozen=True)
class Template:
    """The MNI152 template at one size: ``t1`` ``(1, 1, S, S, S)`` and ``prob`` (grey, white
    matter) ``(1, 2, S, S, S)``, float32 in ``[0, 1]``."""

    t1: torch.Tensor
    prob: torch.Tensor


@functools.lru_cache(maxsize=1)
def _cube() -> torch.Tensor:
    """T1, grey and white matter ``(1, 3, S, S, S)`` uint8 (as stored): the head's bounding box
    padded to a cube, centred."""
    folder = mni152_folder()
    v = torch.cat([read_nifti(folder / MNI152_FILES[k]) for k in ("t1", "gm", "wm")])[None]
    if float(v.min()) < 0 or float(v.max()) > 255 or not bool((v == v.round()).all()):
        raise DataError(f"{folder}: expected the MNI152 files' 8-bit voxels (0..255)")
    inside = (v > 0).any(1)[0].nonzero()
    lo, hi = inside.min(0).values, inside.max(0).values + 1
    v = v[:, :, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    side = int((hi - lo).max())
    pads: list[int] = []
    for extent in reversed(v.shape[2:]):  # W, H, D: F.pad's order
        before = (side - extent) // 2
        pads += [before, side - extent - before]
    return F.pad(v, pads).to(torch.uint8)


@functools.lru_cache(maxsize=2)
def _template(size: int) -> Template:
    small = F.interpolate(_cube().float(), size=(size,) * 3, mode="area").div_(255).clamp_(0, 1)
    return Template(small[:, :1].contiguous(), small[:, 1:].contiguous())


def mni152_template(size: int = 48) -> Template:
    """The template cropped to the head's bounding box, padded to a cube and resampled to
    ``size^3`` (cached).

    Raises:
        DataError: nilearn or its files are missing (:func:`mni152_folder`), or a file is
            unreadable.
    """
    return _template(int(size))


def _deform(
    template: Template,
    options: Mni152Options,
    seeds: list[tuple[int, tuple[int | str, ...]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deformed templates ``(k, 1, S, S, S)`` uint8 and their labels ``(k, 1, S, S, S)``, one per
    ``(seed, salts)`` (each volume drawn from its own generator)."""
    size, c = options.size, options.coarse
    velocities, gammas, biases, noises, strengths = [], [], [], [], []
    for seed, salts in seeds:
        gen = generator(seed, *salts)
        velocities.append(torch.randn(3, c, c, c, generator=gen))
        strengths.append(0.5 + 0.5 * float(torch.rand((), generator=gen)))
        gammas.append(options.gamma * (2 * float(torch.rand((), generator=gen)) - 1))
        biases.append(torch.randn(1, 4, 4, 4, generator=gen))
        noises.append(torch.randn(1, size, size, size, generator=gen))
    v = resize(torch.stack(velocities), (size,) * 3)  # (k, 3, S, S, S)
    largest = v.norm(dim=1).flatten(1).amax(1).clamp_min(1e-12)  # (k,)
    scale = torch.tensor(strengths) * options.max_displacement / largest
    u = integrate(v * scale.view(-1, 1, 1, 1, 1))
    src = torch.cat((template.t1, template.prob), 1)  # (1, 3, S, S, S)
    moved = warp(src.expand(len(seeds), -1, -1, -1, -1), u)  # (k, 3, S, S, S)
    labels = labels_of_probabilities(moved[:, 1:], options.label_threshold)
    bias = F.interpolate(torch.stack(biases), size=(size,) * 3, mode="trilinear")
    bias = bias / bias.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1, 1)
    gamma = torch.tensor(gammas).exp().view(-1, 1, 1, 1, 1)
    t1 = moved[:, :1].clamp(0, 1).pow(gamma) * (options.bias * bias).exp()
    t1 = t1 + options.noise * torch.stack(noises)
    return t1.clamp_(0, 1).mul_(255).round_().to(torch.uint8), labels


def mni152_pairs(
    split: str,
    num: int,
    seed: int,
    options: Mni152Options,
    mode: str = "atlas",
) -> Pairs:
    """``num`` pairs of the ``mni152`` task (see the module docstring): volumes uint8
    ``(num, 1, S, S, S)``, labels 0 background, 1 grey, 2 white matter.

    Volume ``i`` of a split depends only on ``(seed, split, i)`` (pairwise mode's fixed volumes
    on ``(seed, split, "fixed", i)``), whatever ``num`` and ``options.chunk``.

    Example:
        >>> o = Mni152Options(size=16, chunk=2)
        >>> p = mni152_pairs("val", 3, seed=0, options=o)
        >>> tuple(p.moving.shape), p.moving.dtype, tuple(p.fixed.shape), p.num_labels
        ((3, 1, 16, 16, 16), torch.uint8, (1, 1, 16, 16, 16), 3)
        >>> torch.equal(mni152_pairs("val", 1, 0, Mni152Options(size=16)).moving, p.moving[:1])
        True
    """
    check_choice(split, "split", SPLITS)
    check_choice(mode, "mode", MODES)
    template = mni152_template(options.size)

    def volumes(*salt: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for lo in range(0, num, options.chunk):
            ids = range(lo, min(lo + options.chunk, num))
            seeds = [(seed, ("mni152", split, *salt, i)) for i in ids]
            parts.append(_deform(template, options, seeds))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    moving, moving_labels = volumes()
    y = torch.zeros(num, dtype=torch.int64)
    if mode == "atlas":
        fixed = template.t1.mul(255).round().to(torch.uint8)
        fixed_labels = labels_of_probabilities(template.prob, options.label_threshold)
        return Pairs(moving, fixed, y.clone(), moving_labels, fixed_labels, y, 3)
    fixed, fixed_labels = volumes("fixed")
    return Pairs(moving, fixed, torch.arange(num), moving_labels, fixed_labels, y, 3)
