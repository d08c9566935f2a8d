"""Sections 1 and 6 of the guide: a trained ST-CNN, part by part, and what it learned.

Section 1 follows one cluttered test digit through the trained model: input, localisation net,
the predicted affine params, the grid generator's sampling grid over the input, the sampler's
output and the classifier's answer. Section 6 draws the learned boxes (the border of the region
each digit's transformer samples) and their evolution over training, and measures them against
the digits' true positions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..functional import normalized_matrix_to_pixel, normalized_to_pixel, pixel_to_normalized
from ..module import SpatialTransformer
from ..transforms import MatrixTransform
from ._plot import BOX, COLOURS, draw_region, mesh_lines, plt, save, show_image
from .sweep import RunResult, transformer_of

__all__ = [
    "Architecture",
    "BoxStats",
    "architecture",
    "box_stats",
    "plot_architecture",
    "plot_evolution",
    "plot_trained",
    "strip_columns",
]

#: test digits drawn with their learned boxes; digits followed through training.
NUM_SHOWN, NUM_STRIP = 8, 4
#: most snapshots in the strip.
MAX_COLUMNS = 6


def _st(model: nn.Module | None) -> tuple[SpatialTransformer, MatrixTransform]:
    """The transformer of an ST classifier, and its (matrix) transform."""
    if model is None:  # pragma: no cover - the tracked run keeps its model
        raise ValueError("expected the tracked run's model")
    st = transformer_of(model)
    if not isinstance(st.transform, MatrixTransform):  # pragma: no cover - affine
        raise TypeError(f"expected a matrix transform, got {st.transform.name!r}")
    return st, st.transform


def describe_layers(module: nn.Module) -> list[str]:
    """Short names of the weight and pooling layers of a ``Sequential``-like module, in order."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append(f"conv {m.out_channels}@{m.kernel_size[0]}x{m.kernel_size[1]}")
        elif isinstance(m, nn.MaxPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            out.append(f"max-pool {k}")
        elif isinstance(m, nn.Linear):
            out.append(f"fc {m.out_features}")
    return out


@dataclass(frozen=True)
class Architecture:
    """One test digit through the trained ST-CNN.

    Attributes:
        index: its index in the level's test set; ``label``, ``prediction`` and ``probs``
            ``(10,)`` the classifier's softmax.
        image, output: ``(H, W)`` the input and the transformer's output.
        params: ``(6,)`` the predicted affine params (normalised frame).
        pixel_matrix: ``(2, 3)`` the same map from output pixel centres to input pixels.
        corners: ``(4, 2)`` input pixel coordinates of the output frame's corners (top left, top
            right, bottom right, bottom left).
        localization, classifier: layer names.
        first_correct: whether ``index`` is the first test digit the model gets right.
    """

    index: int
    label: int
    prediction: int
    probs: torch.Tensor
    image: torch.Tensor
    output: torch.Tensor
    params: torch.Tensor
    pixel_matrix: torch.Tensor
    corners: torch.Tensor
    localization: list[str]
    classifier: list[str]
    first_correct: bool


@torch.no_grad()
def architecture(run: RunResult) -> Architecture:
    """Follow the first tracked test digit that the trained model classifies correctly (the first
    one if it gets none right) through the model."""
    model, tracked = run.model_module, run.tracked
    if model is None or tracked is None:  # pragma: no cover - the tracked run has both
        raise ValueError("architecture: needs the tracked run")
    st, transform = _st(model)
    x = tracked.x.float()
    logits = model(x)
    right = (logits.argmax(1) == tracked.y).nonzero()[:, 0]
    index = int(right[0]) if len(right) else 0
    out, params = st(x[index : index + 1], return_params=True)
    probs = torch.softmax(logits[index].double(), 0)
    h, w = st.in_shape[1:]
    matrix = transform.to_matrix(params.double())
    pixel = normalized_matrix_to_pixel(matrix, (h, w), st.out_size, st.align_corners)[0, :2]
    frame = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    corners = normalized_to_pixel(transform.map_points(params.double(), frame[None]), (h, w))[0]
    loc = [*describe_layers(st.localization), f"fc {transform.num_params} (theta)"]
    return Architecture(
        index=index,
        label=int(tracked.y[index]),
        prediction=int(probs.argmax()),
        probs=probs,
        image=x[index, 0],
        output=out[0, 0],
        params=params[0].double(),
        pixel_matrix=pixel,
        corners=corners,
        localization=loc,
        classifier=describe_layers(model.classifier),  # type: ignore[arg-type]
        first_correct=bool(len(right)),
    )


@dataclass(frozen=True)
class BoxStats:
    """The learned boxes of the tracked test digits at one snapshot (means over the digits).

    Attributes:
        epoch: 0 for the initialisation.
        centre_error: distance (pixels) from the centre of the sampled region to the centre of the
            digit's 28 x 28 frame.
        side: square root of the sampled region's area, in input pixels.
        ink_inside: % of the digits whose ink box lies wholly inside the sampled region.
    """

    epoch: int
    centre_error: float
    side: float
    ink_inside: float


def box_stats(run: RunResult) -> list[BoxStats]:
    """:class:`BoxStats` of every snapshot of the tracked run's test digits."""
    st, transform = _st(run.model_module)
    tracked = run.tracked
    if tracked is None:  # pragma: no cover - the tracked run has them
        raise ValueError("box_stats: needs the tracked run")
    h, w = st.in_shape[1:]
    size = (h, w)
    dt = torch.float64
    centre = (
        torch.stack(
            (
                (tracked.frames[:, 0] + tracked.frames[:, 2]) / 2,
                (tracked.frames[:, 1] + tracked.frames[:, 3]) / 2,
            ),
            dim=-1,
        ).to(dt)
        - 0.5
    )  # canvas [0, W] -> pixel-centre coordinates
    # the ink pixels' centres at the corners of the ink box, in the normalised input frame
    x0, y0, x1, y1 = tracked.ink.to(dt).unbind(-1)
    ink = torch.stack(
        (torch.stack((x0, y0), -1), torch.stack((x1 - 1, y0), -1),
         torch.stack((x1 - 1, y1 - 1), -1), torch.stack((x0, y1 - 1), -1)),
        dim=1,
    )  # fmt: skip
    ink = pixel_to_normalized(ink, size)
    stats = []
    for epoch, params in zip(tracked.epochs, tracked.params):
        matrix = transform.to_matrix(params.to(dt))  # (N, 3, 3): output -> input, normalised
        origin = torch.zeros(params.shape[0], 1, 2, dtype=dt)
        middle = normalized_to_pixel(transform.map_points(params.to(dt), origin), size)[:, 0]
        area = torch.linalg.det(matrix[:, :2, :2]).abs() * w * h  # input pixels
        back = torch.linalg.solve(matrix, torch.cat((ink, torch.ones_like(ink[..., :1])), -1).mT)
        back = back[:, :2] / back[:, 2:]  # (N, 2, 4) ink corners in the output frame
        inside = (back.abs() <= 1).flatten(1).all(1)
        stats.append(
            BoxStats(
                epoch=int(epoch),
                centre_error=float((middle - centre).norm(dim=-1).mean()),
                side=float(area.sqrt().mean()),
                ink_inside=100.0 * float(inside.double().mean()),
            )
        )
    return stats


def strip_columns(epochs: list[int], most: int = MAX_COLUMNS) -> list[int]:
    """Indices of at most ``most`` snapshots, evenly spread, first and last included.

    Example:
        >>> strip_columns(list(range(9)), 6)
        [0, 2, 3, 5, 6, 8]
    """
    n = len(epochs)
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


def plot_architecture(a: Architecture, run: RunResult, path: Path) -> Path:
    """The diagram of section 1: input -> localisation net -> theta -> grid -> sampler -> class."""
    p = plt()
    from matplotlib.patches import FancyArrowPatch

    st, _ = _st(run.model_module)
    fig = p.figure(figsize=(15, 3.7))
    grid = fig.add_gridspec(1, 5, wspace=0.4)
    ax_in, ax_loc, ax_grid, ax_out, ax_cls = (fig.add_subplot(grid[0, k]) for k in range(5))
    h, w = a.image.shape
    show_image(ax_in, a.image, f"input U ({h} x {w})\ntest digit #{a.index}, label {a.label}", 9)

    ax_loc.axis("off")
    ax_loc.set_box_aspect(1)
    theta = a.params.reshape(2, 3).tolist()
    rows = "\n".join("[" + " ".join(f"{v:+.3f}" for v in row) + "]" for row in theta)
    ax_loc.text(
        0.5, 1.0, "\n".join(a.localization[:-1]), ha="center", va="top", fontsize=8.5,
        transform=ax_loc.transAxes,
        bbox={"boxstyle": "round,pad=0.5", "fc": "#eef4fb", "ec": COLOURS[0]},
    )  # fmt: skip
    ax_loc.annotate(
        a.localization[-1], xy=(0.5, 0.3), xytext=(0.5, 0.47), xycoords="axes fraction",
        ha="center", va="center", fontsize=8.5,
        arrowprops={"arrowstyle": "-|>", "color": "0.25"},
    )  # fmt: skip
    ax_loc.text(
        0.5, 0.0, f"theta =\n{rows}", ha="center", va="bottom", fontsize=8.5,
        family="monospace", transform=ax_loc.transAxes,
        bbox={"boxstyle": "round,pad=0.4", "fc": "#fdf0e8", "ec": BOX},
    )  # fmt: skip
    ax_loc.set_title("localisation net f_loc\ntheta = f_loc(U)", fontsize=9)

    show_image(ax_grid, a.image * 0.55, "grid generator\nT_theta(G): the grid on U", 9)
    draw_region(ax_grid, st.transform, a.params, (h, w), lines=9, lw=1.4)
    gx = torch.linspace(-1, 1, 12, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(gx, gx, indexing="xy"), -1).reshape(1, -1, 2)
    src = normalized_to_pixel(st.transform.map_points(a.params[None], pts), (h, w))[0]
    ax_grid.plot(src[:, 0].numpy(), src[:, 1].numpy(), ".", color="#ffd166", ms=2.5)
    ax_grid.set_xlim(-0.5, w - 0.5)
    ax_grid.set_ylim(h - 0.5, -0.5)

    ho, wo = a.output.shape
    show_image(
        ax_out, a.output, f"sampler (bilinear): V = U(T_theta(G))\noutput V ({ho} x {wo})", 9
    )

    colours = [BOX if c == a.prediction else "0.65" for c in range(10)]
    ax_cls.barh(range(10), a.probs.numpy(), color=colours)
    ax_cls.set_box_aspect(1)
    ax_cls.set_yticks(range(10))
    ax_cls.tick_params(labelsize=8)
    ax_cls.set_ylim(9.6, -0.6)
    ax_cls.set_xlim(0, 1)
    ax_cls.set_xlabel("probability of each class", fontsize=8)
    layers = " -> ".join(a.classifier)
    ax_cls.set_title(
        f"classifier: prediction {a.prediction}\n(p = {float(a.probs[a.prediction]):.2f})",
        fontsize=9,
    )
    fig.text(0.5, 0.01, f"classifier: {layers}", ha="center", fontsize=8.5, color="0.3")
    fig.canvas.draw()
    order = (ax_in, ax_loc, ax_grid, ax_out, ax_cls)
    for left, right in itertools.pairwise(order):
        lb, rb = left.get_position(original=False), right.get_position(original=False)
        y = (lb.y0 + lb.y1) / 2
        fig.add_artist(
            FancyArrowPatch(
                (lb.x1 + 0.004, y), (rb.x0 - (0.022 if right is ax_cls else 0.004), y),
                transform=fig.transFigure,
                arrowstyle="-|>", mutation_scale=16, color="0.25", lw=1.5,
            )
        )  # fmt: skip
    fig.suptitle(
        "a spatial transformer, part by part (the trained ST-CNN of section 6)", fontsize=11
    )
    return save(fig, path)


def _margin(st: SpatialTransformer, params: torch.Tensor) -> float:
    """Pixels to show around the input so that every box of ``params`` ``(N, P)`` is whole
    (at least 2, at most a quarter of the side)."""
    h, w = st.in_shape[1:]
    over = 0.0
    for p in params:
        ho, wo = st.out_size  # the guide's transformer works on images
        mesh = mesh_lines(
            st.transform, p, (h, w), align_corners=st.align_corners, out_size=(ho, wo)
        )
        lo, hi = mesh.reshape(-1, 2).amin(0), mesh.reshape(-1, 2).amax(0)
        over = max(over, float(-0.5 - lo.min()), float(hi[0] - (w - 0.5)), float(hi[1] - (h - 0.5)))
    return min(max(over + 1.0, 2.0), max(h, w) / 4)


def _canvas(ax: Any, image: torch.Tensor, margin: float) -> None:
    """Show ``image`` with ``margin`` pixels of white around it and a thin frame at its edge."""
    show_image(ax, image)
    h, w = image.shape
    ax.set_xlim(-0.5 - margin, w - 0.5 + margin)
    ax.set_ylim(h - 0.5 + margin, -0.5 - margin)
    ax.add_patch(plt().Rectangle((-0.5, -0.5), w, h, fill=False, ec="0.55", lw=0.6))
    for side in ax.spines.values():
        side.set_visible(False)


def _box_axes(
    ax: Any, st: SpatialTransformer, image: torch.Tensor, params: torch.Tensor, margin: float
) -> None:
    _canvas(ax, image, margin)
    h, w = st.in_shape[1:]
    draw_region(ax, st.transform, params, (h, w), lw=1.5)


@torch.no_grad()
def plot_trained(run: RunResult, path: Path) -> Path:
    """Test digits with the learned boxes above the transformer's outputs (best weights)."""
    p = plt()
    model, tracked = run.model_module, run.tracked
    assert model is not None and tracked is not None
    st, _ = _st(model)
    x = tracked.x[:NUM_SHOWN].float()
    out, params = st(x, return_params=True)
    pred = model(x).argmax(1)
    n = x.shape[0]
    fig, axes = p.subplots(2, n, figsize=(1.7 * n, 3.9), squeeze=False)
    margin = _margin(st, params)
    for i in range(n):
        _box_axes(axes[0, i], st, x[i, 0], params[i], margin)
        ok = int(pred[i]) == int(tracked.y[i])
        axes[0, i].set_title(
            f"label {int(tracked.y[i])}, pred {int(pred[i])}", fontsize=8,
            color="black" if ok else BOX,
        )  # fmt: skip
        _canvas(axes[1, i], out[i, 0], margin)
    axes[0, 0].set_ylabel("input + box", fontsize=9)
    axes[1, 0].set_ylabel("ST output", fontsize=9)
    fig.suptitle(f"the trained ST-CNN on test digits of {run.level.label()}", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


@torch.no_grad()
def plot_evolution(run: RunResult, path: Path) -> Path:
    """The same test digits at several points of training: the box over the input, and below it
    the output."""
    p = plt()
    model, tracked = run.model_module, run.tracked
    assert model is not None and tracked is not None
    st, _ = _st(model)
    cols = strip_columns(tracked.epochs)
    x = tracked.x[:NUM_STRIP].float()
    n = x.shape[0]
    margin = _margin(st, torch.cat([tracked.params[k][:NUM_STRIP] for k in cols]).float())
    fig = p.figure(figsize=(2.5 * len(cols), 1.3 * n + 0.5), layout="constrained")
    panels = fig.subfigures(1, len(cols), wspace=0.04)
    for c, k in enumerate(cols):
        params = tracked.params[k][:NUM_STRIP].float()
        out = st.transform_input(x, params)
        epoch = tracked.epochs[k]
        panels[c].suptitle("start (identity)" if epoch == 0 else f"after epoch {epoch}", fontsize=9)
        axes = panels[c].subplots(n, 2, squeeze=False, gridspec_kw={"wspace": 0.05})
        for i in range(n):
            _box_axes(axes[i, 0], st, x[i, 0], params[i], margin)
            _canvas(axes[i, 1], out[i, 0], margin)
        axes[-1, 0].set_xlabel("input + box", fontsize=8)
        axes[-1, 1].set_xlabel("output", fontsize=8)
    fig.suptitle(
        f"the transform over training: the same {n} test digits, box and output", fontsize=10
    )
    return save(fig, path)
