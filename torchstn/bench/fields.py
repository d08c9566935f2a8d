"""Dense fields: :func:`torchstn.fields.warp` and :func:`torchstn.fields.integrate` against
MONAI's ``Warp`` and ``DVF2DDF``, the layers of MONAI's registration networks.

Both sides get the same random smooth field, each in its own convention (converted outside the
clock by :func:`torchstn.fields.to_monai_ddf`): ours is ``(B, N, *spatial)`` in pixels with channels in ``(x, y[, z])`` order; MONAI's
dense displacement (and velocity) fields are in pixels with channels in index order
(``(y, x)``, ``(z, y, x)``): the same field with its channels reversed. MONAI samples with
``align_corners=True``, ``Warp`` with ``"border"`` padding by default and ``DVF2DDF`` with
``"zeros"``; ours is called with the same settings, so the outputs agree (the rows record the
largest difference, measured before the clock starts). ``integrate`` runs 7 squarings, the
default of both. ``forward+backward`` propagates a fixed upstream gradient to the image and the
field (``warp``) or to the velocity (``integrate``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from .. import fields, native
from ..models import count_params, create_model
from .sampler import _path_taken, _timed_pair
from .timing import Settings, compare, ratio_headline, synchronize
from .training import saved_bytes
from .volumes import monai_or_none

__all__ = [
    "COLUMNS",
    "DESCRIPTION",
    "OPS",
    "QUICK_SHAPES",
    "SHAPES",
    "STEPS",
    "TITLE",
    "monai_gaps",
    "run",
    "smooth_field",
]

TITLE = "Dense fields: warp and integrate"
DESCRIPTION = """
`torchstn.fields.warp(x, u)` and `torchstn.fields.integrate(v, steps=7)` (what a user calls;
field checks on) against MONAI's `monai.networks.blocks.Warp` and `DVF2DDF(num_steps=7)`, the
layers of its registration networks, built once outside the clock. Images have one channel;
fields are smooth and random, a few pixels (voxels) in size. Both sides sample the same points:
MONAI's fields are ours with the channels in index order (`(z, y, x)` instead of our
`(x, y, z)`), converted outside the clock, and ours is called with MONAI's settings
(`align_corners=True`, `"border"` padding for `warp`, `"zeros"` for `integrate`). `fwd+bwd`
back-propagates a fixed gradient to the image and the field (`warp`) or the velocity
(`integrate`). `path`: `fused` where the fused CPU kernel of `torchstn.native` ran (images
and volumes: `fields.warp` and the squarings of `integrate`), else `unfused`. `saved MB`: what
autograd keeps for the backward pass; `CUDA peak MB`: the
allocator's peak during forward+backward above what was allocated before. `max diff`: largest
difference between our output and MONAI's (in pixels for `integrate`). `unet step`: a whole
registration network on a (moving, fixed) pair, ours (`reg_unet`: the VoxelMorph U-Net,
velocity field, 7 squarings) against MONAI's `VoxelMorph` (its default `VoxelMorphUNet`), with
their parameter counts; forward without gradients, and a training step (MSE + 0.01 x diffusion
of the field, backward), the median of 3 repeats after one warm-up (a step takes seconds). Rows need `pip install monai`. Targets: ratio at most 1.0 everywhere,
at most 0.67 for `integrate`.
"""
COLUMNS = (
    ("shape", "case", ""),
    ("input", "input", ""),
    ("family", "op", ""),
    ("path", "path", ""),
    ("baseline", "baseline", ""),
    ("fwd_ms", "ours fwd ms", ".2f"),
    ("base_fwd_ms", "MONAI fwd ms", ".2f"),
    ("fwd_ratio", "fwd ratio", ".2f"),
    ("fwd_bwd_ms", "ours fwd+bwd ms", ".2f"),
    ("base_fwd_bwd_ms", "MONAI fwd+bwd ms", ".2f"),
    ("fwd_bwd_ratio", "fwd+bwd ratio", ".2f"),
    ("saved_mb", "ours saved MB", ".1f"),
    ("base_saved_mb", "MONAI saved MB", ".1f"),
    ("peak_mb", "ours CUDA peak MB", ".1f"),
    ("base_peak_mb", "MONAI CUDA peak MB", ".1f"),
    ("max_abs_diff", "max diff", ".1e"),
    ("params", "ours params", ","),
    ("base_params", "MONAI params", ","),
    ("skipped", "skipped", ""),
)

#: (name, B, spatial size): the sizes of registration, images and volumes.
SHAPES: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("256^2", 1, (256, 256)),
    ("256^2", 2, (256, 256)),
    ("128^3", 1, (128, 128, 128)),
    ("128^3", 2, (128, 128, 128)),
)
#: different sizes along every axis, so that a swapped pair of axes cannot agree by symmetry
QUICK_SHAPES: tuple[tuple[str, int, tuple[int, ...]], ...] = (
    ("quick 2-D", 2, (9, 10)),
    ("quick 3-D", 2, (5, 6, 7)),
)
OPS = ("warp", "integrate")
#: the training step of a whole registration network: ours (``reg_unet``, velocity) against
#: MONAI's ``VoxelMorph`` (its default VoxelMorphUNet backbone), both VoxelMorph-sized
NET = "unet step"
#: timed repeats of a network's forward and step (each repeat times both sides in turn)
NET_REPEATS = 3
#: squarings of integrate, MONAI's DVF2DDF and voxelmorph's VecInt default
STEPS = 7
_WHAT = {
    "warp": "fields.warp",
    "integrate": f"fields.integrate ({STEPS} steps)",
    NET: "a registration network's step (reg_unet)",
}
_MONAI_NAMES = {
    "warp": "MONAI's `Warp`",
    "integrate": "MONAI's `DVF2DDF`",
    NET: "MONAI's `VoxelMorph`",
}


def smooth_field(
    batch: int,
    size: tuple[int, ...],
    pixels: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A random smooth field ``(B, N, *size)`` in our convention: Gaussian noise of standard
    deviation ``pixels`` on a grid 8 times coarser, interpolated up (linear, corners aligned)."""
    n = len(size)
    coarse = [max(2, s // 8) for s in size]
    noise = torch.randn(batch, n, *coarse, generator=generator, dtype=dtype) * pixels
    mode = "bilinear" if n == 2 else "trilinear"
    return F.interpolate(noise, size=size, mode=mode, align_corners=True)


def _ours(op: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if op == "warp":
        return lambda x, u: fields.warp(x, u, padding_mode="border", align_corners=True)
    return lambda _x, v: fields.integrate(v, STEPS, align_corners=True)


def _monai(monai: Any, op: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    blocks = monai.networks.blocks
    with warnings.catch_warnings():  # "Using PyTorch native grid_sample": MONAI's own note
        warnings.simplefilter("ignore")
        layer = blocks.Warp() if op == "warp" else blocks.DVF2DDF(num_steps=STEPS)
    if op == "warp":
        return lambda x, ddf: layer(x, ddf)
    return lambda _x, dvf: layer(dvf)


def _gap(
    op: str,
    ours: Callable[..., torch.Tensor],
    theirs: Callable[..., torch.Tensor],
    x: torch.Tensor,
    u: torch.Tensor,
) -> float:
    """Largest difference between our output and MONAI's, brought into our convention."""
    with torch.no_grad():
        out = theirs(x, fields.to_monai_ddf(u))
        out = out if op == "warp" else fields.from_monai_ddf(out)  # a field: (x, y[, z])
        return float((ours(x, u) - out).abs().max())


def _memory(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    arg: torch.Tensor,
    device: torch.device,
) -> dict[str, float]:
    """MB autograd saves for ``fn(x, arg)``, and on CUDA the allocator's peak over a
    forward+backward above what was allocated before."""
    xg = x.detach().requires_grad_(True)
    argg = arg.detach().requires_grad_(True)
    out = {"saved": saved_bytes(lambda: fn(xg, argg)) / 1e6}
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        y = fn(xg, argg)
        y.backward(torch.ones_like(y))
        synchronize(device)
        out["peak"] = (torch.cuda.max_memory_allocated(device) - before) / 1e6
        del y
        xg.grad = argg.grad = None
    return out


def run(settings: Settings) -> dict[str, Any]:
    """Rows for every (shape, op) against MONAI."""
    monai = monai_or_none()
    device = torch.device(settings.device)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for shape_name, b, size in QUICK_SHAPES if settings.quick else SHAPES:
        x = torch.rand(b, 1, *size, generator=gen).to(device)  # (B, 1, *spatial)
        u = smooth_field(b, size, 2.0, gen).to(device)  # (B, N, *spatial), pixels
        dims = "x".join(map(str, size))
        for op in OPS:
            head = {"shape": shape_name, "input": f"{b}x{dims}", "family": op, "baseline": "monai"}
            if monai is None:
                rows.append({**head, "skipped": "no monai"})
                continue
            ours, theirs = _ours(op), _monai(monai, op)
            gap = _gap(op, ours, theirs, x, u)
            ddf = fields.to_monai_ddf(u)
            native.path_counts(reset=True)
            row = _timed_pair(ours, theirs, x, u, ddf, settings)
            row["path"] = _path_taken()  # fused where fields.warp took the fused kernel
            row["max_abs_diff"] = gap  # the pair's own check compares unconverted outputs
            mine, base = _memory(ours, x, u, device), _memory(theirs, x, ddf, device)
            row["saved_mb"], row["base_saved_mb"] = mine["saved"], base["saved"]
            if "peak" in mine:
                row["peak_mb"], row["base_peak_mb"] = mine["peak"], base["peak"]
            rows.append({**head, **row})
        # MONAI's VoxelMorph halves every side four times: quick runs take 16 per side
        net_size = tuple(16 for _ in size) if settings.quick else size
        net_dims = "x".join(map(str, net_size))
        rows.append(_net_row(monai, b, net_size, shape_name, net_dims, gen, settings))
    if monai is None:
        notes = ["MONAI rows skipped: MONAI is not installed (`pip install monai`)."]
    else:
        notes = [_monai_note(monai)]
    return {"rows": rows, "notes": notes, "headline": _headline(rows)}


def _nets(
    monai: Any, size: tuple[int, ...], device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Ours (``reg_unet``: FieldUNet, velocity, full resolution) and MONAI's VoxelMorph with
    its default backbone, each seeded; both integrate 7 squarings and warp bilinearly."""
    torch.manual_seed(0)
    n = len(size)
    ours = create_model("reg_unet", (1, *size), 0, field="velocity", steps=STEPS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = monai.networks.nets.VoxelMorph(spatial_dims=n, integration_steps=STEPS)
    return ours.to(device), theirs.to(device)


def _net_row(
    monai: Any,
    b: int,
    size: tuple[int, ...],
    shape_name: str,
    dims: str,
    gen: torch.Generator,
    settings: Settings,
) -> dict[str, Any]:
    """Forward and forward+backward (MSE + 0.01 x diffusion of the field, the classic
    VoxelMorph loss) of a whole registration network, ours against MONAI's."""
    head = {"shape": shape_name, "input": f"{b}x2x{dims}", "family": NET, "baseline": "monai"}
    if monai is None:
        return {**head, "skipped": "no monai"}
    device = torch.device(settings.device)
    ours, theirs = _nets(monai, size, device)
    moving = torch.rand(b, 1, *size, generator=gen).to(device)
    fixed = torch.rand(b, 1, *size, generator=gen).to(device)

    def fwd(net: torch.nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.no_grad():
                return net(moving, fixed)

        return call

    def step(net: torch.nn.Module) -> Callable[[], None]:
        def call() -> None:
            warped, ddf = net(moving, fixed)[:2]
            loss = F.mse_loss(warped, fixed) + 0.01 * fields.diffusion_loss(ddf)
            net.zero_grad(set_to_none=True)
            loss.backward()

        return call

    # a step takes seconds on a CPU: fewer repeats than the layers' (the median of 3)
    few = settings if settings.quick else replace(settings, repeats=NET_REPEATS, warmup=1)
    t = compare({"ours": fwd(ours), "theirs": fwd(theirs)}, few)
    tb = compare({"ours": step(ours), "theirs": step(theirs)}, few)
    row: dict[str, Any] = {
        "fwd_ms": t["ours"].ms(),
        "base_fwd_ms": t["theirs"].ms(),
        "fwd_bwd_ms": tb["ours"].ms(),
        "base_fwd_bwd_ms": tb["theirs"].ms(),
        "params": count_params(ours),
        "base_params": count_params(theirs),
    }
    row["fwd_ratio"] = row["fwd_ms"] / row["base_fwd_ms"]
    row["fwd_bwd_ratio"] = row["fwd_bwd_ms"] / row["base_fwd_bwd_ms"]
    return {**head, **row}


def _headline(rows: list[dict[str, Any]]) -> list[str]:
    lines = (ratio_headline(rows, op, "monai", _MONAI_NAMES[op], _WHAT[op]) for op in (*OPS, NET))
    return [line for line in lines if line is not None]


def monai_gaps(monai: Any) -> dict[str, float]:
    """Largest difference (float64, one 1x1x5x6x7 volume and one 1x1x9x10 image) between ours
    and MONAI's for each op, MONAI given the field with its channels reversed."""
    gen = torch.Generator().manual_seed(1)
    gaps = {op: 0.0 for op in OPS}
    for size in ((9, 10), (5, 6, 7)):
        x = torch.rand(1, 1, *size, generator=gen, dtype=torch.float64)
        u = smooth_field(1, size, 2.0, gen, torch.float64)
        for op in OPS:
            gaps[op] = max(gaps[op], _gap(op, _ours(op), _monai(monai, op), x, u))
    return gaps


def _monai_note(monai: Any) -> str:
    gaps = monai_gaps(monai)
    return (
        f'MONAI {monai.__version__}: `Warp()` (bilinear, `"border"`) and '
        f'`DVF2DDF(num_steps={STEPS})` (`"zeros"`), both `align_corners=True`, given our field '
        f"with its channels reversed, agree with ours in float64 to {gaps['warp']:.0e} "
        f"(`warp`) and {gaps['integrate']:.0e} pixels (`integrate`) on a 9x10 image and a "
        f"5x6x7 volume."
    )
