"""Co-localisation (Jaderberg et al., 2015): find the common object in images of one class.

An attention spatial transformer crops 28 x 28 windows and a small CNN embeds them; a triplet
hinge loss asks the crops of two images of one class to embed closer than a crop and a random crop
of its image. No box is used for training; a digit counts as localised when the IoU of its crop
with its box exceeds 0.5.

>>> from torchstn.colocalization import crop_boxes, box_iou
>>> iou = box_iou(crop_boxes(torch.tensor([[1 / 3, 0.0, 0.0]]), 84), torch.tensor([28.0, 28, 56, 56]))
>>> round(float(iou), 4)
1.0
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest)

from .boxes import box_iou, crop_boxes
from .config import ColocalizationConfig, colocalization_config, load_colocalization_config
from .data import class_images
from .driver import COLUMNS, run_colocalization, run_colocalization_table
from .evaluate import evaluate_localization, predict_boxes
from .loss import triplet_hinge_loss
from .plot import save_boxes_png
from .trainer import TrainOutcome, random_crop_params, train_colocalization

__all__ = [
    "COLUMNS",
    "ColocalizationConfig",
    "TrainOutcome",
    "box_iou",
    "class_images",
    "colocalization_config",
    "crop_boxes",
    "evaluate_localization",
    "load_colocalization_config",
    "predict_boxes",
    "random_crop_params",
    "run_colocalization",
    "run_colocalization_table",
    "save_boxes_png",
    "train_colocalization",
    "triplet_hinge_loss",
]
