"""Section 8 of the guide: dense fields and registration.

The field convention stated once, with its picture (:func:`torchstn.viz.fields.
field_convention_figure`), and a short example that the guide prints with the output it gave
when the guide was computed (:func:`fields_example` runs it; nothing is typed in).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from ..viz.fields import field_convention_figure
from ._plot import save

__all__ = ["EXAMPLE", "FieldsExample", "fields_example", "plot_fields"]

#: the guide's runnable example (printed in the guide with its output).
EXAMPLE = """\
import torch
from torchstn import fields

x = torch.zeros(1, 1, 5, 7)
x[0, 0, 2, 4] = 1.0                   # one bright pixel: row 2, column 4, i.e. (x, y) = (4, 2)
u = torch.zeros(1, 2, 5, 7)           # (B, 2, H, W), pixels; channel 0 = x, channel 1 = y
u[:, 0] = 1.0                         # every output pixel reads one pixel to the right
y = fields.warp(x, u)                 # output(p) = x(p + u(p))
print("bright pixel now at (row, col):", y[0, 0].nonzero().tolist())

v = torch.zeros(1, 2, 9, 9)
v[:, 1] = 2.0                         # a constant velocity: 2 pixels down
flow = fields.integrate(v, steps=7)   # scaling and squaring: v / 2**7, then 7 squarings
print("integrated at the centre:", [round(t, 4) for t in flow[0, :, 4, 4].tolist()])

w = torch.zeros(1, 2, 9, 9)
w[:, 0] = 1.0
both = fields.compose(v, w)           # the field of "apply w, then v": v + warp(w, v)
print("composed at the centre:", both[0, :, 4, 4].tolist())
print("folded share of the flow:", fields.folded_share(flow).tolist())
print("MONAI's DDF (index order):", fields.to_monai_ddf(w)[0, :, 4, 4].tolist())
"""


@dataclass(frozen=True)
class FieldsExample:
    """The example's code and what it printed."""

    code: str
    output: str


def fields_example() -> FieldsExample:
    """Run :data:`EXAMPLE` (a fresh namespace; deterministic) and keep what it prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(EXAMPLE, "<guide example>", "exec"), {"__name__": "__guide__"})
    return FieldsExample(EXAMPLE, buf.getvalue())


def plot_fields(path: Path) -> Path:
    """The convention picture, written atomically."""
    return save(field_convention_figure(), path)
