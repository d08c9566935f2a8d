"""The one way torchstn reaches matplotlib: imported when a picture is first drawn (it is an
optional extra), on the Agg backend (files, no screen), and a one-line error naming the extra
when it is missing. Figures are written atomically and closed."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

from .._atomic import atomic_path
from ..errors import TorchSTNError

__all__ = ["figure_uri", "pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend.

    Raises:
        TorchSTNError: matplotlib is not installed (one line naming the extra).
    """
    try:
        import matplotlib  # optional: the [plot] extra

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # optional: the [plot] extra
    except ImportError:
        raise TorchSTNError("pictures need matplotlib: pip install 'torchstn[plot]'") from None
    return plt


def save_figure(
    fig: Any,
    out: str | os.PathLike[str],
    dpi: int = 110,
    format: str | None = None,
    **options: Any,
) -> Path:
    """Write ``fig`` to ``out`` atomically, close it and return the path. ``format`` defaults to
    the suffix's (PNG without one); ``options`` go to ``savefig`` (``bbox_inches``...)."""
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            kind = format or out.suffix.lstrip(".") or "png"
            fig.savefig(tmp, format=kind, dpi=dpi, **options)
    finally:
        pyplot().close(fig)
    return out


def figure_uri(fig: Any, dpi: int = 110) -> str:
    """``fig`` as a ``data:image/png`` URI, for a self-contained page (the figure is closed)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
