"""Evaluation and the pieces a run is built from: its device, its model, its autocast.

:func:`evaluate` works in one process or, given a :class:`~torchstn.train.distributed.World` of
several, on one contiguous shard per rank with the sums reduced, so every rank returns the
numbers one process would.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import TorchSTNError
from ..models import create_model
from .config import Config
from .datamodule import Split
from .distributed import World, all_reduce_sum

__all__ = ["autocast_context", "build_model", "evaluate", "resolve_device"]

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TorchSTNError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def build_model(cfg: Config, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of a config, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model.name, in_shape, num_classes, **cfg.model.options)


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """Autocast for ``run.precision`` (``bf16`` or ``fp16``) on ``device``; a no-op for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split: Split,
    batch_size: int,
    device: torch.device,
    world: World | None = None,
    precision: str = "fp32",
) -> dict[str, float]:
    """Mean cross-entropy and error rate (%) of ``model`` on ``split``.

    With a ``world`` of several processes each rank evaluates a contiguous shard and the sums are
    reduced, so every rank returns the numbers one process would (up to float summation order).
    """
    world = world or World()
    was_training = model.training
    model.eval()
    loss_sum, wrong = 0.0, 0
    n = split.y.shape[0]
    lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
    for i in range(lo, hi, batch_size):
        x = split.x[i : min(i + batch_size, hi)].to(device, non_blocking=True)
        y = split.y[i : min(i + batch_size, hi)].to(device, non_blocking=True)
        with autocast_context(precision, device):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum").double())
        wrong += int((logits.argmax(1) != y).sum())
    model.train(was_training)
    loss_sum, wrong_f = all_reduce_sum([loss_sum, float(wrong)], world, device)
    return {"loss": loss_sum / n, "error": 100.0 * int(wrong_f) / n}
