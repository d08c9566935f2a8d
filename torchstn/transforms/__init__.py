"""Transform families (the grid generators): a registry of names to classes.

>>> from torchstn import transforms
>>> transforms.names()
('affine', 'attention', 'projective', 'rotation', 'similarity', 'tps', 'translation')
>>> transforms.get("affine").num_params
6
>>> transforms.get("tps", grid_size=3).num_params
18
"""

from __future__ import annotations

from typing import Any

from .._checks import check_choice
from ..errors import InvalidInputError
from .affine import Affine
from .attention import Attention
from .base import MatrixTransform, Transform, safe_denominator
from .projective import Projective
from .rotation import Rotation
from .similarity import Similarity
from .tps import TPS
from .translation import Translation

__all__ = [
    "TPS",
    "Affine",
    "Attention",
    "MatrixTransform",
    "Projective",
    "Rotation",
    "Similarity",
    "Transform",
    "Translation",
    "get",
    "names",
    "register",
    "safe_denominator",
]

_REGISTRY: dict[str, type[Transform]] = {}


def register(cls: type[Transform]) -> type[Transform]:
    """Register a :class:`Transform` subclass under its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise InvalidInputError(f"register: expected a Transform subclass, got {cls!r}")
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (Affine, Attention, Similarity, Rotation, Translation, Projective, TPS):
    register(_cls)


def names() -> tuple[str, ...]:
    """The registered transform names, sorted."""
    return tuple(sorted(_REGISTRY))


def get(name: str | Transform | type[Transform], **kwargs: Any) -> Transform:
    """Build a transform from a name (keyword options go to its constructor), a class, or return
    an instance unchanged.

    Raises:
        UnknownNameError: the name is not registered; the message lists the valid names.
        InvalidInputError: an option is invalid for that family.
    """
    if isinstance(name, Transform):
        if kwargs:
            raise InvalidInputError("get: options cannot be given with a Transform instance")
        return name
    if isinstance(name, type) and issubclass(name, Transform):
        cls = name
    else:
        cls = _REGISTRY[check_choice(name, "transform", _REGISTRY)]
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise InvalidInputError(f"transform {cls.name!r}: {err}") from None
