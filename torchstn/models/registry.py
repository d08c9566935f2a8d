"""Model registry: names to builder functions ``(in_shape, num_classes, **options) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .._checks import check_choice
from ..errors import InvalidInputError

__all__ = ["count_params", "create_model", "model_names", "register_model"]

Builder = Callable[..., nn.Module]
_MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name``."""

    def deco(fn: Builder) -> Builder:
        _MODELS[name] = fn
        return fn

    return deco


def model_names() -> tuple[str, ...]:
    """Registered model names, sorted."""
    return tuple(sorted(_MODELS))


def create_model(
    name: str | Builder, in_shape: Sequence[int], num_classes: int, **options: Any
) -> nn.Module:
    """Build a registered model (or call a builder) for inputs ``(C, H, W)`` and ``num_classes``.

    Raises:
        UnknownNameError: unknown name (the message lists the valid ones).
        InvalidInputError: an option the builder does not take.
    """
    builder = name if callable(name) else _MODELS[check_choice(name, "model", _MODELS)]
    try:
        return builder(tuple(int(v) for v in in_shape), int(num_classes), **options)
    except TypeError as err:
        raise InvalidInputError(f"model {name!r}: {err}") from None


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
