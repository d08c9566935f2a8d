"""torchstn: Spatial Transformer Networks for PyTorch.

>>> import torch, torchstn
>>> st = torchstn.SpatialTransformer(in_shape=(1, 60, 60), transform="affine", out_size=(30, 30))
>>> st(torch.rand(2, 1, 60, 60)).shape
torch.Size([2, 1, 30, 30])
"""

from __future__ import annotations

from . import functional, transforms
from ._checks import set_finite_checks
from ._version import __version__
from .composite import (
    ParallelOutput,
    ParallelTransformers,
    SequentialOutput,
    SequentialTransformers,
)
from .errors import (
    ConfigError,
    DataError,
    InvalidInputError,
    NonFiniteError,
    TorchSTNError,
    UnknownNameError,
)
from .inference import load
from .localization import ConvLocalization, FCLocalization, default_localization
from .module import (
    RecordedParams,
    SpatialTransformer,
    TransformerOutput,
    identity_penalty,
    recording_params,
)
from .optim import localization_parameters, param_groups
from .transforms.warping import output_frame, warp

__all__ = [
    "ConfigError",
    "ConvLocalization",
    "DataError",
    "FCLocalization",
    "InvalidInputError",
    "NonFiniteError",
    "ParallelOutput",
    "ParallelTransformers",
    "RecordedParams",
    "SequentialOutput",
    "SequentialTransformers",
    "SpatialTransformer",
    "TorchSTNError",
    "TransformerOutput",
    "UnknownNameError",
    "__version__",
    "default_localization",
    "functional",
    "identity_penalty",
    "load",
    "localization_parameters",
    "output_frame",
    "param_groups",
    "recording_params",
    "set_finite_checks",
    "transforms",
    "warp",
]
