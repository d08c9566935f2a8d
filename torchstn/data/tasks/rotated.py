"""R: MNIST digits rotated about their centre (28 x 28)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Task, cycle_indices, uniform
from .canvas import DIGIT, digits_to_float, ink_boxes, place_similarity, similarity_frame_boxes
from .options import as_range

__all__ = ["Rotated"]


class Rotated(Task):
    """Rotated MNIST (R): each digit turned by an angle drawn uniformly from ``angle``.

    Options:
        angle: ``[lo, hi]`` degrees, counter-clockwise as displayed; default ``[-90, 90]``.

    Ground truth (``Sample.params``): ``angle`` (degrees), ``source_index``, ``ink_box``.
    ``boxes`` is the rotated 28 x 28 frame clipped to the canvas (the whole canvas unless the
    angle is near 0; ``ink_box`` is the tight box of the digit).

    Example:
        >>> s = Rotated(angle=[10, 20]).generate("test", num=4, seed=0)
        >>> tuple(s.x.shape), bool(((s.params["angle"] >= 10) & (s.params["angle"] <= 20)).all())
        ((4, 1, 28, 28), True)
    """

    name = "rotated"
    defaults: ClassVar[dict[str, Any]] = {"angle": [-90.0, 90.0]}

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"angle": as_range(options["angle"], "angle", low=-360.0, high=360.0)}

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (1, DIGIT, DIGIT)

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = cycle_indices(labels.shape[0], num, gen)
        angle = uniform(self.options["angle"], num, gen)
        return labels[index], {"source_index": index, "angle": angle}

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        angle = draws["angle"]
        one, zero = torch.ones_like(angle), torch.zeros_like(angle)
        digits = digits_to_float(images[draws["source_index"]])
        size = (DIGIT, DIGIT)
        x = place_similarity(digits, angle, one, zero, zero, size)
        boxes = similarity_frame_boxes(angle, one, zero, zero, size)
        return x, boxes, {"ink_box": ink_boxes(x[:, 0])}
