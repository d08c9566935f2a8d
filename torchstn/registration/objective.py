"""The registration objective of ``torchstn train``: a moving and a fixed image in, a field out.

Each step takes ``optim.batch_size`` pairs (:class:`~torchstn.registration.data.PairSplit`;
a batch's ``x`` packs moving, fixed and their label maps, :func:`~torchstn.registration.data.
pack`), runs the model ``(warped, field, params) = model(moving, fixed)`` (``reg_unet``,
``reg_affine``) and minimises :func:`~torchstn.registration.loss.registration_loss`:
similarity + lambda * regulariser (+ Dice weight * soft Dice loss where labels exist).
Validation scores the validation pairs (:func:`~torchstn.registration.evaluate.
registration_scores`) and keeps the weights of the epoch with the lowest ``100 * (1 - Dice)``
(the similarity loss where the data have no label maps).

Under torchrun every rank takes an equal slice of each global batch (the trainer's seeded
:class:`~torchstn.data.loader.EpochBatches`); the pairs of an epoch, pairwise partners
included, are drawn from ``(seed, epoch)`` alone, and nothing in the loss is random, so a run on
N processes takes the steps of one process (DDP averages the slices' gradients, which are those
of the batch's mean loss).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import ConfigError
from ..fields import folded_share
from ..train.distributed import World
from ..train.evaluate import EvalSettings
from ..train.objective import Objective, register_objective
from .config import registration_options
from .data import TASKS, RegistrationData, unpack
from .evaluate import check_pair_model, register, registration_scores
from .loss import registration_loss

if TYPE_CHECKING:
    from ..train.config import Config
    from .data import PairSplit

__all__ = ["RegistrationObjective"]

#: the numbers of a split's scores that runs report (``dice`` ones only where labels exist).
_REPORTED = ("dice", "dice_before", "similarity", "similarity_before", "folded", "jacobian_std")


@register_objective
class RegistrationObjective(Objective):
    """``objective.name: registration`` (see the module docstring and
    :class:`~torchstn.registration.RegistrationOptions`).

    Needs ``data.task: mnist_pairs`` or ``mni152`` (their ``data.options``), or ``data.path``
    (a folder of NIfTI scans, :func:`~torchstn.registration.read_pair_folder`), and a model
    whose ``forward(moving, fixed)`` returns ``(warped, field, params)``. ``data.train_size``,
    ``val_size`` and ``test_size`` count pairs. Metrics: ``train_folded`` is the mean share (%)
    of folded pixels of the training fields; ``val_dice``, ``val_dice_before``,
    ``val_similarity``, ``val_folded``, ``val_jacobian_std`` score the validation pairs
    (:func:`~torchstn.registration.registration_scores`), ``val_error`` is
    ``100 * (1 - val_dice)``; ``result.json`` has the same ``test_*`` numbers and
    ``test_ms_per_pair``.
    """

    name = "registration"
    train_rate = "train_folded"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.options = registration_options(cfg.objective.options)
        d = cfg.data
        if d.task is not None and (d.task not in TASKS or d.path is not None):
            raise ConfigError(
                f"data.task: the registration objective needs data.task {' or '.join(TASKS)}, "
                f"or data.path (a folder of NIfTI scans), got {d.task!r}"
            )
        if d.task is None and d.options:
            raise ConfigError("data.options: only the generated registration tasks take options")
        if d.normalize:
            raise ConfigError("data.normalize: registration compares [0, 1] intensities")
        #: label values of the data (set by :meth:`build_data`; 0: no label maps)
        self.num_labels = 0

    def build_data(
        self, *, preprocess: dict[str, Any] | None = None, pin_memory: bool = False
    ) -> RegistrationData:
        data = RegistrationData(self.cfg, self.options)
        self.num_labels = data.label_classes
        if self.options.dice_weight > 0 and not self.num_labels:
            raise ConfigError(
                "objective.options.dice_weight: the data have no label maps to train Dice on"
            )
        return data

    def train_net(self, net: nn.Module) -> nn.Module:
        check_pair_model(net)
        return net

    def loss(
        self,
        net: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        epoch: int,
        step: int,
        world: World,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss of this rank's pairs ``x`` (:func:`~torchstn.registration.data.pack`);
        :meth:`count` reads each pair's folded share ``(B,)``."""
        moving, fixed, ml, fl = unpack(x, (x.shape[1] - 2) // 2)
        warped, field, params = register(net, moving, fixed)
        terms = registration_loss(
            warped,
            fixed,
            field,
            params,
            self.options,
            moving_labels=ml,
            fixed_labels=fl,
            num_labels=self.num_labels,
        )
        with torch.no_grad():
            folded = folded_share(field.detach().float())
        return terms.total, folded

    def count(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """The pairs' folded shares summed: ``train_folded`` is their mean, in %."""
        return float(out.sum())

    def evaluate(self, model: nn.Module, split: Any, settings: EvalSettings) -> dict[str, float]:
        pairs: PairSplit = split
        return registration_scores(model, pairs, settings, self.options)

    def val_fields(self, val: dict[str, float]) -> dict[str, float]:
        return {"val_error": val["error"], **{f"val_{k}": val[k] for k in _REPORTED if k in val}}

    def test_fields(self, test: dict[str, float]) -> dict[str, float]:
        keys = (*_REPORTED, "ms_per_pair")
        return {f"test_{k}": test[k] for k in keys if k in test}

    def eval_fields(self, scores: dict[str, float]) -> dict[str, float]:
        keys = ("error", *_REPORTED, "ms_per_pair")
        return {k: scores[k] for k in keys if k in scores}

    def describe(self, record: dict[str, Any]) -> str:
        what = (
            f"Dice {record['val_dice_before']:.3f} -> {record['val_dice']:.3f}"
            if "val_dice" in record
            else f"{self.options.similarity} {record['val_similarity_before']:.4f} -> "
            f"{record['val_similarity']:.4f}"
        )
        return (
            f"train loss {record['train_loss']:.4f} folded {record['train_folded']:.2f}%  "
            f"val {what} folded {record['val_folded']:.2f}%"
        )
