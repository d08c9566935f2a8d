"""Transform families (the grid generators): a registry of names to classes.

>>> from torchstn import transforms
>>> transforms.names(ndim=2)
('affine', 'attention', 'projective', 'rotation', 'similarity', 'tps', 'translation')
>>> transforms.names(ndim=3)
('affine3d', 'attention3d', 'projective3d', 'rigid3d', 'similarity3d', 'tps3d', 'translation3d')
>>> transforms.get("affine").num_params
6
>>> transforms.get("tps", grid_size=3).num_params
18
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError, UnknownNameError
from .affine import Affine
from .attention import Attention
from .base import MatrixTransform, Transform, safe_denominator
from .dense import DenseTransform, Displacement, Displacement3D, Velocity, Velocity3D
from .projective import Projective
from .rotation import Rotation
from .similarity import Similarity
from .tps import TPS, TPS3D
from .translation import Translation
from .volumetric import Affine3D, Attention3D, Projective3D, Rigid3D, Similarity3D, Translation3D

__all__ = [
    "TPS",
    "TPS3D",
    "Affine",
    "Affine3D",
    "Attention",
    "Attention3D",
    "DenseTransform",
    "Displacement",
    "Displacement3D",
    "MatrixTransform",
    "Projective",
    "Projective3D",
    "Rigid3D",
    "Rotation",
    "Similarity",
    "Similarity3D",
    "Transform",
    "Translation",
    "Translation3D",
    "Velocity",
    "Velocity3D",
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


for _cls in (
    Affine,
    Attention,
    Similarity,
    Rotation,
    Translation,
    Projective,
    TPS,
    Affine3D,
    Attention3D,
    Similarity3D,
    Rigid3D,
    Translation3D,
    Projective3D,
    TPS3D,
    Displacement,
    Velocity,
    Displacement3D,
    Velocity3D,
):
    register(_cls)


def names(ndim: int | None = None, *, dense: bool | None = False) -> tuple[str, ...]:
    """The registered transform names, sorted; only the 2-D (image) or 3-D (volume) families
    with ``ndim=2`` or ``ndim=3``.

    The dense families (``displacement``, ``velocity`` and their 3-D forms), whose params are a
    field rather than a vector, are listed only with ``dense=True`` (only them) or
    ``dense=None`` (every family).

    Example:
        >>> names(ndim=3, dense=True)
        ('displacement3d', 'velocity3d')
    """
    return tuple(
        sorted(
            n
            for n, c in _REGISTRY.items()
            if (ndim is None or c.ndim == ndim)
            and (dense is None or bool(getattr(c, "dense", False)) == dense)
        )
    )


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
    elif isinstance(name, str) and name in _REGISTRY:
        cls = _REGISTRY[name]
    else:
        raise UnknownNameError(
            f"unknown transform {name!r}; valid choices: {', '.join(names(ndim=2))}; for "
            f"volumes: {', '.join(names(ndim=3))}; dense fields: "
            f"{', '.join(names(dense=True))}"
        )
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise InvalidInputError(f"transform {cls.name!r}: {err}") from None
