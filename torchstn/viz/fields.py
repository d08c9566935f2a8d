"""Pictures of dense fields: the deformed grid, the Jacobian determinant and the registration
figure (fixed, moving, warped, differences, grid, Jacobian), for images and for volume slices.

Every picture follows the one convention of :mod:`torchstn.fields`: a field ``u`` is in pixels,
channel 0 along x (columns, to the right), channel 1 along y (rows, down), channel 2 along z, and
warping is backward, ``output(p) = input(p + u(p))``. The *deformed grid* is therefore drawn in the
moving image's frame: each line of the output's regular lattice, through the points
``p + u(p)`` the output reads (the sampling grid of the classification pictures, made dense).

A volume's field is drawn through its middle slices (the views of :mod:`torchstn.viz.volumes`):
``xy`` (the slice z = D/2: rows y, columns x, the field's x and y components), ``xz`` (y = H/2:
rows z, columns x; components x and z) and ``yz`` (x = W/2: rows z, columns y; components y and
z). The Jacobian map of a slice is the slice of the volume's 3-D determinant, so a fold anywhere
in the volume shows where it is.

Example:
    >>> from torchstn.viz.fields import draw_deformed_grid
    >>> plt = pyplot()
    >>> fig, ax = plt.subplots()
    >>> u = torch.zeros(2, 8, 8)
    >>> u[0] = 3.0  # every output pixel reads 3 pixels to the right
    >>> lines = draw_deformed_grid(ax, u, step=4)
    >>> lines[0].get_xdata()[:3].tolist()  # the top row of the lattice, shifted right by 3
    [3.0, 4.0, 5.0]
    >>> plt.close(fig)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from ..fields import check_field, jacobian_determinant, warp
from ._mpl import pyplot, save_figure

__all__ = [
    "FOLD_COLOUR",
    "SLICE_VIEWS",
    "draw_deformed_grid",
    "draw_jacobian",
    "field_convention_figure",
    "field_slice",
    "registration_figure",
    "save_registration_figure",
]

#: colour of folded pixels (Jacobian determinant <= 0) on the Jacobian map: a green that the
#: diverging blue-white-red map never takes.
FOLD_COLOUR = "#1bd11b"
#: colour of the deformed grid's lines.
GRID_COLOUR = "#e4572e"
#: the slices of a volume's field: name -> (tensor dim of the slice's axis in ``(D, H, W)``,
#: the field channels drawn as the slice's (columns, rows)).
SLICE_VIEWS: dict[str, tuple[int, tuple[int, int]]] = {
    "xy": (0, (0, 1)),
    "xz": (1, (0, 2)),
    "yz": (2, (1, 2)),
}
_SLICE_TITLES = {"xy": "z = D/2", "xz": "y = H/2", "yz": "x = W/2"}


def _one_field(u: torch.Tensor, name: str = "u") -> torch.Tensor:
    """``u`` as one field ``(N, *spatial)`` float64 on the CPU (``(1, N, *spatial)`` accepted)."""
    if not isinstance(u, torch.Tensor):
        raise InvalidInputError(f"{name}: expected a tensor, got {type(u).__name__}")
    t = u.detach()
    if t.dim() in (4, 5) and t.shape[0] == 1:
        t = t[0]
    if t.dim() not in (3, 4) or t.shape[0] != t.dim() - 1:
        raise InvalidInputError(
            f"{name}: expected one field (N, *spatial) or (1, N, *spatial), got {tuple(u.shape)}"
        )
    check_field(t[None], name)
    return t.double().cpu()


def field_slice(u: torch.Tensor, view: str = "xy") -> tuple[torch.Tensor, torch.Tensor]:
    """The 2-D picture of one field: for an image's ``(2, H, W)``, itself and its Jacobian
    determinant; for a volume's ``(3, D, H, W)``, the middle slice ``view`` (``xy``, ``xz`` or
    ``yz``, :data:`SLICE_VIEWS`) as a 2-D field of its in-plane components (channel 0 along the
    slice's columns, 1 along its rows) and the slice of the volume's 3-D determinant.

    Returns:
        ``(2, rows, cols)`` field and ``(rows, cols)`` determinant, float64.

    Example:
        >>> u = torch.zeros(3, 4, 5, 6)
        >>> u[2] = 1.5  # along z
        >>> f, det = field_slice(u, "xz")  # rows z, columns x
        >>> tuple(f.shape), f[1].unique().tolist(), f[0].unique().tolist()
        ((2, 4, 6), [1.5], [0.0])
    """
    t = _one_field(u)
    det = jacobian_determinant(t[None])[0]
    if t.shape[0] == 2:
        return t, det
    if view not in SLICE_VIEWS:
        raise InvalidInputError(f"view: expected one of {', '.join(SLICE_VIEWS)}, got {view!r}")
    dim, (cols, rows) = SLICE_VIEWS[view]
    middle = t.shape[1 + dim] // 2
    plane = t.select(1 + dim, middle)  # (3, rows, cols): the two remaining dims keep their order
    return plane[[cols, rows]], det.select(dim, middle)


def draw_deformed_grid(
    ax: Any,
    u: torch.Tensor,
    step: int | None = None,
    *,
    view: str = "xy",
    image: torch.Tensor | None = None,
    colour: str = GRID_COLOUR,
    lw: float = 0.8,
) -> list[Any]:
    """Draw the lattice of the output's pixel centres moved by the field: the lines through
    ``p + u(p)`` of every ``step``-th row and column (and the last ones), over ``image`` (the
    moving image, optional) in its pixel-centre coordinates, x to the right and y down.

    Args:
        ax: a matplotlib axes.
        u: one field, ``(2, H, W)`` or ``(1, 2, H, W)``; a volume's ``(3, D, H, W)`` is drawn
            through its middle slice ``view`` (:func:`field_slice`).
        step: pixels between lattice lines (default: about 16 lines across).
        view: the slice of a volume's field.
        image: ``(H, W)`` or ``(C, H, W)`` drawn under the lattice (grey, ``[0, 1]``).
        colour: the lines' colour.
        lw: their width.

    Returns:
        The drawn lines: the rows' (top to bottom), then the columns' (left to right); each
        line's data are the ``(x, y)`` points ``p + u(p)`` in pixels.
    """
    f, _ = field_slice(u, view)
    rows, cols = f.shape[1:]
    step = _step(rows, cols) if step is None else int(step)
    if step < 1:
        raise InvalidInputError(f"step: expected a positive number of pixels, got {step}")
    if image is not None:
        _show(ax, _grey(image, (rows, cols)))
    ys, xs = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64),
        torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    px, py = (xs + f[0]).numpy(), (ys + f[1]).numpy()
    drawn = []
    for i in _lattice(rows, step):
        drawn += ax.plot(px[i, :], py[i, :], color=colour, lw=lw)
    for j in _lattice(cols, step):
        drawn += ax.plot(px[:, j], py[:, j], color=colour, lw=lw)
    _frame(ax, rows, cols)
    return drawn


def draw_jacobian(
    ax: Any,
    u: torch.Tensor,
    *,
    view: str = "xy",
    colorbar: bool = True,
    title: bool = True,
) -> Any:
    """Draw the Jacobian determinant of ``u`` (:func:`torchstn.fields.jacobian_determinant`)
    on a diverging map centred at 1 (blue: shrinks, white: keeps its area, red: expands) with
    the folded pixels (determinant ``<= 0``) painted :data:`FOLD_COLOUR` on top, a colour bar,
    and the folded share in the title.

    Args:
        ax: a matplotlib axes.
        u: one field, ``(2, H, W)`` or ``(1, 2, H, W)``; a volume's ``(3, D, H, W)`` is drawn
            through its middle slice ``view`` (the slice of the 3-D determinant).
        view: the slice of a volume's field.
        colorbar: add a colour bar beside ``ax``.
        title: title the axes with the share of folded pixels (of the slice, for a volume, and
            of the whole volume).

    Returns:
        The image of the determinant; the fold overlay is the axes image labelled ``"folds"``
        (its data: the fold mask, masked where there is no fold).
    """
    import numpy as np  # with matplotlib: the plot extra's, loaded when a picture is drawn
    from matplotlib.colors import ListedColormap, TwoSlopeNorm

    plt = pyplot()
    t = _one_field(u)
    _, det = field_slice(t, view)
    rows, cols = det.shape
    values = det.numpy()
    span = max(0.05, float((det - 1).abs().max()))
    norm = TwoSlopeNorm(vcenter=1.0, vmin=1.0 - min(span, 1.0), vmax=1.0 + span)
    extent = (-0.5, cols - 0.5, rows - 0.5, -0.5)
    image = ax.imshow(
        values, cmap="RdBu_r", norm=norm, interpolation="nearest", extent=extent, label="det"
    )
    folded = det <= 0
    mask = np.ma.masked_array(np.ones(values.shape), mask=~folded.numpy())
    ax.imshow(
        mask,
        cmap=ListedColormap([FOLD_COLOUR]),
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=extent,
        label="folds",
    )
    if colorbar:
        bar = plt.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=6)
    if title:
        share = 100.0 * float(folded.double().mean())
        text = f"det J: {share:.2f}% folded"
        if t.shape[0] == 3:
            whole = 100.0 * float((jacobian_determinant(t[None]) <= 0).double().mean())
            text = f"det J: {share:.2f}% folded\n(volume: {whole:.2f}%)"
        ax.set_title(text, fontsize=7)
    _frame(ax, rows, cols)
    return image


def registration_figure(
    fixed: torch.Tensor,
    moving: torch.Tensor,
    warped: torch.Tensor,
    u: torch.Tensor,
    labels: Sequence[str | int] | None = None,
    *,
    view: str | None = None,
    step: int | None = None,
    max_examples: int = 4,
    title: str | None = None,
) -> Any:
    """One row per pair (per slice, for volumes): fixed, moving, warped, ``|moving - fixed|``
    (before), ``|warped - fixed|`` (after; both differences on one scale per row), the deformed
    grid over the moving image (:func:`draw_deformed_grid`) and the Jacobian map
    (:func:`draw_jacobian`).

    Args:
        fixed: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` images in ``[0, 1]`` (grey: the channels'
            mean; RGB with three channels).
        moving: the same shape (or batch 1).
        warped: the moving images warped by ``u``: ``fields.warp(moving, u)``.
        u: ``(B, N, *spatial)`` the displacement in pixels (:mod:`torchstn.fields`).
        labels: one caption per pair (a class, the Dice before and after...).
        view: for volumes, one of ``xy``, ``xz``, ``yz`` (:data:`SLICE_VIEWS`); None: all three,
            one row each.
        step: pixels between the deformed grid's lines (default: about 16 lines across).
        max_examples: draw the first this many pairs.
        title: the figure's title.

    Returns:
        The matplotlib figure (write it with :func:`torchstn.viz.save_figure`).

    Raises:
        InvalidInputError: shapes that do not agree (one line naming them).
    """
    n_dims = check_field(u, "u")
    b = int(u.shape[0])
    spatial = tuple(u.shape[2:])
    for name, t in (("fixed", fixed), ("moving", moving), ("warped", warped)):
        if (
            not isinstance(t, torch.Tensor)
            or t.dim() != 2 + n_dims
            or tuple(t.shape[2:]) != spatial
            or t.shape[0] not in (1, b)
        ):
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InvalidInputError(
                f"{name}: expected (B, C, {', '.join(map(str, spatial))}) like u "
                f"{tuple(u.shape)}, got {shape}"
            )
    if max_examples < 1:
        raise InvalidInputError(f"max_examples: expected a positive number, got {max_examples}")
    if labels is not None and len(labels) < min(b, max_examples):
        raise InvalidInputError(f"labels: expected one per pair ({b}), got {len(labels)}")
    if n_dims == 2:
        views: list[str] = ["xy"]
    elif view is None:
        views = list(SLICE_VIEWS)
    elif view in SLICE_VIEWS:
        views = [view]
    else:
        raise InvalidInputError(f"view: expected one of {', '.join(SLICE_VIEWS)}, got {view!r}")
    plt = pyplot()
    n = min(b, max_examples)
    columns = ("fixed", "moving", "warped", "|moving - fixed|", "|warped - fixed|", "grid", "det J")
    n_rows = n * len(views)
    fig, axes = plt.subplots(
        n_rows, len(columns), figsize=(1.75 * len(columns) + 0.6, 1.85 * n_rows), squeeze=False
    )
    for i in range(n):
        images = [_pick(t, i) for t in (fixed, moving, warped)]
        field = u[i].detach()
        for k, v in enumerate(views):
            row = axes[i * len(views) + k]
            f_img, m_img, w_img = (_slice_image(t, v) for t in images)
            for ax, img in zip(row[:3], (f_img, m_img, w_img)):
                _show(ax, img)
            before = _grey_of((m_img - f_img).abs())
            after = _grey_of((w_img - f_img).abs())
            top = max(float(before.max()), float(after.max()), 1e-6)
            for ax, diff in zip(row[3:5], (before, after)):
                ax.imshow(
                    diff.numpy(),
                    cmap="magma",
                    vmin=0,
                    vmax=top,
                    interpolation="nearest",
                    extent=_extent(diff.shape),
                )
                ax.set_title(f"mean {float(diff.mean()):.3f}", fontsize=6, loc="right")
                _frame(ax, *diff.shape)
            draw_deformed_grid(row[5], field, step, view=v, image=_grey_of(m_img))
            draw_jacobian(row[6], field, view=v, title=True)
            text = []
            if labels is not None:
                text.append(str(labels[i]))
            if n_dims == 3:
                text.append(f"slice {_SLICE_TITLES[v]}")
            if text:
                row[0].set_ylabel("\n".join(text), fontsize=7)
    for ax, name in zip(axes[0, :-1], columns):  # the Jacobian's title is its folded share
        ax.set_title(name, fontsize=7, **({"loc": "left"} if name.startswith("|") else {}))
    fig.tight_layout()
    if title:
        height = fig.get_figheight()
        fig.subplots_adjust(top=1.0 - 0.45 / height)  # room for the title above the headers
        fig.suptitle(title, fontsize=9, y=1.0 - 0.12 / height)
    return fig


def save_registration_figure(
    out: str | os.PathLike[str],
    fixed: torch.Tensor,
    moving: torch.Tensor,
    warped: torch.Tensor,
    u: torch.Tensor,
    labels: Sequence[str | int] | None = None,
    **options: Any,
) -> Path:
    """:func:`registration_figure` written to ``out`` (PNG, atomically); returns the path."""
    fig = registration_figure(fixed, moving, warped, u, labels, **options)
    return save_figure(fig, out, bbox_inches="tight", facecolor="white")


def field_convention_figure(size: int = 12) -> Any:
    """The guide's statement of the field convention, as a picture.

    Two rows, one field each (a constant shift of ``(2, 1)`` pixels; a smooth turn of 30
    degrees about the centre): the input image, the field drawn as an arrow from the centre ``p``
    of every other pixel to ``p + u(p)`` (x to the right, y down), and the output
    ``fields.warp(input, u)``. One output pixel is circled in the output and the pixel it reads,
    ``p + u(p)``, in the input: ``output(p) = input(p + u(p))``.

    Example:
        >>> fig = field_convention_figure()
        >>> len(fig.axes)
        6
        >>> pyplot().close(fig)
    """
    import math

    plt = pyplot()
    image = _letter(size)
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    shift = torch.zeros(2, size, size, dtype=torch.float64)
    shift[0], shift[1] = 2.0, 1.0
    c, a = (size - 1) / 2, math.radians(30)
    turn = torch.stack(  # read at R(p - c) + c: the content turns the other way
        (
            math.cos(a) * (xs - c) - math.sin(a) * (ys - c) + c - xs,
            math.sin(a) * (xs - c) + math.cos(a) * (ys - c) + c - ys,
        )
    )
    fig, axes = plt.subplots(2, 3, figsize=(7.8, 5.4), squeeze=False)
    marked = (size // 2 - 2, size // 2 - 3)  # (x, y) of the circled output pixel
    for row, (u, name) in zip(
        axes, ((shift, "constant u = (2, 1)"), (turn, "smooth u: a turn of 30 degrees"))
    ):
        out = warp(image[None, None], u[None])[0, 0]
        px, py = marked
        sx, sy = px + float(u[0, py, px]), py + float(u[1, py, px])
        _show(row[0], image)
        row[0].set_title("input", fontsize=8)
        _show(row[1], image, alpha=0.25)
        every = (slice(None, None, 2), slice(None, None, 2))  # every other pixel: readable arrows
        row[1].quiver(
            xs[every].numpy(),
            ys[every].numpy(),
            u[0][every].numpy(),
            u[1][every].numpy(),
            angles="xy",
            scale_units="xy",
            scale=1.0,
            width=0.006,
            color="#0072b2",
        )
        row[1].set_title(f"{name}\narrows: p to p + u(p) (every other pixel)", fontsize=8)
        _show(row[2], out)
        row[2].set_title("output(p) = input(p + u(p))", fontsize=8)
        for ax, (x, y) in ((row[2], (px, py)), (row[0], (sx, sy)), (row[1], (px, py))):
            ax.plot([x], [y], "o", ms=11, mfc="none", mec=GRID_COLOUR, mew=1.6)
        row[1].annotate(
            "",
            xy=(sx, sy),
            xytext=(px, py),
            arrowprops={"arrowstyle": "->", "color": GRID_COLOUR, "lw": 1.6},
        )
        for ax in row:
            ax.set_xticks(range(0, size, 3))
            ax.set_yticks(range(0, size, 3))
            ax.tick_params(labelsize=6)
            ax.set_xlabel("x (columns) ->", fontsize=7)
        row[0].set_ylabel("y (rows), down", fontsize=7)
    fig.suptitle(
        "A field u is in pixels, channel 0 = x, channel 1 = y; warping is backward: each output "
        "pixel p reads the input at p + u(p)",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- helpers
def _step(rows: int, cols: int) -> int:
    return max(1, round(max(rows, cols) / 16))


def _lattice(n: int, step: int) -> list[int]:
    """Every ``step``-th index of ``n``, and the last one."""
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return idx


def _extent(shape: Sequence[int]) -> tuple[float, float, float, float]:
    rows, cols = shape
    return (-0.5, cols - 0.5, rows - 0.5, -0.5)


def _frame(ax: Any, rows: int, cols: int) -> None:
    """Pixel-centre coordinates, y down, square pixels, no ticks."""
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _grey(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    t = image.detach().float().cpu()
    if t.dim() == 3:
        t = t.mean(0) if t.shape[0] != 3 else t.permute(1, 2, 0)
    if tuple(t.shape[:2]) != tuple(size):
        raise InvalidInputError(
            f"image: expected (H, W) or (C, H, W) of the field's size {size}, got "
            f"{tuple(image.shape)}"
        )
    return t


def _show(ax: Any, image: torch.Tensor, alpha: float = 1.0) -> None:
    """An ``(H, W)`` grey or ``(H, W, 3)`` RGB image in ``[0, 1]``, pixel-centre coordinates."""
    t = image.detach().float().cpu().clamp(0, 1)
    ax.imshow(
        t.numpy(),
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=_extent(t.shape[:2]),
        alpha=alpha,
    )
    _frame(ax, *t.shape[:2])


def _pick(t: torch.Tensor, i: int) -> torch.Tensor:
    return t[i if t.shape[0] > 1 else 0].detach().float().cpu()


def _slice_image(image: torch.Tensor, view: str) -> torch.Tensor:
    """``(C, H, W)`` -> grey ``(H, W)`` (RGB ``(H, W, 3)``); ``(C, D, H, W)`` -> its middle
    slice ``view``."""
    if image.dim() == 4:
        dim = SLICE_VIEWS[view][0]
        image = image.select(1 + dim, image.shape[1 + dim] // 2)
    return image.permute(1, 2, 0) if image.shape[0] == 3 else image.mean(0)


def _grey_of(image: torch.Tensor) -> torch.Tensor:
    """An ``(H, W, 3)`` RGB image's channel mean; an ``(H, W)`` one as it is."""
    return image.mean(-1) if image.dim() == 3 else image


def _letter(size: int) -> torch.Tensor:
    """An ``F`` (no symmetry: every flip and turn shows) on a faint horizontal ramp."""
    img = torch.linspace(0.0, 0.25, size, dtype=torch.float64).expand(size, size).clone()
    a, b = size // 4, size - size // 4
    img[a:b, a : a + 2] = 1.0  # the stem
    img[a : a + 2, a:b] = 1.0  # the top bar
    img[(a + b) // 2 - 1 : (a + b) // 2 + 1, a : (a + b) // 2 + 1] = 1.0  # the middle bar
    return img
