"""Learning curves of a table's runs as SVG figures: validation error against training images
seen, both axes logarithmic, one colour per model, with the paper's test error marked where the
paper's protocol ends (150,000 iterations of 256 images: 38.4 million images).

A figure is a plain SVG file written by this module (no plotting library, so that RESULTS.md and
its figures come out the same on every machine): :func:`figures` says which figures a table's
record makes, :func:`write_figures` writes them into ``results/curves/``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from .._atomic import atomic_write_text
from .tables import get_table, table_names

__all__ = [
    "PAPER_IMAGES",
    "curve_svg",
    "figure_name",
    "figures",
    "write_all_figures",
    "write_figures",
]

#: the training images of the paper's protocol: 150,000 iterations of batch 256
PAPER_IMAGES = 150_000 * 256

#: one colour per model, in a table's row order (colour-blind-safe, Okabe and Ito)
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
#: dash patterns that tell the ninth and later models apart from the first eight
DASHES = ("", "6,3", "2,2")

_W, _H = 720, 420  # the figure
_L, _R, _T, _B = 64, 190, 36, 48  # margins: the legend sits in the right one


def figure_name(table: str, column: str, budget: str) -> str:
    """The file name of a table's figure for one column and budget.

    Example:
        >>> figure_name("table1", "RTS", "10 min")
        'table1-RTS-10min.svg'
    """
    slug = re.sub(r"[^A-Za-z0-9]+", "", budget.replace(", ", "-").replace(" ", ""))
    return f"{table}-{column}-{slug or 'budget'}.svg"


def _decades(lo: float, hi: float) -> list[float]:
    """The ticks of a log axis from ``lo`` to ``hi``: 1, 2 and 5 of every decade inside (only
    the powers of ten when the axis spans more than three decades)."""
    steps = (1.0,) if hi / lo > 1e3 else (1.0, 2.0, 5.0)
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [s * 10.0**e for s in steps if lo <= s * 10.0**e <= hi]
    return ticks


def _label(value: float, images: bool) -> str:
    if not images:
        return f"{value:g}"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:g}{unit}"
    return f"{value:g}"


def curve_svg(
    title: str,
    series: list[tuple[str, list[list[float]]]],
    paper: dict[str, float],
    order: list[str],
) -> str:
    """An SVG line chart of learning curves.

    Args:
        title: the heading drawn above the chart.
        series: ``(model, curve)`` per run: a curve is ``[images seen, validation error %]``
            pairs; several runs of one model (seeds) share its colour.
        paper: the paper's test error (%) per model, drawn as a ring at :data:`PAPER_IMAGES`.
        order: the models in legend (and colour) order.
    """
    xs = [p[0] for _, c in series for p in c if p[0] > 0] + [PAPER_IMAGES]
    ys = [p[1] for _, c in series for p in c if p[1] > 0] + [v for v in paper.values() if v > 0]
    x_lo = 10.0 ** math.floor(math.log10(min(xs)))
    x_hi = 10.0 ** math.ceil(math.log10(max(xs) * 1.05))
    y_lo = 10.0 ** math.floor(math.log10(min(ys) if ys else 1.0))
    y_hi = 10.0 ** math.ceil(math.log10(max(ys) * 1.05 if ys else 100.0))

    def px(x: float) -> float:
        return _L + (_W - _L - _R) * math.log(x / x_lo) / math.log(x_hi / x_lo)

    def py(y: float) -> float:
        return _T + (_H - _T - _B) * (1 - math.log(y / y_lo) / math.log(y_hi / y_lo))

    def style(model: str) -> tuple[str, str]:
        i = order.index(model) if model in order else len(order)
        dash = DASHES[(i // len(PALETTE)) % len(DASHES)]
        return PALETTE[i % len(PALETTE)], (f' stroke-dasharray="{dash}"' if dash else "")

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'viewBox="0 0 {_W} {_H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{_W}" height="{_H}" fill="white"/>',
        f'<text x="{_L}" y="20" font-size="13">{escape(title)}</text>',
    ]
    for x in _decades(x_lo, x_hi):
        out.append(
            f'<line x1="{px(x):.1f}" y1="{_T}" x2="{px(x):.1f}" y2="{_H - _B}" stroke="#ddd"/>'
            f'<text x="{px(x):.1f}" y="{_H - _B + 14}" text-anchor="middle">'
            f"{_label(x, True)}</text>"
        )
    for y in _decades(y_lo, y_hi):
        out.append(
            f'<line x1="{_L}" y1="{py(y):.1f}" x2="{_W - _R}" y2="{py(y):.1f}" stroke="#ddd"/>'
            f'<text x="{_L - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{_label(y, False)}</text>'
        )
    out += [
        f'<rect x="{_L}" y="{_T}" width="{_W - _L - _R}" height="{_H - _T - _B}" fill="none" '
        'stroke="#444"/>',
        f'<text x="{(_L + _W - _R) / 2:.1f}" y="{_H - 12}" text-anchor="middle">training images '
        "seen (log)</text>",
        f'<text transform="translate(16 {(_T + _H - _B) / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">validation error % (log)</text>',
        f'<line x1="{px(PAPER_IMAGES):.1f}" y1="{_T}" x2="{px(PAPER_IMAGES):.1f}" '
        f'y2="{_H - _B}" stroke="#888" stroke-dasharray="4,3"/>',
        f'<text x="{px(PAPER_IMAGES) - 3:.1f}" y="{_T + 12}" text-anchor="end" fill="#555">'
        "paper: 150k x 256</text>",
    ]
    for model, curve in series:
        points = [p for p in curve if p[0] > 0 and p[1] > 0]
        if not points:
            continue
        colour, dash = style(model)
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        out.append(
            f'<polyline class="run" data-model="{escape(model)}" points="{path}" fill="none" '
            f'stroke="{colour}" stroke-width="1.5"{dash}/>'
        )
    for model, error in paper.items():
        if error > 0:
            colour, _ = style(model)
            out.append(
                f'<circle class="paper" data-model="{escape(model)}" cx="{px(PAPER_IMAGES):.1f}" '
                f'cy="{py(error):.1f}" r="4" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
    drawn = [m for m in order if any(model == m for model, _ in series) or m in paper]
    for i, model in enumerate(drawn):
        colour, dash = style(model)
        y = _T + 8 + 16 * i
        out.append(
            f'<line x1="{_W - _R + 12}" y1="{y}" x2="{_W - _R + 36}" y2="{y}" stroke="{colour}" '
            f'stroke-width="2"{dash}/><text x="{_W - _R + 42}" y="{y + 4}">{escape(model)}</text>'
        )
    y = _T + 8 + 16 * len(drawn) + 8
    out += [
        f'<circle cx="{_W - _R + 24}" cy="{y}" r="4" fill="none" stroke="#444" stroke-width="2"/>'
        f'<text x="{_W - _R + 42}" y="{y + 4}">paper (test)</text>',
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def figures(table: Any, record: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """The learning-curve figures of a table's record: ``file name -> (column, budget, svg)``,
    one per column and budget whose runs kept a curve (runs recorded before curves were kept
    have none; variants are left out)."""
    runs = [r for r in record.get("runs", []) if r.get("curve") and not r.get("variant")]
    made: dict[str, tuple[str, str, str]] = {}
    for budget in sorted({r["budget"] for r in runs}):
        for column in table.columns:
            mine = [r for r in runs if (r["budget"], r["column"]) == (budget, column)]
            if not mine:
                continue
            order = [m for m in table.models if any(r["model"] == m for r in mine)]
            mine.sort(key=lambda r: (order.index(r["model"]), r["seed"]))
            paper = {m: table.paper[(m, column)] for m in order if (m, column) in table.paper}
            svg = curve_svg(
                f"{table.title}: {column}, {budget} per run",
                [(r["model"], r["curve"]) for r in mine],
                paper,
                order,
            )
            made[figure_name(table.name, column, budget)] = (column, budget, svg)
    return made


def write_figures(results_dir: str | Path, name: str, table: Any, record: dict[str, Any]) -> None:
    """Write the figures of ``table``'s record into ``RESULTS_DIR/curves/`` (atomically, each
    only when its text changed), and remove figures of this table that no run makes any more."""
    folder = Path(results_dir) / "curves"
    made = figures(table, record)
    if made:
        folder.mkdir(parents=True, exist_ok=True)
    for file, (_, _, svg) in made.items():
        path = folder / file
        if not path.is_file() or path.read_text() != svg:
            atomic_write_text(path, svg)
    if folder.is_dir():
        for old in folder.glob(f"{name}-*.svg"):
            if old.name not in made:
                old.unlink(missing_ok=True)


def write_all_figures(results_dir: str | Path) -> None:
    """:func:`write_figures` for every registered table with a record in ``results_dir``."""
    for name in table_names():
        path = Path(results_dir) / f"{name}.json"
        if path.is_file():
            write_figures(results_dir, name, get_table(name), json.loads(path.read_text()))
