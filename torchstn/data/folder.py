"""User data in memory: a folder of images with one sub-folder per class, read with Pillow.

(``torchstn train`` streams such a folder instead: :mod:`torchstn.data.files`.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._checks import check_size
from ..errors import DataError
from ..images import IMAGE_SUFFIXES, _open_image, _shrunk_size, max_image_pixels
from .sample import Sample, full_boxes

__all__ = ["load_image_folder"]

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P_GRAY"}


def load_image_folder(
    path: str | os.PathLike[str],
    size: int | tuple[int, int] | None = None,
    grayscale: bool | None = None,
) -> tuple[Sample, list[str]]:
    """Read ``path/CLASS/IMAGE`` files into a :class:`Sample`.

    Images are decoded one at a time; a file declaring more than
    :func:`torchstn.images.max_image_pixels` pixels is refused from its header, and with ``size``
    a much larger file is shrunk while decoded (as :mod:`torchstn.images` does).

    Args:
        path: the root folder; each sub-folder is a class, labelled by its index in the sorted
            list of sub-folder names. Files with other endings than :data:`torchstn.images.IMAGE_SUFFIXES` and
            hidden files are skipped.
        size: resize every image to ``(H, W)`` (or ``size x size``) with bilinear filtering;
            ``None`` requires all images to share one size.
        grayscale: ``True`` gives 1 channel, ``False`` 3 (RGB); ``None`` picks 1 if every image is
            grayscale, else 3.

    Returns:
        The sample (``x`` ``(N, C, H, W)`` float32 in ``[0, 1]``, ``y`` ``(N,)`` int64, ``boxes``
        the whole image, no params), in class order then file-name order, and the class names.

    Raises:
        DataError: the folder is missing or has no class with images, an image cannot be read
            or is too large, or sizes differ without ``size``; the message names the file.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    target = None if size is None else check_size(size, "size")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append((f, label))
    if not files:
        raise DataError(
            f"{root}: no images found (expected {root}/CLASS_NAME/IMAGE with one of "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    limit = max_image_pixels()
    modes = {}
    for f, _ in files:  # headers only: the modes pick the channels, the sizes are checked
        with _open_image(f, limit) as img:
            modes[f] = img.mode
    if grayscale is None:
        grayscale = all(m in _GRAY_MODES for m in modes.values())
    mode = "L" if grayscale else "RGB"
    arrays = []
    first = None
    for f, _ in files:  # one image decoded at a time, shrunk while read when much larger
        with _open_image(f, limit) as img:
            w, h = img.size
            shrunk = None if target is None else _shrunk_size(h, w, target)
            if shrunk is not None:
                img.draft(None, (shrunk[1], shrunk[0]))
            img.load()
            img = img.convert(mode)
            if shrunk is not None and img.size != (shrunk[1], shrunk[0]):
                img = img.resize((shrunk[1], shrunk[0]), Image.Resampling.BOX)
        if target is not None:
            img = img.resize((target[1], target[0]), Image.Resampling.BILINEAR)
        elif first is None:
            first = (f, img.size)
        elif img.size != first[1]:
            raise DataError(
                f"{f}: size {img.size[0]}x{img.size[1]} differs from {first[0]} "
                f"({first[1][0]}x{first[1][1]}); pass size=(H, W) to resize"
            )
        arr = np.asarray(img, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    x = torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)
    y = torch.tensor([label for _, label in files], dtype=torch.int64)
    return Sample(x, y, full_boxes(len(files), x.shape[2], x.shape[3])), classes
