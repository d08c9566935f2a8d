"""The co-localisation objective of ``torchstn train``: triplet loss, localisation score.

Each step takes ``optim.batch_size`` distinct images ``I_n`` of the class
(:class:`~torchstn.colocalization.data.DistinctBatches`), crops them with the transformer
(``a_n = ST(I_n)``), pairs the crops two by two (images ``2k`` and ``2k + 1``: another image of
the same class) and each crop with a random crop ``r_n`` of its own image (the size of ``a_n``,
its centre uniform among the positions where the window lies inside the image), and minimises
the triplet hinge loss ``max(0, ||e(a_n) - e(a_m)||^2 - ||e(a_n) - e(r_n)||^2 + margin)``
(:class:`TripletNet`). Validation scores the share of validation images localised (IoU > 0.5):
the run keeps the weights of the epoch with the lowest ``100 - % localised``.

Under torchrun every rank takes a contiguous, even slice of the batch (pairs never straddle two
ranks) and the random crops are drawn for the whole global batch from ``(seed, epoch, step)``,
so a run on N processes takes the steps of one process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data.seeding import generator
from ..errors import ConfigError
from ..models.encoder import AttentionEncoder
from ..train.distributed import World
from ..train.evaluate import EvalSettings
from ..train.objective import BatchOrder, Objective, register_objective
from .config import colocalization_options
from .data import ColocalizationData, DistinctBatches
from .evaluate import localization_scores
from .loss import triplet_hinge_loss

if TYPE_CHECKING:
    from ..train.config import Config
    from .data import BoxSplit

__all__ = ["ColocalizationObjective", "TripletNet", "random_crop_params"]


def random_crop_params(scale: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Attention params ``(B, 3)`` of windows of half-size ``scale`` ``(B,)`` whose centres are
    ``unit`` ``(B, 2)`` (uniform draws in ``[0, 1)``) spread over the positions that keep the
    window inside the image (``|t| <= 1 - s``; the centre for ``s >= 1``).

    Example:
        >>> unit = torch.rand(4, 2, generator=torch.Generator().manual_seed(0))
        >>> p = random_crop_params(torch.full((4,), 0.25), unit)
        >>> bool((p[:, 1:].abs() <= 0.75).all()), p[:, 0].tolist()
        (True, [0.25, 0.25, 0.25, 0.25])
    """
    room = (1 - scale).clamp_min(0)[:, None]  # (B, 1)
    centres = (unit.to(scale) * 2 - 1) * room  # (B, 2)
    return torch.cat((scale[:, None], centres), dim=1)


class TripletNet(nn.Module):
    """The triplet hinge losses ``(B,)`` of a batch of images of one class.

    ``forward(x, unit)``: images ``(B, C, H, W)`` (``B`` even) and the random crops' centre
    draws ``unit`` ``(B, 2)`` in ``[0, 1)``. Crop ``2k`` and crop ``2k + 1`` are each other's
    positive; each crop's negative is a random crop of its own image.

    Gradient routing (``positive_grad``): the encoder learns from the whole loss. By default the
    transformer learns from the random-crop term only: the positive distance is computed on the
    embeddings of the *detached* crops. The loss value is the paper's either way. With the literal
    gradient (``positive_grad=True``) the positive term also moves the two windows to make their
    crops alike, and the windows do so by staying where they all start, at the centre of the
    canvas: in ``tests/colocalization``, 50 steps on 64 images of digit 3 leave them within 0.1 of
    the centre and localise 3% of the digits, against 100% with the routing.

    Args:
        model: the co-localisation model (:class:`~torchstn.models.encoder.AttentionEncoder`).
        margin: the hinge margin.
        positive_grad: let the transformer learn from the positive term too.
    """

    def __init__(self, model: AttentionEncoder, margin: float = 1.0, positive_grad: bool = False):
        super().__init__()
        self.model = model
        self.margin = float(margin)
        self.positive_grad = bool(positive_grad)

    def forward(self, x: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        model = self.model
        crops, params = model.crop(x)  # (B, C, h, w), (B, 3)
        rand = model.transformer.transform_input(
            x, random_crop_params(params[:, 0].detach(), unit)
        )  # (B, C, h, w)
        if self.positive_grad:
            anchor, random = model.embed(torch.cat((crops, rand))).split(b)
            pos_anchor = anchor
        else:
            anchor, pos_anchor, random = model.embed(
                torch.cat((crops, crops.detach(), rand))
            ).split(b)
        partner = torch.arange(b, device=x.device) ^ 1  # 0 <-> 1, 2 <-> 3, ...
        return triplet_hinge_loss(
            anchor,
            pos_anchor[partner],
            random,
            self.margin,
            positive_anchor=pos_anchor,
            reduction="none",
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, positive_grad={self.positive_grad}"


@register_objective
class ColocalizationObjective(Objective):
    """``objective.name: colocalization`` (see the module docstring and
    :class:`~torchstn.colocalization.ColocalizationOptions`).

    Needs ``data.task: colocalization`` (its ``data.options`` generate the images), a model with
    ``crop``, ``embed`` and ``localize`` (``st_attention_encoder``) and an even batch of at most
    ``num_images`` images. ``data.train_size`` is the triplets of an epoch (its steps times
    ``optim.batch_size``); ``data.val_size``, ``data.test_size`` and ``data.fresh`` are not used
    (the image counts are the objective's). Metrics: ``train_active`` is the share (%) of
    triplets whose hinge is still active (loss > 0); ``val_localised`` and ``val_mean_iou``
    score the validation images, ``val_error`` is ``100 - val_localised``.
    """

    name = "colocalization"
    train_rate = "train_active"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.options = colocalization_options(cfg.objective.options)
        d = cfg.data
        if d.task != "colocalization" or d.path is not None:
            raise ConfigError(
                f"data.task: the colocalization objective needs data.task: colocalization, got "
                f"{d.path if d.task is None else d.task!r}"
            )
        if d.normalize:
            raise ConfigError("data.normalize: co-localisation trains on [0, 1] images")
        b = cfg.optim.batch_size
        if isinstance(b, int) and not 2 <= b <= self.options.num_images:
            raise ConfigError(
                f"optim.batch_size: expected 2 <= batch_size <= objective.options.num_images "
                f"({self.options.num_images}) distinct images, got {b!r}"
            )
        self.check_world(1)

    def check_world(self, world_size: int) -> None:
        b = self.cfg.optim.batch_size
        if b % (2 * world_size):
            raise ConfigError(
                f"optim.batch_size {b}: co-localisation pairs the images of each process's share "
                f"of the batch, so the batch must be a multiple of {2 * world_size} "
                f"(2 x {world_size} processes)"
            )

    def build_data(
        self, *, preprocess: dict[str, Any] | None = None, pin_memory: bool = False
    ) -> ColocalizationData:
        return ColocalizationData(self.cfg, self.options)

    def batch_order(
        self, n: int, epoch: int, *, rank: int, world_size: int, start: int
    ) -> BatchOrder:
        b = self.cfg.optim.batch_size
        steps = max(self.cfg.data.train_size // b, 1)
        return DistinctBatches(
            n, b, steps, self.cfg.seed, epoch, rank=rank, world_size=world_size, start=start
        )

    def train_net(self, net: nn.Module) -> nn.Module:
        if not isinstance(net, AttentionEncoder):
            raise ConfigError(
                f"model.name: co-localisation needs a model that crops and embeds "
                f"(st_attention_encoder), got {self.cfg.model.name!r}"
            )
        o = self.options
        return TripletNet(net, o.margin, o.transformer_positive_grad)

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
        b = self.cfg.optim.batch_size
        # the random crops of the whole global batch, from (seed, epoch, step): each rank takes
        # the rows of its own images, so any number of processes draws the same crops
        unit = torch.rand(
            b, 2, generator=generator(self.cfg.seed, "colocalization-crops", epoch, step)
        )
        share = b // world.size
        unit = unit[world.rank * share : (world.rank + 1) * share].to(x.device)
        losses = net(x, unit).float()  # (B / world,)
        return losses.mean(), losses.detach()

    def count(self, out: torch.Tensor, y: torch.Tensor) -> float:
        return float((out > 0).sum())

    def evaluate(self, model: nn.Module, split: Any, settings: EvalSettings) -> dict[str, float]:
        if not isinstance(model, AttentionEncoder):
            raise ConfigError(
                f"model.name: co-localisation scores a model that crops (st_attention_encoder), "
                f"got {type(model).__name__}"
            )
        boxed: BoxSplit = split
        return localization_scores(model, boxed, settings, self.options.iou_threshold)

    def val_fields(self, val: dict[str, float]) -> dict[str, float]:
        return {
            "val_error": val["error"],
            "val_localised": val["localised"],
            "val_mean_iou": val["mean_iou"],
        }

    def test_fields(self, test: dict[str, float]) -> dict[str, float]:
        return {"test_localised": test["localised"], "test_mean_iou": test["mean_iou"]}

    def eval_fields(self, scores: dict[str, float]) -> dict[str, float]:
        return {
            "error": scores["error"],
            "localised": scores["localised"],
            "mean_iou": scores["mean_iou"],
        }

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"train loss {record['train_loss']:.4f} active {record['train_active']:5.1f}%  "
            f"val localised {record['val_localised']:5.1f}% IoU {record['val_mean_iou']:.3f}"
        )
