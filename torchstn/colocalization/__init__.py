"""Co-localisation (Jaderberg et al., 2015): find the common object in images of one class.

An attention spatial transformer crops 28 x 28 windows and a small CNN embeds them; a triplet
hinge loss asks the crops of two images of one class to embed closer than a crop and a random crop
of its image. No box is used for training; a digit counts as localised when the IoU of its crop
with its box exceeds 0.5.

A run is a ``torchstn train`` run whose config says ``objective.name: colocalization`` (see
``configs/colocalization/``): the trainer's loop, checkpoints, resume, metrics, time budget and
torchrun, with this package's objective (:class:`ColocalizationObjective`): the triplet loss
(:func:`triplet_hinge_loss`, :class:`TripletNet`), the data of one class
(:class:`ColocalizationData`) and the localisation score (:func:`localization_scores`).
``torchstn reproduce colocalization`` runs the paper's table through it.

>>> from torchstn.colocalization import crop_boxes, box_iou
>>> iou = box_iou(crop_boxes(torch.tensor([[1 / 3, 0.0, 0.0]]), 84), torch.tensor([28.0, 28, 56, 56]))
>>> round(float(iou), 4)
1.0
"""

from __future__ import annotations

import torch  # noqa: F401  (used by the doctest)

from .boxes import box_iou, crop_boxes
from .config import ColocalizationOptions, colocalization_options
from .data import BoxSplit, ColocalizationData, DistinctBatches, class_images
from .evaluate import evaluate_localization, localization_scores, predict_boxes
from .loss import triplet_hinge_loss
from .objective import ColocalizationObjective, TripletNet, random_crop_params

__all__ = [
    "BoxSplit",
    "ColocalizationData",
    "ColocalizationObjective",
    "ColocalizationOptions",
    "DistinctBatches",
    "TripletNet",
    "box_iou",
    "class_images",
    "colocalization_options",
    "crop_boxes",
    "evaluate_localization",
    "localization_scores",
    "predict_boxes",
    "random_crop_params",
    "triplet_hinge_loss",
]
