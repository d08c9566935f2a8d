from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from torchstn.fields import integrate, warp

#: a 2-D registration config that trains in about a second: 16 pairs of MNIST digits 1 and 7
#: padded to 32 x 32, 2 steps of 8 per epoch, 2 epochs, a tiny velocity U-Net, one thread.
TINY_2D = {
    "seed": 0,
    "device": "cpu",
    "objective": {"name": "registration", "options": {"similarity": "mse", "reg_weight": 0.01}},
    "data": {
        "task": "mnist_pairs",
        "options": {"digits": [1, 7]},
        "train_size": 16,
        "val_size": 8,
        "test_size": 8,
    },
    "model": {"name": "reg_unet", "options": {"enc": [4, 4], "dec": [4, 4, 4]}},
    "optim": {"name": "adam", "lr": 0.003, "batch_size": 8},
    "run": {"epochs": 2, "eval_batch_size": 8, "num_threads": 1},
}

#: the 3-D twin: the MNI152 template at 16^3 under random velocities, 4 pairs per epoch.
TINY_3D = {
    "seed": 0,
    "device": "cpu",
    "objective": {
        "name": "registration",
        "options": {"similarity": "lncc", "window": 3, "dice_weight": 0.5},
    },
    "data": {
        "task": "mni152",
        "options": {"size": 16, "max_displacement": 2.0, "chunk": 4},
        "train_size": 4,
        "val_size": 2,
        "test_size": 2,
    },
    "model": {"name": "reg_unet", "options": {"enc": [4, 4], "dec": [4, 4, 4]}},
    "optim": {"name": "adam", "lr": 0.003, "batch_size": 2},
    "run": {"epochs": 2, "eval_batch_size": 2, "num_threads": 1},
}


class ShiftNet(nn.Module):
    """A stand-in registration model: one learnable constant velocity (a translation), its
    displacement integrated; ``forward(moving, fixed) -> (warped, field, params)``."""

    def __init__(self, shift: tuple[float, ...] = (0.0, 0.0)) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.tensor(shift))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor):
        b, n = moving.shape[0], moving.dim() - 2
        v = self.v.view(1, n, *([1] * n)).expand(b, n, *moving.shape[2:])
        u = integrate(v, padding_mode="border")
        return warp(moving, u), u, v


@pytest.fixture
def tiny_2d() -> dict:
    return copy.deepcopy(TINY_2D)


@pytest.fixture
def tiny_3d() -> dict:
    return copy.deepcopy(TINY_3D)


def write_yaml(folder: Path, values: dict, name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(values))
    return path
