"""The images of one digit class for a co-localisation run."""

from __future__ import annotations

import functools

from .._checks import check_choice
from ..data import Sample, get_task
from ..data.tasks.base import SPLITS
from ..errors import InvalidInputError

__all__ = ["class_images"]


@functools.lru_cache(maxsize=2)
def _generate(clutter: bool, split: str, num: int, seed: int) -> Sample:
    return get_task("colocalization", clutter=clutter).generate(split, num=num, seed=seed)


def class_images(
    digit: int, num_images: int = 100, *, clutter: bool = False, split: str = "test", seed: int = 0
) -> Sample:
    """The first ``num_images`` images of class ``digit`` in a seeded "colocalization" sample.

    The task draws digits of every class; this generates ``15 * num_images`` samples (about 1.5
    times what a class needs), more if that is not enough, and keeps the class's first ones. The
    last two generated samples are cached, so the ten classes of one ``(clutter, split, seed)``
    share one generation.

    Args:
        digit: the class, 0 to 9.
        num_images: how many images.
        clutter: the cluttered variant (TC) instead of the plain one (T).
        split: MNIST split of the digits.
        seed: seed of the generator.

    Returns:
        A :class:`Sample`: ``x`` ``(num_images, 1, 84, 84)``, ``y`` all ``digit``, ``boxes``
        ``(num_images, 4)`` (the digit's 28 x 28 frame, pixel edges).

    Example:
        >>> s = class_images(7, 3, seed=0)
        >>> tuple(s.x.shape), s.y.tolist()
        ((3, 1, 84, 84), [7, 7, 7])
    """
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
        raise InvalidInputError(f"digit: expected an int in 0..9, got {digit!r}")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise InvalidInputError(f"num_images: expected a positive int, got {num_images!r}")
    check_choice(split, "split", SPLITS)
    num = 15 * num_images
    while True:
        sample = _generate(bool(clutter), split, num, int(seed))
        index = (sample.y == digit).nonzero()[:, 0]
        if index.numel() >= num_images:
            return sample[index[:num_images]]
        num *= 2
        if num > 1_000_000:  # pragma: no cover - only with a broken source
            raise InvalidInputError(f"digit: fewer than {num_images} images of class {digit}")
