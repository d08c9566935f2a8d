"""Co-localisation: a 28 x 28 digit in an 84 x 84 canvas, optionally cluttered."""

from __future__ import annotations

from typing import Any, ClassVar

from .cluttered import Cluttered
from .options import as_bool

__all__ = ["Colocalization"]


class Colocalization(Cluttered):
    """Co-localisation data: the digit placed wholly inside a large canvas, optionally with clutter
    (as :class:`~torchstn.data.tasks.cluttered.Cluttered`, other defaults).

    A triplet-loss trainer needs the labels (to pick crops of the same class) and the boxes (to
    score localisation by IoU > 0.5): ``y`` and ``boxes``, the digit's 28 x 28 frame in the canvas
    (the paper's ground truth box); ``params["ink_box"]`` is the tight box of its ink.

    Options:
        canvas_size: default 84.
        clutter: add distractors; default false.
        num_distractors: distractors when ``clutter`` is true; default 16.
        patch_size: default 6.

    Example:
        >>> s = Colocalization(clutter=True).generate("test", num=2, seed=0)
        >>> tuple(s.x.shape), (s.boxes[:, 2:] - s.boxes[:, :2]).tolist()
        ((2, 1, 84, 84), [[28.0, 28.0], [28.0, 28.0]])
    """

    name = "colocalization"
    defaults: ClassVar[dict[str, Any]] = {
        "canvas_size": 84,
        "clutter": False,
        "num_distractors": 16,
        "patch_size": 6,
    }

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"clutter": as_bool(options["clutter"], "clutter"), **super()._resolve(options)}

    def _distractors(self) -> int:
        return int(self.options["num_distractors"]) if self.options["clutter"] else 0
