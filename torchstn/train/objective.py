"""What a run optimises and how it is scored: the objective (``objective.name`` of the config).

The :class:`~torchstn.train.Trainer` runs one loop for every objective (batches, learning-rate
schedule, time budget, checkpoints, resume to the step, ``metrics.jsonl``, progress bar,
torchrun); the objective supplies what differs:

* its data (:meth:`Objective.build_data`): the train, val and test splits, the model's input
  shape and its number of outputs;
* the order of an epoch's batches (:meth:`Objective.batch_order`);
* the network the steps run (:meth:`Objective.train_net`) and the loss of a batch
  (:meth:`Objective.loss`);
* the evaluation of a split (:meth:`Objective.evaluate`): a dict whose ``error`` is the number
  the run minimises on validation (the best weights are those of its lowest value);
* the names of the numbers it reports in ``metrics.jsonl``, ``result.json`` and ``torchstn eval``.

``classification`` (the default, :class:`Objective` itself): cross-entropy, error rate in %.
``colocalization``: the triplet hinge loss, scored by the share of images localised
(:class:`torchstn.colocalization.ColocalizationObjective`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .distributed import World

if TYPE_CHECKING:
    from .config import Config
    from .datamodule import Split

__all__ = ["OBJECTIVES", "BatchOrder", "Objective", "check_objective", "get_objective"]

#: values of ``objective.name``.
OBJECTIVES = ("classification", "colocalization")


class BatchOrder(Protocol):
    """The index batches one process reads in an epoch (e.g.
    :class:`~torchstn.data.loader.EpochBatches`)."""

    num_batches: int  #: global batches in the whole epoch

    def __iter__(self) -> Iterator[list[int]]: ...


class Objective:
    """Classification: cross-entropy on the logits, scored by the error rate (%).

    Subclasses override what differs (see the module docstring); every method gets the run's
    resolved config as ``self.cfg``. Construction checks the objective's settings against the
    config and raises :class:`ConfigError` (it reads no data).

    Args:
        cfg: the run's config.
    """

    name: ClassVar[str] = "classification"
    #: ``metrics.jsonl`` key of the share (%) of training samples that :meth:`count` counts.
    train_rate: ClassVar[str] = "train_error"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        if cfg.objective.options:
            raise ConfigError(
                f"objective.options: {self.name} takes no options, got "
                f"{', '.join(sorted(map(str, cfg.objective.options)))}"
            )

    def check_world(self, world_size: int) -> None:
        """Refuse a number of processes the objective cannot split its batches over."""

    # ------------------------------------------------------------------ data
    def build_data(
        self, *, preprocess: dict[str, Any] | None = None, pin_memory: bool = False
    ) -> Any:
        """The run's data: a :class:`~torchstn.train.DataModule` (or an object with its
        interface: ``train(epoch)``, ``eval_split(name)``, ``in_shape``, ``num_classes``, ...)."""
        from .datamodule import DataModule

        return DataModule(
            self.cfg.data, self.cfg.seed, preprocess=preprocess, pin_memory=pin_memory
        )

    def batch_order(
        self, n: int, epoch: int, *, rank: int, world_size: int, start: int
    ) -> BatchOrder:
        """Index batches into the ``n`` training samples of epoch ``epoch`` that process ``rank``
        of ``world_size`` reads, from global batch ``start`` on."""
        from ..data.loader import EpochBatches

        return EpochBatches(
            n,
            self.cfg.optim.batch_size,
            self.cfg.seed,
            epoch,
            rank=rank,
            world_size=world_size,
            start=start,
        )

    # ------------------------------------------------------------------ training
    def train_net(self, net: nn.Module) -> nn.Module:
        """The module whose forward the training steps call (wrapped in DDP under torchrun)."""
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
        """The mean loss of this process's batch ``x`` ``(B, C, H, W)``, ``y`` ``(B,)`` and what
        :meth:`count` reads (here the logits ``(B, K)``); ``step`` is the global batch's index in
        ``epoch``."""
        logits = net(x)
        return F.cross_entropy(logits.float(), y), logits

    def count(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """How many samples of the batch count towards :attr:`train_rate` (misclassified)."""
        return float((out.argmax(1) != y).sum())

    # ------------------------------------------------------------------ scoring
    def evaluate(
        self,
        model: nn.Module,
        split: Split,
        batch_size: int,
        device: torch.device,
        world: World | None = None,
        precision: str = "fp32",
        skip_bad: bool = False,
    ) -> dict[str, float]:
        """Scores of ``model`` on ``split``: at least ``error`` (minimised on validation) and
        ``skipped``; the same numbers on every rank."""
        from .evaluate import evaluate

        return evaluate(model, split, batch_size, device, world, precision, skip_bad)

    def val_fields(self, val: dict[str, float]) -> dict[str, float]:
        """The validation numbers of a ``metrics.jsonl`` record."""
        return {"val_loss": val["loss"], "val_error": val["error"]}

    def test_fields(self, test: dict[str, float]) -> dict[str, float]:
        """``result.json`` numbers besides ``test_error`` and ``val_error``."""
        return {"test_loss": test["loss"]}

    def eval_fields(self, scores: dict[str, float]) -> dict[str, float]:
        """What ``torchstn eval`` prints of a split's scores."""
        return {"error": scores["error"], "loss": scores["loss"]}

    def describe(self, record: dict[str, Any]) -> str:
        """The numbers of an epoch's console line."""
        return (
            f"train loss {record['train_loss']:.4f} err {record['train_error']:5.2f}%  "
            f"val loss {record['val_loss']:.4f} err {record['val_error']:5.2f}%"
        )


def get_objective(cfg: Config) -> Objective:
    """The objective of ``cfg`` (``objective.name``), checked against the config."""
    name = cfg.objective.name
    if name == "classification":
        return Objective(cfg)
    if name == "colocalization":
        from ..colocalization.objective import ColocalizationObjective

        return ColocalizationObjective(cfg)
    raise ConfigError(f"objective.name: expected {' or '.join(OBJECTIVES)}, got {name!r}")


def check_objective(cfg: Config) -> None:
    """Raise :class:`ConfigError` if ``cfg``'s objective or its options are not valid."""
    if not isinstance(cfg.objective.options, dict):
        raise ConfigError(
            f"objective.options: expected a mapping, got {type(cfg.objective.options).__name__}"
        )
    get_objective(cfg)
