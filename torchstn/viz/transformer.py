"""Pictures of what a spatial transformer learned, and training curves.

The classic figure: each input image with the region its transformer samples drawn over it (the
image of the output frame's border and a coarse mesh, mapped into the input by the transform),
beside the transformer's output.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TorchSTNError
from ..module import SpatialTransformer
from ..preprocess import input_normalizer
from ..transforms.warping import output_frame
from ._mpl import pyplot, save_figure
from ._transformers import input_transformers, transformer_outputs
from .volumes import volume_figure

__all__ = [
    "curves_figure",
    "data_label",
    "identity_offsets",
    "input_transformers",
    "plot_curves",
    "plot_predictions",
    "plot_transformations",
    "read_metrics",
    "sampling_mesh",
    "transformations_figure",
    "transformer_params",
    "untrained_warnings",
]

#: a transformer whose sampling grid stays this close (input pixels) to the identity's on every
#: image drawn has not moved from its initial transform.
IDENTITY_TOLERANCE_PX = 0.5
#: names of a data folder or file that say which split it is, not which data set.
_SPLIT_NAMES = frozenset(
    "train training trainset train_set val valid validation test data dataset images imgs all".split()
)

_COLOURS = ("#e4572e", "#29bf12", "#4f9dde", "#f3a712")


def sampling_mesh(
    st: SpatialTransformer, params: torch.Tensor, lines: int = 5, points: int = 25
) -> torch.Tensor:
    """Pixel coordinates in the *input* of a ``lines x lines`` mesh of the output frame
    (:func:`torchstn.output_frame` of ``st``).

    Returns:
        ``(B, 2, lines, points, 2)``: ``[:, 0]`` horizontal and ``[:, 1]`` vertical lines, each
        sampled at ``points`` positions, ``(x, y)`` in input pixel-centre coordinates. The first
        and last lines of each set are the border of the sampled region (the output's pixels
        edge to edge).
    """
    return output_frame(
        st.transform, params, st.in_shape[1:], st.out_size, st.align_corners, lines, points
    )


@torch.no_grad()
def identity_offsets(st: SpatialTransformer, params: torch.Tensor, points: int = 9) -> torch.Tensor:
    """How far each image's sampling grid lies from the identity's, in input pixels: the largest
    distance between where ``params`` ``(B, P)`` and the family's identity params map a
    ``points x points`` mesh of the output frame. Returns ``(B,)``.

    Example:
        >>> st = SpatialTransformer((1, 40, 40), "affine")
        >>> moved = st.transform.identity_params()[None].repeat(2, 1)
        >>> moved[1, 2] = 0.1  # shifted by a tenth of the half width: 2 px
        >>> [round(v, 6) for v in identity_offsets(st, moved).tolist()]
        [0.0, 2.0]
    """
    params = params.detach().double().cpu()
    transform = copy.deepcopy(st.transform).double().cpu()  # the model's own stays as it is
    identity = transform.identity_params(torch.float64, "cpu")
    dims = transform.ndim
    t = torch.linspace(-1, 1, points, dtype=torch.float64)
    axes = torch.meshgrid(*([t] * dims), indexing="ij")[::-1]  # (x, y[, z]) order
    mesh = torch.stack(axes, dim=-1).reshape(1, -1, dims)
    mesh = mesh.expand(params.shape[0], -1, -1).contiguous()
    moved = transform.map_points(params, mesh)
    still = transform.map_points(identity.expand_as(params).contiguous(), mesh)
    half = torch.tensor([n / 2 for n in reversed(st.in_shape[1:])], dtype=torch.float64)
    return ((moved - still) * half).norm(dim=-1).amax(dim=1)


def untrained_warnings(
    sts: Sequence[SpatialTransformer], params: Sequence[torch.Tensor], what: str = "images"
) -> list[str]:
    """One line per transformer whose sampling grid stays within :data:`IDENTITY_TOLERANCE_PX`
    of the identity's on every image of a batch (``params[i]``: transformer ``i``'s ``(B, P)``
    params on it): a transformer that never moved from where it started, so an untrained one.

    Example:
        >>> st = SpatialTransformer((1, 40, 40), "affine")
        >>> print(untrained_warnings([st], [st.transform.identity_params()[None].repeat(3, 1)])[0])
        warning: the transformer (affine) never moved away from the identity: on 3 images its sampling grid stays within 0.00 px of the identity's (untrained: train longer)
    """
    lines = []
    for i, (st, p) in enumerate(zip(sts, params)):
        if p.shape[0] == 0:
            continue
        worst = float(identity_offsets(st, p).max())
        if worst < IDENTITY_TOLERANCE_PX:
            which = f"transformer {i + 1} of {len(sts)}" if len(sts) > 1 else "transformer"
            lines.append(
                f"warning: the {which} ({st.transform.name}) never moved away from the identity: "
                f"on {p.shape[0]:,} {what} its sampling grid stays within {worst:.2f} px of the "
                "identity's (untrained: train longer)"
            )
    return lines


@torch.no_grad()
def transformer_params(
    model: nn.Module, x: torch.Tensor
) -> tuple[list[SpatialTransformer], list[torch.Tensor]]:
    """The transformers of ``model`` that read ``x`` ``(N, C, H, W)`` directly, and the ``(N, P)``
    params each predicts for it (in eval mode, after the model's input normalisation)."""
    sts = input_transformers(model, x.shape[1:])
    was = model.training
    model.eval()
    try:
        norm = input_normalizer(model)
        return sts, [st(norm(x), return_params=True)[1] for st in sts]
    finally:
        model.train(was)


def data_label(data_name: str, config: Any = None) -> str:
    """What a run trained on, for titles: the task, or the user's data named after the data set
    rather than its split (``digits/train`` for a folder ``digits/train``, not ``train``).

    Example:
        >>> from torchstn.train.config import Config, DataConfig
        >>> data_label("train", Config(data=DataConfig(task=None, path="data/digits/train")))
        'digits/train'
        >>> data_label("digits.npz", Config(data=DataConfig(task=None, path="/x/digits.npz")))
        'digits.npz'
    """
    data = getattr(config, "data", None)
    if data is None or getattr(data, "task", None) or not getattr(data, "path", None):
        return data_name
    path = Path(str(data.path).rstrip("/\\") or str(data.path))
    if path.stem.lower() in _SPLIT_NAMES and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or str(data.path)


@torch.no_grad()
def plot_transformations(
    model: nn.Module,
    x: torch.Tensor,
    out: str | Path,
    labels: Sequence[int | str] | None = None,
    predictions: Sequence[int | str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``x`` ``(N, C, H, W)`` with each transformer's sampling mesh, beside its output.

    Works for any model containing :class:`SpatialTransformer` modules that read ``x`` directly
    (one column pair per transformer). Writes a PNG atomically and returns its path. Volumes
    ``(N, C, D, H, W)`` are drawn as slices and projections with the sampled box
    (:func:`torchstn.viz.volumes.volume_figure`).
    """
    return save_figure(
        transformations_figure(model, x, labels, predictions, title), out, bbox_inches="tight"
    )


@torch.no_grad()
def transformations_figure(
    model: nn.Module,
    x: torch.Tensor,
    labels: Sequence[int | str] | None = None,
    predictions: Sequence[int | str] | None = None,
    title: str | None = None,
) -> Any:
    """The figure of :func:`plot_transformations` (a matplotlib figure, not saved): one column
    per image, the input with each transformer's mesh on top, each transformer's output below,
    every image at its own aspect ratio (square pixels); up to 8 columns per row of images.
    Volumes ``(N, C, D, H, W)``: :func:`torchstn.viz.volumes.volume_figure`."""
    if x.dim() == 5:
        return volume_figure(model, x, labels, predictions, title)
    plt = pyplot()
    sts, outs = transformer_outputs(model, x)  # outputs back in [0, 1] after a normalisation
    n = x.shape[0]
    per_row = min(n, 8)
    bands = -(-n // per_row)
    rows = (1 + len(sts)) * bands
    fig, grid = plt.subplots(rows, per_row, figsize=(1.6 * per_row, 1.75 * rows), squeeze=False)
    img = x.detach().float().cpu()
    for ax in grid.flat:
        ax.set_axis_off()
    for i in range(n):
        band, col = divmod(i, per_row)
        # axes[r, 0]: row r (input, then each transformer's output) of this image's column
        axes = grid[band * (1 + len(sts)) : (band + 1) * (1 + len(sts)), col : col + 1]
        for ax in axes.flat:
            ax.set_axis_on()
        ax = axes[0, 0]
        ax.imshow(_display(img[i]).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for j, (st, (_, params)) in enumerate(zip(sts, outs)):
            mesh = sampling_mesh(st, params[i : i + 1]).cpu()[0].numpy()
            colour = _COLOURS[j % len(_COLOURS)]
            for d in range(2):
                for li in range(mesh.shape[1]):
                    border = li in (0, mesh.shape[1] - 1)
                    ax.plot(
                        mesh[d, li, :, 0],
                        mesh[d, li, :, 1],
                        color=colour,
                        lw=1.4 if border else 0.5,
                        alpha=1.0 if border else 0.6,
                    )
        # a grey margin around the canvas: a sampled region reaching past the image stays whole
        pad = 0.12 * max(img.shape[2], img.shape[3])
        ax.set_facecolor("#c8c8c8")
        ax.set_xlim(-0.5 - pad, img.shape[3] - 0.5 + pad)
        ax.set_ylim(img.shape[2] - 0.5 + pad, -0.5 - pad)
        text = []
        if labels is not None:
            text.append(f"label {labels[i]}")
        if predictions is not None:
            text.append(f"pred {predictions[i]}")
        wrong = labels is not None and predictions is not None and labels[i] != predictions[i]
        ax.set_title(", ".join(text), fontsize=7, color="#c0392b" if wrong else "black")
        for j, (y, _) in enumerate(outs):
            axes[1 + j, 0].imshow(
                _display(y[i].float().cpu()).numpy(),
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
    for band in range(bands):
        top = band * (1 + len(sts))
        grid[top, 0].set_ylabel("input + grid", fontsize=8)
        for j in range(len(sts)):
            name = f"ST {j + 1} output" if len(sts) > 1 else "ST output"
            grid[top + 1 + j, 0].set_ylabel(name, fontsize=8)
    for ax in grid.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def plot_predictions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: str | Path, title: str | None = None
) -> Path:
    """Classify ``x`` with ``model`` (in eval mode) and draw :func:`plot_transformations` with the
    labels ``y`` and the predictions."""
    was = model.training
    model.eval()
    pred = model(x).argmax(1)
    model.train(was)
    return plot_transformations(model, x, out, y.tolist(), pred.tolist(), title=title)


def _display(img: torch.Tensor) -> torch.Tensor:
    """``(C, H, W)`` to something imshow takes: grey for 1 or 2 channels (max), RGB for 3."""
    img = img.clamp(0, 1)
    if img.shape[0] == 3:
        return img.permute(1, 2, 0)
    return img.max(0).values


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file (or of the one in a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise TorchSTNError(f"no metrics file at {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise TorchSTNError(f"{path}:{n}: not a JSON line") from None
    return rows


def plot_curves(
    metrics: Sequence[dict[str, Any]], out: str | Path, title: str | None = None
) -> Path:
    """Loss and error per epoch (train and validation) from ``metrics.jsonl`` records."""
    return save_figure(curves_figure(metrics, title), out, bbox_inches="tight")


def curves_figure(metrics: Sequence[dict[str, Any]], title: str | None = None) -> Any:
    """The figure of :func:`plot_curves` (a matplotlib figure, not saved): integer epochs on
    the x axes, a marker on every point (a one-epoch run shows its point), an open marker on an
    epoch the time budget cut short; the error on a log axis labelled at 1, 2 and 5 of each
    decade where it spans a factor of 3 or more, else on a linear one. No axis uses an offset."""
    if not metrics:
        raise TorchSTNError("no epochs recorded yet: nothing to plot")
    plt = pyplot()
    from matplotlib.ticker import (
        FixedLocator,
        FormatStrFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
        ScalarFormatter,
    )

    epochs = [int(r["epoch"]) for r in metrics]
    partial = [i for i, r in enumerate(metrics) if r.get("partial")]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    marker = "o" if len(epochs) <= 40 else None
    errors: list[float] = []
    for key, style, colour in (("train", "-", "C0"), ("val", "--", "C1")):
        for ax, field in ((a1, f"{key}_loss"), (a2, f"{key}_error")):
            values = [float(r[field]) for r in metrics]
            ax.plot(epochs, values, style, color=colour, marker=marker, ms=4, label=key)
            if field.endswith("error"):
                errors += values
            if partial:  # the cut-short epoch: an open marker
                ax.plot(
                    [epochs[i] for i in partial],
                    [values[i] for i in partial],
                    "o",
                    ms=8,
                    mfc="none",
                    mec=colour,
                    label="partial epoch" if key == "val" else None,
                )
    a1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    a2.set(xlabel="epoch", ylabel="error (%)", title="error")
    positive = [e for e in errors if e > 0]
    if positive and min(errors) > 0 and max(positive) / min(positive) >= 3:
        a2.set_yscale("log")
        a2.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a2.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        a2.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
        a2.yaxis.set_minor_formatter(NullFormatter())
    else:
        a2.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    a1.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    lo, hi = min(epochs), max(epochs)
    for a in (a1, a2):
        if hi - lo < 8:  # few epochs: a tick at each, and room beside the first and last
            a.set_xlim(lo - 0.5, hi + 0.5)
            a.xaxis.set_major_locator(FixedLocator(list(range(lo, hi + 1))))
        else:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
