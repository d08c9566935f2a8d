"""Feeding a training run: the epoch's batch order (sharded over processes) and the splits that
turn index batches into images, from memory or streamed from disk.

The order of an epoch is a function of ``(seed, epoch)`` alone (:class:`EpochBatches`): global
batches of a seeded permutation, each process taking an equal contiguous slice of every batch, so
the processes of a ``torchrun`` job read disjoint shards that together cover the epoch, and a
run resumed at step ``k`` reads exactly the batches an uninterrupted run reads after step ``k``.

A split yields :class:`Batch` es for any list of index batches:

* :class:`TensorSplit` holds its images in memory (generated tasks as float32, users' data as
  uint8, 4x smaller);
* :class:`FileSplit` decodes image files on the fly in ``torch.utils.data.DataLoader`` worker
  processes, images staying uint8 until the batch is on its device; memory is bounded by the
  workers' prefetch (2 batches each), not by the data set: what grows with the data set is the
  list of files (about 1.3 KiB per file, main process and workers together; see BENCHMARKS.md).
  :meth:`FileSplit.cache` decodes it all once into a :class:`TensorSplit` when it fits in
  memory.

Example:
    >>> order = EpochBatches(10, batch_size=4, seed=0, epoch=0)
    >>> [len(b) for b in order]  # the incomplete last batch is dropped
    [4, 4]
    >>> ranks = [list(EpochBatches(10, 4, 0, 0, rank=r, world_size=2)) for r in (0, 1)]
    >>> sorted(sum(ranks[0] + ranks[1], [])) == sorted(sum(list(order), []))
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import DataError, TorchSTNError
from .files import collate_images
from .seeding import epoch_seed

__all__ = ["Batch", "EpochBatches", "FileSplit", "TensorSplit"]


@dataclass
class Batch:
    """Images and labels of one batch.

    Attributes:
        x: ``(B, C, H, W)`` uint8 (0..255) or float32 in ``[0, 1]``.
        y: ``(B,)`` int64.
        bad: one-line messages of images of this batch that could not be read (left out of ``x``).
    """

    x: torch.Tensor
    y: torch.Tensor
    bad: list[str] = field(default_factory=list)

    def inputs(self, device: torch.device) -> torch.Tensor:
        """``x`` on ``device`` as float32 in ``[0, 1]`` (uint8 travels as uint8, then scales)."""
        x = self.x.to(device, non_blocking=True)
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class EpochBatches(Sampler[list[int]]):
    """The index batches of one epoch that process ``rank`` of ``world_size`` reads.

    Global batches of ``batch_size`` follow a permutation seeded by ``epoch_seed(seed, epoch)``;
    the last incomplete one is dropped; each rank takes the equal slice ``rank`` of every batch. A
    data set smaller than one batch gives one batch of all samples (rounded down to a multiple of
    ``world_size``). Iteration starts at global batch ``start`` (to resume inside an epoch).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        if n < batch_size:
            batch_size = n - n % world_size
            if batch_size == 0:
                raise TorchSTNError(
                    f"{n} training samples cannot be shared by {world_size} processes"
                )
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.seed, self.epoch, self.start = seed, epoch, start
        self.num_batches = n // batch_size

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) + 1)
        order = torch.randperm(self.n, generator=gen)
        bs, share = self.batch_size, self.batch_size // self.world_size
        for i in range(self.start * bs, self.num_batches * bs, bs):
            yield order[i + self.rank * share : i + (self.rank + 1) * share].tolist()


def shard_batches(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """In-order batches of this rank's contiguous shard of ``range(n)`` (for evaluation)."""
    lo, hi = n * rank // world_size, n * (rank + 1) // world_size
    return [list(range(i, min(i + batch_size, hi))) for i in range(lo, hi, batch_size)]


class TensorSplit:
    """A split held in memory.

    Args:
        x: ``(N, C, H, W)`` float32 in ``[0, 1]`` or uint8.
        y: ``(N,)`` int64.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, where: str = "") -> None:
        self.x, self.y = x, y
        self.where = where  #: where the split came from, for messages

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def batches(self, index_batches: Iterable[Sequence[int]]) -> Iterator[Batch]:
        for idx in index_batches:
            i = torch.as_tensor(idx, dtype=torch.int64)
            yield Batch(self.x[i], self.y[i])

    def head(self, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``num`` images (float32 in ``[0, 1]``) and labels."""
        x = self.x[:num]
        return (x.float() / 255.0 if x.dtype == torch.uint8 else x), self.y[:num]


class FileSplit:
    """A split of image files decoded on the fly (see the module docstring).

    Args:
        dataset: a :class:`torchstn.data.files.ImageFiles`.
        num_workers: decoding processes (0: in this process).
        pin_memory: page-lock batches for faster copies to CUDA.
        where: where the split came from, for messages.
    """

    def __init__(
        self, dataset: Any, num_workers: int = 0, pin_memory: bool = False, where: str = ""
    ) -> None:
        self.dataset = dataset
        self.where = where
        self.y = torch.tensor([e.label for e in dataset.entries], dtype=torch.int64)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, index_batches: Iterable[Sequence[int]]) -> Iterator[Batch]:
        batch_list = [list(b) for b in index_batches]
        if not batch_list:
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=batch_list,
            num_workers=self.num_workers,
            collate_fn=collate_images,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if self.num_workers else None,
        )
        for b in loader:
            yield Batch(b.x, b.y, list(b.bad))

    def head(self, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``num`` readable images (float32 in ``[0, 1]``) and labels."""
        xs, ys = [], []
        for b in self.batches([list(range(min(num, len(self))))]):
            xs.append(b.inputs(torch.device("cpu")))
            ys.append(b.y)
        return torch.cat(xs), torch.cat(ys)

    def nbytes(self) -> int:
        """Bytes of the decoded split as uint8."""
        c, (h, w) = self.dataset.channels, self.dataset.size
        return len(self) * c * h * w

    def cache(self, skip_bad: bool, batch_size: int = 256) -> tuple[TensorSplit, int]:
        """Decode every image once: the split in memory (uint8) and the number skipped.

        Raises:
            DataError: an unreadable image, unless ``skip_bad``.
        """
        c, (h, w) = self.dataset.channels, self.dataset.size
        # filled in place: the peak is the split itself, not the batches plus their concatenation
        x = torch.empty(len(self), c, h, w, dtype=torch.uint8)
        y = torch.empty(len(self), dtype=torch.int64)
        n, skipped = 0, 0
        for b in self.batches(shard_batches(len(self), batch_size)):
            if b.bad and not skip_bad:
                raise DataError(f"{b.bad[0]} (set data.skip_bad: true to skip such images)")
            skipped += len(b.bad)
            k = int(b.y.shape[0])
            x[n : n + k], y[n : n + k] = b.x, b.y
            n += k
        if n == 0:
            raise DataError(f"{self.where}: no readable image")
        return TensorSplit(x[:n], y[:n], self.where), skipped
