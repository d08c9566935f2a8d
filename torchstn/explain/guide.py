"""``torchstn explain``: compute everything, draw the figures, write ``guide.md``.

Three steps, kept apart so that each can be checked on its own: :func:`compute_guide` computes
every number (deterministic for a seed: the training budgets are counted in images, not minutes),
:func:`write_figures` draws the PNGs and :func:`render_markdown` writes the text from the numbers
alone. :func:`write_guide` runs the three and writes ``guide.md`` last, atomically, so that a guide
never links a figure that is not there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from .._atomic import atomic_write_text
from ..errors import InvalidInputError
from ..transforms import get
from ._data import DIGIT_INDEX
from ._plot import plt
from .budget import FULL, MODELS, QUICK, Budget
from .fields import FieldsExample, fields_example, plot_fields
from .gallery import GalleryEntry, gallery, plot_gallery
from .kernels import SAMPLERS, KernelComparison, compare_kernels, plot_gradients, plot_kernels
from .sweep import RunResult, train_command, train_sweep
from .sweep_figures import plot_curves, plot_sweep
from .trained import (
    Architecture,
    BoxStats,
    architecture,
    box_stats,
    plot_architecture,
    plot_evolution,
    plot_trained,
)
from .volumes import EXAMPLES as VOLUME_EXAMPLES
from .volumes import SIDE, THICKNESS, VolumeExample, plot_volumes, volume_example
from .worked import WorkedExample, plot_influence, plot_worked, worked_example

__all__ = [
    "FIGURES",
    "Guide",
    "compute_guide",
    "explain_command",
    "render_markdown",
    "write_guide",
]

#: the guide's figures: key -> file name (beside guide.md).
FIGURES = {
    "architecture": "guide_architecture.png",
    "worked": "guide_worked_example.png",
    "influence": "guide_influence.png",
    "kernels": "guide_kernels.png",
    "gradients": "guide_kernel_gradients.png",
    "gallery": "guide_transforms.png",
    "sweep": "guide_pooling_vs_st.png",
    "curves": "guide_validation_curves.png",
    "trained": "guide_trained_boxes.png",
    "evolution": "guide_training_evolution.png",
    "volumes": "guide_volumes.png",
    "fields": "guide_fields.png",
}


@dataclass
class Guide:
    """Everything the guide shows, computed."""

    budget: Budget
    seed: int
    worked: WorkedExample
    kernels: KernelComparison
    gallery: list[GalleryEntry]
    runs: list[RunResult]
    architecture: Architecture
    stats: list[BoxStats]
    volumes: VolumeExample
    fields: FieldsExample

    @property
    def tracked(self) -> RunResult:
        """The ST-CNN of the hardest level, followed through training."""
        return next(r for r in self.runs if r.tracked is not None)


def compute_guide(budget: Budget, seed: int = 0, log: Callable[[str], None] | None = None) -> Guide:
    """Compute every number of the guide (trains the models of section 5)."""
    runs = train_sweep(budget, seed, log=log)
    tracked = next(r for r in runs if r.tracked is not None)
    return Guide(
        budget=budget,
        seed=seed,
        worked=worked_example(),
        kernels=compare_kernels(),
        gallery=gallery(seed),
        runs=runs,
        architecture=architecture(tracked),
        stats=box_stats(tracked),
        volumes=volume_example(),
        fields=fields_example(),
    )


def write_figures(guide: Guide, out: Path) -> dict[str, Path]:
    """Draw every figure into ``out`` (atomically); returns key -> path."""
    run = guide.tracked
    paths = {key: out / name for key, name in FIGURES.items()}
    plot_architecture(guide.architecture, run, paths["architecture"])
    plot_worked(guide.worked, paths["worked"])
    plot_influence(guide.worked, paths["influence"])
    plot_kernels(guide.kernels, paths["kernels"])
    plot_gradients(guide.kernels, paths["gradients"])
    plot_gallery(guide.gallery, paths["gallery"])
    plot_sweep(guide.runs, guide.budget, paths["sweep"])
    plot_curves(guide.runs, guide.budget, paths["curves"])
    plot_trained(run, paths["trained"])
    plot_evolution(run, paths["evolution"])
    plot_volumes(guide.volumes, paths["volumes"])
    plot_fields(paths["fields"])
    return paths


def explain_command(out: str, seed: int, quick: bool, threads: int | None = None) -> str:
    """The command line that writes this guide."""
    line = f"torchstn explain --out {out} --seed {seed}"
    if quick:
        line += " --quick"
    if threads is not None:
        line += f" --threads {threads}"
    return line


def _g(v: float) -> str:
    """A number as short as it is exact (``2.5``, ``0.25``)."""
    return f"{v:.6g}"


def _matrix(rows: torch.Tensor, fmt: str = "{:+.3f}") -> str:
    return (
        "[" + ", ".join("[" + ", ".join(fmt.format(float(v)) for v in r) + "]" for r in rows) + "]"
    )


def _section_architecture(g: Guide) -> list[str]:
    a, run = g.architecture, g.tracked
    c = a.corners
    pm = a.pixel_matrix
    side = float((c[1] - c[0]).norm() + (c[2] - c[1]).norm()) / 2
    which = (
        "the first test digit it classifies correctly"
        if a.first_correct
        else "the first test digit (it classifies none of the tracked digits correctly)"
    )
    return [
        "## 1. The architecture",
        "",
        f"![the parts of a spatial transformer, on a real digit]({FIGURES['architecture']})",
        "",
        "A spatial transformer is one differentiable layer in three parts: a **localisation net** "
        "reads the input U and outputs the parameters theta of a transform; the **grid "
        "generator** maps every pixel of the output grid G into the input, T_theta(G); the "
        "**sampler** reads U at those (fractional) points, giving the output V. The classifier "
        "after it sees V instead of U.",
        "",
        f"Drawn from the trained ST-CNN of section 6 ({run.level.label()}, test accuracy "
        f"{run.accuracy:.2f}%), on test digit #{a.index} ({which}; label {a.label}):",
        "",
        f"- localisation net: {' -> '.join(a.localization)};",
        f"- its output, theta = {_matrix(a.params.reshape(2, 3))}: the map from normalised "
        "output coordinates (x_t, y_t, 1) to normalised input coordinates (x_s, y_s), each in "
        "[-1, 1] (`align_corners=False`);",
        f"- the same map in pixel-centre coordinates (`normalized_matrix_to_pixel`): "
        f"{_matrix(pm, '{:.3f}')}: output pixel (0, 0) reads input point "
        f"({float(pm[0, 2]):.2f}, {float(pm[1, 2]):.2f});",
        f"- the output frame's corners land at ({float(c[0, 0]):.1f}, {float(c[0, 1]):.1f}), "
        f"({float(c[1, 0]):.1f}, {float(c[1, 1]):.1f}), ({float(c[2, 0]):.1f}, "
        f"{float(c[2, 1]):.1f}) and ({float(c[3, 0]):.1f}, {float(c[3, 1]):.1f}) of the "
        f"{run.level.canvas} x {run.level.canvas} input: a region about {side:.1f} px on a side, "
        f"read into {a.output.shape[1]} x {a.output.shape[0]} output pixels by the bilinear "
        "sampler;",
        f"- classifier ({', '.join(a.classifier)}): class {a.prediction} with probability "
        f"{float(a.probs[a.prediction]):.3f}.",
        "",
    ]


def _section_worked(g: Guide) -> list[str]:
    w = g.worked
    image_rows = [
        "| y \\ x | " + " | ".join(str(m) for m in range(4)) + " |",
        "|---|" + "---|" * 4,
    ] + [f"| {n} | " + " | ".join(_g(float(v)) for v in w.image[n]) + " |" for n in range(4)]
    neighbours = ["| pixel (x, y) | intensity U | weight w | w U |", "|---|---|---|---|"] + [
        f"| ({m}, {n}) | {_g(u)} | {_g(weight)} | {_g(weight * u)} |"
        for m, n, weight, u in w.neighbours()
    ]
    nb, ng = int((w.bilinear != 0).sum()), int((w.gaussian != 0).sum())
    same = torch.equal(w.bilinear, w.bilinear_table)
    src = w.source.tolist()
    return [
        "## 2. The worked example",
        "",
        f"![the worked example: target (1, 1) read at source (2.5, 2.5)]({FIGURES['worked']})",
        "",
        "A 4 x 4 grayscale image; each pixel is a unit cell whose centre is its coordinate "
        "(`torchstn.functional.coords`: pixel (x, y) is column x, row y). Its intensities:",
        "",
        *image_rows,
        "",
        f"The 2 x 3 affine matrix A = {_matrix(w.matrix, '{:g}')} (pixel-centre coordinates, "
        f"target to source). The target pixel ({_g(float(w.target[0]))}, "
        f"{_g(float(w.target[1]))}) made homogeneous is ({', '.join(_g(float(v)) for v in w.target)}); "
        f"A times it is the source point **({_g(src[0])}, {_g(src[1])})**. The library computes "
        f"the same: `pixel_matrix_to_normalized` turns A into theta = "
        f"{_matrix(w.theta, '{:g}')} in the normalised frame, the affine grid generator puts "
        f"the target pixel at a normalised point that `normalized_to_pixel` reads back as "
        f"({_g(float(w.grid_source[0]))}, {_g(float(w.grid_source[1]))}).",
        "",
        "The source point lies between four pixel centres; the bilinear kernel "
        "max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|) gives each of them a weight:",
        "",
        *neighbours,
        "",
        f"By hand the output is V = {_g(w.hand_value)}; the library's sampler "
        f"(`torchstn.functional.sample`, PyTorch's `grid_sample`) gives {_g(w.value)} and the "
        f"generic kernel formula of the paper (`kernel_sample`, eq. 3) {_g(w.kernel_value)}.",
        "",
        f"![the influence of every input pixel, as 3-D bars]({FIGURES['influence']})",
        "",
        "The influence of every input pixel on that output is the gradient dV/dU, computed by "
        "autograd; it is exactly the sampling weight. The bilinear kernel: "
        f"**{nb} of the 16 pixels** have a non-zero weight, each "
        f"{', '.join(sorted({_g(float(v)) for v in w.bilinear[w.bilinear != 0]}))} (sum "
        f"{_g(float(w.bilinear.sum()))}; the same as `influence_weights`: "
        f"{'yes' if same else 'no'}). The Gaussian kernel of the generic formula (sigma = "
        f"{_g(w.sigma)} px, normalised over the pixel lattice) gives **{ng} of the 16 pixels** a "
        f"weight, from {float(w.gaussian.min()):.4f} (the far corner) to "
        f"{float(w.gaussian.max()):.4f} (the four neighbours), sum "
        f"{float(w.gaussian.sum()):.4f}: the rest of the kernel falls outside the image, which "
        f"reads 0, so its output is V = {w.gaussian_value:.4f}, a blurred and darkened reading "
        "near the border.",
        "",
    ]


def _name(name: str, sigma: float) -> str:
    return f"Gaussian (sigma = {_g(sigma)} px)" if name == "gaussian" else name


def _section_kernels(g: Guide) -> list[str]:
    k = g.kernels
    rows = [
        "| kernel | largest \\|V - U\\| at pixel centres | largest \\|dV/dx\\| |",
        "|---|---|---|",
    ]
    for name in SAMPLERS:
        slope = float(k.slopes[name].abs().max())
        rows.append(
            f"| {_name(name, k.sigma)} | {k.centre_error(name):.2g} | "
            f"{slope:.3f}{' (no gradient)' if slope == 0 else ''} |"
        )
    return [
        "## 3. The sampling kernels",
        "",
        f"![one digit read with every kernel on one grid]({FIGURES['kernels']})",
        "",
        f"The same MNIST test digit (#{DIGIT_INDEX}, a {k.label}) read on the same grid, a "
        f"similarity of scale {_g(float(k.params[1]))} turned by {_g(float(k.params[0]))} rad "
        "(the box), with every kernel the library offers: `grid_sample`'s nearest, bilinear and "
        "bicubic (`torchstn.functional.sample`), and the Gaussian kernel of the generic formula "
        "(`torchstn.functional.kernel_sample`; also `SpatialTransformer(mode='gaussian')`).",
        "",
        f"![V and dV/dx along one row]({FIGURES['gradients']})",
        "",
        f"Row {k.row} of the digit (dotted line) read at every source x from "
        f"{_g(float(k.xs[0]))} to {_g(float(k.xs[-1]))} in steps of "
        f"{_g(float(k.xs[1] - k.xs[0]))} px, and the derivative of the value with respect to "
        "x, from autograd: the signal the localisation net learns from.",
        "",
        *rows,
        "",
        "Nearest, bilinear and bicubic interpolate (they return the pixel itself at its centre, "
        "up to rounding); the Gaussian smooths. Nearest passes no gradient to the sampling "
        "coordinates: a transformer with a nearest sampler cannot learn where to look. Bilinear "
        "passes a piecewise-constant slope (eq. 7 of the paper), bicubic and Gaussian a "
        "continuous one.",
        "",
    ]


def _section_gallery(g: Guide) -> list[str]:
    rows = ["| family | params | example params | what they do |", "|---|---|---|---|"]
    for e in g.gallery:
        shown = ", ".join(f"{float(v):.3g}" for v in e.params)
        if len(e.params) > 8:
            shown = f"{len(e.params) // 2} control-point sources (x, y), e.g. " + ", ".join(
                f"{float(v):.3g}" for v in e.params[:4]
            )
        rows.append(f"| `{e.family}` | {get(e.family).num_params} | {shown} | {e.meaning} |")
    return [
        "## 4. The transform families",
        "",
        f"![every transform family on one digit]({FIGURES['gallery']})",
        "",
        f"Every family registered in `torchstn.transforms` (`names()`: "
        f"{', '.join(e.family for e in g.gallery)}), applied with `torchstn.warp` to "
        f"MNIST test digit #{DIGIT_INDEX}. The grid is the image of a 7 x 7 mesh of the output "
        "frame in the input (its border, thicker, is the region sampled); for TPS the dots are "
        "the control points' source positions. Params act in the normalised frame (output to "
        "input).",
        "",
        *rows,
        "",
    ]


def _section_sweep(g: Guide, command: str) -> list[str]:
    b = g.budget
    rows = [
        "| level | canvas | largest shift | clutter patches | training images per run "
        "| CNN test accuracy | ST-CNN test accuracy | ST-CNN - CNN (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, level in enumerate(b.levels):
        cnn, st = (
            next(r for r in g.runs if r.level == level and r.model == m) for m, _, _ in MODELS
        )
        rows.append(
            f"| {k + 1} | {level.canvas} x {level.canvas} | {level.max_shift} px | "
            f"{level.distractors} | {b.images(level):,} | {cnn.accuracy:.2f}% | {st.accuracy:.2f}% | "
            f"{st.accuracy - cnn.accuracy:+.2f} |"
        )
    counts = {r.model: r.params for r in g.runs if r.level == b.levels[-1]}
    example = g.tracked.values
    return [
        "## 5. Max-pooling against the spatial transformer",
        "",
        f"![test accuracy against distortion level]({FIGURES['sweep']})",
        "",
        f"The same small CNN (conv {b.channels[0]}@{b.kernels[0]}x{b.kernels[0]} -> max-pool 2 "
        f"-> conv {b.channels[1]}@{b.kernels[1]}x{b.kernels[1]} -> max-pool 2 -> linear) alone "
        "(`cnn`) and behind an affine spatial transformer whose output is the size of its input "
        "(`st_cnn_affine`, localisation net of the paper), trained by the project's `Trainer` on "
        "the cluttered task (`torchstn.data.tasks.Cluttered`) at growing distortion: the digit "
        "placed at a random position in a larger canvas, with more 6 x 6 clutter patches cut "
        "from other digits. Max-pooling gives the CNN a little invariance to small shifts; the "
        "transformer can undo large ones before the CNN looks.",
        "",
        *rows,
        "",
        f"Test accuracy of the best-on-validation weights on {b.test_size:,} test images per "
        f"level (seed {g.seed}). At the largest level the CNN has {counts['CNN']:,} parameters "
        f"and the ST-CNN {counts['ST-CNN']:,} (its localisation net takes the difference; the "
        "CNN's linear layer grows with the canvas). Budget: every run trains "
        f"{b.epochs} epochs of fresh images, "
        + ", ".join(
            f"{b.train_size(level):,} per epoch at level {k + 1}"
            for k, level in enumerate(b.levels)
        )
        + " (harder levels need more), "
        f"{b.total_images:,} training images in all; SGD with "
        f"momentum 0.9, learning rate {_g(b.lr)} annealed by a cosine, batch {b.batch_size}; "
        f"validation on {b.val_size:,} images after every epoch. Small budgets: the numbers show "
        "the trend, not the paper's errors.",
        "",
        f"![validation error per epoch]({FIGURES['curves']})",
        "",
        "Reproduce everything on this page (same seed, same numbers):",
        "",
        "```bash",
        command,
        "```",
        "",
        "or one run of the table, here the ST-CNN at the largest level, with `torchstn train`:",
        "",
        "```bash",
        train_command(example, "runs/explain-st-cnn"),
        "```",
        "",
    ]


def _section_trained(g: Guide) -> list[str]:
    run = g.tracked
    assert run.tracked is not None
    n = run.tracked.x.shape[0]
    rows = [
        "| after | box centre to digit centre | box side | digits with all ink inside the box |",
        "|---|---|---|---|",
    ] + [
        f"| {'start (identity)' if s.epoch == 0 else f'epoch {s.epoch}'} | "
        f"{s.centre_error:.2f} px | {s.side:.1f} px | {s.ink_inside:.1f}% |"
        for s in g.stats
    ]
    first, last = g.stats[0], g.stats[-1]
    return [
        "## 6. What the trained ST-CNN does",
        "",
        f"![test digits with their learned boxes]({FIGURES['trained']})",
        "",
        f"The ST-CNN of section 5 at the hardest level ({run.level.label()}): for each test "
        "digit, the box is the border of the region its transformer samples (the output frame "
        "mapped into the input), and below it the transformer's output, what the CNN sees. "
        "Titles in red are mistakes.",
        "",
        f"![the transform over training]({FIGURES['evolution']})",
        "",
        "The same test digits at several points of training (the start is the identity: a fresh "
        "localisation net's last layer has zero weights and the identity as its bias).",
        "",
        f"Measured on the first {n} test digits of the level, against where the generator put "
        "each digit (its 28 x 28 frame and ink box):",
        "",
        *rows,
        "",
        f"From the start to the end of training the box centre moved from "
        f"{first.centre_error:.2f} px to {last.centre_error:.2f} px from the digit's centre on "
        f"average and the box side from {first.side:.1f} px to {last.side:.1f} px (the digit "
        "is 28 px).",
        "",
    ]


def render_markdown(guide: Guide, command: str) -> str:
    """The text of ``guide.md`` (a function of the computed numbers alone)."""
    b = guide.budget
    lines = [
        "# How a spatial transformer works: a guide computed by torchstn",
        "",
        "Every figure and every number on this page was computed by the command below, with "
        "the library itself (samplers, grids, transforms, data generators and the `Trainer`); "
        "nothing was typed in.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"torchstn {__version__}, PyTorch {torch.__version__}, CPU. Budget: "
        f"{'quick (a smoke test: the trained models have barely started to learn)' if b.name == 'quick' else 'full'}: "
        f"{len(b.levels) * len(MODELS)} training runs of {b.epochs} epochs, "
        f"{b.total_images:,} training images in all (section 5 gives the details); the same "
        "seed gives the same numbers.",
        "",
        "Contents: 1. the architecture; 2. the worked example; 3. the sampling kernels; 4. the "
        "transform families; 5. max-pooling against the spatial transformer; 6. what the trained "
        "ST-CNN does; 7. volumes; 8. dense fields and registration.",
        "",
    ]
    lines += _section_architecture(guide)
    lines += _section_worked(guide)
    lines += _section_kernels(guide)
    lines += _section_gallery(guide)
    lines += _section_sweep(guide, command)
    lines += _section_trained(guide)
    lines += _section_volumes(guide)
    lines += _section_fields(guide)
    return "\n".join(lines)


def _section_volumes(g: Guide) -> list[str]:
    v = g.volumes
    rows = ["| family | params | example | what it does |", "|---|---|---|---|"]
    for family, params in zip(v.families, v.params):
        shown = ", ".join(f"{float(x):.3g}" for x in params)
        rows.append(
            f"| `{family}` | {get(family).num_params} | {shown} | {VOLUME_EXAMPLES[family][1]} |"
        )
    err = v.quarter_turn_error
    return [
        "## 7. Volumes",
        "",
        f"![a digit slab warped by two 3-D families]({FIGURES['volumes']})",
        "",
        "Everything above works on volumes `(B, C, D, H, W)` too: the same layer with a 3-D "
        "family (`torchstn.transforms.names(ndim=3)`: `affine3d`, `rigid3d`, `similarity3d`, "
        "`attention3d`, `translation3d`, `projective3d`, `tps3d`), points in `(x, y, z)` order "
        "(x along W, y along H, z along D, the order in which `grid_sample` reads a 5-D grid), "
        "trilinear sampling. Here the digit of section 4 is extruded "
        f"{THICKNESS} voxels deep in the middle of a {SIDE}^3 cube. Each row shows a volume by "
        "its middle slices and its maximum over z (a 3-D object need not cross the middle "
        "slices); the boxes are the output boxes mapped into the input "
        "(`torchstn.output_frame`), their twelve edges projected on each view.",
        "",
        *rows,
        "",
        "Rotations are rotation vectors (axis times angle): three free numbers, no gimbal lock, "
        "exact at the identity. A quarter turn of a cube about any axis must be a permutation "
        "of its voxels; over the three axes, the three quarter turns and both `align_corners`, "
        f"nearest sampling differs from the permutation by {err['nearest']:.1e} and trilinear "
        f"by {err['bilinear']:.1e} (float64). More: [the module's volumes](module.md#volumes).",
        "",
    ]


def _section_fields(g: Guide) -> list[str]:
    f = g.fields
    return [
        "## 8. Dense fields and registration",
        "",
        f"![the field convention: input, field as arrows, output]({FIGURES['fields']})",
        "",
        "A registration network is a spatial transformer whose localisation net predicts a "
        "whole field instead of a few parameters (`torchstn.fields`, the `displacement` and "
        "`velocity` families, `reg_unet`). The convention, once: a displacement field `u` is "
        "`(B, 2, H, W)` for images and `(B, 3, D, H, W)` for volumes, in **pixels** (voxels), "
        "not the normalised `[-1, 1]` frame; channel 0 is x (along W, to the right), channel 1 "
        "is y (along H, down), channel 2 is z (along D), the order in which `grid_sample` reads "
        "a grid. Warping is **backward**: `output(p) = input(p + u(p))`, `p` the pixel-centre "
        "coordinate (row `i`, column `j` is `(x, y) = (j, i)`), so a field of `(+2, +1)` moves "
        "the content 2 pixels left and 1 up, as the picture shows. A stationary velocity field "
        "is integrated by scaling and squaring (`fields.integrate(v, steps=7)`: `v / 2**7`, then "
        "7 squarings `u <- u + warp(u, u)`, zeros padding, the convention of MONAI's "
        "`DVF2DDF(num_steps=7)` and voxelmorph's `VecInt(nsteps=7)`). `fields.compose(u, w)` "
        'is the field of "apply w, then u" (`warp(warp(x, w), u)` is approximately '
        "`warp(x, compose(u, w))`), in one resampling. MONAI and voxelmorph use index order "
        "(`(y, x)`, `(z, y, x)`), scipy.ndimage indices, kornia forward pixel matrices: the "
        "converters of `torchstn.fields.convert` (`to_monai_ddf`/`from_monai_ddf`, "
        "`to_voxelmorph`/`from_voxelmorph`, `to_kornia`/`from_kornia`, "
        "`to_scipy_affine`/`from_scipy_affine`, `to_theta`/`from_theta`...) translate.",
        "",
        "```python",
        f.code.rstrip("\n"),
        "```",
        "",
        "prints (computed with this guide):",
        "",
        "```text",
        f.output.rstrip("\n"),
        "```",
        "",
        "The integrated translation falls a hair short of 2 because zeros padding leaks in from "
        "the border as the squarings read further out. A trained registration run is drawn by "
        "`torchstn visualize` and `torchstn report`: fixed, moving, warped, the differences "
        "before and after, the deformed grid (the output's lattice at `p + u(p)` over the "
        "moving image) and the Jacobian determinant (folds, `det <= 0`, in green); volumes "
        "through their three middle slices.",
        "",
    ]


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out: expected a folder, got the file {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"--out: cannot create {out} ({err.strerror or err})") from None


def write_guide(
    out: str | Path,
    quick: bool = False,
    seed: int = 0,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Compute the guide and write ``out/guide.md`` and its figures; returns the guide's path.

    Args:
        out: the folder (created); figures are written beside ``guide.md``.
        quick: the :data:`~torchstn.explain.budget.QUICK` budget (seconds) instead of
            :data:`~torchstn.explain.budget.FULL` (about 10-15 minutes on a 2-core CPU).
        seed: the seed of the training runs and of the TPS example.
        threads: PyTorch CPU threads (restored afterwards); None: PyTorch's default.
        log: where progress lines go (default: stderr).

    Raises:
        TorchSTNError: matplotlib is missing (one line naming the extra to install), or
            ``out`` is a file or cannot be created.
    """
    plt()  # fail before training when matplotlib is missing
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidInputError(f"--seed: expected an int, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or threads < 1):
        raise InvalidInputError(f"--threads: expected a positive int, got {threads!r}")
    path = Path(out)
    _check_out(path)
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        guide = compute_guide(QUICK if quick else FULL, seed, log)
        log("torchstn explain: drawing the figures")
        write_figures(guide, path)
    finally:
        torch.set_num_threads(before)
    text = render_markdown(guide, explain_command(str(out), seed, quick, threads))
    atomic_write_text(path / "guide.md", text)
    return path / "guide.md"
