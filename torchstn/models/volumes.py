"""Models of volumes: a plain 3-D CNN and the ST-CNN with a 3-D transformer in front of it.

The 3-D counterparts of Table 1's CNN and ST-CNN (:mod:`torchstn.models.classifiers`,
:mod:`torchstn.models.st_models`), sized for ``32^3`` volumes on a CPU. The configs under
``configs/volumes`` classify at half resolution: the plain CNN average-pools its input
(``pool=2``), the ST-CNN's transformer samples a ``16^3`` output (``out_size=16``), so both
classifiers see the same number of voxels. The 3-D kernels are smaller than the paper's 2-D ones
(3 and 3 rather than 9 and 7: a 9^3 kernel costs 27 times a 9^2 one per voxel and channel pair),
and the localisation net reads the volume max-pooled by 4 (``loc_downsample``): on a 2-core CPU
the ST-CNN trains at about 950 volumes/s against 1,300 for the CNN (batches of 64, 32^3), where
the input gradient of a 5^3 first layer and a localisation net at half resolution made it 260.

>>> from torchstn.models import create_model
>>> model = create_model("st_cnn3d_affine", (1, 16, 16, 16), 10)
>>> model(torch.zeros(2, 1, 16, 16, 16)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_spatial_size
from ..errors import InvalidInputError
from ..localization import ConvLocalization
from ..module import SpatialTransformer
from .registry import register_model
from .st_models import STClassifier

__all__ = ["CNN3D", "FAMILIES_3D"]

#: the 3-D families offered by ``st_cnn3d_<short>`` models.
FAMILIES_3D = {
    "affine": "affine3d",
    "rigid": "rigid3d",
    "similarity": "similarity3d",
    "attention": "attention3d",
    "projective": "projective3d",
    "tps": "tps3d",
}


def _volume(in_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """``in_shape`` checked as ``(C, D, H, W)``."""
    if len(in_shape) != 4:
        raise InvalidInputError(
            f"in_shape: a volume model takes (C, D, H, W), got {tuple(in_shape)!r} (images take "
            "the 2-D models: cnn, st_cnn_affine...)"
        )
    c = int(in_shape[0])
    d, h, w = check_spatial_size(tuple(in_shape[1:]), "in_shape", 3)
    return c, d, h, w


class CNN3D(nn.Module):
    """``[avg-pool] -> conv -> max-pool 2 -> ReLU -> conv -> max-pool 2 -> ReLU -> linear``.

    Args:
        in_shape: ``(C, D, H, W)`` of the input.
        num_classes: outputs.
        channels: filters of the two conv layers.
        kernels: their kernel sizes ('same' padding).
        pool: average-pooling factor applied to the input first (1: none).

    Example:
        >>> CNN3D((1, 16, 16, 16), 10)(torch.zeros(2, 1, 16, 16, 16)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        kernels: Sequence[int] = (3, 3),
        pool: int = 1,
    ) -> None:
        super().__init__()
        c, *_ = _volume(in_shape)
        c1, c2 = (int(v) for v in channels)
        k1, k2 = (int(v) for v in kernels)
        self.pool = int(pool)
        # max-pooling before the ReLU: the same numbers for an eighth of the ReLU's work
        self.features = nn.Sequential(
            nn.Conv3d(c, c1, k1, padding=k1 // 2),
            nn.MaxPool3d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv3d(c1, c2, k2, padding=k2 // 2),
            nn.MaxPool3d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = self.features(self._pooled(torch.zeros(1, *in_shape))).shape[1]
        self.classifier = nn.Linear(width, num_classes)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, self.pool, ceil_mode=True) if self.pool > 1 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self._pooled(x)))

    def extra_repr(self) -> str:
        return f"pool={self.pool}"


@register_model("cnn3d")
def cnn3d(
    in_shape: Sequence[int],
    num_classes: int,
    channels: Sequence[int] = (16, 32),
    kernels: Sequence[int] = (3, 3),
    pool: int = 1,
) -> nn.Module:
    return CNN3D(in_shape, num_classes, channels, kernels, pool)


def _make_st_cnn3d(short: str, family: str) -> None:
    @register_model(f"st_cnn3d_{short}")
    def build(
        in_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        kernels: Sequence[int] = (3, 3),
        loc_channels: Sequence[int] = (16, 16),
        loc_hidden: int = 32,
        loc_downsample: int = 4,
        loc_kernel: int = 3,
        pool: int = 1,
        out_size: Sequence[int] | int | None = None,
        transform_options: Mapping[str, Any] | None = None,
        penalty_weight: float = 0.0,
    ) -> nn.Module:
        c, *_ = _volume(in_shape)
        loc = ConvLocalization(in_shape, loc_channels, loc_hidden, loc_downsample, loc_kernel)
        st = SpatialTransformer(
            in_shape,
            family,
            out_size=out_size,
            localization=loc,
            transform_options=transform_options,
            penalty_weight=penalty_weight,
        )
        pool = int(pool)
        pooled = (c, *(-(-n // pool) for n in st.out_size))
        return STClassifier(st, CNN3D(pooled, num_classes, channels, kernels), pool)

    build.__doc__ = (
        f"``st_cnn3d_{short}``: a ``{family}`` transformer (3-D convolutional localisation net) "
        "sampling ``out_size`` voxels (default: the input's), average-pooled by ``pool``, then "
        ":class:`CNN3D`."
    )


for _short, _family in FAMILIES_3D.items():
    _make_st_cnn3d(_short, _family)
