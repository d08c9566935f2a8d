"""A batch of samples with its ground truth: images (or volumes), labels, boxes and distortion
parameters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .._checks import check_tensor
from ..errors import InvalidInputError

__all__ = ["Sample", "full_boxes"]

#: the box width of ``x``'s number of dims: images ``(x0, y0, x1, y1)``, volumes with z.
_BOX_WIDTH = {4: 4, 5: 6}
_BOX_NAMES = {4: "(x0, y0, x1, y1)", 6: "(x0, y0, z0, x1, y1, z1)"}


def full_boxes(num: int, height: int, width: int) -> torch.Tensor:
    """``(num, 4)`` boxes covering a whole ``height x width`` image: ``(0, 0, width, height)``.

    Example:
        >>> full_boxes(1, 28, 30)
        tensor([[ 0.,  0., 30., 28.]])
    """
    box = torch.tensor([0.0, 0.0, float(width), float(height)])
    return box.expand(num, 4).clone()


@dataclass
class Sample:
    """``N`` images (or volumes) with their labels and ground truth.

    Convention:
        Boxes are ``(x0, y0, x1, y1)`` in pixel units, with the image spanning ``[0, W] x [0, H]``:
        pixel column ``j`` covers ``[j, j + 1)``, so a box ``(2, 3, 30, 31)`` is the slice
        ``image[..., 3:31, 2:30]``, and ``2 * x / W - 1`` converts ``x`` to the normalised frame of
        :mod:`torchstn.functional.coords` (``align_corners=False``).

        Volumes ``(N, C, D, H, W)`` have boxes ``(x0, y0, z0, x1, y1, z1)`` in voxel units, the
        volume spanning ``[0, W] x [0, H] x [0, D]`` (x along W, y along H, z along D, as a 5-D
        grid of :func:`torch.nn.functional.grid_sample` reads them): a box ``(2, 3, 4, 10, 11,
        12)`` is the slice ``volume[..., 4:12, 3:11, 2:10]``.

    Attributes:
        x: ``(N, C, H, W)`` float32 images in ``[0, 1]``, or ``(N, C, D, H, W)`` volumes.
        y: ``(N,)`` int64 labels.
        boxes: ``(N, 4)`` float32 boxes of the object (the digit) in the canvas; ``(N, 6)`` for
            volumes.
        params: per-sample ground truth, each tensor with leading dimension ``N`` (for the tasks:
            the distortion parameters, e.g. ``angle`` in degrees, ``scale``, ``tx``, ``ty``).

    Example:
        >>> s = Sample(torch.zeros(3, 1, 4, 4), torch.tensor([1, 2, 3]), full_boxes(3, 4, 4))
        >>> len(s), s[1:].y.tolist()
        (3, [2, 3])
        >>> v = Sample(torch.zeros(2, 1, 3, 4, 5), torch.tensor([0, 1]), torch.zeros(2, 6))
        >>> v[1].boxes.shape
        torch.Size([1, 6])
    """

    x: torch.Tensor
    y: torch.Tensor
    boxes: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_tensor(self.x, "x", floating=False)  # float32 is checked below
        if self.x.dim() not in (4, 5):
            raise InvalidInputError(
                f"x: expected 4 dims (N, C, H, W) or 5 dims (N, C, D, H, W), received "
                f"{self.x.dim()}-dim tensor of shape {tuple(self.x.shape)}"
            )
        n = self.x.shape[0]
        check_tensor(self.y, "y", ndim=1, floating=False)
        check_tensor(self.boxes, "boxes", ndim=2)
        width = _BOX_WIDTH[self.x.dim()]
        if self.boxes.shape[1] != width:
            raise InvalidInputError(
                f"boxes: expected last dimension {width} {_BOX_NAMES[width]} for "
                f"{self.x.dim()}-dim x, got shape {tuple(self.boxes.shape)}"
            )
        if self.x.dtype != torch.float32:
            raise InvalidInputError(f"x: expected float32, got {self.x.dtype}")
        if self.y.dtype != torch.int64:
            raise InvalidInputError(f"y: expected int64, got {self.y.dtype}")
        if self.boxes.dtype != torch.float32:
            raise InvalidInputError(f"boxes: expected float32, got {self.boxes.dtype}")
        for name, t in (("y", self.y), ("boxes", self.boxes), *self.params.items()):
            if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != n:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InvalidInputError(
                    f"{name}: expected leading dimension {n} (len(x)), got {shape}"
                )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int | slice | torch.Tensor) -> Sample:
        """The samples at ``index`` (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Sample(
            self.x[index],
            self.y[index],
            self.boxes[index],
            {k: v[index] for k, v in self.params.items()},
        )

    def to(self, device: torch.device | str) -> Sample:
        """A copy with every tensor on ``device``."""
        return Sample(
            self.x.to(device),
            self.y.to(device),
            self.boxes.to(device),
            {k: v.to(device) for k, v in self.params.items()},
        )

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
    ) -> Iterator[Sample]:
        """Iterate over mini-batches (shuffled with a seeded permutation if ``shuffle``).

        Example:
            >>> s = Sample(torch.zeros(5, 1, 2, 2), torch.arange(5), full_boxes(5, 2, 2))
            >>> [len(b) for b in s.batches(2)]
            [2, 2, 1]
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size: expected a positive int, got {batch_size!r}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self[order[start : start + batch_size]]
