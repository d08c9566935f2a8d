"""RTS: MNIST digits rotated, scaled and translated in a larger canvas (42 x 42)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from .base import Task, cycle_indices, uniform
from .canvas import DIGIT, digits_to_float, ink_boxes, place_similarity, similarity_frame_boxes
from .options import as_canvas, as_range

__all__ = ["RTS", "draw_rts", "resolve_rts"]


def resolve_rts(options: dict[str, Any]) -> dict[str, Any]:
    """Validate the options shared by :class:`RTS` and the addition task; a ``translation`` of
    ``None`` becomes ``+-(canvas_size - 28) / 2`` (the undistorted digit stays inside)."""
    canvas = as_canvas(options["canvas_size"], "canvas_size", low=DIGIT)
    translation = options["translation"]
    if translation is None:
        translation = (canvas - DIGIT) / 2
    return {
        "canvas_size": canvas,
        "angle": as_range(options["angle"], "angle", low=-360.0, high=360.0),
        "scale": as_range(options["scale"], "scale", low=1e-3),
        "translation": as_range(translation, "translation", low=-canvas / 2, high=canvas / 2),
    }


def draw_rts(options: dict[str, Any], num: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw ``angle``, ``scale``, ``tx``, ``ty`` (each ``(num,)``, uniform, in this order)."""
    return {
        "angle": uniform(options["angle"], num, gen),
        "scale": uniform(options["scale"], num, gen),
        "tx": uniform(options["translation"], num, gen),
        "ty": uniform(options["translation"], num, gen),
    }


class RTS(Task):
    """Rotated, scaled and translated MNIST (RTS).

    Each digit is rotated by ``angle``, scaled by ``scale`` and its centre moved by ``(tx, ty)``
    from the canvas centre, all drawn independently and uniformly from the option ranges.

    Options:
        angle: ``[lo, hi]`` degrees (counter-clockwise as displayed); default ``[-45, 45]``.
        scale: ``[lo, hi]``; default ``[0.7, 1.2]``.
        translation: ``[lo, hi]`` pixels, the same range for ``tx`` and ``ty``; default
            ``+-(canvas_size - 28) / 2`` (``[-7, 7]`` in 42 x 42), so that an unscaled, unrotated
            digit frame would stay inside the canvas. Large, rotated digits near the border may
            lose a few edge pixels: at the defaults about 1% of the digits touch the border and
            0.1% lose more than 1% of their ink.
        canvas_size: side of the square canvas; default 42.

    Ground truth: ``angle``, ``scale``, ``tx``, ``ty``, ``source_index``, ``ink_box``; ``boxes``
    is the warped 28 x 28 frame, clipped to the canvas.

    Example:
        >>> RTS().options["translation"]
        [-7.0, 7.0]
        >>> RTS().generate("test", num=2, seed=1).x.shape
        torch.Size([2, 1, 42, 42])
    """

    name = "rts"
    defaults: ClassVar[dict[str, Any]] = {
        "angle": [-45.0, 45.0],
        "scale": [0.7, 1.2],
        "translation": None,
        "canvas_size": 42,
    }

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        return resolve_rts(options)

    @property
    def in_shape(self) -> tuple[int, int, int]:
        side = self.options["canvas_size"]
        return (1, side, side)

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = cycle_indices(labels.shape[0], num, gen)
        return labels[index], {"source_index": index, **draw_rts(self.options, num, gen)}

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        size = self.in_shape[1:]
        geometry = (draws["angle"], draws["scale"], draws["tx"], draws["ty"])
        x = place_similarity(digits_to_float(images[draws["source_index"]]), *geometry, size)
        boxes = similarity_frame_boxes(*geometry, size)
        return x, boxes, {"ink_box": ink_boxes(x[:, 0])}
