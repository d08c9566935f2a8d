"""Seeds: one integer per run, derived streams for splits and epochs (SplitMix64 mixing).

Every generator in :mod:`torchstn.data` draws from a :class:`torch.Generator` seeded from the
user's seed and a stream name, so that the train, validation and test streams of one seed are
independent, and ``epoch_seed(seed, epoch)`` gives a fresh, reproducible seed for every epoch.
"""

from __future__ import annotations

import zlib

import torch

from ..errors import InvalidInputError

__all__ = ["epoch_seed", "generator", "mix"]

_MASK64 = (1 << 64) - 1
_MASK63 = (1 << 63) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _check_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name}: expected an int, got {value!r}")
    return value


def mix(seed: int, *salts: int | str) -> int:
    """Combine a seed with salts (ints or strings) into a well-spread seed in ``[0, 2**63)``.

    Example:
        >>> mix(0, "train") == mix(0, "train") != mix(0, "test")
        True
    """
    state = _splitmix64(_check_int(seed, "seed") & _MASK64)
    for salt in salts:
        value = zlib.crc32(salt.encode()) if isinstance(salt, str) else _check_int(salt, "salt")
        state = _splitmix64(state ^ (value & _MASK64))
    return state & _MASK63


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch`` of a run seeded with ``seed``: ``task.generate("train", num,
    seed=epoch_seed(seed, epoch))`` gives fresh, reproducible distortions every epoch.

    Example:
        >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
        True
    """
    return mix(seed, "epoch", _check_int(epoch, "epoch"))


def generator(seed: int, *salts: int | str) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``mix(seed, *salts)``."""
    return torch.Generator().manual_seed(mix(seed, *salts))
