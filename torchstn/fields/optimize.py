"""Classical registration: a field optimised for each pair, no network.

The baseline a learned registration network is measured against: for every pair the velocity
(or displacement) field itself is the unknown, and an optimiser minimises the same loss the
network is trained on (similarity + lambda * regulariser) by gradient descent, pair by pair
(a batch of pairs is optimised at once; the pairs do not interact, the loss is their sum, and
Adam's steps are per element). It needs no training, and spends at test time what the network
spent in training: :attr:`FitResult.seconds` is the time per pair.

Example:
    >>> import torch
    >>> yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    >>> def blob(cx):
    ...     return torch.exp(-((xx - cx) ** 2 + (yy - 7.5) ** 2) / 12)[None, None]
    >>> fixed, moving = blob(7.5), blob(9.5)  # the blob two pixels to the right
    >>> def mse(warped, fixed, params):
    ...     return (warped - fixed).square().flatten(1).mean(1)
    >>> fit = fit_field(moving, fixed, mse, iterations=50, lr=0.1, downsize=4)
    >>> round(float(fit.field[0, 0, 8, 8]))  # reads two pixels to the right
    2
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import torch

from .._checks import check_choice, check_positive, check_tensor
from ..errors import InvalidInputError
from .field import integrate, resize, warp

__all__ = ["FitResult", "fit_field"]

#: ``loss(warped, fixed, params) -> (B,)``: each pair's loss (params: the optimised field), or
#: their mean.
PairLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class FitResult(NamedTuple):
    """What :func:`fit_field` returns."""

    #: the moving images warped by :attr:`field` ``(B, C, *spatial)``.
    warped: torch.Tensor
    #: the displacement ``(B, N, *spatial)`` in pixels (torchstn's convention).
    field: torch.Tensor
    #: the optimised params: velocity or displacement at the field's resolution.
    params: torch.Tensor
    #: ``(iterations,)`` the mean loss over the pairs at every iteration.
    losses: torch.Tensor
    #: wall-clock seconds per pair.
    seconds: float


def fit_field(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    loss: PairLoss,
    *,
    field: str = "velocity",
    iterations: int = 100,
    lr: float = 0.1,
    downsize: int = 1,
    steps: int = 7,
) -> FitResult:
    """Optimise one field per pair so that ``warp(moving, field) ~ fixed``.

    Args:
        moving, fixed: ``(B, C, *spatial)`` images or volumes (``fixed`` may have batch 1: an
            atlas).
        loss: ``loss(warped, fixed, params) -> (B,)``, each pair's loss, or a scalar, their
            mean (the pairs do not interact, so ``B`` times the mean is their sum and each
            pair gets the gradient of its own loss); ``params`` is the optimised field at its
            own resolution (velocity or displacement), for the regulariser.
        field: ``"velocity"`` (a stationary velocity field, integrated by scaling and squaring:
            :func:`~torchstn.fields.integrate`) or ``"displacement"``.
        iterations: Adam steps.
        lr: Adam's learning rate, in pixels of the field's grid.
        downsize: the field's grid is the image's divided by this (every side must divide).
        steps: squarings of the integration.

    Raises:
        InvalidInputError: shapes that do not match, a ``downsize`` that does not divide.
    """
    check_tensor(moving, "moving", ndim=(4, 5))
    check_tensor(fixed, "fixed", ndim=(4, 5))
    if fixed.shape[1:] != moving.shape[1:] or fixed.shape[0] not in (1, moving.shape[0]):
        raise InvalidInputError(
            f"fixed: expected (B or 1, {', '.join(map(str, moving.shape[1:]))}) like moving, got "
            f"{tuple(fixed.shape)}"
        )
    check_choice(field, "field", ("velocity", "displacement"))
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InvalidInputError(f"iterations: expected an integer >= 1, got {iterations!r}")
    lr = check_positive(lr, "lr")
    spatial = tuple(int(s) for s in moving.shape[2:])
    if isinstance(downsize, bool) or not isinstance(downsize, int) or downsize < 1:
        raise InvalidInputError(f"downsize: expected an integer >= 1, got {downsize!r}")
    if any(s % downsize for s in spatial):
        raise InvalidInputError(f"downsize: {downsize} does not divide the image size {spatial}")
    n = len(spatial)
    coarse = tuple(s // downsize for s in spatial)
    moving, fixed = moving.detach(), fixed.detach()
    params = torch.zeros(
        moving.shape[0], n, *coarse, dtype=moving.dtype, device=moving.device, requires_grad=True
    )
    opt = torch.optim.Adam([params], lr=lr)

    def displacement(p: torch.Tensor) -> torch.Tensor:
        u = integrate(p, steps) if field == "velocity" else p
        return resize(u, spatial)

    losses = torch.empty(iterations, dtype=torch.float64)
    start = time.perf_counter()
    with torch.enable_grad():
        for i in range(iterations):
            opt.zero_grad(set_to_none=True)
            value = loss(warp(moving, displacement(params)), fixed, params)
            if value.dim() == 0:  # the mean over the pairs: B times it is their sum
                total = value * moving.shape[0]
            elif value.shape == (moving.shape[0],):
                total = value.sum()
            else:
                raise InvalidInputError(
                    f"loss: expected one value per pair, shape ({moving.shape[0]},), or their "
                    f"mean, got shape {tuple(value.shape)}"
                )
            total.backward()
            opt.step()
            losses[i] = float(value.detach().mean())
    with torch.no_grad():
        u = displacement(params)
        warped = warp(moving, u)
    seconds = (time.perf_counter() - start) / moving.shape[0]
    return FitResult(warped, u, params.detach(), losses, seconds)
