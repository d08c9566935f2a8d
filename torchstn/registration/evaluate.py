"""Scoring a registration model: similarity, Dice of the label maps before and after, folds and
the spread of the Jacobian determinant, pair by pair."""

from __future__ import annotations

import inspect
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data.loader import shard_batches
from ..errors import ConfigError
from ..fields import folded_share, jacobian_determinant, warp_labels
from ..fields.losses import dice
from ..train.distributed import all_reduce_sum
from ..train.evaluate import EvalSettings, autocast_context
from .data import unpack
from .loss import similarity

if TYPE_CHECKING:
    from .config import RegistrationOptions
    from .data import PairSplit

__all__ = ["check_pair_model", "mean_dice", "register", "registration_scores"]


def mean_dice(a: torch.Tensor, b: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``(B,)`` the Dice of label maps ``a`` and ``b`` ``(B, 1, *spatial)`` averaged over the
    foreground labels present in either (:func:`~torchstn.fields.losses.dice`); 1 for a pair
    where neither has foreground.

    Example:
        >>> a = torch.tensor([[[0, 1, 1, 2]]])
        >>> mean_dice(a, torch.tensor([[[0, 1, 2, 2]]]), 4)  # labels 1 and 2: 2/3 each; 3 absent
        tensor([0.6667])
    """
    scores = dice(a, b, num_labels)  # (B, K - 1), NaN where a label is in neither
    return torch.nanmean(scores, dim=1).nan_to_num(1.0)


def _refuse(model: nn.Module) -> ConfigError:
    return ConfigError(
        f"model: registration needs a model whose forward(moving, fixed) returns (warped, "
        f"field, params), such as reg_unet or reg_affine; got {type(model).__name__}"
    )


def check_pair_model(model: nn.Module) -> None:
    """Refuse a model whose ``forward`` cannot take ``(moving, fixed)`` (a classifier): one
    :class:`ConfigError` line, before anything runs."""
    try:
        inspect.signature(model.forward).bind(None, None)
    except (TypeError, ValueError):
        raise _refuse(model) from None


def register(model: nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[Any, ...]:
    """``model(moving, fixed)`` checked to be ``(warped, field, params)``.

    Raises:
        ConfigError: the model is not a registration model (one line).
    """
    check_pair_model(model)
    out = model(moving, fixed)
    if not isinstance(out, tuple) or len(out) != 3:
        raise _refuse(model)
    return tuple(out)


@torch.no_grad()
def registration_scores(
    model: nn.Module,
    split: PairSplit,
    settings: EvalSettings,
    options: RegistrationOptions,
) -> dict[str, float]:
    """The registration numbers of ``model`` on ``split``, sharded over the processes of
    ``settings.world`` (sums reduced: every rank returns the numbers of one process).

    Returns:
        ``similarity`` and ``similarity_before`` (the loss of ``options.similarity`` after and
        before registration, mean over pairs); ``folded`` (% of pixels whose Jacobian
        determinant is ``<= 0``) and ``jacobian_std`` (its standard deviation within a pair),
        both means over pairs; ``ms_per_pair`` (the model's forward time); where the split has
        label maps, ``dice`` and ``dice_before`` (:func:`mean_dice` of the moving labels warped
        by ``options.label_warp``, and of the moving labels, with the fixed ones; mean over
        pairs); and
        ``error``, what validation minimises: ``100 * (1 - dice)`` with labels, else
        ``similarity``; ``skipped`` 0.
    """
    world, device, precision = settings.world, settings.device, settings.precision
    was_training = model.training
    model.eval()
    k = split.pairs.num_labels if split.has_labels else 0
    sums = torch.zeros(8, dtype=torch.float64)  # sim, sim0, dice, dice0, folded, jstd, secs, n
    for batch in split.batches(
        shard_batches(len(split), settings.batch_size, world.rank, world.size)
    ):
        x = batch.inputs(device)
        c = (x.shape[1] - 2) // 2
        moving, fixed, ml, fl = unpack(x, c)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with autocast_context(precision, device):
            warped, field, _ = register(model, moving, fixed)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        warped, field = warped.float(), field.float()
        b = x.shape[0]
        row = [
            float(similarity(warped, fixed, options)) * b,
            float(similarity(moving, fixed, options)) * b,
            0.0,
            0.0,
            float(folded_share(field).double().sum()) * 100.0,
            float(jacobian_determinant(field).flatten(1).double().std(1).sum()),
            seconds,
            float(b),
        ]
        if k:
            moved = warp_labels(ml, field, method=options.label_warp, num_classes=k)
            row[2] = float(mean_dice(moved, fl, k).double().sum())
            row[3] = float(mean_dice(ml, fl, k).double().sum())
        sums += torch.tensor(row, dtype=torch.float64)
    model.train(was_training)
    reduced = all_reduce_sum([float(v) for v in sums], world, device)
    sim, sim0, dice_after, dice_before, folded, jstd, secs, n = reduced
    n = max(n, 1.0)
    scores = {
        "similarity": sim / n,
        "similarity_before": sim0 / n,
        "folded": folded / n,
        "jacobian_std": jstd / n,
        "ms_per_pair": 1000.0 * secs / n,
        "skipped": 0,
    }
    if k:
        scores["dice"] = dice_after / n
        scores["dice_before"] = dice_before / n
        scores["error"] = 100.0 * (1.0 - scores["dice"])
    else:
        scores["error"] = scores["similarity"]
    return scores
