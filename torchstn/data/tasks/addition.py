"""MNIST addition: two digits, each in its own channel with an independent RTS distortion."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Task, cycle_indices
from .canvas import (
    digits_to_float,
    ink_boxes,
    place_similarity,
    similarity_frame_boxes,
    union_boxes,
)
from .rts import RTS, draw_rts, resolve_rts

__all__ = ["Addition"]


class Addition(Task):
    """MNIST addition: channel ``i`` (``i = 0, 1``) holds digit ``i``, distorted as in
    :class:`~torchstn.data.tasks.rts.RTS` with its own parameters; the label is the sum of the two
    digits (19 classes, 0..18).

    The two digits come from two independently seeded permutation cycles over the split.

    Options:
        the options of :class:`~torchstn.data.tasks.rts.RTS` (``angle``, ``scale``,
        ``translation``, ``canvas_size``; same defaults), applied to both channels.

    Ground truth: ``digits`` ``(N, 2)`` (the two labels), ``angle``, ``scale``, ``tx``, ``ty``,
    ``source_index`` (each ``(N, 2)``, column ``i`` for channel ``i``), ``digit_boxes``
    ``(N, 2, 4)`` (each digit's warped frame, clipped), ``ink_box`` ``(N, 4)`` (union of the two
    ink boxes). ``boxes`` is the union of the two frame boxes.

    Example:
        >>> s = Addition().generate("test", num=3, seed=0)
        >>> tuple(s.x.shape), bool((s.y == s.params["digits"].sum(1)).all())
        ((3, 2, 42, 42), True)
    """

    name = "addition"
    num_classes = 19
    defaults: ClassVar[dict[str, Any]] = dict(RTS.defaults)

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        return resolve_rts(options)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        side = self.options["canvas_size"]
        return (2, side, side)

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pool = labels.shape[0]
        index = torch.stack((cycle_indices(pool, num, gen), cycle_indices(pool, num, gen)), dim=1)
        per_digit = [draw_rts(self.options, num, gen) for _ in range(2)]
        draws = {k: torch.stack((per_digit[0][k], per_digit[1][k]), dim=1) for k in per_digit[0]}
        digits = labels[index]  # (N, 2)
        return digits.sum(dim=1), {"source_index": index, "digits": digits, **draws}

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        n = draws["angle"].shape[0]
        size = self.in_shape[1:]
        angle, scale, tx, ty = (draws[k].reshape(-1) for k in ("angle", "scale", "tx", "ty"))
        geometry = (angle, scale, tx, ty)  # each (2N,)
        digits = digits_to_float(images[draws["source_index"].reshape(-1)])
        x = place_similarity(digits, *geometry, size).reshape(n, 2, *size)
        frames = similarity_frame_boxes(*geometry, size).reshape(n, 2, 4)
        inks = ink_boxes(x.reshape(2 * n, *size)).reshape(n, 2, 4)
        extra = {"digit_boxes": frames, "ink_box": union_boxes(inks)}
        return x, union_boxes(frames), extra
