"""User images streamed from disk, decoded by DataLoader workers as uint8 model inputs.

:class:`ImageFiles` reads the :class:`ImageEntry` list of a class folder or CSV manifest
(:func:`scan_class_folder`, :func:`read_csv_manifest`, from :mod:`torchstn.data.listing`) with
:func:`torchstn.images.read_image_uint8` (any format and mode, fitted to the model's size) and
:func:`collate_images` batches the items, setting the unreadable ones aside with their one-line
messages: a corrupt file costs a message, not the run.

Convention: a box is ``(x0, y0, x1, y1)`` in pixel edges, ``(0, 0, W, H)`` being a whole
``H x W`` image; entries give it in the file's pixels, :class:`ImageFiles` in model-input pixels
(scaled and shifted as the image was, see :class:`torchstn.images.Fit`).

Example:
    >>> from PIL import Image
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "wide.png"
    >>> Image.fromarray(np.full((6, 12), 255, np.uint8)).save(path)
    >>> entries = [ImageEntry(path, 1), ImageEntry(path.with_name("gone.png"), 0)]
    >>> files = ImageFiles(entries, channels=1, size=(12, 12))
    >>> batch = collate_images([files[0], files[1]])
    >>> batch.x.shape, batch.x.dtype, batch.y.tolist(), batch.boxes[0].tolist()  # 3 rows of pad
    (torch.Size([1, 1, 12, 12]), torch.uint8, [1], [0.0, 3.0, 12.0, 9.0])
    >>> batch.bad[0].endswith("gone.png: no such file")
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_choice, check_size
from ..errors import DataError, InvalidInputError
from ..images import FITS, Fit, max_image_pixels, read_image_uint8
from .listing import ImageEntry, read_csv_manifest, scan_class_folder

__all__ = [
    "ImageBatch",
    "ImageEntry",
    "ImageFiles",
    "collate_images",
    "read_csv_manifest",
    "scan_class_folder",
]


class _Unreadable(str):
    """The one-line message of an unreadable image; ``shape`` ``(C, H, W)`` lets
    :func:`collate_images` shape an all-unreadable batch."""

    shape: tuple[int, int, int]


class ImageFiles(Dataset):
    """Image files read on demand as uint8 model inputs, with labels and boxes.

    Paths, labels and boxes are stored as plain strings and NumPy arrays, so that worker
    processes receive the data set quickly; :attr:`entries` rebuilds the entries when asked.

    Args:
        entries: the images.
        channels: 1 (luma) or 3 (RGB).
        size: the model's ``(H, W)``.
        fit: ``"pad"`` or ``"stretch"`` (see :mod:`torchstn.images`).
        max_pixels: the most pixels a file may declare (larger ones are unreadable items);
            default :func:`torchstn.images.max_image_pixels`, read here, so that a bad
            ``TORCHSTN_MAX_IMAGE_PIXELS`` fails at once and every worker uses the same limit.

    An item is ``(x, label, index, box, error)``: ``x`` ``(C, H, W)`` uint8, ``box`` ``(4,)``
    float32 in model-input pixels (the entry's box, or the image's region inside any padding) and
    ``error`` ``None``; for an unreadable file ``x`` is ``None``, ``box`` zeros and ``error`` the
    one-line message naming the file (no exception).
    """

    def __init__(
        self,
        entries: Sequence[ImageEntry],
        channels: int,
        size: tuple[int, int],
        fit: str = "pad",
        *,
        max_pixels: int | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise InvalidInputError(f"channels: images need 1 or 3 channels, got {channels}")
        self.max_pixels = max_image_pixels() if max_pixels is None else int(max_pixels)
        self.channels = int(channels)
        self.size = check_size(size, "size")
        self.fit = check_choice(fit, "fit", FITS)
        self._entries: tuple[ImageEntry, ...] | None = tuple(entries)
        self._paths = [str(e.path) for e in self._entries]
        self._labels = np.array([int(e.label) for e in self._entries], dtype=np.int64)
        self._boxes = np.full((len(self._paths), 4), np.nan)  # NaN: no box
        for i, e in enumerate(self._entries):
            if e.box is not None:
                self._boxes[i] = e.box

    @property
    def entries(self) -> tuple[ImageEntry, ...]:
        """The entries, as given (rebuilt in worker processes)."""
        if self._entries is None:
            self._entries = tuple(
                ImageEntry(Path(p), int(label), None if np.isnan(b[0]) else tuple(b.tolist()))
                for p, label, b in zip(self._paths, self._labels, self._boxes)
            )
        return self._entries

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_entries": None}

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(
        self, index: int
    ) -> tuple[torch.Tensor | None, int, int, torch.Tensor, str | None]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        i %= len(self)
        label = int(self._labels[i])
        try:
            x, fit = read_image_uint8(
                self._paths[i], self.channels, self.size, self.fit, max_pixels=self.max_pixels
            )
        except DataError as err:
            message = _Unreadable(str(err))
            message.shape = (self.channels, *self.size)
            return None, label, i, torch.zeros(4), message
        return x, label, i, _box_to_input(self._boxes[i], fit), None

    def __repr__(self) -> str:
        c, (h, w) = self.channels, self.size
        return f"ImageFiles({len(self)} images, channels={c}, size=({h}, {w}), fit={self.fit!r})"


def _box_to_input(box: np.ndarray, fit: Fit) -> torch.Tensor:
    """A file-pixel box (NaN: the whole file) in model-input pixels ``(4,)`` float32."""
    (h, w), (rh, rw), (left, top) = fit.source_size, fit.resized, fit.padding[:2]
    x0, y0, x1, y1 = (0.0, 0.0, w, h) if math.isnan(box[0]) else box.tolist()
    sx, sy = rw / w, rh / h
    return torch.tensor([x0 * sx + left, y0 * sy + top, x1 * sx + left, y1 * sy + top])


@dataclass
class ImageBatch:
    """A batch of :class:`ImageFiles` items (see :func:`collate_images`).

    Attributes:
        x: ``(B, C, H, W)`` uint8 images.
        y: ``(B,)`` int64 labels.
        index: ``(B,)`` int64 indices in the data set.
        boxes: ``(B, 4)`` float32 boxes in model-input pixels.
        bad: one-line messages of the batch's unreadable images (left out of the tensors).
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    boxes: torch.Tensor
    bad: list[str]

    def pin_memory(self) -> ImageBatch:
        """The batch in page-locked memory (what ``DataLoader(pin_memory=True)`` calls)."""
        x, y, index, boxes = (t.pin_memory() for t in (self.x, self.y, self.index, self.boxes))
        return ImageBatch(x, y, index, boxes, list(self.bad))


def collate_images(
    items: Sequence[tuple[torch.Tensor | None, int, int, torch.Tensor, str | None]],
) -> ImageBatch:
    """Stack :class:`ImageFiles` items into an :class:`ImageBatch`, unreadable ones into ``bad``.

    A batch without a readable image has ``B = 0`` and ``x`` of shape ``(0, C, H, W)``.
    """
    good = [it for it in items if it[0] is not None]
    bad = [str(it[4]) for it in items if it[0] is None]
    images = [it[0] for it in good if it[0] is not None]
    if images:
        x = torch.stack(images)  # (B, C, H, W)
    else:
        shapes = [getattr(it[4], "shape", (0, 0, 0)) for it in items]
        x = torch.zeros((0, *(shapes[0] if shapes else (0, 0, 0))), dtype=torch.uint8)
    return ImageBatch(
        x,
        torch.tensor([it[1] for it in good], dtype=torch.int64),
        torch.tensor([it[2] for it in good], dtype=torch.int64),
        torch.stack([it[3] for it in good]) if good else torch.zeros((0, 4)),
        bad,
    )
