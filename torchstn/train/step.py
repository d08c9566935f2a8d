"""One training step, as ``torchstn train`` takes it and ``torchstn bench`` times it.

:class:`TrainStep` is the forward pass (the objective's loss plus the identity penalty of every
transformer that reports its params, under the run's autocast, with the transformers' own NaN
checks off) and the update (zeroed gradients, the scaled backward pass, optional clipping, the
optimizer's and the gradient scaler's steps). The :class:`~torchstn.train.Trainer` calls the two
halves apart, because between them every process of a torchrun run agrees on whether to go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import set_finite_checks
from ..errors import TorchSTNError
from ..module import RecordedParams, recording_params
from .distributed import World
from .evaluate import autocast_context
from .objective import Objective

__all__ = ["StepLoss", "TrainStep", "resolve_memory_format"]


@dataclass
class StepLoss:
    """The forward half of a step: ``loss`` (the objective's), ``total`` (with the identity
    penalty, what is minimised), ``out`` (what :meth:`Objective.count` reads) and the two losses
    read back as floats (``value``, ``total_value``)."""

    loss: torch.Tensor
    total: torch.Tensor
    out: torch.Tensor
    value: float
    total_value: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.total_value)


def penalty(records: list[RecordedParams]) -> torch.Tensor | None:
    """Identity penalty of the params every transformer with a positive ``penalty_weight``
    reported during the step's forward pass (each call once, at any stage of the network)."""
    terms = [r.transformer.penalty(r.params) for r in records if r.transformer.penalty_weight > 0]
    return torch.stack(terms).sum() if terms else None


class TrainStep:
    """A training step of ``net`` for ``objective`` with ``optimizer``.

    Args:
        net: the module whose forward computes the objective's loss (the model, or what
            :meth:`Objective.train_net` wraps it in, or that in DDP).
        objective: what the step minimises.
        optimizer: updates the parameters.
        device: where the step runs (its autocast's device type).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (``run.precision``).
        grad_clip: clip the gradients' norm of ``clip_params`` to this, if set.
        clip_params: the parameters clipped (default: ``net``'s).
        scaler: the gradient scaler (fp16); default: one enabled for ``fp16`` only.
        world: the processes of the run (what the objective's loss may need).

    Example:
        >>> import torch
        >>> from torchstn.models import create_model
        >>> from torchstn.train import config_from_dict, get_objective
        >>> model = create_model("cnn", (1, 28, 28), 10)
        >>> step = TrainStep(
        ...     model, get_objective(config_from_dict({})), torch.optim.SGD(model.parameters(), 0.1)
        ... )
        >>> loss = step(torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3]))
        >>> 0 < loss < 10
        True
    """

    def __init__(
        self,
        net: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        grad_clip: float | None = None,
        clip_params: list[nn.Parameter] | None = None,
        scaler: torch.amp.GradScaler | None = None,
        world: World | None = None,
    ) -> None:
        self.net = net
        self.objective = objective
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.precision = precision
        self.grad_clip = grad_clip
        self.clip_params = clip_params
        # fp16 needs a loss scale against underflowing gradients; bf16 has float32's range
        self.scaler = scaler or torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        self.world = world or World()

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, *, epoch: int = 0, step: int = 0
    ) -> StepLoss:
        """The loss of batch ``(x, y)`` (``step``: the global batch's index in ``epoch``)."""
        # the transformers' own NaN/Inf check would sync the device once more per step and, under
        # torchrun, raise on one rank alone; the loss is checked instead (NaN params give a NaN
        # loss), by the caller and, under torchrun, agreed by all ranks
        with (
            set_finite_checks(False),
            autocast_context(self.precision, self.device),
            recording_params(self.net) as records,
        ):
            loss, out = self.objective.loss(
                self.net, x, y, epoch=epoch, step=step, world=self.world
            )
            extra = penalty(records)
        total = loss if extra is None else loss + extra
        value = float(loss.detach())
        total_value = value if extra is None else float(total.detach())
        return StepLoss(loss, total, out, value, total_value)

    def update(self, loss: StepLoss) -> None:
        """Backward from ``loss.total`` and one optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss.total).backward()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            params = self.clip_params
            if params is None:
                params = list(self.net.parameters())
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, epoch: int = 0, step: int = 0) -> float:
        """Forward and update in one process; returns the objective's loss.

        Raises:
            TorchSTNError: the loss is NaN or Inf (nothing was updated).
        """
        loss = self.forward(x, y, epoch=epoch, step=step)
        if not loss.finite:
            raise TorchSTNError(f"loss became {loss.total_value}")
        self.update(loss)
        return loss.value


def resolve_memory_format(name: str, model: nn.Module, device: torch.device) -> torch.memory_format:
    """``run.memory_format`` for ``model`` on ``device``: ``auto`` is channels_last on the CPU
    when the model has a 2-D convolution (oneDNN's pooling and first convolutions run faster in
    that layout: ``torchstn bench --only options``), contiguous otherwise."""
    if name == "channels_last":
        return torch.channels_last
    if name == "contiguous":
        return torch.contiguous_format
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if device.type == "cpu" and has_conv else torch.contiguous_format
