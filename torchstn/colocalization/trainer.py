"""Training one co-localisation model on the images of one class.

Each step draws ``batch_size`` distinct images ``I_n`` of the class, crops them with the
transformer (``a_n = ST(I_n)``), pairs every crop with the next one in the batch (``a_m``, another
image of the same class) and with a random crop ``r_n`` of its own image (the size of ``a_n``, its
centre uniform among the positions where the window lies inside the image), and takes an Adam step
on the triplet hinge loss ``max(0, ||e(a_n) - e(a_m)||^2 - ||e(a_n) - e(r_n)||^2 + margin)``.

Gradient routing (``transformer_positive_grad``): the encoder learns from the whole loss. By default
the transformer learns from the random-crop term only: the positive distance is computed on the
embeddings of the *detached* crops. The loss value is the paper's either way. With the literal
gradient the positive term pulls every crop towards empty background (two blank crops embed
identically, at distance 0, and a blank crop gives the sampler no gradient to leave), and in our
runs the windows fled the digits; with the routing they find them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..data import Sample
from ..models import create_model
from ..models.encoder import AttentionEncoder
from ..train.trainer import TrainingDiverged
from .config import ColocalizationConfig
from .data import class_images
from .loss import triplet_hinge_loss

__all__ = [
    "TrainOutcome",
    "build_colocalization_model",
    "random_crop_params",
    "train_colocalization",
]


@dataclass
class TrainOutcome:
    """What :func:`train_colocalization` returns."""

    model: AttentionEncoder  #: the trained model (on the training device, in eval mode)
    images: Sample  #: the class's images (on the CPU)
    steps: int  #: optimisation steps taken
    train_seconds: float  #: wall-clock time of the optimisation loop
    final_loss: float  #: mean loss of the last (up to) 50 steps; NaN if no step was taken


def random_crop_params(scale: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Attention params ``(B, 3)`` of windows of half-size ``scale`` ``(B,)`` at uniformly random
    centres inside the image (``|t| <= 1 - s``; the centre for ``s >= 1``).

    Example:
        >>> p = random_crop_params(torch.full((4,), 0.25), torch.Generator().manual_seed(0))
        >>> bool((p[:, 1:].abs() <= 0.75).all()), p[:, 0].tolist()
        (True, [0.25, 0.25, 0.25, 0.25])
    """
    room = (1 - scale).clamp_min(0)[:, None]  # (B, 1)
    unit = torch.rand(scale.shape[0], 2, generator=generator, dtype=scale.dtype)
    centres = (unit.to(scale.device) * 2 - 1) * room  # (B, 2)
    return torch.cat((scale[:, None], centres), dim=1)


def build_colocalization_model(
    cfg: ColocalizationConfig, in_shape: Sequence[int], seed: int
) -> AttentionEncoder:
    """The ``st_attention_encoder`` of a config, initialised from ``seed``."""
    torch.manual_seed(seed)
    model = create_model(
        "st_attention_encoder",
        in_shape,
        cfg.embedding_dim,
        scale_range=tuple(cfg.scale_range),
        max_translation=cfg.max_translation,
        **cfg.model_options,
    )
    assert isinstance(model, AttentionEncoder)
    return model


@contextmanager
def _threads(num: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if num is not None:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_colocalization(
    cfg: ColocalizationConfig,
    digit: int,
    seed: int = 0,
    *,
    device: torch.device | str = "cpu",
    max_seconds: float | None = None,
) -> TrainOutcome:
    """Train the co-localisation model on the ``cfg.num_images`` images of class ``digit``.

    Deterministic for a given ``(cfg, digit, seed)`` on the CPU with a fixed thread count (the
    images depend on ``cfg.data_seed`` only, the initialisation and the draws on ``seed``).

    Args:
        cfg: the run's settings.
        digit: the class, 0 to 9.
        seed: initialisation and sampling seed.
        device: where to train.
        max_seconds: stop after this much training time even if ``cfg.steps`` are not done.

    Returns:
        A :class:`TrainOutcome`.

    Raises:
        TrainingDiverged: the loss became NaN or Inf.
    """
    cfg.validate()
    images = class_images(
        digit, cfg.num_images, clutter=cfg.clutter, split=cfg.split, seed=cfg.data_seed
    )
    device = torch.device(device)
    with _threads(cfg.num_threads):
        model = build_colocalization_model(cfg, tuple(images.x.shape[1:]), seed).to(device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(
            [
                {"params": model.transformer.parameters(), "lr": cfg.lr},
                {"params": model.encoder.parameters(), "lr": cfg.lr * cfg.encoder_lr_scale},
            ]
        )
        x = images.x.to(device)
        n, b = len(images), cfg.batch_size
        recent: list[float] = []
        model.train()
        start = time.perf_counter()
        step = 0
        while step < cfg.steps:
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                break
            index = torch.randperm(n, generator=generator)[:b].to(device)
            xb = x[index]  # (B, C, H, W)
            crops, params = model.crop(xb)  # (B, C, 28, 28), (B, 3)
            rand = model.transformer.transform_input(
                xb, random_crop_params(params[:, 0].detach(), generator)
            )
            if cfg.transformer_positive_grad:
                anchor, random = model.embed(torch.cat((crops, rand))).split(b)
                pos_anchor = anchor
            else:
                anchor, pos_anchor, random = model.embed(
                    torch.cat((crops, crops.detach(), rand))
                ).split(b)
            loss = triplet_hinge_loss(
                anchor, pos_anchor.roll(1, 0), random, cfg.margin, positive_anchor=pos_anchor
            )
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(
                    f"digit {digit}, seed {seed}: loss is {loss.item()} at step {step}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            recent = [*recent[-49:], loss.item()]
            step += 1
        seconds = time.perf_counter() - start
    model.eval()
    final = sum(recent) / len(recent) if recent else math.nan
    return TrainOutcome(model, images, step, seconds, final)
