"""``torchstn report``: one self-contained HTML page about a training run.

The page holds the training curves, test inputs with each transformer's sampling grid beside its
output (misclassified images first), the confusion matrix, the learned transformation parameters
against the distortions the data were generated with (where the task records them), and the
resolved config, the result, the hardware and the versions. Every picture is a PNG inlined as a
``data:`` URI; there are no scripts and no external resources, so the file opens offline in any
browser and can be mailed or attached as it is.

Example:
    >>> from torchstn.viz import write_report
    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import copy
import datetime
import html
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_write_text
from ..errors import DataError, InvalidInputError, TorchSTNError
from ..functional.coords import pixels_per_unit
from ..inference import load_with_info
from ..module import SpatialTransformer, recording_params
from ..scoring import load_run_data
from ..train.config import config_to_dict
from ._mpl import figure_uri, pyplot
from ._page import _CSS, _epochs, _figure, _hardware, _number, _partial, _read_json, _table
from .transformer import (
    curves_figure,
    data_label,
    input_transformers,
    read_metrics,
    transformations_figure,
    untrained_warnings,
)

__all__ = ["learned_geometry", "write_report"]

#: test images evaluated for the confusion matrix and the parameter plots (the first ones).
MAX_EVAL = 10_000


@torch.no_grad()
def learned_geometry(st: SpatialTransformer, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a transformer's ``(B, P)`` params do near the centre of its output, in input pixels.

    Any family is read through its local affine approximation at the output's centre (finite
    differences of ``map_points``): ``rotation`` (degrees, of the sampled region), ``scale`` (the
    sampled region's side over the input's, square root of the area ratio), ``tx``/``ty`` (the
    sampled region's centre from the input's centre, pixels, through
    :func:`~torchstn.functional.pixels_per_unit` for the transformer's ``align_corners``). TPS also gives ``displacement``:
    each control point's distance from its identity position, pixels, ``(B, K)``.
    """
    params = params.detach().double().cpu()
    transform = copy.deepcopy(st.transform).double().cpu()  # the model's own stays as it is
    if transform.ndim == 3:
        return _learned_geometry_3d(st, transform, params)
    eps = 0.05
    pts = torch.tensor([[0.0, 0.0], [eps, 0.0], [0.0, eps]], dtype=torch.float64)
    mapped = transform.map_points(params, pts.expand(params.shape[0], -1, -1).contiguous())
    centre = mapped[:, 0]
    jac = torch.stack(((mapped[:, 1] - centre) / eps, (mapped[:, 2] - centre) / eps), dim=-1)
    half = torch.tensor(pixels_per_unit(st.in_shape[1:], st.align_corners), dtype=torch.float64)
    jac_pix = jac * half[:, None] / half[None, :]  # output-normalised -> input pixels, square
    out: dict[str, torch.Tensor] = {
        "rotation": torch.rad2deg(
            torch.atan2(jac_pix[:, 1, 0] - jac_pix[:, 0, 1], jac_pix[:, 0, 0] + jac_pix[:, 1, 1])
        ),
        "scale": torch.linalg.det(jac).abs().sqrt(),
        "tx": centre[:, 0] * half[0],
        "ty": centre[:, 1] * half[1],
    }
    if st.transform.name == "tps":
        identity = st.transform.identity_params().double().cpu()
        moved = (params - identity).reshape(params.shape[0], -1, 2) * half
        out["displacement"] = moved.norm(dim=-1)
    return out


def _learned_geometry_3d(
    st: SpatialTransformer, transform: Any, params: torch.Tensor
) -> dict[str, torch.Tensor]:
    """:func:`learned_geometry` of a 3-D family, in input voxels: ``rotation`` (degrees: the
    angle of the rotation nearest to the local map, from its polar decomposition), ``scale``
    (the sampled region's side over the input's, cube root of the volume ratio) and
    ``tx``/``ty``/``tz`` (the region's centre from the input's centre, voxels)."""
    eps = 0.05
    pts = torch.cat((torch.zeros(1, 3), torch.eye(3) * eps)).double()
    mapped = transform.map_points(params, pts.expand(params.shape[0], -1, -1).contiguous())
    centre = mapped[:, 0]
    jac = ((mapped[:, 1:] - centre[:, None]) / eps).transpose(1, 2)  # (B, 3, 3), columns: axes
    half = torch.tensor(pixels_per_unit(st.in_shape[1:], st.align_corners), dtype=torch.float64)
    jac_vox = jac * half[:, None] / half[None, :]
    u, _, vh = torch.linalg.svd(jac_vox)
    rot = u @ vh
    cos = ((torch.diagonal(rot, dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    return {
        "rotation": torch.rad2deg(torch.arccos(cos)),
        "scale": torch.linalg.det(jac).abs().pow(1 / 3),
        "tx": centre[:, 0] * half[0],
        "ty": centre[:, 1] * half[1],
        "tz": centre[:, 2] * half[2],
    }


def _truth(sample: dict[str, Any], in_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The distortions a generated test set records (its ``boxes`` and ``params``), in
    :func:`learned_geometry`'s units."""
    params = sample.get("params") or {}
    out = {}
    if "angle" in params and params["angle"].dim() == 1:
        out["rotation"] = params["angle"].double()
    if "scale" in params and params["scale"].dim() == 1:
        out["scale"] = params["scale"].double()
    boxes = sample.get("boxes")
    if boxes is not None and boxes.dim() == 2 and boxes.shape[1] == 4:
        centre = (boxes[:, :2] + boxes[:, 2:]).double() / 2
        offset = centre - torch.tensor([in_shape[2] / 2, in_shape[1] / 2], dtype=torch.float64)
        if float(offset.std(0).max()) > 0.5:  # the digit moves: its position is a distortion
            out["tx"], out["ty"] = offset[:, 0], offset[:, 1]
    for key in ("control_offsets", "corner_offsets"):
        if key in params:
            out["displacement"] = params[key].double().reshape(params[key].shape[0], -1, 2)
            out["displacement"] = out["displacement"].norm(dim=-1)
    return out


_LABELS = {
    "rotation": "rotation (degrees)",
    "scale": "scale (region side / input side)",
    "tx": "horizontal translation (pixels)",
    "ty": "vertical translation (pixels)",
    "tz": "depth translation (voxels)",
    "displacement": "point displacement (pixels)",
}


def _geometry_figure(
    learned: dict[str, torch.Tensor], truth: dict[str, torch.Tensor], title: str
) -> tuple[Any, list[str]]:
    """One panel per quantity: learned against generated (scatter, with the correlation) where
    the data record it, else the learned distribution (histogram). Returns the figure and one
    sentence per scatter."""
    plt = pyplot()
    keys = [k for k in _LABELS if k in learned]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.1 * len(keys), 3.0), squeeze=False)
    notes = []
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    for ax, key in zip(axes[0], keys):
        mine = learned[key].flatten().numpy()
        if key in truth and key != "displacement" and truth[key].numel() == learned[key].numel():
            true = truth[key].flatten().numpy()
            ax.scatter(true, mine, s=4, alpha=0.35, color="#4f9dde", linewidths=0)
            r = _correlation(truth[key], learned[key])
            ax.set(xlabel=f"generated {_LABELS[key]}", ylabel=f"learned {key}")
            ax.set_title(f"{key}: r = {r:+.2f}" if math.isfinite(r) else key, fontsize=9)
            if math.isfinite(r):
                notes.append(f"{key}: correlation {r:+.2f} between generated and learned")
            ax.set_ylim(*_span(mine, key))
        else:
            bins = 40
            lo, hi = _span(mine, key)
            if key in truth:
                true = truth[key].flatten().numpy()
                lo, hi = min(lo, float(true.min())), max(hi, float(true.max()))
            ax.hist(
                mine,
                bins=bins,
                range=(lo, hi),
                color="#4f9dde",
                alpha=0.8,
                label="learned",
                density=True,
            )
            if key in truth:
                ax.hist(
                    true,
                    bins=bins,
                    range=(lo, hi),
                    histtype="step",
                    color="#e4572e",
                    lw=1.5,
                    label="generated",
                    density=True,
                )
                ax.legend(fontsize=7)
            ax.set_xlim(lo, hi)
            ax.set(xlabel=_LABELS[key], ylabel="density")
            ax.set_title(key, fontsize=9)
        for axis in (ax.xaxis, ax.yaxis):  # few labels, written out: no offset, no overlap
            axis.set_major_locator(MaxNLocator(nbins=4))
            axis.set_major_formatter(ScalarFormatter(useOffset=False))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig, notes


#: the narrowest range the learned-parameter plots show for each quantity: values that barely
#: vary (an untrained transformer) are drawn as one bar, not spread over tick labels like
#: 1.0012, 1.0014, ... that run into each other.
_MIN_SPAN = {
    "rotation": 2.0,
    "scale": 0.05,
    "tx": 1.0,
    "ty": 1.0,
    "tz": 1.0,
    "displacement": 0.5,
}


def _span(values: Any, key: str) -> tuple[float, float]:
    """The axis range of ``values`` of quantity ``key``: their own, widened about their middle
    to at least ``_MIN_SPAN[key]``."""
    lo, hi = float(values.min()), float(values.max())
    width = _MIN_SPAN.get(key, 0.0)
    if hi - lo >= width:
        pad = 0.04 * (hi - lo)
        return lo - pad, hi + pad
    middle = (lo + hi) / 2
    return middle - width / 2, middle + width / 2


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson's r of two series; nan where either is constant."""
    pair = torch.stack((a.double().flatten(), b.double().flatten()))
    if bool((pair.std(dim=1) == 0).any()):
        return math.nan
    return float(torch.corrcoef(pair)[0, 1])


def _confusion_figure(true: torch.Tensor, pred: torch.Tensor, names: list[str]) -> Any:
    plt = pyplot()
    k = len(names)
    counts = torch.zeros(k, k, dtype=torch.long)
    counts.index_put_((true, pred), torch.ones_like(true), accumulate=True)
    rows = counts.sum(1, keepdim=True).clamp_min(1)
    share = (counts.double() / rows).numpy()
    side = min(max(3.2, 0.42 * k + 1.5), 12.0)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(counts[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7 if k <= 12 else 5,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    ticks = list(range(k)) if k <= 40 else list(range(0, k, max(k // 20, 1)))
    ax.set_xticks(ticks, [names[t] for t in ticks], fontsize=7, rotation=90 if k > 12 else 0)
    ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=7)
    ax.set(xlabel="predicted class", ylabel="true class")
    ax.set_title(f"confusion matrix ({int(counts.sum()):,} test images; colour: share of row)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def _predict(
    model: nn.Module, x: torch.Tensor, sts: list[SpatialTransformer], batch: int = 256
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The predicted classes of ``x`` and, in the same forward passes, the ``(N, P)`` params of
    each transformer of ``sts``."""
    with torch.no_grad(), recording_params(model) as records:
        pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])
    return pred, [torch.cat([r.params for r in records if r.transformer is st]) for st in sts]


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    weights: str = "best",
    num_images: int = 12,
    max_eval: int = MAX_EVAL,
) -> Path:
    """Write the HTML report of the run in ``run_dir`` (default ``run_dir/report.html``).

    Args:
        run_dir: a ``torchstn train`` run folder (checkpoint.pt, config.json, metrics.jsonl,
            result.json; the last two are optional).
        out: the HTML file to write (atomically).
        weights: ``best`` (on validation) or ``last``.
        num_images: test images drawn with their sampling grids (misclassified ones first).
        max_eval: the first this many test images give the confusion matrix and the parameter
            plots.

    Raises:
        TorchSTNError: no run there, a co-localisation run, or matplotlib missing (one line).
    """

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InvalidInputError(f"{run_dir}: not a run folder")
    if not (run_dir / "checkpoint.pt").is_file():
        raise DataError(f"{run_dir}: no checkpoint.pt (has the run saved its first epoch?)")
    if num_images < 1 or max_eval < 1:
        raise InvalidInputError("num_images and max_eval must be positive")
    out = Path(out) if out is not None else run_dir / "report.html"
    if out.is_dir():
        raise InvalidInputError(f"--out {out}: is a folder; give the HTML file to write")
    pyplot()  # fail in one line before any work when matplotlib is missing
    model, info = load_with_info(run_dir, weights, "cpu")
    cfg = info.config
    if cfg.objective.name == "registration":
        from .registration import write_registration_report  # (it imports _page, as this)

        return write_registration_report(model, info, run_dir, out, num_images)
    if cfg.objective.name != "classification":
        raise TorchSTNError(
            f"{run_dir}: report draws classification runs; this is a {cfg.objective.name} run "
            "(torchstn visualize draws its crops)"
        )
    result = _read_json(run_dir / "result.json")
    data = load_run_data(info)
    split = data.eval_split("test")
    x, y = split.head(min(len(split), max_eval))
    sts = input_transformers(model, x.shape[1:])
    pred, all_params = _predict(model, x, sts)
    params = all_params[0] if all_params else None
    warnings = untrained_warnings(sts, all_params, "test images")
    data_name = data_label(info.data_name, cfg)
    wrong = (pred != y).nonzero().flatten()
    right = (pred == y).nonzero().flatten()
    order = torch.cat((wrong, right))[:num_images]
    names = [info.class_name(i) or str(i) for i in range(info.num_classes)]
    sections: list[str] = []

    # training curves
    metrics_file = run_dir / "metrics.jsonl"
    rows = read_metrics(metrics_file) if metrics_file.is_file() else []
    if rows:
        uri = figure_uri(curves_figure(rows, title=f"{info.model_name} on {data_name}"))
        cut = " An open marker: the epoch the time budget cut short." if _partial(rows) else ""
        sections.append(
            "<h2>Training curves</h2>"
            + _figure(
                uri, "training curves", "Loss and error per epoch, training and validation." + cut
            )
        )

    # inputs, grids, outputs
    pictured = f"{int(wrong.numel())} of the first {x.shape[0]:,} test images are misclassified"
    caption = (
        f"Test images, misclassified first ({pictured}): each input with the region its "
        "transformer samples (border and mesh) and, below, the transformer's output."
        if sts
        else f"Test images, misclassified first ({pictured}); the model has no transformer."
    )
    idx = order.tolist()
    if sts:
        fig = transformations_figure(
            model,
            x[idx],
            labels=[names[int(y[i])] for i in idx],
            predictions=[names[int(pred[i])] for i in idx],
        )
        sections.append(
            "<h2>What the transformer does</h2>" + _figure(figure_uri(fig), "grids", caption)
        )
    sections.append(
        "<h2>Confusion matrix</h2>"
        + _figure(
            figure_uri(_confusion_figure(y, pred, names)), "confusion matrix", "Rows: true class."
        )
    )

    # learned parameters (recorded with the predictions) against the generated distortions
    if params is not None:
        # the test set's own ground truth, kept by the data module that generated x
        recorded = getattr(data, "test_truth", None)
        truth: dict[str, torch.Tensor] = {}
        if recorded is not None:
            truth = {k: v[: x.shape[0]] for k, v in _truth(recorded, tuple(x.shape[1:])).items()}
        geo = learned_geometry(sts[0], params)
        fig, notes = _geometry_figure(
            geo, truth, f"first transformer ({sts[0].transform.name}), {x.shape[0]:,} test images"
        )
        text = (
            "Learned against generated where the task records the distortion (one dot per test "
            "image), else the learned distribution. Read through the local affine map at the "
            "output's centre; the transformer may settle on any fixed canonical pose, so a "
            "strong correlation, of either sign, is what to look for."
            if truth
            else "The learned distribution (these data record no distortions to compare with)."
        )
        sections.append(
            "<h2>Learned transformations</h2>"
            + _figure(figure_uri(fig), "learned parameters", text)
            + ("<p class='note'>" + html.escape("; ".join(notes)) + ".</p>" if notes else "")
        )

    # config, result, environment
    trained, weights_text = _epochs(info, rows, result)
    if result:
        keep = ("test_error", "val_error", "test_loss", "epochs", "best_epoch", "train_seconds")
        sections.append(
            "<h2>Result</h2>" + _table([(k, _number(k, result[k])) for k in keep if k in result])
        )
    env = [
        ("hardware", _hardware((result or {}).get("hardware", "?"))),
        *[(k, v) for k, v in ((result or {}).get("versions") or {}).items()],
        ("git commit", (result or {}).get("git_commit")),
        ("config sha256", (result or {}).get("config_sha256")),
        ("checkpoint", str(info.path)),
        ("weights", weights_text),
    ]
    sections.append("<h2>Environment</h2>" + _table(env))
    config_text = json.dumps(config_to_dict(cfg), indent=2)
    sections.append(
        "<h2>Resolved config</h2><pre>" + html.escape(config_text, quote=False) + "</pre>"
    )

    test_error = (result or {}).get("test_error")
    headline = (
        f"test error <b>{test_error:.2f}%</b>"
        if isinstance(test_error, (int, float)) and math.isfinite(test_error)
        else f"error on the first {x.shape[0]:,} test images "
        f"<b>{100 * wrong.numel() / max(x.shape[0], 1):.2f}%</b>"
    )
    title = f"{info.model_name} on {data_name}"
    warned = "".join(f"<p class='warn'>{html.escape(w)}</p>" for w in warnings)
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}: torchstn report</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='sub'>Run {html.escape(str(run_dir))}; report written "
        f"{datetime.date.today().isoformat()} by torchstn report.</p>"
        f"<p class='big'>{headline} after {trained} ({weights_text}).</p>"
        + warned
        + "".join(sections)
        + "</body></html>\n"
    )
    atomic_write_text(out, page)
    return out
