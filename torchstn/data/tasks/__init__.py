"""The task generators, by name: distorted MNIST (R, RTS, P, E), translated and cluttered MNIST
(TC), MNIST addition, co-localisation, and RTS MNIST in volumes (RTS3D).

>>> from torchstn.data import tasks
>>> tasks.names()
('addition', 'cluttered', 'colocalization', 'elastic', 'projective', 'rotated', 'rts', 'rts3d')
>>> tasks.get("cluttered", canvas_size=100).in_shape
(1, 100, 100)
>>> tasks.get("rts3d", canvas_size=16).in_shape
(1, 16, 16, 16)
"""

from __future__ import annotations

import os
from typing import Any

from ..._checks import check_choice
from .addition import Addition
from .base import SPLITS, VALIDATION_SIZE, Task, cycle_indices, source_digits
from .cluttered import Cluttered
from .colocalization import Colocalization
from .elastic import Elastic
from .projective import Projective
from .rotated import Rotated
from .rts import RTS
from .volumes import RTS3D

__all__ = [
    "RTS",
    "RTS3D",
    "SPLITS",
    "VALIDATION_SIZE",
    "Addition",
    "Cluttered",
    "Colocalization",
    "Elastic",
    "Projective",
    "Rotated",
    "Task",
    "cycle_indices",
    "get",
    "names",
    "source_digits",
]

_REGISTRY: dict[str, type[Task]] = {
    cls.name: cls
    for cls in (Rotated, RTS, Projective, Elastic, Cluttered, Addition, Colocalization, RTS3D)
}


def names() -> tuple[str, ...]:
    """The task names, sorted."""
    return tuple(sorted(_REGISTRY))


def get(name: str, *, root: str | os.PathLike[str] | None = None, **options: Any) -> Task:
    """Build a task by name.

    Args:
        name: one of :func:`names`.
        root: the folder holding the MNIST files (see :func:`torchstn.data.load_mnist`).
        **options: the task's options (see each task class); unknown ones raise.

    Raises:
        UnknownNameError: unknown ``name``; the message lists the valid names.
        InvalidInputError: an unknown or invalid option; the message names it.
    """
    return _REGISTRY[check_choice(name, "task", _REGISTRY)](root=root, **options)
