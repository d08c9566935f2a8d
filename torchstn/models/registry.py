"""Model registry: names to builder functions ``(in_shape, num_classes, **options) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..errors import InvalidInputError, UnknownNameError

__all__ = ["count_params", "create_model", "model_names", "register_model"]

Builder = Callable[..., nn.Module]
_MODELS: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder ``(in_shape, num_classes, **options) -> nn.Module`` under
    ``name``, for ``model.name`` in configs and ``torchstn train --model``.

    A model of your own trains through the command line once the module that registers it is
    imported: ``torchstn train --import my_models.py --model tiny_stn ...`` (and the same
    ``--import`` for ``eval``, ``predict``, ``export`` and ``visualize`` of its runs). A name
    already taken by another builder is refused, so a plug-in cannot replace a built-in model.

    Example:
        >>> import torch
        >>> @register_model("doc_linear")
        ... def doc_linear(in_shape, num_classes, hidden=8):
        ...     c, h, w = in_shape
        ...     return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, num_classes))
        >>> create_model("doc_linear", (1, 4, 4), 3)(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3])
        >>> _ = _MODELS.pop("doc_linear")  # (keeps the registry of the test session as it was)
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise InvalidInputError(
            f"register_model: expected a name of letters, digits and '_', got {name!r}"
        )

    def deco(fn: Builder) -> Builder:
        old = _MODELS.get(name)
        if old is not None and _qualname(old) != _qualname(fn):
            raise InvalidInputError(
                f"register_model: {name!r} is already registered by {_qualname(old)}; "
                "choose another name"
            )
        _MODELS[name] = fn
        return fn

    return deco


def _qualname(fn: Builder) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


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
    if not callable(name) and name not in _MODELS:
        raise UnknownNameError(
            f"model: unknown name {name!r}; expected one of {', '.join(model_names())} (a model "
            "of your own: register it with torchstn.models.register_model and pass --import "
            "MODULE)"
        )
    builder = name if callable(name) else _MODELS[name]
    try:
        return builder(tuple(int(v) for v in in_shape), int(num_classes), **options)
    except TypeError as err:
        raise InvalidInputError(f"model {name!r}: {err}") from None


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
