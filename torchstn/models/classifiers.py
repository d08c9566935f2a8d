"""Plain classifiers of the paper's tables: FCN, CNN, and a pooling-heavy CNN baseline."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .fastconv import InputGradConv2d
from .registry import register_model

__all__ = ["CNN", "FCN", "PoolCNN"]


class FCN(nn.Sequential):
    """Fully connected net: ``flatten -> (Linear -> ReLU) x len(hidden) -> Linear``.

    The paper's FCN has two hidden layers (three weight layers).

    Example:
        >>> FCN((1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128, 128)
    ) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(torch.Size(in_shape).numel())
        for units in hidden:
            layers += [nn.Linear(width, int(units)), nn.ReLU(inplace=True)]
            width = int(units)
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """The paper's CNN: ``conv k1 -> max-pool 2 -> conv k2 -> max-pool 2 -> linear``.

    Three weight layers; 'same' padding, so the classifier sees ``(H / 4) x (W / 4)`` maps.

    Args:
        channels: filters of the two conv layers.
        kernels: their kernel sizes (the paper: 9 and 7).
        hidden: units of a fully connected hidden layer before the output (0: none, the
            paper's three weight layers). A linear read-out of the conv features cannot add two
            digits seen at unrelated places (MNIST addition): there the CNN needs one.

    Example:
        >>> CNN((1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        kernels: Sequence[int] = (9, 7),
        hidden: int = 0,
    ) -> None:
        c = int(in_shape[0])
        c1, c2 = (int(v) for v in channels)
        k1, k2 = (int(v) for v in kernels)
        # pooling before the ReLU: the same numbers (max commutes with a monotonic function) for
        # a quarter of the ReLU's work; InputGradConv2d: a cheaper input gradient with one input
        # channel (behind a transformer, see torchstn.models.fastconv)
        features = nn.Sequential(
            InputGradConv2d(c, c1, k1, padding=k1 // 2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, k2, padding=k2 // 2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = features(torch.zeros(1, *in_shape)).shape[1]
        head: list[nn.Module] = [nn.Linear(width, num_classes)]
        if hidden:  # a hidden layer: the classifier can combine what the two convs found
            head = [
                nn.Linear(width, int(hidden)),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, num_classes),
            ]
        super().__init__(*features, *head)


class PoolCNN(nn.Sequential):
    """A pooling-heavy CNN: ``(conv 3x3 -> ReLU -> max-pool 2) x stages -> global max-pool ->
    linear``.

    The classic route to invariance through max-pooling, as a baseline beside the spatial
    transformer (the paper argues pooling gives only small, local invariance).

    Example:
        >>> PoolCNN((1, 60, 60), 10)(torch.zeros(2, 1, 60, 60)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, in_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64, 96, 128)
    ) -> None:
        layers: list[nn.Module] = []
        width = int(in_shape[0])
        for out in channels:
            layers += [
                nn.Conv2d(width, int(out), 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            width = int(out)
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]
        super().__init__(*layers)


@register_model("fcn")
def fcn(in_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128, 128)) -> nn.Module:
    return FCN(in_shape, num_classes, hidden)


@register_model("cnn")
def cnn(
    in_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    kernels: Sequence[int] = (9, 7),
    hidden: int = 0,
) -> nn.Module:
    return CNN(in_shape, num_classes, channels, kernels, hidden)


@register_model("pool_cnn")
def pool_cnn(
    in_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64, 96, 128)
) -> nn.Module:
    return PoolCNN(in_shape, num_classes, channels)
