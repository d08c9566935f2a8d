"""Evaluation and the pieces a run is built from: its device, its model, its autocast.

:func:`evaluate` works in one process or, given a :class:`~torchstn.train.distributed.World` of
several, on one contiguous shard per rank with the sums reduced, so every rank returns the
numbers one process would.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import hardware
from ..data.loader import shard_batches
from ..errors import DataError, TorchSTNError
from ..models import create_model
from .config import Config
from .datamodule import Split
from .distributed import World, all_reduce_sum

__all__ = [
    "EvalSettings",
    "autocast_context",
    "build_model",
    "evaluate",
    "resolve_device",
    "resolve_precision",
]

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


def resolve_precision(precision: str, device: torch.device) -> str:
    """``run.precision`` with ``auto`` decided for ``device``: ``bf16`` on a CPU that computes
    bfloat16 natively (AVX-512 BF16 or AMX, :func:`torchstn.hardware.native_bf16`), where a bf16
    autocast training step took 0.66-0.69 of the fp32 time (docs/precision.md); ``fp32`` elsewhere: on CPUs without those instructions bf16 is 2-3x slower,
    and on CUDA it has not been measured by this project. Other values are returned as given.

    Example:
        >>> resolve_precision("fp16", torch.device("cpu"))
        'fp16'
    """
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and hardware.native_bf16() else "fp32"


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    """Autocast for ``run.precision`` (``bf16``, ``fp16``, or ``auto`` as
    :func:`resolve_precision` decides it) on ``device``; a no-op for fp32."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


@dataclass(frozen=True)
class EvalSettings:
    """How a split is scored: batches of ``batch_size`` on ``device``, sharded over the processes
    of ``world``, under the autocast of ``precision``; ``skip_bad`` leaves unreadable images out
    instead of stopping.

    Example:
        >>> EvalSettings(batch_size=64).device
        device(type='cpu')
    """

    batch_size: int = 256
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    world: World = field(default_factory=World)
    precision: str = "fp32"
    skip_bad: bool = False

    @classmethod
    def of_run(cls, cfg: Config, device: torch.device, world: World | None = None) -> EvalSettings:
        """The settings a run of ``cfg`` scores with (``run.eval_batch_size``,
        ``run.precision``, ``data.skip_bad``)."""
        return cls(
            batch_size=cfg.run.eval_batch_size,
            device=device,
            world=world or World(),
            precision=cfg.run.precision,
            skip_bad=cfg.data.skip_bad,
        )


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, settings: EvalSettings) -> dict[str, float]:
    """Mean cross-entropy and error rate (%) of ``model`` on ``split``.

    With a ``settings.world`` of several processes each rank evaluates a contiguous shard and
    the sums are reduced, so every rank returns the numbers one process would (up to float
    summation order).

    Returns:
        ``loss``, ``error`` and ``skipped``: images that could not be read and were left out
        (``settings.skip_bad``; they do not count in the error).

    Raises:
        DataError: an image of the split cannot be read and ``skip_bad`` is false.
    """
    world, device, precision = settings.world, settings.device, settings.precision
    batch_size, skip_bad = settings.batch_size, settings.skip_bad
    was_training = model.training
    model.eval()
    loss_sum, wrong, skipped = 0.0, 0, 0
    n = len(split)
    for batch in split.batches(shard_batches(n, batch_size, world.rank, world.size)):
        if batch.bad:
            if not skip_bad:
                raise DataError(f"{batch.bad[0]} (set data.skip_bad: true to skip such images)")
            skipped += len(batch.bad)
        if batch.y.shape[0] == 0:
            continue
        x = batch.inputs(device)
        y = batch.y.to(device, non_blocking=True)
        with autocast_context(precision, device):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum").double())
        wrong += int((logits.argmax(1) != y).sum())
    model.train(was_training)
    loss_sum, wrong_f, skipped_f = all_reduce_sum(
        [loss_sum, float(wrong), float(skipped)], world, device
    )
    seen = max(n - int(skipped_f), 1)
    return {
        "loss": loss_sum / seen,
        "error": 100.0 * int(wrong_f) / seen,
        "skipped": int(skipped_f),
    }
