"""Models of the paper's experiments, in a registry (``model_names()``, ``create_model``).

>>> from torchstn.models import create_model, model_names
>>> "st_cnn_affine" in model_names()
True
>>> create_model("st_cnn_affine", (1, 60, 60), 10, pool=2)(torch.zeros(2, 1, 60, 60)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest)

from . import encoder  # noqa: F401  (registers st_attention_encoder)
from .classifiers import CNN, FCN, PoolCNN
from .registration import PairEncoder, Registration, RegistrationNet
from .registry import count_params, create_model, model_names, register_model
from .st_models import STClassifier
from .unet import FieldUNet
from .volumes import CNN3D

__all__ = [
    "CNN",
    "CNN3D",
    "FCN",
    "FieldUNet",
    "PairEncoder",
    "PoolCNN",
    "Registration",
    "RegistrationNet",
    "STClassifier",
    "count_params",
    "create_model",
    "model_names",
    "register_model",
]
