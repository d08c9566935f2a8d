"""The task base class: options, source digits, seeding and batched, chunked generation.

Generation is two-phase. ``draw`` makes every random choice for all ``num`` samples at once (a few
numbers per sample: source digits, angles, positions...), from one generator seeded by
``(seed, task name, split)``; ``render`` then turns a chunk of those choices into images (or
volumes) with tensor ops only (one grid, one sampler call per chunk). Results do not depend on the
chunk size.
"""

from __future__ import annotations

import math
import os
from typing import Any, ClassVar

import torch

from ..._checks import check_choice
from ...errors import InvalidInputError
from ..mnist import _load_cached
from ..sample import Sample
from ..seeding import generator

__all__ = ["SPLITS", "VALIDATION_SIZE", "Task", "cycle_indices", "source_digits", "uniform"]

#: the splits a task generates from.
SPLITS = ("train", "val", "test")

#: the last ``VALIDATION_SIZE`` images of the MNIST training file are held out for ``"val"``.
VALIDATION_SIZE = 10_000

#: output pixels (voxels) rendered per chunk: bounds the memory of grids and intermediate canvases
#: and keeps them small enough to be reused from the allocator and the caches (measured fastest).
CHUNK_PIXELS = 1 << 21


def source_digits(
    split: str, root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The source digits of a split: ``train`` is the first 50,000 MNIST training images, ``val``
    the last 10,000 (:data:`VALIDATION_SIZE`), ``test`` the 10,000 MNIST test images.

    Returns:
        ``images`` uint8 ``(M, 28, 28)``, ``labels`` int64 ``(M,)`` (shared, read-only views) and
        the offset of the first one in its MNIST file.
    """
    check_choice(split, "split", SPLITS)
    images, labels = _load_cached("test" if split == "test" else "train", root)
    if split == "test":
        return images, labels, 0
    cut = images.shape[0] - VALIDATION_SIZE
    if split == "train":
        return images[:cut], labels[:cut], 0
    return images[cut:], labels[cut:], cut


def cycle_indices(pool: int, num: int, gen: torch.Generator) -> torch.Tensor:
    """``num`` indices into ``range(pool)``: a seeded permutation, then another, and so on.

    Every source digit is used once before any is used twice, so a fixed split of ``num <= pool``
    samples holds ``num`` distinct digits.

    Example:
        >>> idx = cycle_indices(4, 6, torch.Generator().manual_seed(0))
        >>> sorted(idx[:4].tolist()), idx.shape
        ([0, 1, 2, 3], torch.Size([6]))
    """
    rounds = math.ceil(num / pool)
    return torch.cat([torch.randperm(pool, generator=gen) for _ in range(rounds)])[:num]


def uniform(bounds: list[float], num: int, gen: torch.Generator) -> torch.Tensor:
    """``num`` float32 draws from the uniform distribution on ``[lo, hi]``."""
    lo, hi = bounds
    return (lo + (hi - lo) * torch.rand(num, generator=gen, dtype=torch.float64)).float()


class Task:
    """A data set generator: ``generate(split, num, seed)`` gives a :class:`Sample`.

    Subclasses set ``name``, ``defaults`` (option -> default value), ``num_classes``, and implement
    ``_resolve`` (validate options), ``in_shape``, ``_draw`` and ``_render``.

    Args:
        root: the folder holding the MNIST files (see :func:`torchstn.data.load_mnist`).
        **options: overrides of ``defaults``; unknown names raise :class:`InvalidInputError`.
    """

    name: ClassVar[str] = "task"
    #: version of the generator: bumped whenever the same options and seed give other images.
    version: ClassVar[int] = 1
    num_classes: ClassVar[int] = 10
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, root: str | os.PathLike[str] | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise InvalidInputError(
                f"task {self.name!r}: unknown option {unknown[0]!r}; valid options: {valid}"
            )
        self.root = root
        self.options: dict[str, Any] = self._resolve({**self.defaults, **options})

    # ------------------------------------------------------------------ for subclasses
    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validate and normalise the options (JSON-serialisable values)."""
        raise NotImplementedError

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The ``(C, H, W)`` shape of one image, ``(C, D, H, W)`` of one volume."""
        raise NotImplementedError

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """All random choices for ``num`` samples from a pool with ``labels``: returns ``y`` and
        the per-sample draws (keys starting with ``_`` are internal, the others become
        ``Sample.params``); ``source_index`` holds indices into the pool."""
        raise NotImplementedError

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Images ``(B, C, H, W)``, boxes ``(B, 4)`` and extra ground truth for a chunk of draws,
        using the pool ``images`` uint8 ``(M, 28, 28)``; volumes ``(B, C, D, H, W)`` with boxes
        ``(B, 6)`` for a task whose ``in_shape`` has four entries."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    def generate(
        self,
        split: str = "train",
        num: int = 1000,
        seed: int = 0,
        *,
        chunk_size: int | None = None,
    ) -> Sample:
        """Generate ``num`` samples of a split, deterministically from ``seed``.

        The same ``(split, num, seed)`` and options always give identical tensors; for fresh
        training data every epoch pass ``seed=epoch_seed(seed, epoch)``. Source digits cycle
        through seeded permutations of the split's pool (see :func:`cycle_indices`), so ``num``
        may exceed the pool size.

        Args:
            split: ``"train"``, ``"val"`` (held-out training digits) or ``"test"``.
            num: number of samples, at least 1.
            seed: any int.
            chunk_size: samples rendered at once (speed and memory only; the result does not
                depend on it); default: about :data:`CHUNK_PIXELS` output pixels per chunk.

        Returns:
            A :class:`Sample` with ``x`` ``(num, *in_shape)`` float32 in ``[0, 1]``, ``y``
            ``(num,)`` int64, ``boxes`` ``(num, 4)`` (``(num, 6)`` for volumes) and ``params``
            (``source_index`` gives each digit's index in its MNIST file).
        """
        check_choice(split, "split", SPLITS)
        if chunk_size is None:
            chunk_size = max(16, CHUNK_PIXELS // math.prod(self.in_shape))
        for value, label in ((num, "num"), (chunk_size, "chunk_size")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{label}: expected a positive int, got {value!r}")
        images, labels, offset = source_digits(split, self.root)
        y, draws = self._draw(labels, num, generator(seed, self.name, split))
        x = torch.empty(num, *self.in_shape)
        boxes = torch.empty(num, 2 * (len(self.in_shape) - 1))  # (x0, y0, [z0,] x1, y1, [z1])
        extras: dict[str, list[torch.Tensor]] = {}
        for start in range(0, num, chunk_size):
            part = {k: v[start : start + chunk_size] for k, v in draws.items()}
            xc, bc, extra = self._render(images, part)
            x[start : start + chunk_size] = xc.clamp_(0.0, 1.0)
            boxes[start : start + chunk_size] = bc
            for k, v in extra.items():
                extras.setdefault(k, []).append(v)
        params = {k: v for k, v in draws.items() if not k.startswith("_")}
        params["source_index"] = params["source_index"] + offset
        params.update({k: torch.cat(v) for k, v in extras.items()})
        return Sample(x, y, boxes, params)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"
