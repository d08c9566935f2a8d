"""Preprocessing that travels with a model: input size and fit, channels, and normalisation.

A run records how its images were prepared (:class:`Preprocess`, saved in the checkpoint as
``data_info["preprocess"]``) so that ``torchstn.load``, ``eval``, ``predict`` and ``export`` feed a
deployed model what training fed it:

* ``size``, ``fit`` and ``channels`` say how an image file becomes a ``(C, H, W)`` input in
  ``[0, 1]`` (see :mod:`torchstn.images`); ``predict`` reads files that way by default. A model
  of volumes records its ``(D, H, W)`` as ``size`` (``fit`` does not apply: volumes are read in
  their shape).
* ``mean`` and ``std`` (per channel) normalise that input: ``(x - mean) / std``. The
  normalisation is part of the loaded model (:class:`Preprocessed`), so every consumer passes
  ``[0, 1]`` images (or volumes) and an export contains it.

Convention:
    Normalisation comes first, so the spatial transformers inside the model sample *normalised*
    images. Their ``zeros`` padding then reads 0 in normalised units, which is the training mean
    (for dark-background data such as MNIST a grey frame, brighter than the background), not
    black. Pixels the transformer pulls from outside the image therefore look like an average
    pixel rather than like background. Where that matters, leave ``data.normalize`` off (the
    default; the models train well on ``[0, 1]`` inputs), or use a transformer with
    ``padding_mode="border"``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> pre = Preprocess(size=(4, 4), channels=1, mean=(0.5,), std=(0.25,))
    >>> model = with_preprocess(nn.Identity(), pre)
    >>> model(torch.full((1, 1, 4, 4), 0.75))[0, 0, 0, 0].item()
    1.0
    >>> Preprocess.from_dict(pre.to_dict()) == pre
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["Normalize", "Preprocess", "Preprocessed", "input_normalizer", "with_preprocess"]


@dataclass(frozen=True)
class Preprocess:
    """How a run's images were prepared.

    Attributes:
        size: ``(H, W)`` of the model's input; ``(D, H, W)`` for volumes.
        channels: ``C`` of the model's input (1: grey, 3: RGB, other: arrays only).
        fit: how image files of another size are fitted: ``"pad"`` or ``"stretch"``.
        mean: per-channel mean subtracted from ``[0, 1]`` inputs, or ``None`` (no normalisation).
        std: per-channel standard deviation the inputs are divided by (with ``mean``).
    """

    size: tuple[int, ...]
    channels: int
    fit: str = "pad"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.size) not in (2, 3):
            raise ConfigError(f"size: expected (H, W) or (D, H, W), got {tuple(self.size)}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("normalisation: give both mean and std, or neither")
        if self.mean is not None and self.std is not None:
            for name, values in (("mean", self.mean), ("std", self.std)):
                if len(values) not in (1, self.channels):
                    raise ConfigError(
                        f"data.{name}: expected 1 or {self.channels} values (one per channel), "
                        f"got {len(values)}"
                    )
            if any(not s > 0 for s in self.std):
                raise ConfigError(f"data.std: expected positive values, got {list(self.std)}")

    @property
    def normalized(self) -> bool:
        return self.mean is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "fit": self.fit,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocess:
        mean, std = values.get("mean"), values.get("std")
        return cls(
            size=tuple(int(v) for v in values["size"]),
            channels=int(values["channels"]),
            fit=str(values.get("fit", "pad")),
            mean=None if mean is None else tuple(float(v) for v in mean),
            std=None if std is None else tuple(float(v) for v in std),
        )


def _column(values: Sequence[float], channels: int) -> torch.Tensor:
    t = torch.tensor([float(v) for v in values], dtype=torch.float32)
    return t.expand(channels).clone().view(1, channels, 1, 1)


class Normalize(nn.Module):
    """``(B, C, H, W) -> (x - mean) / std`` per channel, volumes ``(B, C, D, H, W)`` alike (the
    statistics are non-persistent buffers: the checkpoint's ``data_info`` holds them, not the
    state dict)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", _column(mean, channels), persistent=False)
        self.register_buffer("std", _column(std, channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(x.dtype), self.std.to(x.dtype)
        if x.dim() == 5:  # volumes: one more trailing axis to broadcast over
            mean, std = mean[..., None], std[..., None]
        return (x - mean) / std

    def extra_repr(self) -> str:
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"


class Preprocessed(nn.Module):
    """A model that takes ``[0, 1]`` images and normalises them before its network.

    Attributes:
        normalize: the :class:`Normalize` step.
        model: the network (its state dict is the checkpoint's).
    """

    def __init__(self, model: nn.Module, normalize: Normalize) -> None:
        super().__init__()
        self.normalize = normalize
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(self.normalize(x))


def with_preprocess(model: nn.Module, preprocess: Preprocess | None) -> nn.Module:
    """``model`` behind the normalisation of ``preprocess`` (``model`` itself when there is none)."""
    if preprocess is None or preprocess.mean is None or preprocess.std is None:
        return model
    norm = Normalize(preprocess.mean, preprocess.std, preprocess.channels)
    return Preprocessed(model, norm.to(next(model.parameters(), torch.empty(0)).device))


def input_normalizer(model: nn.Module) -> nn.Module:
    """What ``model`` does to a ``[0, 1]`` input before its network: its :class:`Normalize` for a
    :class:`Preprocessed` model, else nothing (for code that runs a part of the network, such as
    its first transformer, on raw images)."""
    if isinstance(model, Preprocessed):
        return model.normalize
    return nn.Identity()
