"""What memory format, compilation, bfloat16 and the thread count do to each kind of work."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import first_line
from ..functional import sample
from ..localization import ConvLocalization
from ..models import create_model
from ..module import SpatialTransformer
from ..transforms import get as get_transform
from .module import _fwd_bwd
from .sampler import family_params
from .timing import Settings, compare
from .training import make_step

__all__ = ["COLUMNS", "DESCRIPTION", "TITLE", "run"]

TITLE = "Options: memory format, torch.compile, bfloat16, threads"
DESCRIPTION = """
Each kind of work measured as it runs by default, then with one option changed, interleaved in
one process: **sampler** (affine grid + sampling forward+backward, batch 256, 1x60x60 -> 30x30,
and 32x64x56x56 where the channel count makes the layout matter), **module** (the cluttered
ST-CNN's `SpatialTransformer`, forward+backward, batch 256), **training step** (the cluttered
ST-CNN, batch 128, SGD with momentum) and **inference** (the same model, forward, batch 256,
inference mode). `channels_last`: images and convolution weights in NHWC; `compile`:
`torch.compile` with its default backend (the first call, compilation included, is `compile s`);
`bf16`: `torch.autocast(dtype=torch.bfloat16)`; `1 thread`: `torch.set_num_threads(1)` against
torch's default. `ratio` = time / the row's reference (below 1: the option pays).
"""
COLUMNS = (
    ("item", "work", ""),
    ("variant", "variant", ""),
    ("reference", "against", ""),
    ("ms", "ms", ".2f"),
    ("ratio", "ratio", ".2f"),
    ("compile_s", "compile s", ".1f"),
    ("skipped", "skipped", ""),
)


class _Threads:
    """Run a callable with ``n`` torch threads."""

    def __init__(self, fn: Callable[[], Any], n: int) -> None:
        self.fn, self.n = fn, n

    def __call__(self) -> Any:
        old = torch.get_num_threads()
        torch.set_num_threads(self.n)
        try:
            return self.fn()
        finally:
            torch.set_num_threads(old)


def _bf16(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    def call() -> Any:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            return fn()

    return call


def _compiled(model: nn.Module) -> nn.Module:
    """``torch.compile`` of a copy of ``model`` (an :class:`nn.Module` with the same call)."""
    compiled = torch.compile(copy.deepcopy(model))
    assert isinstance(compiled, nn.Module)
    return compiled


def _cl(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous(memory_format=torch.channels_last)


def _sampler_variants(
    shape: tuple[int, int, int, int], size: int, dev: str, gen: torch.Generator
) -> dict[str, Any]:
    affine = get_transform("affine")
    x = torch.rand(*shape, generator=gen).to(dev)
    params = family_params("affine", shape[0], gen).to(dev)
    upstream = torch.randn(shape[0], shape[1], size, size, generator=gen).to(dev)

    def warp(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return sample(a, affine.grid(p, (size, size)))

    def make(
        x: torch.Tensor, up: torch.Tensor, w: Callable[..., torch.Tensor] = warp
    ) -> Callable[[], None]:
        xg, pg = x.clone().requires_grad_(True), params.clone().requires_grad_(True)

        def fn() -> None:
            xg.grad = pg.grad = None
            w(xg, pg).backward(up)

        return fn

    base = make(x, upstream)
    return {
        "default": base,
        "channels_last": make(_cl(x), _cl(upstream)),
        "bf16": _bf16(base, dev),
        "1 thread": _Threads(base, 1),
        "compile": lambda: make(x, upstream, torch.compile(warp)),
    }


def _work(settings: Settings, gen: torch.Generator) -> list[tuple[str, dict[str, Any]]]:
    """For each kind of work: builders ``variant -> (callable, compiled?)``."""
    dev = settings.device
    q = settings.quick
    out: list[tuple[str, dict[str, Any]]] = []
    for label, shape, size in (
        ("sampler 256x1x60x60", (4, 1, 12, 12) if q else (256, 1, 60, 60), 6 if q else 30),
        ("sampler 32x64x56x56", (2, 8, 12, 12) if q else (32, 64, 56, 56), 12 if q else 56),
    ):
        out.append((label, _sampler_variants(shape, size, dev, gen)))

    # the module: the cluttered ST-CNN's transformer
    shape3 = (1, 16, 16) if q else (1, 60, 60)
    batch = 4 if q else 256
    torch.manual_seed(0)
    st = SpatialTransformer(
        shape3, "affine", localization=ConvLocalization(shape3, (20, 20), 20, 2)
    ).to(dev)
    x = torch.rand(batch, *shape3, generator=gen).to(dev)
    up = torch.randn(batch, *shape3, generator=gen).to(dev)

    st_cl = copy.deepcopy(st).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    out.append(
        (
            "module",
            {
                "default": _fwd_bwd(st, x, up),
                "channels_last": _fwd_bwd(st_cl, _cl(x), _cl(up)),
                "bf16": _bf16(_fwd_bwd(st, x, up), dev),
                "1 thread": _Threads(_fwd_bwd(st, x, up), 1),
                "compile": lambda st=st, x=x, up=up: _fwd_bwd(_compiled(st), x, up),
            },
        )
    )

    # the training step and inference of the cluttered ST-CNN
    batch = 4 if q else 128
    torch.manual_seed(0)
    model = create_model("st_cnn_affine", shape3, 10, pool=2).to(dev)
    x = torch.rand(batch, *shape3, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch,), generator=gen).to(dev)

    def step(m: nn.Module, x: torch.Tensor) -> Callable:
        return make_step(copy.deepcopy(m), x, y)

    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    out.append(
        (
            "training step",
            {
                "default": step(model, x),
                "channels_last": step(cl_model, _cl(x)),
                "bf16": _bf16(step(model, x), dev),
                "1 thread": _Threads(step(model, x), 1),
                "compile": lambda m=model, x=x, y=y: make_step(_compiled(m), x, y),
            },
        )
    )
    xi = torch.rand(4 if q else 256, *shape3, generator=gen).to(dev)
    eval_model = copy.deepcopy(model).eval()
    eval_cl = copy.deepcopy(cl_model).eval()

    def infer(m: nn.Module, x: torch.Tensor) -> Callable:
        def fn() -> None:
            with torch.inference_mode():
                m(x)

        return fn

    out.append(
        (
            "inference",
            {
                "default": infer(eval_model, xi),
                "channels_last": infer(eval_cl, _cl(xi)),
                "bf16": _bf16(infer(eval_model, xi), dev),
                "1 thread": _Threads(infer(eval_model, xi), 1),
                "compile": lambda m=eval_model, x=xi: infer(_compiled(m), x),
            },
        )
    )
    return out


def run(settings: Settings) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    for item, variants in _work(settings, gen):
        fns = {k: v for k, v in variants.items() if k != "compile"}
        if torch.device(settings.device).type != "cpu":
            fns.pop("1 thread", None)
        compile_s = None
        if settings.quick:
            skipped = "quick mode"
        else:
            skipped = None
            try:
                start = time.perf_counter()
                fn = variants["compile"]()
                fn()  # compiles
                compile_s = time.perf_counter() - start
                fns["compile"] = fn
            except Exception as err:  # a missing compiler or an unsupported op: say which
                skipped = f"compile failed: {first_line(err)[:120]}"
        steady = settings
        if item == "training step" and not settings.quick:
            # the layout choice of run.memory_format rests on this row: more repeats against
            # the drift of a shared machine
            steady = dataclasses.replace(settings, repeats=max(settings.repeats, 15))
        times = compare(fns, steady)
        ref = times["default"].median
        for name, t in times.items():
            row: dict[str, Any] = {
                "item": item,
                "variant": name,
                "reference": "-" if name == "default" else "default",
                "ms": t.ms(),
                "ratio": t.median / ref,
            }
            if name == "compile":
                row["compile_s"] = compile_s
            rows.append(row)
        if skipped:
            rows.append({"item": item, "variant": "compile", "skipped": skipped})
    return {"rows": rows, "notes": [_verdict(rows)]}


def _verdict(rows: list[dict[str, Any]]) -> str:
    """Which options pay where (ratio below 0.95), from the measurements."""
    lines = []
    for variant in ("channels_last", "compile", "bf16", "1 thread"):
        sel = [r for r in rows if r.get("variant") == variant and r.get("reference") == "default"]
        if not sel:
            continue
        pays = [f"{r['item']} ({r['ratio']:.2f})" for r in sel if r["ratio"] < 0.95]
        costs = [f"{r['item']} ({r['ratio']:.2f})" for r in sel if r["ratio"] > 1.05]
        text = f"`{variant}` pays for {', '.join(pays)}" if pays else f"`{variant}` pays nowhere"
        if costs:
            text += f"; costs on {', '.join(costs)}"
        lines.append(text + ".")
    lines.append(
        "Adopted (a choice in torchstn's code, made on these measurements): "
        "`run.memory_format: auto` trains convolutional models in channels_last on the "
        "CPU; everything else stays as it was (fp32, eager, torch's threads) because it does not "
        "pay on every kind of work here."
    )
    return " ".join(lines)
