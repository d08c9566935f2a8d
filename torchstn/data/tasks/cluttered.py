"""TC: MNIST digits translated in a larger canvas, with clutter cut from other digits (60 x 60)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Task, cycle_indices
from .canvas import (
    DIGIT,
    add_clutter,
    digits_to_float,
    ink_boxes,
    place_similarity,
    similarity_frame_boxes,
)
from .options import as_canvas, as_int

__all__ = ["CLUTTER_MARGIN", "Cluttered"]

#: distractor crops are cut from the central ``28 - 2 * CLUTTER_MARGIN`` pixels of their source
#: digit, where MNIST's ink is (when the patch fits there).
CLUTTER_MARGIN = 4


class Cluttered(Task):
    """Translated and cluttered MNIST (TC).

    The 28 x 28 digit is placed, unrotated and unscaled, at an integer position drawn uniformly
    among those where it lies wholly inside the canvas; then ``num_distractors`` patches of
    ``patch_size x patch_size`` pixels, each cut at a random place from the centre of another
    random digit of the same split (drawn with replacement), are pasted at uniformly random
    integer positions inside the canvas (combined with the digit by maximum).

    Options:
        canvas_size: side of the square canvas; default 60.
        num_distractors: default 6.
        patch_size: default 6.

    Ground truth: ``tx``, ``ty`` (pixels, the digit centre's offset from the canvas centre),
    ``distractor_boxes`` ``(N, K, 4)``, ``source_index``, ``ink_box``. ``boxes`` is the digit's
    28 x 28 frame, wholly inside the canvas.

    Example:
        >>> s = Cluttered(canvas_size=40).generate("test", num=2, seed=0)
        >>> tuple(s.x.shape), s.params["distractor_boxes"].shape[1]
        ((2, 1, 40, 40), 6)
    """

    name = "cluttered"
    defaults: ClassVar[dict[str, Any]] = {"canvas_size": 60, "num_distractors": 6, "patch_size": 6}

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        canvas = as_canvas(options["canvas_size"], "canvas_size", low=DIGIT)
        return {
            "canvas_size": canvas,
            "num_distractors": as_int(options["num_distractors"], "num_distractors"),
            "patch_size": as_int(options["patch_size"], "patch_size", low=1, high=DIGIT),
        }

    def _distractors(self) -> int:
        return int(self.options["num_distractors"])

    @property
    def in_shape(self) -> tuple[int, int, int]:
        side = self.options["canvas_size"]
        return (1, side, side)

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        side, patch, k = (
            self.options["canvas_size"],
            self.options["patch_size"],
            self._distractors(),
        )
        index = cycle_indices(labels.shape[0], num, gen)
        corner = torch.randint(0, side - DIGIT + 1, (num, 2), generator=gen)
        offset = (corner + DIGIT / 2 - side / 2).float()
        lo = CLUTTER_MARGIN if patch <= DIGIT - 2 * CLUTTER_MARGIN else 0
        source = torch.randint(0, labels.shape[0], (num, k), generator=gen)
        crop = torch.randint(lo, DIGIT - lo - patch + 1, (num, k, 2), generator=gen)
        position = torch.randint(0, side - patch + 1, (num, k, 2), generator=gen)
        boxes = torch.cat((position, position + patch), dim=-1).float()
        draws = {
            "source_index": index,
            "tx": offset[:, 0],
            "ty": offset[:, 1],
            "distractor_boxes": boxes,
            "_source": source,
            "_crop": crop,
            "_position": position,
        }
        return labels[index], draws

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        size = self.in_shape[1:]
        tx, ty = draws["tx"], draws["ty"]
        zero, one = torch.zeros_like(tx), torch.ones_like(tx)
        digits = digits_to_float(images[draws["source_index"]])
        # integer offsets: nearest sampling copies the digit's pixels exactly
        x = place_similarity(digits, zero, one, tx, ty, size, mode="nearest")
        ink = ink_boxes(x[:, 0])
        patch = self.options["patch_size"]
        add_clutter(x[:, 0], images, draws["_source"], draws["_crop"], draws["_position"], patch)
        boxes = similarity_frame_boxes(zero, one, tx, ty, size)
        return x, boxes, {"ink_box": ink}
