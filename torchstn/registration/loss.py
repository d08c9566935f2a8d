"""The loss of a registration pair: similarity, smoothness and (where labels exist) soft Dice."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..fields import warp
from ..fields.losses import bending_energy, diffusion_loss, mse_loss, ncc_loss, soft_dice_loss
from .config import RegistrationOptions

__all__ = ["LossTerms", "one_hot", "registration_loss", "regularised_field", "similarity"]


class LossTerms(NamedTuple):
    """The terms of :func:`registration_loss` (scalars): ``total`` is what is minimised."""

    total: torch.Tensor
    similarity: torch.Tensor
    regulariser: torch.Tensor
    dice: torch.Tensor


def similarity(a: torch.Tensor, b: torch.Tensor, options: RegistrationOptions) -> torch.Tensor:
    """The similarity loss of ``options`` between images ``a`` and ``b`` ``(B, C, *spatial)``, a
    scalar, 0 for a perfect match: ``mse`` (:func:`~torchstn.fields.losses.mse_loss`), ``ncc``
    (``1 -`` global NCC) or ``lncc`` (``1 -`` local NCC of ``options.window``,
    :func:`~torchstn.fields.losses.ncc_loss`). Each is the mean over the batch of a per-pair
    value (the pairs have one size), so ``B`` times it is the sum over the pairs.

    Example:
        >>> a = torch.rand(2, 1, 8, 8)
        >>> float(similarity(a, a, RegistrationOptions(similarity="lncc", window=3))) < 1e-4
        True
    """
    if options.similarity == "mse":
        return mse_loss(a, b)
    return ncc_loss(a, b, options.window if options.similarity == "lncc" else None)


def regularised_field(field: torch.Tensor, params: torch.Tensor) -> torch.Tensor | None:
    """What the regulariser smooths: the model's own field ``params`` when it is one (a velocity
    or displacement at its own resolution, as VoxelMorph regularises the field before
    integration), else nothing (``None``: a matrix family, whose field is smooth by
    construction)."""
    n = field.dim() - 2
    if params.dim() == field.dim() and params.shape[1] == n:
        return params
    return None


def one_hot(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``(B, K, *spatial)`` float32 one-hot maps of integer labels ``(B, 1, *spatial)``.

    Example:
        >>> one_hot(torch.tensor([[[[0, 2]]]]), 3)[0, :, 0].tolist()  # labels (1, 1, 1, 2)
        [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    """
    return F.one_hot(labels[:, 0].long(), num_labels).movedim(-1, 1).float()


def registration_loss(
    warped: torch.Tensor,
    fixed: torch.Tensor,
    field: torch.Tensor,
    params: torch.Tensor,
    options: RegistrationOptions,
    *,
    moving_labels: torch.Tensor | None = None,
    fixed_labels: torch.Tensor | None = None,
    num_labels: int = 0,
) -> LossTerms:
    """``similarity(warped, fixed) + reg_weight * regulariser + dice_weight * soft Dice loss``.

    The regulariser (``diffusion``: :func:`~torchstn.fields.losses.diffusion_loss`,
    ``bending``: :func:`~torchstn.fields.losses.bending_energy`) smooths
    :func:`regularised_field` (0 for a matrix family). The Dice term (with ``dice_weight > 0``
    and label maps) is :func:`~torchstn.fields.losses.soft_dice_loss` of the moving labels'
    one-hot maps warped (bilinearly) by ``field`` against the fixed labels' one-hot maps,
    background left out.

    Args:
        warped: ``(B, C, *spatial)`` the moving image warped.
        fixed: ``(B, C, *spatial)``.
        field: ``(B, N, *spatial)`` the displacement that warped the moving image.
        params: what the model predicted (a field at its own resolution, or a vector).
        options: the objective's options.
        moving_labels: ``(B, 1, *spatial)`` integer labels, or ``None``.
        fixed_labels: the same shape.
        num_labels: label values (background included).

    Returns:
        :class:`LossTerms` (float32 scalars).

    Example:
        >>> x = torch.rand(2, 1, 8, 8)
        >>> u = torch.zeros(2, 2, 8, 8)
        >>> registration_loss(x, x, u, u, RegistrationOptions()).total
        tensor(0.)
    """
    warped, fixed, field, params = warped.float(), fixed.float(), field.float(), params.float()
    sim = similarity(warped, fixed, options)
    smooth = regularised_field(field, params)
    zero = sim.new_zeros(())
    reg = zero
    if smooth is not None:
        reg = (
            diffusion_loss(smooth) if options.regulariser == "diffusion" else bending_energy(smooth)
        )
    dice = zero
    use_dice = options.dice_weight > 0 and num_labels >= 2
    if use_dice and moving_labels is not None and fixed_labels is not None:
        moved = warp(one_hot(moving_labels, num_labels), field)
        dice = soft_dice_loss(moved, one_hot(fixed_labels, num_labels), ignore_background=True)
    total = sim + options.reg_weight * reg + options.dice_weight * dice
    return LossTerms(total, sim, reg, dice)
