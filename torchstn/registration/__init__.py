"""Learned image registration (VoxelMorph-style) trained through ``torchstn train``.

A model reads a moving and a fixed image and predicts the field that warps the first onto the
second (``reg_unet``: a U-Net predicting a displacement or a velocity field; ``reg_affine``: a
matrix). A run is a ``torchstn train`` run whose config says ``objective.name: registration``
(see ``configs/registration/``): the trainer's loop, checkpoints, resume, time budget and
torchrun, with this package's objective (:class:`RegistrationObjective`): the loss
(:func:`registration_loss`: similarity + lambda * regulariser + Dice weight * soft Dice), the
pairs (:class:`RegistrationData`: MNIST digits of one class, the MNI152 template under random
diffeomorphisms, or the user's NIfTI scans) and the scores (:func:`registration_scores`: Dice
of the label maps before and after, similarity, folded share, the Jacobian's spread).

>>> from torchstn.registration import registration_options, mnist_pairs, MnistPairsOptions
>>> pairs = mnist_pairs("val", 2, seed=0, options=MnistPairsOptions(digits=[5]))
>>> tuple(pairs.moving.shape), registration_options({"similarity": "ncc"}).similarity
((2, 1, 32, 32), 'ncc')
"""

from __future__ import annotations

from .config import (
    MODES,
    REGULARISERS,
    SIMILARITIES,
    Mni152Options,
    MnistPairsOptions,
    RegistrationOptions,
    registration_options,
)
from .data import TASKS, PairSplit, RegistrationData, pack, read_pair_folder, unpack
from .evaluate import mean_dice, register, registration_scores
from .loss import LossTerms, one_hot, registration_loss, regularised_field, similarity
from .objective import RegistrationObjective
from .tasks import (
    MNI152_FILES,
    Pairs,
    labels_of_probabilities,
    mni152_folder,
    mni152_pairs,
    mni152_template,
    mnist_atlases,
    mnist_pairs,
)

__all__ = [
    "MNI152_FILES",
    "MODES",
    "REGULARISERS",
    "SIMILARITIES",
    "TASKS",
    "LossTerms",
    "Mni152Options",
    "MnistPairsOptions",
    "PairSplit",
    "Pairs",
    "RegistrationData",
    "RegistrationObjective",
    "RegistrationOptions",
    "labels_of_probabilities",
    "mean_dice",
    "mni152_folder",
    "mni152_pairs",
    "mni152_template",
    "mnist_atlases",
    "mnist_pairs",
    "one_hot",
    "pack",
    "read_pair_folder",
    "register",
    "registration_loss",
    "registration_options",
    "registration_scores",
    "regularised_field",
    "similarity",
    "unpack",
]
