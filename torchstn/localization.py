"""Default localisation networks (the ``f_loc`` of the paper), without their final layer.

Each maps ``(B, C, H, W)`` images (or ``(B, C, D, H, W)`` volumes, with 3-D convolutions and
pooling) to ``(B, F)`` features; :class:`torchstn.SpatialTransformer`
appends the final linear layer to the transform's parameters, initialised to the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_spatial_size
from .errors import InvalidInputError

__all__ = ["ConvLocalization", "FCLocalization", "default_localization"]

#: images at least this many pixels on their shorter side get the convolutional default.
CONV_MIN_SIZE = 20


class FCLocalization(nn.Sequential):
    """Fully connected localisation net: flatten, then ``Linear + ReLU`` per hidden layer.

    The paper's ST-FCN uses three layers of 32 units (the default).

    Args:
        in_shape: ``(C, H, W)`` of the input, or ``(C, D, H, W)``.
        hidden: units of each hidden layer.

    Example:
        >>> FCLocalization((1, 8, 8))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 32])
    """

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int] = (32, 32, 32)) -> None:
        if not hidden:
            raise InvalidInputError("hidden: expected at least one layer")
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.Size(in_shape).numel())
        for units in hidden:
            layers += [nn.Linear(width, int(units)), nn.ReLU(inplace=True)]
            width = int(units)
        super().__init__(*layers)
        self.out_features = width


class ConvLocalization(nn.Sequential):
    """Convolutional localisation net of the paper's ST-CNN.

    Max-pool the input by ``downsample``, then ``conv 5x5 -> max-pool 2 -> conv 5x5 -> ReLU`` with
    ``channels`` filters, then a fully connected layer of ``hidden`` units with ReLU. For volumes
    (``in_shape`` of four entries) the same with 5x5x5 convolutions and 3-D pooling.

    Args:
        in_shape: ``(C, H, W)`` of the input, or ``(C, D, H, W)``.
        channels: filters of the two conv layers (the paper: 20, 20).
        hidden: units of the fully connected layer (the paper: 20).
        downsample: pooling factor applied to the input first (the paper: 2).

    Example:
        >>> ConvLocalization((1, 60, 60))(torch.zeros(2, 1, 60, 60)).shape
        torch.Size([2, 20])
        >>> ConvLocalization((1, 32, 32, 32))(torch.zeros(2, 1, 32, 32, 32)).shape
        torch.Size([2, 20])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (20, 20),
        hidden: int = 20,
        downsample: int = 2,
        kernel_size: int = 5,
    ) -> None:
        c = int(in_shape[0])
        dims = len(in_shape) - 1
        check_spatial_size(tuple(in_shape[1:]), "in_shape", dims)
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        c1, c2 = (int(v) for v in channels)
        pad = kernel_size // 2
        layers: list[nn.Module] = []
        if downsample > 1:
            layers.append(pool(downsample, ceil_mode=True))
        layers += [
            conv(c, c1, kernel_size, padding=pad),
            pool(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            conv(c1, c2, kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        ]
        with torch.no_grad():
            width = nn.Sequential(*layers)(torch.zeros(1, *in_shape)).shape[1]
        layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
        super().__init__(*layers)
        self.out_features = hidden


def default_localization(in_shape: Sequence[int]) -> nn.Module:
    """Convolutional for images (volumes) of ``CONV_MIN_SIZE`` px and up on every side, fully
    connected otherwise."""
    if min(int(n) for n in in_shape[1:]) >= CONV_MIN_SIZE:
        return ConvLocalization(in_shape)
    return FCLocalization(in_shape)
