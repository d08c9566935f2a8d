"""What a run optimises and how it is scored: the objective, found by name (``objective.name``).

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

An objective is a subclass of :class:`Objective` that registers itself with
:func:`register_objective`; its constructor checks its own options (``objective.options``) and
what it needs of the rest of the config. ``classification`` (:class:`Classification`) lives here.
Objectives of other packages are found through the ``torchstn.objectives`` entry points of the
installed distributions (this package declares ``colocalization``,
:class:`torchstn.colocalization.ColocalizationObjective`), so training never imports them unless a
run asks for them by name; a module passed to ``--import`` may register more.

Example:
    >>> from torchstn.train import config_from_dict
    >>> get_objective(config_from_dict({})).name
    'classification'
    >>> "colocalization" in objective_names()
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import EpochBatches
from ..errors import ConfigError
from .config import Config
from .datamodule import DataModule, Split
from .distributed import World
from .evaluate import EvalSettings, evaluate

__all__ = [
    "BatchOrder",
    "Classification",
    "Objective",
    "get_objective",
    "objective_names",
    "register_objective",
]

#: the entry-point group in which installed distributions declare their objectives
ENTRY_POINT_GROUP = "torchstn.objectives"


class BatchOrder(Protocol):
    """The index batches one process reads in an epoch (e.g.
    :class:`~torchstn.data.loader.EpochBatches`)."""

    num_batches: int  #: global batches in the whole epoch

    def __iter__(self) -> Iterator[list[int]]: ...


class Objective:
    """The base of every objective: what a run of ``objective.name`` = :attr:`name` minimises.

    Subclasses set :attr:`name` and :attr:`train_rate` and implement :meth:`loss`,
    :meth:`count`, :meth:`evaluate`, the ``*_fields`` and :meth:`describe`; the data, the batch
    order and the trained network default to a :class:`~torchstn.train.DataModule`, seeded
    shuffled batches and the model itself. Every method gets the run's resolved config as
    ``self.cfg``. Construction checks the objective's settings against the config and raises
    :class:`ConfigError` (it reads no data).

    Args:
        cfg: the run's config.
    """

    name: ClassVar[str] = ""
    #: ``metrics.jsonl`` key of the share (%) of training samples that :meth:`count` counts.
    train_rate: ClassVar[str] = ""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def check_world(self, world_size: int) -> None:
        """Refuse a number of processes the objective cannot split its batches over."""

    # ------------------------------------------------------------------ data
    def build_data(
        self, *, preprocess: dict[str, Any] | None = None, pin_memory: bool = False
    ) -> Any:
        """The run's data: a :class:`~torchstn.train.DataModule` (or an object with its
        interface: ``train(epoch)``, ``eval_split(name)``, ``in_shape``, ``num_classes``, ...)."""
        return DataModule(
            self.cfg.data, self.cfg.seed, preprocess=preprocess, pin_memory=pin_memory
        )

    def batch_order(
        self, n: int, epoch: int, *, rank: int, world_size: int, start: int
    ) -> BatchOrder:
        """Index batches into the ``n`` training samples of epoch ``epoch`` that process ``rank``
        of ``world_size`` reads, from global batch ``start`` on."""
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
        """The mean loss of this process's batch ``x``, ``y`` ``(B,)`` and what :meth:`count`
        reads; ``step`` is the global batch's index in ``epoch``."""
        raise NotImplementedError

    def count(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """How many samples of the batch count towards :attr:`train_rate`."""
        raise NotImplementedError

    # ------------------------------------------------------------------ scoring
    def evaluate(self, model: nn.Module, split: Any, settings: EvalSettings) -> dict[str, float]:
        """Scores of ``model`` on ``split``: at least ``error`` (minimised on validation) and
        ``skipped``; the same numbers on every rank."""
        raise NotImplementedError

    def val_fields(self, val: dict[str, float]) -> dict[str, float]:
        """The validation numbers of a ``metrics.jsonl`` record."""
        raise NotImplementedError

    def test_fields(self, test: dict[str, float]) -> dict[str, float]:
        """``result.json`` numbers besides ``test_error`` and ``val_error``."""
        raise NotImplementedError

    def eval_fields(self, scores: dict[str, float]) -> dict[str, float]:
        """What ``torchstn eval`` prints of a split's scores."""
        raise NotImplementedError

    def describe(self, record: dict[str, Any]) -> str:
        """The numbers of an epoch's console line."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Objective]] = {}
ObjectiveClass = TypeVar("ObjectiveClass", bound=type[Objective])


def register_objective(cls: ObjectiveClass) -> ObjectiveClass:
    """Register an :class:`Objective` subclass under its :attr:`~Objective.name` (a class
    decorator). A name taken by another class is refused.

    Raises:
        ConfigError: ``cls`` is not an Objective with a name, or the name is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, Objective)) or not cls.name:
        raise ConfigError(
            f"register_objective: expected an Objective subclass with a name, got {cls!r}"
        )
    taken = _REGISTRY.get(cls.name)
    if taken is not None and taken is not cls:
        raise ConfigError(
            f"objective {cls.name!r} is registered already ({taken.__module__}.{taken.__qualname__})"
        )
    _REGISTRY[cls.name] = cls
    return cls


def _load_plugins(name: str | None = None) -> None:
    """Import the objectives that installed distributions declare (all, or the one ``name``)."""
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in _REGISTRY or (name is not None and point.name != name):
            continue
        try:
            cls = point.load()  # importing its module registers it
        except Exception as err:  # a broken plug-in: one line naming it
            raise ConfigError(
                f"objective {point.name!r} ({point.value}) could not be loaded: {err}"
            ) from None
        if point.name not in _REGISTRY:
            register_objective(cls)


def objective_names() -> tuple[str, ...]:
    """The names of every objective: registered, and declared by installed distributions."""
    _load_plugins()
    return tuple(sorted(_REGISTRY))


def get_objective(cfg: Config) -> Objective:
    """The objective of ``cfg`` (``objective.name``), built: its options and what it needs of the
    rest of the config checked.

    Raises:
        ConfigError: an unknown name (the message lists the known ones), or settings the
            objective refuses.
    """
    name = cfg.objective.name
    if name not in _REGISTRY:
        _load_plugins(name)
    if name not in _REGISTRY:
        raise ConfigError(
            f"objective.name: expected {' or '.join(objective_names())}, got {name!r} (an "
            "objective of your own: register it with torchstn.train.register_objective and pass "
            "--import MODULE)"
        )
    return _REGISTRY[name](cfg)


@register_objective
class Classification(Objective):
    """``classification``: cross-entropy on the logits, scored by the error rate (%)."""

    name = "classification"
    train_rate = "train_error"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        if cfg.objective.options:
            raise ConfigError(
                f"objective.options: {self.name} takes no options, got "
                f"{', '.join(sorted(map(str, cfg.objective.options)))}"
            )

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
        """Cross-entropy of the logits ``(B, K)`` in float32; :meth:`count` reads the logits."""
        logits = net(x)
        return F.cross_entropy(logits.float(), y), logits

    def count(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """Misclassified samples."""
        return float((out.argmax(1) != y).sum())

    def evaluate(self, model: nn.Module, split: Split, settings: EvalSettings) -> dict[str, float]:
        """Mean cross-entropy and error rate (%) (:func:`~torchstn.train.evaluate.evaluate`)."""
        return evaluate(model, split, settings)

    def val_fields(self, val: dict[str, float]) -> dict[str, float]:
        return {"val_loss": val["loss"], "val_error": val["error"]}

    def test_fields(self, test: dict[str, float]) -> dict[str, float]:
        return {"test_loss": test["loss"]}

    def eval_fields(self, scores: dict[str, float]) -> dict[str, float]:
        return {"error": scores["error"], "loss": scores["loss"]}

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"train loss {record['train_loss']:.4f} err {record['train_error']:5.2f}%  "
            f"val loss {record['val_loss']:.4f} err {record['val_error']:5.2f}%"
        )
