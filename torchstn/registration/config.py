"""The settings of a registration run: the objective's (``objective.options``) and the
generated tasks' (``data.options``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..train.config import dataclass_from_dict

__all__ = [
    "MODES",
    "REGULARISERS",
    "SIMILARITIES",
    "Mni152Options",
    "MnistPairsOptions",
    "RegistrationOptions",
    "registration_options",
]

#: ``objective.options.similarity``: mean squared error, global or local (windowed) normalised
#: cross-correlation.
SIMILARITIES = ("mse", "ncc", "lncc")
#: ``objective.options.regulariser``: the field's squared gradient, or its second derivatives.
REGULARISERS = ("diffusion", "bending")
#: ``objective.options.mode``: one fixed image (an atlas) per class, or random pairs.
MODES = ("atlas", "pairwise")


@dataclass
class RegistrationOptions:
    """What a registration run minimises (``objective.options``).

    The loss of a pair is ``similarity(warped, fixed) + reg_weight * regulariser(field)
    + dice_weight * soft_dice_loss(warped moving labels, fixed labels)`` (the last term only
    where the data have label maps). ``reg_weight`` is VoxelMorph's lambda.

    Example:
        >>> o = registration_options({"similarity": "lncc", "window": 5, "reg_weight": "1e-2"})
        >>> o.similarity, o.window, o.reg_weight, o.mode
        ('lncc', 5, 0.01, 'atlas')
    """

    #: ``atlas``: every moving image is registered to its class's one fixed image (MNIST: the
    #: mean digit of the class; MNI152: the template); ``pairwise``: to another image of its class
    mode: str = "atlas"
    similarity: str = "mse"  #: ``mse``, ``ncc`` (global) or ``lncc`` (local, ``window``)
    window: int = 9  #: ``lncc``: the odd side of the window, in pixels (voxels)
    regulariser: str = "diffusion"  #: ``diffusion`` (gradient L2) or ``bending`` (energy)
    reg_weight: float = 0.01  #: lambda: the regulariser's weight
    #: the soft Dice loss's weight (needs label maps; 0: the labels only score)
    dice_weight: float = 0.0
    #: how the scores warp label maps (:func:`torchstn.fields.warp_labels`): ``linear`` (each
    #: label's one-hot map warped bilinearly, the likeliest label kept: what the Dice loss
    #: sees) or ``nearest`` (VoxelMorph's evaluation; harsh on thin structures such as strokes)
    label_warp: str = "linear"

    def validate(self) -> RegistrationOptions:
        """Check types and ranges; raises :class:`ConfigError` naming the key."""
        where = "objective.options"
        for key, choices in (
            ("mode", MODES),
            ("similarity", SIMILARITIES),
            ("regulariser", REGULARISERS),
            ("label_warp", ("linear", "nearest")),
        ):
            if getattr(self, key) not in choices:
                raise ConfigError(
                    f"{where}.{key}: expected one of {', '.join(choices)}, got "
                    f"{getattr(self, key)!r}"
                )
        w = self.window
        if isinstance(w, bool) or not isinstance(w, int) or w < 1 or w % 2 == 0:
            raise ConfigError(f"{where}.window: expected an odd positive integer, got {w!r}")
        number(f"{where}.reg_weight", self.reg_weight)
        number(f"{where}.dice_weight", self.dice_weight)
        return self


@dataclass
class MnistPairsOptions:
    """``data.options`` of ``data.task: mnist_pairs``: pairs of MNIST digits of one class.

    Example:
        >>> o = dataclass_from_dict(MnistPairsOptions, {"digits": [5]}, "data.options").validate()
        >>> o.size, o.digits, o.atlas
        (32, [5], 'mean')
    """

    size: int = 32  #: the digits (28 x 28) are padded with zeros to ``size x size``
    digits: list[int] | None = None  #: the classes registered (None: all ten)
    #: atlas mode's fixed image of a class: ``mean`` (the mean of the class's training digits)
    #: or ``first`` (its first training digit)
    atlas: str = "mean"

    def validate(self) -> MnistPairsOptions:
        where = "data.options"
        integer(f"{where}.size", self.size, 28, 1024)
        if self.digits is not None and (
            not isinstance(self.digits, list)
            or not self.digits
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in self.digits)
            or not all(0 <= d <= 9 for d in self.digits)
            or len(set(self.digits)) != len(self.digits)
        ):
            raise ConfigError(
                f"{where}.digits: expected null or a list of distinct digits 0..9, got "
                f"{self.digits!r}"
            )
        if self.atlas not in ("mean", "first"):
            raise ConfigError(f"{where}.atlas: expected mean or first, got {self.atlas!r}")
        return self


@dataclass
class Mni152Options:
    """``data.options`` of ``data.task: mni152``: the MNI152 template and its random
    deformations (see :func:`torchstn.registration.tasks.mni152_pairs`).

    Example:
        >>> o = dataclass_from_dict(Mni152Options, {"size": 32}, "data.options").validate()
        >>> o.size, o.max_displacement, o.coarse
        (32, 5.0, 5)
    """

    size: int = 48  #: the cube's side: the head's bounding box padded to a cube, resampled
    #: the random velocity fields' largest vector, in voxels of the ``size`` cube
    max_displacement: float = 5.0
    coarse: int = 5  #: side of the grid the random velocities are drawn on (smoothness)
    gamma: float = 0.3  #: intensities raised to ``exp(g)``, ``g`` uniform in ``[-gamma, gamma]``
    #: a smooth multiplicative bias ``exp(b)``, ``|b| <= bias`` (drawn on a 4^3 grid)
    bias: float = 0.2
    noise: float = 0.02  #: standard deviation of the added Gaussian noise
    #: a voxel is grey (white) matter where that probability is the larger and above this
    label_threshold: float = 0.5
    chunk: int = 8  #: volumes deformed at once (results do not depend on it)

    def validate(self) -> Mni152Options:
        where = "data.options"
        integer(f"{where}.size", self.size, 8, 512)
        integer(f"{where}.coarse", self.coarse, 2, 64)
        integer(f"{where}.chunk", self.chunk, 1, None)
        for key in ("max_displacement", "gamma", "bias", "noise"):
            number(f"{where}.{key}", getattr(self, key))
        number(f"{where}.label_threshold", self.label_threshold)
        if self.label_threshold >= 1:
            raise ConfigError(
                f"{where}.label_threshold: expected a value in [0, 1), got {self.label_threshold!r}"
            )
        return self


def integer(name: str, value: Any, low: int, high: int | None) -> None:
    """Refuse anything but an integer in ``low..high`` (``ConfigError`` naming ``name``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        want = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ConfigError(f"{name}: expected {want}, got {value!r}")


def number(name: str, value: Any) -> None:
    """Refuse anything but a finite number ``>= 0`` (``ConfigError`` naming ``name``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")


def registration_options(values: dict[str, Any] | None) -> RegistrationOptions:
    """Build and validate the options from a mapping (unknown keys raise :class:`ConfigError`)."""
    options = dataclass_from_dict(RegistrationOptions, values or {}, "objective.options")
    return options.validate()
