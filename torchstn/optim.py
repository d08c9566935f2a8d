"""Training helpers against localisation drift: parameter groups and the identity penalty."""

from __future__ import annotations

from typing import Any

from torch import nn

from ._checks import check_positive
from .module import SpatialTransformer

__all__ = ["localization_parameters", "param_groups"]


def localization_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of every spatial transformer's localisation net and head in ``model``."""
    seen: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, SpatialTransformer):
            for p in m.parameters():
                seen.setdefault(id(p), p)
    return list(seen.values())


def param_groups(
    model: nn.Module, lr: float, loc_lr_scale: float = 0.1, **options: Any
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the localisation nets at ``lr * loc_lr_scale``, the rest at ``lr``.

    The paper trains its SVHN localisation nets at a tenth of the base rate; a smaller rate keeps
    the transformer from jumping to degenerate warps early in training. Extra ``options`` (such as
    ``weight_decay``) go into both groups.

    Example:
        >>> import torch
        >>> model = nn.Sequential(SpatialTransformer((1, 8, 8)), nn.Flatten(), nn.Linear(64, 10))
        >>> groups = param_groups(model, lr=0.01)
        >>> [g["lr"] for g in groups]
        [0.01, 0.001]
        >>> opt = torch.optim.SGD(groups, lr=0.01)
    """
    lr = check_positive(lr, "lr")
    loc_lr_scale = check_positive(loc_lr_scale, "loc_lr_scale")
    loc = localization_parameters(model)
    loc_ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups = [{"params": rest, "lr": lr, **options}]
    if loc:
        groups.append({"params": loc, "lr": lr * loc_lr_scale, **options})
    return groups
