"""E: MNIST digits under a random thin plate spline (elastic) warp (28 x 28)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ...functional import sample
from ...transforms import TPS
from ..sample import full_boxes
from .base import Task, cycle_indices
from .canvas import DIGIT, digits_to_float, ink_boxes
from .options import as_float, as_int

__all__ = ["Elastic"]


class Elastic(Task):
    """Elastic MNIST (E): a thin plate spline warp on a ``grid_size x grid_size`` grid of control
    points spanning the image, each displaced by independent Gaussian noise of standard deviation
    ``sigma`` pixels in x and y.

    Convention:
        The output pixel at control point ``k`` shows the source digit at control point ``k`` plus
        ``control_offsets[k]`` (the params of :class:`torchstn.transforms.TPS` minus its identity,
        in pixels).

    Options:
        sigma: pixels; default 1.5.
        grid_size: control points per side; default 4 (16 points).

    Ground truth: ``control_offsets`` ``(N, K, 2)`` pixels (row-major control points, ``(x, y)``),
    ``source_index``, ``ink_box``. ``boxes`` is the whole canvas (the spline keeps the frame in
    place up to the control-point jitter).

    Example:
        >>> Elastic().generate("test", num=2, seed=0).params["control_offsets"].shape
        torch.Size([2, 16, 2])
    """

    name = "elastic"
    defaults: ClassVar[dict[str, Any]] = {"sigma": 1.5, "grid_size": 4}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transform = TPS(grid_size=self.options["grid_size"])

    def _resolve(self, options: dict[str, Any]) -> dict[str, Any]:
        return {
            "sigma": as_float(options["sigma"], "sigma"),
            "grid_size": as_int(options["grid_size"], "grid_size", low=2, high=DIGIT),
        }

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (1, DIGIT, DIGIT)

    def _draw(
        self, labels: torch.Tensor, num: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index = cycle_indices(labels.shape[0], num, gen)
        k = self.options["grid_size"] ** 2
        noise = torch.randn(num, k, 2, generator=gen, dtype=torch.float64)
        offsets = (noise * self.options["sigma"]).float()
        return labels[index], {"source_index": index, "control_offsets": offsets}

    def _render(
        self, images: torch.Tensor, draws: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        offsets = draws["control_offsets"]
        params = self._transform.identity_params() + offsets.reshape(offsets.shape[0], -1) * (
            2 / DIGIT
        )
        grid = self._transform.grid(params, (DIGIT, DIGIT))
        x = sample(digits_to_float(images[draws["source_index"]]), grid)
        return x, full_boxes(x.shape[0], DIGIT, DIGIT), {"ink_box": ink_boxes(x[:, 0])}
