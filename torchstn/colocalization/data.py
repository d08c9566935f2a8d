"""The data of a co-localisation run: the images of one class, their boxes, the batch order."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

from .._checks import check_choice
from ..data import Sample, get_task
from ..data.loader import TensorSplit
from ..data.seeding import generator
from ..data.tasks.base import SPLITS
from ..errors import ConfigError, InvalidInputError, TorchSTNError
from ..preprocess import Preprocess

if TYPE_CHECKING:
    from ..train.config import Config
    from .config import ColocalizationOptions

__all__ = ["BoxSplit", "ColocalizationData", "DistinctBatches", "class_images"]


@functools.lru_cache(maxsize=4)
def _generate(options: tuple[tuple[str, Any], ...], split: str, num: int, seed: int) -> Sample:
    return get_task("colocalization", **dict(options)).generate(split, num=num, seed=seed)


def class_images(
    digit: int,
    num_images: int = 100,
    *,
    split: str = "test",
    seed: int = 0,
    **task_options: Any,
) -> Sample:
    """The first ``num_images`` images of class ``digit`` in a seeded "colocalization" sample.

    The task draws digits of every class; this generates ``15 * num_images`` samples (about 1.5
    times what a class needs), more if that is not enough, and keeps the class's first ones. The
    last four generated samples are cached, so the ten classes of one ``(options, split, seed)``
    share one generation.

    Args:
        digit: the class, 0 to 9.
        num_images: how many images.
        split: MNIST split of the digits (``train``, ``val`` or ``test``; see
            :func:`torchstn.data.tasks.base.source_digits`).
        seed: seed of the generator.
        **task_options: options of the ``colocalization`` task (``clutter``, ...).

    Returns:
        A :class:`Sample`: ``x`` ``(num_images, 1, 84, 84)``, ``y`` all ``digit``, ``boxes``
        ``(num_images, 4)`` (the digit's 28 x 28 frame, pixel edges).

    Example:
        >>> s = class_images(7, 3, seed=0, clutter=True)
        >>> tuple(s.x.shape), s.y.tolist()
        ((3, 1, 84, 84), [7, 7, 7])
    """
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise InvalidInputError(f"digit: expected an int in 0..9, got {digit!r}")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise InvalidInputError(f"num_images: expected a positive int, got {num_images!r}")
    check_choice(split, "split", SPLITS)
    options = tuple(sorted(task_options.items()))
    num = 15 * num_images
    while True:
        sample = _generate(options, split, num, int(seed))
        index = (sample.y == digit).nonzero()[:, 0]
        if index.numel() >= num_images:
            return sample[index[:num_images]]
        num *= 2
        if num > 1_000_000:  # pragma: no cover - only with a broken source
            raise InvalidInputError(f"digit: fewer than {num_images} images of class {digit}")


class BoxSplit(TensorSplit):
    """A split in memory with a ground-truth box per image.

    Args:
        x: ``(N, C, H, W)`` float32 images in ``[0, 1]``.
        y: ``(N,)`` labels.
        boxes: ``(N, 4)`` boxes ``(x0, y0, x1, y1)``, pixel edges.
        where: where the split came from, for messages.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor, where: str = ""):
        super().__init__(x, y, where)
        self.boxes = boxes

    @classmethod
    def of(cls, sample: Sample, where: str) -> BoxSplit:
        if sample.boxes is None:  # pragma: no cover - the colocalization task gives boxes
            raise TorchSTNError(f"{where}: the sample has no boxes")
        return cls(sample.x, sample.y, sample.boxes.float(), where)


class DistinctBatches:
    """The batch order of a co-localisation epoch: every global batch is ``batch_size`` distinct
    images, drawn afresh (a seeded permutation of the ``n`` images, cut to the batch) for each of
    its ``num_batches`` steps; process ``rank`` reads the slice ``rank`` of each batch.

    Batch ``k`` of epoch ``e`` depends only on ``(seed, e, k)``, so a run resumed at step ``k``
    reads what an uninterrupted one reads, on any number of processes.

    Example:
        >>> order = DistinctBatches(10, 4, num_batches=3, seed=0, epoch=0)
        >>> [len(set(b)) for b in order]
        [4, 4, 4]
        >>> halves = [list(DistinctBatches(10, 4, 3, 0, 0, rank=r, world_size=2)) for r in (0, 1)]
        >>> [a + b for a, b in zip(*halves)] == list(order)
        True
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        num_batches: int,
        seed: int,
        epoch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        start: int = 0,
    ) -> None:
        if not 0 < batch_size <= n or batch_size % world_size:
            raise TorchSTNError(
                f"a batch of {batch_size} distinct images out of {n} cannot be shared by "
                f"{world_size} processes"
            )
        self.n, self.batch_size, self.num_batches = n, batch_size, num_batches
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start = start

    def __len__(self) -> int:
        return max(self.num_batches - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch_size // self.world_size
        lo = self.rank * share
        for k in range(self.start, self.num_batches):
            gen = generator(self.seed, "colocalization-batch", self.epoch, k)
            batch = torch.randperm(self.n, generator=gen)[: self.batch_size]
            yield batch[lo : lo + share].tolist()


class ColocalizationData:
    """Train, validation and test data of a co-localisation run (the interface of
    :class:`~torchstn.train.DataModule` the trainer, ``eval`` and ``visualize`` use).

    ``train(epoch)`` and ``eval_split("test")`` are the images co-localised (the same every
    epoch: the batch order draws from them, see :class:`DistinctBatches`); ``eval_split("val")``
    the validation images of the class. ``num_classes`` is the model's number of outputs, the
    embedding dimension.

    Args:
        cfg: the run's config (``data.task: colocalization``).
        options: its ``objective.options``.
    """

    test_is_val = False
    class_names: list[str] | None = None
    skipped_at_load = 0

    def __init__(self, cfg: Config, options: ColocalizationOptions) -> None:
        task_options = dict(cfg.data.options)
        seed = cfg.data.eval_seed
        try:
            images = class_images(
                options.digit, options.num_images, split=options.images, seed=seed, **task_options
            )
            val = class_images(
                options.digit,
                options.val_images,
                split=options.val_split,
                seed=seed,
                **task_options,
            )
        except InvalidInputError as err:
            raise ConfigError(f"data.options: {err}") from None
        self.name = f"colocalization digit {options.digit}"
        self.in_shape = tuple(int(v) for v in images.x.shape[1:])
        self.num_classes = int(options.embedding_dim)
        self._images = BoxSplit.of(images, f"{options.images} images of digit {options.digit}")
        self._val = BoxSplit.of(val, f"{options.val_split} images of digit {options.digit}")
        c, h, w = self.in_shape
        self.preprocess = Preprocess((h, w), c)

    def train(self, epoch: int) -> BoxSplit:
        """The images co-localised (every epoch)."""
        return self._images

    def eval_split(self, split: str) -> BoxSplit:
        """``val``: the validation images; ``test`` and ``train``: the images co-localised."""
        if split == "val":
            return self._val
        if split in ("test", "train"):
            return self._images
        raise ConfigError(f"split: expected train, val or test, got {split!r}")

    def info(self) -> dict[str, Any]:
        """What a checkpoint records about the data (``data_info``)."""
        return {
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "class_names": None,
            "name": self.name,
            "preprocess": self.preprocess.to_dict(),
        }
