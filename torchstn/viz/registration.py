"""Pictures of a registration model (``forward(moving, fixed) -> (warped, field, params)``):
what ``torchstn visualize`` and ``torchstn report`` draw for a run whose config says
``objective.name: registration``.

:func:`registration_pictures` takes the model and a batch of moving and fixed images (no run
folder); :func:`plot_run_registration` and :func:`write_registration_report` read a run's pairs
(:mod:`torchstn.registration`, imported when a run is drawn) and draw through it. The panels
are those of :func:`torchstn.viz.fields.registration_figure`.
"""

from __future__ import annotations

import datetime
import html
import inspect
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_write_text
from ..errors import InvalidInputError
from ..fields import check_field, warp_labels
from ..fields.losses import dice
from ..scoring import load_run_data
from ..train.config import config_to_dict
from ._mpl import figure_uri, pyplot, save_figure
from ._page import _CSS, _epochs, _figure, _hardware, _read_json, _table
from .fields import registration_figure
from .transformer import data_label, read_metrics

__all__ = [
    "plot_run_registration",
    "registration_curves_figure",
    "registration_pictures",
    "run_pairs",
    "write_registration_report",
]


@torch.no_grad()
def registration_pictures(
    model: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    *,
    moving_labels: torch.Tensor | None = None,
    fixed_labels: torch.Tensor | None = None,
    num_labels: int = 0,
    captions: Sequence[str] | None = None,
    view: str | None = None,
    max_examples: int = 4,
    title: str | None = None,
) -> Any:
    """Register the first ``max_examples`` pairs with ``model`` (in eval mode, without
    gradients; its mode is restored) and draw them (:func:`~torchstn.viz.fields.
    registration_figure`).

    Args:
        model: ``model(moving, fixed)`` returns ``(warped, field, params)``; ``field`` the
            displacement in pixels at the images' size (:mod:`torchstn.fields`).
        moving: ``(B, C, *spatial)`` images in ``[0, 1]``.
        fixed: the same shape.
        moving_labels: ``(B, 1, *spatial)`` integer label maps of the moving images: with
            ``fixed_labels`` and ``num_labels`` (background included), each row's caption gives
            the mean foreground Dice before and after (labels warped by nearest neighbour).
        fixed_labels: the fixed images' label maps.
        num_labels: label values ``0..num_labels - 1``.
        captions: one caption per pair (a class...), before the Dice.
        view: for volumes, the one slice to draw (``xy``, ``xz``, ``yz``); None: all three.
        max_examples: pairs drawn.
        title: the figure's title.

    Returns:
        The matplotlib figure.

    Raises:
        InvalidInputError: mismatched images, or a model that returns no field (one line).
    """
    if moving.shape != fixed.shape or moving.dim() not in (4, 5):
        raise InvalidInputError(
            f"moving, fixed: expected two (B, C, *spatial) batches of one shape, got "
            f"{tuple(moving.shape)} and {tuple(fixed.shape)}"
        )
    n = min(int(moving.shape[0]), max_examples)
    moving, fixed = moving[:n], fixed[:n]
    try:
        inspect.signature(model.forward).bind(moving, fixed)
    except (TypeError, ValueError):
        out = None  # not a registration model: said below
    else:
        was_training = model.training
        model.eval()
        try:
            out = model(moving, fixed)
        finally:
            model.train(was_training)
    if not isinstance(out, tuple) or len(out) != 3:
        raise InvalidInputError(
            f"model: expected forward(moving, fixed) to return (warped, field, params), such as "
            f"reg_unet's; got {type(model).__name__}"
        )
    warped, field = out[0].float(), out[1].float()
    check_field(field, "field", like=moving)
    text = [str(c) for c in captions[:n]] if captions is not None else [""] * n
    if moving_labels is not None and fixed_labels is not None and num_labels > 1:
        ml, fl = moving_labels[:n].long(), fixed_labels[:n].long()
        before = _mean_dice(ml, fl, num_labels)
        after = _mean_dice(warp_labels(ml, field), fl, num_labels)
        text = [
            (t + "\n" if t else "") + f"Dice {b:.3f} -> {a:.3f}"
            for t, b, a in zip(text, before.tolist(), after.tolist())
        ]
    return registration_figure(
        fixed,
        moving,
        warped,
        field,
        text if any(text) else None,
        view=view,
        max_examples=n,
        title=title,
    )


def _mean_dice(a: torch.Tensor, b: torch.Tensor, num_labels: int) -> torch.Tensor:
    """``(B,)`` mean foreground Dice over the labels present in either map (1 where none is)."""
    return torch.nanmean(dice(a, b, num_labels), dim=1).nan_to_num(1.0)


def run_pairs(
    info: Any, split: str, num: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, str]:
    """The first ``num`` pairs of a registration run's ``split`` (generated or read again as
    the run did): moving, fixed, their label maps, the pairs' classes, the number of label
    values (0: no label maps) and the data's name for titles."""
    from ..registration import unpack  # the registration objective's own packing

    data = load_run_data(info)
    pairs = data.eval_split(split)
    x, y = pairs.head(num)
    moving, fixed, ml, fl = unpack(x, int(info.in_shape[0]))
    num_labels = int(pairs.pairs.num_labels) if pairs.has_labels else 0
    return moving, fixed, ml, fl, y, num_labels, data_label(data.name, info.config)


def _captions(y: torch.Tensor) -> list[str] | None:
    return [f"class {int(v)}" for v in y] if bool((y != 0).any()) else None


def plot_run_registration(
    model: nn.Module,
    info: Any,
    out: str | Path,
    *,
    split: str = "test",
    num: int = 8,
    view: str | None = None,
    run_dir: str | Path | None = None,
    curves: str | Path | None = None,
) -> list[Path]:
    """What ``torchstn visualize`` writes for a registration run: ``out`` (the first ``num``
    pairs of ``split``, :func:`registration_pictures`) and, where ``run_dir`` has
    ``metrics.jsonl``, the training curves at ``curves`` (default ``OUT_curves.png``,
    :func:`registration_curves_figure`). Returns the paths written."""
    moving, fixed, ml, fl, y, k, name = run_pairs(info, split, num)
    title = f"{info.model_name} on {name}, epoch {info.epoch} ({split} pairs)"
    fig = registration_pictures(
        model,
        moving,
        fixed,
        moving_labels=ml,
        fixed_labels=fl,
        num_labels=k,
        captions=_captions(y),
        view=view,
        max_examples=num,
        title=title,
    )
    out = Path(out)
    written = [save_figure(fig, out, bbox_inches="tight", facecolor="white")]
    if run_dir is not None and (Path(run_dir) / "metrics.jsonl").is_file():
        rows = read_metrics(Path(run_dir))
        if rows:
            path = Path(curves) if curves else out.with_name(f"{out.stem}_curves.png")
            fig = registration_curves_figure(rows, title=f"{info.model_name} on {name}")
            written.append(save_figure(fig, path, bbox_inches="tight", facecolor="white"))
    return written


def registration_curves_figure(rows: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """A registration run's ``metrics.jsonl`` per epoch: the training loss; the validation Dice
    after (solid) and before (dashed) registration, or the similarity loss where the data have
    no label maps; the share of folded pixels (training and validation, %)."""
    plt = pyplot()
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.0))

    def line(ax: Any, key: str, style: str, label: str) -> None:
        values = [float(r.get(key, math.nan)) for r in rows]
        if any(math.isfinite(v) for v in values):
            ax.plot(epochs, values, style, marker="o", ms=3, label=label)

    line(axes[0], "train_loss", "-", "train")
    axes[0].set(title="loss", xlabel="epoch")
    score = "dice" if any("val_dice" in r for r in rows) else "similarity"
    line(axes[1], f"val_{score}", "-", "after")
    line(axes[1], f"val_{score}_before", "--", "before")
    axes[1].set(title=f"validation {'Dice' if score == 'dice' else 'similarity loss'}")
    axes[1].set_xlabel("epoch")
    line(axes[2], "train_folded", "-", "train")
    line(axes[2], "val_folded", "--", "val")
    axes[2].set(title="folded pixels (%)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


#: keys of a registration run's result.json shown in its report.
_RESULT_KEYS = (
    "test_dice_before",
    "test_dice",
    "test_similarity_before",
    "test_similarity",
    "test_folded",
    "test_jacobian_std",
    "test_ms_per_pair",
    "epochs",
    "best_epoch",
    "train_seconds",
)


def write_registration_report(
    model: nn.Module, info: Any, run_dir: Path, out: Path, num_images: int = 8
) -> Path:
    """The HTML report of a registration run (what :func:`torchstn.viz.write_report` writes
    for it): the curves, the first test pairs (2-D: up to ``num_images``; 3-D: up to 3, their
    three middle slices), the result, the environment and the config; one self-contained page."""
    result = _read_json(run_dir / "result.json")
    n = min(num_images, 8 if len(info.in_shape) == 3 else 3)
    moving, fixed, ml, fl, y, k, name = run_pairs(info, "test", n)
    sections: list[str] = []
    metrics_file = run_dir / "metrics.jsonl"
    rows = read_metrics(metrics_file) if metrics_file.is_file() else []
    if rows:
        fig = registration_curves_figure(rows, title=f"{info.model_name} on {name}")
        sections.append(
            "<h2>Training curves</h2>"
            + _figure(
                figure_uri(fig),
                "training curves",
                "Training loss, validation overlap before and after, and the folded pixels.",
            )
        )
    fig = registration_pictures(
        model,
        moving,
        fixed,
        moving_labels=ml,
        fixed_labels=fl,
        num_labels=k,
        captions=_captions(y),
        max_examples=n,
    )
    sections.append(
        "<h2>What the registration does</h2>"
        + _figure(
            figure_uri(fig),
            "registered pairs",
            f"The first {moving.shape[0]} test pairs: fixed, moving, the moving image warped by "
            "the predicted field, the absolute differences before and after (one scale per row), "
            "the output's pixel lattice moved to the points it reads, p + u(p), over the moving "
            "image, and the Jacobian determinant (blue shrinks, red expands, green folds).",
        )
    )
    if result:
        keep = [(key, result[key]) for key in _RESULT_KEYS if key in result]
        sections.append(
            "<h2>Result</h2>"
            + _table([(key, f"{v:.4g}" if isinstance(v, float) else v) for key, v in keep])
        )
    trained, weights_text = _epochs(info, rows, result)
    env = [
        ("hardware", _hardware((result or {}).get("hardware", "?"))),
        *[(key, v) for key, v in ((result or {}).get("versions") or {}).items()],
        ("git commit", (result or {}).get("git_commit")),
        ("config sha256", (result or {}).get("config_sha256")),
        ("checkpoint", str(info.path)),
        ("weights", weights_text),
    ]
    sections.append("<h2>Environment</h2>" + _table(env))
    config_text = json.dumps(config_to_dict(info.config), indent=2)
    sections.append(
        "<h2>Resolved config</h2><pre>" + html.escape(config_text, quote=False) + "</pre>"
    )
    score = (result or {}).get("test_dice")
    before = (result or {}).get("test_dice_before")
    headline = (
        f"test Dice <b>{score:.3f}</b> (before registration {before:.3f})"
        if isinstance(score, float) and isinstance(before, float)
        else "registration run"
    )
    title = f"{info.model_name} on {name}"
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}: torchstn report</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='sub'>Run {html.escape(str(run_dir))}; report written "
        f"{datetime.date.today().isoformat()} by torchstn report.</p>"
        f"<p class='big'>{headline} after {trained} ({weights_text}).</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    atomic_write_text(out, page)
    return out
