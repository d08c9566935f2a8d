"""``torchstn explain``: a guide to spatial transformers, computed by the library itself.

:func:`write_guide` writes ``guide.md`` and its figures: the architecture drawn from a trained
model, the worked example of the sampler, the sampling kernels and their gradients, every transform
family, max-pooling against the spatial transformer at growing distortion, and what a trained
ST-CNN learned over training. Every number is computed; the same seed gives the same guide.
Needs matplotlib (``pip install 'torchstn[plot]'``).
"""

from __future__ import annotations

from .budget import FULL, QUICK, Budget, Level
from .guide import FIGURES, Guide, compute_guide, explain_command, render_markdown, write_guide
from .worked import WorkedExample, worked_example

__all__ = [
    "FIGURES",
    "FULL",
    "QUICK",
    "Budget",
    "Guide",
    "Level",
    "WorkedExample",
    "compute_guide",
    "explain_command",
    "render_markdown",
    "worked_example",
    "write_guide",
]
