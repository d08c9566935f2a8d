"""The classical baseline of the registration table: no network, a field optimised per pair.

:class:`ClassicalRegistration` is a module with the registration models' interface
(``forward(moving, fixed) -> Registration(warped, field, params)``) and no parameters: every
forward optimises one velocity (or displacement) field per pair with Adam on the objective's own
loss (:func:`~torchstn.registration.loss.registration_loss`: the same similarity and
regulariser a network is trained on; :func:`torchstn.fields.fit_field`). So the objective's
evaluation scores it exactly as it scores a trained network, and ``ms_per_pair`` is its
optimisation time. It runs under the evaluation's ``no_grad`` (it switches gradients back on
for its own optimisation) and inference mode (it copies its inputs out of it).
"""

from __future__ import annotations

import torch
from torch import nn

from ..fields import fit_field
from ..models.registration import Registration
from .config import RegistrationOptions
from .loss import registration_loss

__all__ = ["ClassicalRegistration"]


class ClassicalRegistration(nn.Module):
    """Per-pair optimisation of a field (see the module docstring).

    Args:
        options: the objective's options (similarity, regulariser, ``reg_weight``).
        field: ``"velocity"`` or ``"displacement"``.
        iterations: Adam steps per batch of pairs.
        lr: Adam's learning rate (pixels of the field's grid per step, roughly).
        downsize: the field's grid is the image's divided by this.
        steps: squarings of the integration.

    Example:
        >>> reg = ClassicalRegistration(RegistrationOptions(similarity="mse"), iterations=5)
        >>> out = reg(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
        >>> out.warped.shape, out.field.shape, out.params.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2, 2, 8, 8]), torch.Size([2, 2, 8, 8]))
    """

    def __init__(
        self,
        options: RegistrationOptions,
        *,
        field: str = "velocity",
        iterations: int = 100,
        lr: float = 0.1,
        downsize: int = 1,
        steps: int = 7,
    ) -> None:
        super().__init__()
        self.options = options
        self.field, self.iterations, self.lr = field, iterations, lr
        self.downsize, self.steps = downsize, steps

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Registration:
        options = self.options

        def loss(warped: torch.Tensor, target: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
            return registration_loss(warped, target, params, params, options).total

        with torch.inference_mode(False):
            moving, fixed = moving.clone(), fixed.clone()  # out of inference mode
            fit = fit_field(
                moving,
                fixed,
                loss,
                field=self.field,
                iterations=self.iterations,
                lr=self.lr,
                downsize=self.downsize,
                steps=self.steps,
            )
        return Registration(fit.warped, fit.field, fit.params)

    def extra_repr(self) -> str:
        return (
            f"field={self.field!r}, iterations={self.iterations}, lr={self.lr}, "
            f"downsize={self.downsize}, steps={self.steps}"
        )
