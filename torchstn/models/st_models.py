"""Spatial transformer networks of the paper: a transformer in front of a classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..composite import ParallelTransformers
from ..localization import ConvLocalization, FCLocalization
from ..module import SpatialTransformer
from .classifiers import CNN, FCN
from .registry import register_model

__all__ = ["STClassifier"]

#: transform families offered by the ST models, with their short names in model names.
FAMILIES = {"affine": "affine", "projective": "projective", "tps": "tps"}


class STClassifier(nn.Module):
    """``classifier(avg_pool(transformer(x)))``: the ST-FCN / ST-CNN layout of the paper.

    Args:
        transformer: a :class:`SpatialTransformer` or :class:`ParallelTransformers`.
        classifier: takes the (pooled) transformer output.
        pool: average-pooling factor after the transformer (the paper halves the resolution for
            the RTS and cluttered experiments); 1 for none.
    """

    def __init__(self, transformer: nn.Module, classifier: nn.Module, pool: int = 1) -> None:
        super().__init__()
        self.transformer = transformer
        self.classifier = classifier
        self.pool = int(pool)

    def transformed(self, x: torch.Tensor) -> torch.Tensor:
        """The (pooled) input of the classifier, ``(B, C', H', W')`` (``(B, C', D', H', W')``
        for volumes)."""
        y = self.transformer(x)
        if self.pool <= 1:
            return y
        if y.dim() == 5:
            return F.avg_pool3d(y, self.pool, ceil_mode=True)
        return F.avg_pool2d(y, self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transformed(x))

    def extra_repr(self) -> str:
        return f"pool={self.pool}"


def _st(
    in_shape: Sequence[int],
    family: str,
    localization: nn.Module,
    transform_options: Mapping[str, Any] | None,
    penalty_weight: float,
) -> SpatialTransformer:
    return SpatialTransformer(
        in_shape,
        family,
        localization=localization,
        transform_options=transform_options,
        penalty_weight=penalty_weight,
    )


def _pooled_shape(in_shape: Sequence[int], channels: int, pool: int) -> tuple[int, int, int]:
    return (
        channels,
        -(-int(in_shape[1]) // pool) if pool > 1 else int(in_shape[1]),
        -(-int(in_shape[2]) // pool) if pool > 1 else int(in_shape[2]),
    )


def _make_st_fcn(family: str) -> None:
    @register_model(f"st_fcn_{family}")
    def build(
        in_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (128, 128),
        loc_hidden: Sequence[int] = (32, 32, 32),
        pool: int = 1,
        transform_options: Mapping[str, Any] | None = None,
        penalty_weight: float = 0.0,
    ) -> nn.Module:
        st = _st(
            in_shape,
            family,
            FCLocalization(in_shape, loc_hidden),
            transform_options,
            penalty_weight,
        )
        pool = int(pool)
        fcn = FCN(_pooled_shape(in_shape, int(in_shape[0]), pool), num_classes, hidden)
        return STClassifier(st, fcn, pool)


def _make_st_cnn(family: str) -> None:
    @register_model(f"st_cnn_{family}")
    def build(
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        kernels: Sequence[int] = (9, 7),
        loc_channels: Sequence[int] = (20, 20),
        loc_hidden: int = 20,
        loc_downsample: int = 2,
        pool: int = 1,
        transform_options: Mapping[str, Any] | None = None,
        penalty_weight: float = 0.0,
    ) -> nn.Module:
        loc = ConvLocalization(in_shape, loc_channels, loc_hidden, loc_downsample)
        st = _st(in_shape, family, loc, transform_options, penalty_weight)
        pool = int(pool)
        cnn = CNN(_pooled_shape(in_shape, int(in_shape[0]), pool), num_classes, channels, kernels)
        return STClassifier(st, cnn, pool)


def _make_st2_fcn(family: str) -> None:
    @register_model(f"st2_fcn_{family}")
    def build(
        in_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (128, 128),
        loc_hidden: Sequence[int] = (32, 32, 32),
        heads: int = 2,
        transform_options: Mapping[str, Any] | None = None,
        penalty_weight: float = 0.0,
    ) -> nn.Module:
        sts = [
            _st(
                in_shape,
                family,
                FCLocalization(in_shape, loc_hidden),
                transform_options,
                penalty_weight,
            )
            for _ in range(int(heads))
        ]
        c = int(in_shape[0]) * int(heads)
        fcn = FCN((c, int(in_shape[1]), int(in_shape[2])), num_classes, hidden)
        return STClassifier(ParallelTransformers(sts, "concat"), fcn, 1)


for _family in FAMILIES:
    _make_st_fcn(_family)
    _make_st_cnn(_family)
    _make_st2_fcn(_family)
