"""Timing and the facts a benchmark table needs: hardware, threads, versions.

Every measurement is the median of ``repeats`` timed calls after ``warmup`` untimed ones; a call
that takes less than ``min_seconds`` is repeated inside one timed block (``inner`` calls) so that
the clock's resolution does not dominate. On CUDA the device is synchronised before the clock is
read.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .. import native
from .._version import __version__
from ..hardware import cpu_flags, cpu_name

__all__ = [
    "Settings",
    "Timing",
    "compare",
    "environment",
    "measure",
    "ratio_headline",
]


@dataclass(frozen=True)
class Settings:
    """How hard to measure: ``quick`` is for CI (tiny sizes, one repeat)."""

    quick: bool = False
    repeats: int = 7
    warmup: int = 2
    min_seconds: float = 0.02
    device: str = "cpu"

    @classmethod
    def make(cls, quick: bool, device: str = "cpu") -> Settings:
        if quick:
            return cls(quick=True, repeats=1, warmup=1, min_seconds=0.0, device=device)
        return cls(device=device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median over repeats, and the fastest repeat."""

    median: float
    best: float
    repeats: int
    inner: int

    def ms(self) -> float:
        return self.median * 1e3

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_ms": round(self.median * 1e3, 5),
            "best_ms": round(self.best * 1e3, 5),
            "repeats": self.repeats,
            "inner": self.inner,
        }


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], settings: Settings) -> Timing:
    """Time ``fn()``: ``settings.warmup`` untimed calls, then ``settings.repeats`` timed blocks
    of ``inner`` calls each (``inner`` chosen so that a block lasts ``settings.min_seconds``):
    :func:`compare` of one callable."""
    return compare({"fn": fn}, settings)["fn"]


def compare(fns: Mapping[str, Callable[[], Any]], settings: Settings) -> dict[str, Timing]:
    """Time several callables interleaved: after their warm-ups, each repeat times every one
    of them in turn, so that a change of load on a shared machine falls on all of them alike
    (their ratios are steadier than those of separate :func:`measure` calls)."""
    inner: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(settings.warmup):
            fn()
        synchronize(settings.device)
        inner[name] = 1
        if settings.min_seconds > 0:
            start = time.perf_counter()
            fn()
            synchronize(settings.device)
            once = time.perf_counter() - start
            inner[name] = max(1, min(1000, int(settings.min_seconds / max(once, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(settings.repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            synchronize(settings.device)
            times[name].append((time.perf_counter() - start) / inner[name])
    return {
        name: Timing(statistics.median(t), min(t), settings.repeats, inner[name])
        for name, t in times.items()
    }


def _version(module: str) -> str | None:
    """The installed version of ``module``: from its distribution's metadata (without importing
    it: MONAI takes seconds), else from the module itself; None if it is not installed."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return str(getattr(mod, "__version__", "?"))


def environment(device: str = "cpu") -> dict[str, Any]:
    """Hardware, threads, versions and date of a benchmark run."""
    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchstn": __version__,
        "kornia": _version("kornia"),
        "monai": _version("monai"),
        "onnxruntime": _version("onnxruntime"),
        "device": str(device),
        "platform": sys.platform,
    }
    try:
        env["load_average"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    native.kernels()  # built (or found wanting) before the first timed call
    env["fused"] = native.status()
    return env


def ratio_headline(
    rows: list[dict[str, Any]],
    family: str,
    baseline: str,
    name: str,
    what: str | None = None,
) -> str | None:
    """The headline of one family against one baseline (``name`` as the reader knows it): the
    range of its forward and forward+backward time ratios over the shapes measured; None when
    no row of them has a ratio (skipped or failed). ``what`` opens the line (default:
    ``"{family} grid + sampling"``)."""
    sel = [
        r for r in rows if r["family"] == family and r["baseline"] == baseline and "fwd_ratio" in r
    ]
    if not sel:
        return None
    lo = min(min(r["fwd_ratio"], r["fwd_bwd_ratio"]) for r in sel)
    hi = max(max(r["fwd_ratio"], r["fwd_bwd_ratio"]) for r in sel)
    shapes = "shape" if len(sel) == 1 else "shapes"
    return (
        f"{what or family + ' grid + sampling'}: {lo:.2f}x to {hi:.2f}x the time of {name} (forward and "
        f"forward+backward, {len(sel)} {shapes})"
    )
