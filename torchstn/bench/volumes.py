"""Grid generation plus sampling of volumes, against PyTorch, kornia and MONAI.

The 3-D analogue of :mod:`torchstn.bench.sampler`. Ours is what a user calls:
``transform.grid(params, (D, H, W))`` then :func:`torchstn.functional.sample` (the validated
front end, finite checks on), ``align_corners=False``. The baselines get their inputs in their
own convention, converted from our params outside the clock:

- PyTorch: ``F.affine_grid(theta, (B, C, D, H, W))`` + ``F.grid_sample`` (affine3d; ``theta``
  is the top ``(B, 3, 4)`` of our matrix), ``align_corners=False``.
- kornia: ``warp_affine3d`` (affine3d) and ``warp_perspective3d`` (projective3d) take the voxel
  matrix that maps the *input* to the *output* (voxel centres at integers, ``(x, y, z)`` order)
  and normalise it with corner-aligned frames whatever their ``align_corners``; only
  ``align_corners=True`` then samples where the matrix says (kornia#4503), so their rows use it.
  A voxel matrix fixes the voxels read, so our ``align_corners=False`` warp and kornia's
  ``align_corners=True`` one are the same warp.
- MONAI: ``monai.networks.layers.AffineTransform`` in its default convention (``normalized=False``,
  ``reverse_indexing=True``: the voxel matrix that maps the *output* to the *input*, in
  ``scipy.ndimage``'s ``(z, y, x)`` order), ``align_corners=False``.

``forward+backward`` propagates a fixed upstream gradient to the volumes and the params (or
matrices). The notes check kornia's conventions on one small warp, so that a kornia whose grid
is built in another order (kornia#4502) or whose ``align_corners=False`` is fixed shows up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .. import native
from ..functional import normalized_matrix_to_pixel, sample
from ..transforms import MatrixTransform
from ..transforms import get as get_transform
from ..transforms.warping import warp
from .sampler import COLUMNS as _SAMPLER_COLUMNS
from .sampler import _path_taken, _timed_pair, kornia_or_none
from .timing import Settings, ratio_headline

__all__ = [
    "COLUMNS",
    "DESCRIPTION",
    "SHAPES",
    "TITLE",
    "kornia_gaps",
    "kornia_matrix",
    "monai_matrix",
    "monai_or_none",
    "run",
    "volume_params",
]

TITLE = "Grid generation plus sampling, volumes"
DESCRIPTION = """
`transform.grid(params, (D, H, W))` + `torchstn.functional.sample` (what a user calls; input and
finite checks on; trilinear, `align_corners=False`) against the same warp done by PyTorch
(`F.affine_grid` + `F.grid_sample` on 5-D tensors, `align_corners=False`), by kornia 0.9
(`warp_affine3d`, `warp_perspective3d`) and by MONAI (`monai.networks.layers.AffineTransform`).
The output has the input's size. Params are a moderate random warp per volume; the baselines'
matrices are converted from ours outside the clock: kornia takes the voxel matrix from input to
output and is run with `align_corners=True`, because it normalises that matrix with
corner-aligned frames whatever its `align_corners` says, so with `False` it samples the wrong
voxels (kornia#4503; the note below measures by how much); MONAI takes, in its default
convention, the voxel matrix from output to input in `(z, y, x)` order and converts it to
`affine_grid`'s inside its call (its STN mode, `normalized=True, reverse_indexing=False`, is
PyTorch's own call plus a copy, so the PyTorch row stands for it). `fwd+bwd` back-propagates a
fixed gradient to the volumes and the params (or matrices). `max diff`: largest difference
between our output and the baseline's. MONAI rows need `pip install monai`.
`path`: as in the 2-D table: `unfused` is the grid then the sampler, `fused` is `torchstn.warp`,
which takes the fused trilinear CPU kernel of `torchstn.native` for the affine families.
Targets: ratio at most 1.0 against PyTorch, at most 0.5 against kornia; the fused affine3d
forward+backward at most 0.5 against PyTorch.
"""
#: the 2-D sampler group's table: the two read side by side
COLUMNS = _SAMPLER_COLUMNS

#: (name, B, C, D, H, W): the volumes users have; the output has the input's size.
SHAPES = (
    ("64^3", 8, 1, 64, 64, 64),
    ("128^3", 8, 1, 128, 128, 128),
    ("16ch 64^3", 2, 16, 64, 64, 64),
)
#: three different sizes, so that a baseline that swaps two axes cannot agree by symmetry
QUICK_SHAPES = (("quick", 2, 2, 6, 7, 8),)

#: family -> the baselines it is compared with
BASELINES = {"affine3d": ("pytorch", "kornia", "monai"), "projective3d": ("kornia",)}
_NAMES = {"pytorch": "PyTorch", "kornia": "kornia", "monai": "MONAI"}


def monai_or_none() -> Any:
    """The ``monai`` module, or None where MONAI is not installed."""
    try:
        import monai  # optional: pip install monai
    except ImportError:
        return None
    return monai


def volume_params(name: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Params of a moderate random warp of a 3-D matrix family (within the volume, as a trained
    transformer's): ``(B, P)`` float32, noise 0.1 on every entry, 0.05 on the perspective row."""
    t = get_transform(name)
    scale = torch.full((t.num_params,), 0.1)
    if name == "projective3d":
        scale[12:] = 0.05
    return t.identity_params() + torch.randn(batch, t.num_params, generator=generator) * scale


def _matrix(name: str, params: torch.Tensor) -> torch.Tensor:
    """``(B, 4, 4)`` normalised output-to-input matrices of a 3-D matrix family."""
    transform = get_transform(name)
    assert isinstance(transform, MatrixTransform)
    return transform.to_matrix(params)


def kornia_matrix(
    name: str, params: torch.Tensor, size: tuple[int, int, int], align_corners: bool = False
) -> torch.Tensor:
    """kornia's matrix for our ``params`` on a ``(D, H, W)`` volume (output of the same size):
    the voxel map from input to output in ``(x, y, z)`` order, ``(B, 3, 4)`` for ``warp_affine3d``
    (``affine3d``), ``(B, 4, 4)`` for ``warp_perspective3d``. ``align_corners`` is ours; kornia
    samples it with ``align_corners=True``."""
    pixel = normalized_matrix_to_pixel(_matrix(name, params), size, size, align_corners)
    forward = torch.linalg.inv(pixel)  # kornia takes the input-to-output map
    forward = forward / forward[:, 3:4, 3:4]
    return forward[:, :3].contiguous() if name == "affine3d" else forward


def monai_matrix(
    params: torch.Tensor, size: tuple[int, int, int], align_corners: bool = False
) -> torch.Tensor:
    """MONAI's ``(B, 4, 4)`` matrix for our affine3d ``params`` on a ``(D, H, W)`` volume: the
    voxel map from output to input in ``(z, y, x)`` order (``AffineTransform``'s default,
    ``normalized=False, reverse_indexing=True``)."""
    pixel = normalized_matrix_to_pixel(_matrix("affine3d", params), size, size, align_corners)
    order = torch.tensor([2, 1, 0, 3], device=pixel.device)  # (x, y, z, 1) -> (z, y, x, 1)
    return pixel[:, order][:, :, order].contiguous()


def _ours(name: str, size: tuple[int, int, int]) -> Callable[..., torch.Tensor]:
    transform = get_transform(name)

    def call(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return sample(x, transform.grid(params, size, False), align_corners=False)

    return call


def _warp(name: str, size: tuple[int, int, int]) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return warp(x, params, name, size, align_corners=False)

    return call


def _pytorch(size: tuple[int, int, int]) -> Callable[..., torch.Tensor]:
    def call(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    return call


def _kornia(kornia: Any, name: str, size: tuple[int, int, int]) -> Callable[..., torch.Tensor]:
    warps = kornia.geometry.transform
    if name == "affine3d":
        return lambda x, m: warps.warp_affine3d(x, m, size, align_corners=True)
    return lambda x, m: warps.warp_perspective3d(x, m, size, align_corners=True)


def _monai(monai: Any, size: tuple[int, int, int]) -> Callable[..., torch.Tensor]:
    # built once, outside the clock: the module only stores its settings
    layer = monai.networks.layers.AffineTransform(size, align_corners=False)
    return lambda x, m: layer(x, m)


def _baseline(
    baseline: str, name: str, params: torch.Tensor, size: tuple[int, int, int], libs: dict[str, Any]
) -> tuple[Callable[..., torch.Tensor], torch.Tensor]:
    """The baseline's call and its argument (converted from ``params`` here, off the clock)."""
    if baseline == "pytorch":
        return _pytorch(size), _matrix(name, params)[:, :3].contiguous()
    if baseline == "kornia":
        return _kornia(libs["kornia"], name, size), kornia_matrix(name, params, size)
    return _monai(libs["monai"], size), monai_matrix(params, size)


def run(settings: Settings) -> dict[str, Any]:
    """Rows for every (shape, family, baseline)."""
    libs = {"pytorch": torch, "kornia": kornia_or_none(), "monai": monai_or_none()}
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape_name, b, c, d, h, w in QUICK_SHAPES if settings.quick else SHAPES:
        size = (d, h, w)
        x = torch.rand(b, c, d, h, w, generator=gen).to(settings.device)  # (B, C, D, H, W)
        base = {"shape": shape_name, "input": f"{b}x{c}x{d}x{h}x{w}", "output": f"{d}x{h}x{w}"}
        for name, baselines in BASELINES.items():
            params = volume_params(name, b, gen).to(settings.device)
            for baseline in baselines:
                head = {**base, "family": name, "baseline": baseline}
                if libs[baseline] is None:
                    rows.append({**head, "skipped": f"no {baseline}"})
                    continue
                theirs, arg = _baseline(baseline, name, params, size, libs)
                row = _timed_pair(_ours(name, size), theirs, x, params, arg, settings)
                rows.append({**head, "path": "unfused", **row})
                if baseline == "pytorch":  # torchstn.warp: the fused kernel where it runs
                    native.path_counts(reset=True)
                    row = _timed_pair(_warp(name, size), theirs, x, params, arg, settings)
                    rows.append({**head, "path": _path_taken(), **row})
    notes = []
    if libs["kornia"] is not None:
        notes.append(_kornia_note(libs["kornia"]))
    if libs["monai"] is not None:
        notes.append(
            f"MONAI {libs['monai'].__version__}: `AffineTransform(spatial_size, "
            f"align_corners=False)`, voxel matrices from output to input in `(z, y, x)` order."
        )
    else:
        notes.append("MONAI rows skipped: MONAI is not installed (`pip install monai`).")
    return {"rows": rows, "notes": notes, "headline": _headline(rows)}


def _headline(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for name, baselines in BASELINES.items():
        for baseline in baselines:
            if baseline == "pytorch":
                for path in ("unfused", "fused"):
                    sel = [r for r in rows if r.get("path") == path]
                    what = f"{name} grid + sampling, {path}"
                    lines.append(ratio_headline(sel, name, baseline, _NAMES[baseline], what))
            else:
                lines.append(ratio_headline(rows, name, baseline, _NAMES[baseline]))
    return [line for line in lines if line is not None]


def kornia_gaps(kornia: Any) -> dict[tuple[str, bool], float]:
    """Largest difference (float64, one warp of a 1x1x5x6x7 volume) between ours and kornia's
    warp for each ``(family, kornia's align_corners)``, kornia given :func:`kornia_matrix`."""
    gen = torch.Generator().manual_seed(1)
    size = (5, 6, 7)
    x = torch.rand(1, 1, *size, generator=gen, dtype=torch.float64)
    gaps = {}
    for name in BASELINES:
        params = volume_params(name, 1, gen).double()
        ours = _ours(name, size)(x, params)
        matrix = kornia_matrix(name, params, size)
        warps = kornia.geometry.transform
        warp = warps.warp_affine3d if name == "affine3d" else warps.warp_perspective3d
        for align_corners in (True, False):
            theirs = warp(x, matrix, size, align_corners=align_corners)
            gaps[name, align_corners] = float((ours - theirs).abs().max())
    return gaps


def _kornia_note(kornia: Any) -> str:
    """What kornia's 3-D warps do with their conventions, measured on one small warp."""
    gaps = kornia_gaps(kornia)
    agree = all(gaps[name, True] < 1e-9 for name in BASELINES)
    if agree:
        order = (
            f"With `align_corners=True` kornia {kornia.__version__}'s `warp_affine3d` and "
            f"`warp_perspective3d` agree with ours in float64 (to "
            f"{max(gaps[n, True] for n in BASELINES):.0e} on one warp of a 5x6x7 volume), so "
            f"their grids are in `(x, y, z)` order (kornia#4502 does not apply to this version)."
        )
    else:
        order = (
            f"With `align_corners=True` kornia {kornia.__version__} disagrees with ours "
            f"(affine3d {gaps['affine3d', True]:.2f}, projective3d "
            f"{gaps['projective3d', True]:.2f} on one warp of a 5x6x7 volume): its grid may be "
            f"built in another axis order (kornia#4502), so its rows compare equal work only."
        )
    return (
        f"{order} With `align_corners=False` they sample other voxels than their matrix says "
        f"(kornia#4503): on the same warp they differ from ours by up to "
        f"{gaps['affine3d', False]:.2f} (affine3d) and {gaps['projective3d', False]:.2f} "
        f"(projective3d), on values in [0, 1]."
    )
