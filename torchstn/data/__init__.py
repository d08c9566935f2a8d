"""Data sets: MNIST read offline from the original files, verified against their checksums.

>>> from torchstn import data
>>> images, labels = data.load_mnist("test")
>>> images.shape, labels.dtype
(torch.Size([10000, 28, 28]), torch.int64)
"""

from __future__ import annotations

from .idx import read_idx
from .mnist import load_mnist

__all__ = ["load_mnist", "read_idx"]
