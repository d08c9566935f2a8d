"""Grid generation plus sampling for every transform family, against PyTorch and kornia.

Ours is what a user calls: ``transform.grid(params, out_size)`` then
:func:`torchstn.functional.sample` (the validated front end, finite checks on). The baselines are
the nearest thing each alternative offers, with inputs already in its own convention (the
conversion of our normalised output-to-input params into kornia's pixel input-to-output matrices
happens outside the clock):

- PyTorch: ``F.affine_grid(theta, size)`` + ``F.grid_sample`` (every family that is a 2x3 matrix:
  affine, attention, rotation, similarity, translation), ``align_corners=False`` on both sides.
- kornia: ``warp_affine`` (affine), ``warp_perspective`` (projective), ``get_tps_transform`` +
  ``warp_image_tps`` (TPS: kornia solves the spline system on every call, ours once per
  configuration), ``align_corners=True`` on both sides, which is the convention kornia's grids
  use. Each row records the largest difference between our output and the baseline's, so the
  table compares equal work.

``forward+backward`` propagates a fixed upstream gradient to the images and the params.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from .. import native
from ..functional import normalized_matrix_to_pixel, sample
from ..native import sample as native_sample
from ..transforms import TPS, MatrixTransform
from ..transforms import get as get_transform
from ..transforms.warping import warp
from .timing import Settings, compare, ratio_headline

__all__ = ["COLUMNS", "DESCRIPTION", "SHAPES", "TITLE", "family_params", "kornia_or_none", "run"]

TITLE = "Grid generation plus sampling, every family"
DESCRIPTION = """
`transform.grid(params, out_size)` + `torchstn.functional.sample` (what a user calls; input and
finite checks on) against the same warp done by PyTorch (`F.affine_grid` + `F.grid_sample`, for
every family that is a 2x3 matrix, `align_corners=False`) and by kornia 0.9 (`warp_affine`,
`warp_perspective`, `get_tps_transform` + `warp_image_tps`, `align_corners=True`, kornia's
convention). Params are a moderate random warp per image; kornia's pixel matrices are converted
from ours outside the clock. `fwd+bwd` back-propagates a fixed gradient to the images and the
params (or matrices). `max diff`: largest difference between our output and the baseline's.
kornia's `warp_image_tps` has no output size, so its rows sample at the input's size.
`path`: `unfused` is the grid then the sampler as above; `fused` is `torchstn.warp` (what the
module calls), which for the 2-D affine families takes the fused CPU kernel of
`torchstn.native` (grid and sampling in one pass; the row says `unfused` where it fell back);
on CUDA with Triton, `fused-triton` rows time the Triton kernels (`use_triton(True)`), with the
input's gradient by atomics and, `(deterministic)`, by the sorted sum that
`torch.use_deterministic_algorithms(True)` selects.
Targets: ratio at most 1.0 against PyTorch, at most 0.5 against kornia (TPS: 0.02); the fused
affine forward+backward at most 0.5 against PyTorch.
"""
COLUMNS = (
    ("shape", "case", ""),
    ("input", "input", ""),
    ("output", "output", ""),
    ("family", "family", ""),
    ("path", "path", ""),
    ("baseline", "baseline", ""),
    ("fwd_ms", "ours fwd ms", ".2f"),
    ("base_fwd_ms", "baseline fwd ms", ".2f"),
    ("fwd_ratio", "fwd ratio", ".2f"),
    ("fwd_bwd_ms", "ours fwd+bwd ms", ".2f"),
    ("base_fwd_bwd_ms", "baseline fwd+bwd ms", ".2f"),
    ("fwd_bwd_ratio", "fwd+bwd ratio", ".2f"),
    ("max_abs_diff", "max diff", ".1e"),
    ("skipped", "skipped", ""),
)

#: (name, B, C, H_in, W_in, H_out, W_out): the shapes of the issue, a transformer's typical jobs.
SHAPES = (
    ("cluttered", 256, 1, 60, 60, 30, 30),
    ("rts", 256, 1, 42, 42, 42, 42),
    ("imagenet", 64, 3, 224, 224, 224, 224),
    ("features", 32, 64, 56, 56, 56, 56),
)
QUICK_SHAPES = (("quick", 4, 2, 16, 16, 12, 12),)

FAMILIES = ("affine", "attention", "rotation", "similarity", "translation", "projective", "tps")


def kornia_or_none() -> Any:
    """The ``kornia`` module, or None where the optional ``bench`` extra is not installed."""
    try:
        import kornia  # optional: the [bench] extra
    except ImportError:
        return None
    return kornia


def family_params(name: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Params of a moderate random warp of each family (within the image, as a trained
    transformer's): ``(B, P)`` float32."""
    t = get_transform(name)
    ident = t.identity_params()
    noise = torch.randn(batch, t.num_params, generator=generator)
    scale = {"projective": torch.tensor([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05])}.get(
        name, torch.full((t.num_params,), 0.1)
    )
    return ident + noise * scale


def _theta(name: str, params: torch.Tensor) -> torch.Tensor:
    """``(B, 3, 3)`` normalised output-to-input matrices of a matrix family."""
    transform = get_transform(name)
    assert isinstance(transform, MatrixTransform)
    return transform.to_matrix(params)


def _timed_pair(
    ours: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    theirs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    our_arg: torch.Tensor,
    their_arg: torch.Tensor,
    settings: Settings,
) -> dict[str, Any]:
    """Forward and forward+backward times of ``ours(x, our_arg)`` and ``theirs(x, their_arg)``,
    each pair timed interleaved (:func:`~torchstn.bench.timing.compare`)."""
    with torch.no_grad():
        out = ours(x, our_arg)
        diff = float((out - theirs(x, their_arg)).abs().max())
        t = compare(
            {"ours": partial(ours, x, our_arg), "theirs": partial(theirs, x, their_arg)}, settings
        )
    grad_out = torch.randn_like(out)
    xg = x.detach().requires_grad_(True)

    def fwd_bwd(fn: Callable[..., torch.Tensor], arg: torch.Tensor) -> Callable[[], None]:
        argg = arg.detach().requires_grad_(True)

        def step() -> None:
            xg.grad = None
            argg.grad = None
            fn(xg, argg).backward(grad_out)

        return step

    tb = compare({"ours": fwd_bwd(ours, our_arg), "theirs": fwd_bwd(theirs, their_arg)}, settings)
    row: dict[str, Any] = {
        "max_abs_diff": diff,
        "fwd_ms": t["ours"].ms(),
        "base_fwd_ms": t["theirs"].ms(),
        "fwd_bwd_ms": tb["ours"].ms(),
        "base_fwd_bwd_ms": tb["theirs"].ms(),
    }
    row["fwd_ratio"] = row["fwd_ms"] / row["base_fwd_ms"]
    row["fwd_bwd_ratio"] = row["fwd_bwd_ms"] / row["base_fwd_bwd_ms"]
    return row


def _ours(name: str, size: tuple[int, int], align_corners: bool) -> Callable[..., torch.Tensor]:
    transform = get_transform(name)

    def call(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return sample(x, transform.grid(params, size, align_corners), align_corners=align_corners)

    return call


def _warp(name: str, size: tuple[int, int], align_corners: bool) -> Callable[..., torch.Tensor]:
    """``torchstn.warp``: the fused kernel where it runs (:mod:`torchstn.native`)."""

    def call(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return warp(x, params, name, size, align_corners=align_corners)

    return call


def _triton_runs(settings: Settings) -> bool:
    """Whether the Triton kernels' rows are timed: a device they run on, with Triton."""
    return (
        torch.device(settings.device).type in native_sample.TRITON_DEVICES
        and native.triton_available()
    )


@contextlib.contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(on)`` for a block (warnings only: PyTorch's CUDA
    ``grid_sample`` backward, the baseline, has no deterministic kernel)."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        torch.use_deterministic_algorithms(on, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before, warn_only=warn_only)


def _path_taken() -> str:
    """The path the warps since the last call took: ``fused``, ``unfused`` or ``mixed``."""
    counts = native.path_counts(reset=True)
    return "mixed" if len(counts) > 1 else next(iter(counts), "none")


def _pytorch(size: tuple[int, int], channels: int) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [x.shape[0], channels, *size], align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    return call


def _kornia(kornia: Any, name: str, size: tuple[int, int]) -> Callable[..., torch.Tensor]:
    geometry = kornia.geometry
    if name == "affine":
        return lambda x, m: geometry.transform.warp_affine(x, m, size, align_corners=True)
    if name == "projective":
        return lambda x, m: geometry.transform.warp_perspective(x, m, size, align_corners=True)

    def tps(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        # points: (B, 2K, 2), the output-frame control points then their source positions
        k = points.shape[1] // 2
        centres, sources = points[:, :k], points[:, k:]
        # kornia's spline takes the points it maps *to* as its kernel centres
        kernel_w, affine_w = geometry.transform.get_tps_transform(centres, sources)
        return geometry.transform.warp_image_tps(x, sources, kernel_w, affine_w, align_corners=True)

    return tps


def _kornia_arg(
    name: str, params: torch.Tensor, in_size: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    if name == "tps":
        t = get_transform("tps")
        assert isinstance(t, TPS)
        centres = t.control_points().expand(params.shape[0], -1, -1)
        return torch.cat((centres, params.reshape(params.shape[0], -1, 2)), dim=1)
    pixel = normalized_matrix_to_pixel(_theta(name, params), in_size, size, align_corners=True)
    matrix = torch.linalg.inv(pixel)  # kornia takes the input-to-output map
    matrix = matrix / matrix[:, 2:3, 2:3]
    return matrix[:, :2] if name == "affine" else matrix


def run(settings: Settings) -> dict[str, Any]:
    """Rows for every (shape, family, baseline)."""
    kornia = kornia_or_none()
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape_name, b, c, h, w, ho, wo in QUICK_SHAPES if settings.quick else SHAPES:
        x = torch.rand(b, c, h, w, generator=gen).to(settings.device)
        for name in FAMILIES:
            params = family_params(name, b, gen).to(settings.device)
            base = {"shape": shape_name, "input": f"{b}x{c}x{h}x{w}", "output": f"{ho}x{wo}"}
            if name not in ("projective", "tps"):
                theta = _theta(name, params)[:, :2].contiguous()
                row = _timed_pair(
                    _ours(name, (ho, wo), False), _pytorch((ho, wo), c), x, params, theta, settings
                )
                rows.append(
                    {**base, "family": name, "path": "unfused", "baseline": "pytorch", **row}
                )
                native.path_counts(reset=True)
                row = _timed_pair(
                    _warp(name, (ho, wo), False), _pytorch((ho, wo), c), x, params, theta, settings
                )
                path = _path_taken()
                rows.append({**base, "family": name, "path": path, "baseline": "pytorch", **row})
                for ordered in (False, True) if _triton_runs(settings) else ():
                    # the Triton kernels (CUDA), atomics, then the sorted deterministic sum
                    with native.use_triton(True), _deterministic(ordered):
                        native.path_counts(reset=True)
                        row = _timed_pair(
                            _warp(name, (ho, wo), False), _pytorch((ho, wo), c), x, params,
                            theta, settings,
                        )  # fmt: skip
                        path = _path_taken() + (" (deterministic)" if ordered else "")
                    rows.append(
                        {**base, "family": name, "path": path, "baseline": "pytorch", **row}
                    )
            if name in ("affine", "projective", "tps"):
                if kornia is None:
                    rows.append(
                        {**base, "family": name, "baseline": "kornia", "skipped": "no kornia"}
                    )
                    continue
                # warp_image_tps has no output size: its rows sample at the input's size
                size = (h, w) if name == "tps" else (ho, wo)
                theirs = _kornia(kornia, name, size)
                arg = _kornia_arg(name, params, (h, w), size)
                native.path_counts(reset=True)
                row = _timed_pair(_warp(name, size, True), theirs, x, params, arg, settings)
                base["output"] = f"{size[0]}x{size[1]}"
                path = _path_taken()
                rows.append({**base, "family": name, "path": path, "baseline": "kornia", **row})
    notes = []
    if kornia is not None:
        notes.append(_tps_note(kornia))
    return {"rows": rows, "notes": notes, "headline": _headline(rows)}


def _headline(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for path in ("unfused", "fused", "fused-triton", "fused-triton (deterministic)"):
        sel = [r for r in rows if r.get("path") == path]
        what = f"affine grid + sampling, {path}"
        lines.append(ratio_headline(sel, "affine", "pytorch", "PyTorch", what))
    for f in ("affine", "projective", "tps"):
        lines.append(ratio_headline(rows, f, "kornia", "kornia"))
    return [line for line in lines if line is not None]


def _tps_note(kornia: Any) -> str:
    """How far kornia's spline lies from the thin plate spline, measured on one warp."""
    t = get_transform("tps")
    assert isinstance(t, TPS)
    gen = torch.Generator().manual_seed(1)
    params = family_params("tps", 1, gen).double()
    centres = t.control_points(torch.float64)[None]
    sources = params.reshape(1, -1, 2)
    geometry = kornia.geometry.transform
    kernel_w, affine_w = geometry.get_tps_transform(centres, sources)
    pts = torch.rand(1, 2000, 2, generator=gen, dtype=torch.float64) * 2 - 1
    theirs = geometry.warp_points_tps(pts, sources, kernel_w, affine_w)
    ours = t.map_points(params, pts)
    at_nodes = geometry.warp_points_tps(centres, sources, kernel_w, affine_w)
    gap = float((theirs - ours).norm(dim=-1).max())
    node_gap = float((at_nodes - sources).abs().max())
    return (
        f"The TPS rows compare equal work, not equal results: kornia's `get_tps_transform` "
        f"builds its kernel from the distances between the control points and their targets and "
        f"centres the kernel on the targets, so its warp passes through the control points "
        f"(within {node_gap:.0e}) but is not the thin plate spline between them: on 2,000 random "
        f"points of one warp it lies up to {gap:.3f} normalised units ({gap * 30:.1f} pixels at "
        f"60x60) from ours, which is the minimal-bending-energy interpolant (Bookstein 1989; "
        f"kernel centred on the control points)."
    )
