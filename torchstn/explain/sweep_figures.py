"""The figures of section 5: accuracy against distortion level, and the validation curves."""

from __future__ import annotations

from pathlib import Path

from ..data import get_task
from ._plot import COLOURS, plt, save, show_image
from .budget import MODELS, Budget
from .sweep import RunResult

__all__ = ["plot_curves", "plot_sweep"]


def _by_model(results: list[RunResult], model: str) -> list[RunResult]:
    return [r for r in results if r.model == model]


def plot_sweep(results: list[RunResult], budget: Budget, path: Path) -> Path:
    """One test image of each level above the test accuracy of both models at every level."""
    p = plt()
    levels = budget.levels
    n = len(levels)
    fig = p.figure(figsize=(2.3 * n + 1, 6.4))
    grid = fig.add_gridspec(2, n, height_ratios=[1, 1.5], hspace=0.35)
    side = max(level.canvas for level in levels)
    for k, level in enumerate(levels):
        ax = fig.add_subplot(grid[0, k])
        task = get_task("cluttered", canvas_size=level.canvas, num_distractors=level.distractors)
        image = task.generate("test", num=1, seed=0).x[0, 0]
        pad = (side - level.canvas) / 2  # every canvas drawn at the scale of the largest
        show_image(ax, image, level.short().replace("\n", ", "), 8)
        ax.set_xlim(-0.5 - pad, level.canvas - 0.5 + pad)
        ax.set_ylim(level.canvas - 0.5 + pad, -0.5 - pad)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.add_patch(
            p.Rectangle((-0.5, -0.5), level.canvas, level.canvas, fill=False, ec="0.4", lw=0.8)
        )
    ax = fig.add_subplot(grid[1, :])
    xs = list(range(n))
    accs = {shown: [r.accuracy for r in _by_model(results, shown)] for shown, _, _ in MODELS}
    for colour, marker, (shown, _, _) in zip(COLOURS, "os", MODELS):
        acc = accs[shown]
        ax.plot(xs, acc, marker=marker, color=colour, lw=2, ms=7, label=shown)
        for x, a in zip(xs, acc):
            rest = [v[x] for name, v in accs.items() if name != shown]
            top = all(a > b or (a == b and shown == MODELS[-1][0]) for b in rest)  # higher above
            ax.annotate(
                f"{a:.1f}", (x, a), xytext=(0, 8 if top else -14), textcoords="offset points",
                ha="center", fontsize=8, color=colour,
            )  # fmt: skip
    ax.set_xticks(xs)
    ax.set_xticklabels([level.short() for level in levels], fontsize=8)
    ax.set_xlim(-0.4, n - 0.6)
    ax.set_xlabel("distortion level: canvas side, largest shift of the digit, clutter patches")
    ax.set_ylabel("test accuracy (%)")
    low = min(r.accuracy for r in results)
    ax.set_ylim(max(0.0, low - 8), 100.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(
        f"the same CNN without and with a spatial transformer "
        f"({budget.epochs} epochs per run, seed {results[0].values['seed']})",
        fontsize=10,
    )
    return save(fig, path)


def plot_curves(results: list[RunResult], budget: Budget, path: Path) -> Path:
    """Validation error per epoch, one panel per level, both models."""
    p = plt()
    n = len(budget.levels)
    fig, axes = p.subplots(1, n, figsize=(3.1 * n, 3.2), sharey=True, squeeze=False)
    for k, level in enumerate(budget.levels):
        ax = axes[0, k]
        for colour, marker, (shown, _, _) in zip(COLOURS, "os", MODELS):
            run = next(r for r in results if r.model == shown and r.level == level)
            epochs = range(1, len(run.val_errors) + 1)
            ax.plot(list(epochs), run.val_errors, marker=marker, ms=4, color=colour, label=shown)
        ax.set_xticks(list(range(1, budget.epochs + 1)))
        ax.set_xlabel("epoch")
        ax.set_title(level.label().replace(", shift", "\nshift"), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("validation error (%)")
    axes[0, 0].set_ylim(bottom=0)
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)
