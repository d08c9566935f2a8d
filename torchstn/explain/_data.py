"""The real MNIST digit the guide's sections 3 and 4 draw on."""

from __future__ import annotations

import torch

from ..data import load_mnist

__all__ = ["DIGIT_INDEX", "test_digit"]

#: index of the digit in the MNIST test file (a 2: asymmetric, so every warp shows).
DIGIT_INDEX = 1


def test_digit(
    index: int = DIGIT_INDEX, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, int]:
    """MNIST test image ``index`` as a ``(28, 28)`` tensor in ``[0, 1]`` and its label."""
    images, labels = load_mnist("test")
    return images[index].to(dtype) / 255.0, int(labels[index])
