"""torchstn: Spatial Transformer Networks for PyTorch."""

from __future__ import annotations

from . import functional, transforms
from .errors import ConfigError, DataError, InvalidInputError, TorchSTNError, UnknownNameError

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "InvalidInputError",
    "TorchSTNError",
    "UnknownNameError",
    "__version__",
    "functional",
    "transforms",
]
