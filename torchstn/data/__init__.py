"""Data sets: MNIST read offline from the original files, the paper's task generators (distorted,
cluttered, addition, co-localisation), and user data (``.npz`` files, image folders).

>>> from torchstn import data
>>> task = data.get_task("rts")
>>> task.in_shape, task.num_classes
((1, 42, 42), 10)
>>> s = task.generate("val", num=8, seed=0)
>>> s.x.shape, s.y.dtype, s.boxes.shape
(torch.Size([8, 1, 42, 42]), torch.int64, torch.Size([8, 4]))
"""

from __future__ import annotations

from .arrays import ArraySet, check_labels, read_arrays
from .files import (
    ImageBatch,
    ImageEntry,
    ImageFiles,
    collate_images,
    read_csv_manifest,
    scan_class_folder,
)
from .folder import load_image_folder
from .idx import read_idx
from .mnist import load_mnist
from .npz import load_npz, save_npz
from .sample import Sample
from .seeding import epoch_seed
from .tasks import VALIDATION_SIZE, Task
from .tasks import get as get_task
from .tasks import names as task_names

__all__ = [
    "VALIDATION_SIZE",
    "ArraySet",
    "ImageBatch",
    "ImageEntry",
    "ImageFiles",
    "Sample",
    "Task",
    "check_labels",
    "collate_images",
    "epoch_seed",
    "get_task",
    "load_image_folder",
    "load_mnist",
    "load_npz",
    "read_arrays",
    "read_csv_manifest",
    "read_idx",
    "save_npz",
    "scan_class_folder",
    "task_names",
]
