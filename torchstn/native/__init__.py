"""Fused kernels: grid generation and sampling in one pass, without the sampling grid.

The unfused path (``affine_grid`` + ``grid_sample``, what every spatial transformer written in
PyTorch does) writes a ``(B, H, W, 2)`` grid to memory and reads it back, and its backward pass
writes the grid's gradient and reduces it to the matrix's. The fused kernel computes each output
pixel's source point where it samples it, and the matrix's gradient where it has the pixel's.

What runs where:

* **CPU**: a C++ extension (``fused_cpu.cpp``, shipped as source) compiled on first use with
  :mod:`torch.utils.cpp_extension` (a C++ compiler and ninja are needed, ``pip install
  torchstn[fast]`` brings ninja; one to two minutes, once)
  and cached in ``$TORCHSTN_NATIVE_DIR`` (default ``~/.cache/torchstn/native``), per source,
  torch version, Python and CPU (it is compiled for the CPU it runs on). A plain
  ``pip install torchstn`` needs no compiler: without one (or with ``TORCHSTN_NATIVE=0``) every
  function falls back to the unfused path, which gives the same numbers to float rounding
  (``grid_sample``'s own kernels differ by an ulp or two between instruction sets).
* ``torch.compile`` and ``torch.export`` see the same kernels as operators,
  ``torch.ops.torchstn.affine2d_sample`` and the like (:mod:`torchstn.native.ops`), in the
  forward and the backward graph. TorchScript, ONNX exports and the files ``torchstn export``
  writes hold the standard operators (``grid_sampler``, ``GridSample``).
* Everything else (CUDA, reduced precision) runs the unfused path.

:func:`status` says which path is available and :func:`path_counts` which one ran, so that a
run's ``result.json`` and ``torchstn bench`` can say so. :class:`use_fused` switches the fused
path off (or back on) for a block, or for the process.

Example:
    >>> import torchstn.native as native
    >>> with native.use_fused(False):
    ...     native.fused_enabled()
    False
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = [
    "available",
    "fused_enabled",
    "kernels",
    "path_counts",
    "record_path",
    "status",
    "triton_available",
    "triton_enabled",
    "use_fused",
    "use_triton",
]

_SOURCE = Path(__file__).with_name("fused_cpu.cpp")
#: compiler flags, tried in order: for the CPU it runs on, rounding step by step (no contracted
#: multiply-adds), loops vectorised (no trapping-math semantics; GCC's gather loads on); then
#: without the GCC-only tuning flag
_FLAGS = (
    (
        "-O3",
        "-march=native",
        "-ffp-contract=off",
        "-fno-trapping-math",
        "-fopenmp",
        "-mtune-ctrl=use_gather",
    ),
    ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"),
)
_LOCK = threading.Lock()
_state: dict[str, Any] = {"module": None, "tried": False, "reason": "not built yet"}
_enabled = os.environ.get("TORCHSTN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")
_counts: Counter[str] = Counter()
_triton = os.environ.get("TORCHSTN_TRITON", "0").strip().lower() in ("1", "true", "yes", "on")


class use_fused:
    """Take the fused path where it runs (``True``, the default) or never (``False``); as a
    context manager for a block, or called alone for the rest of the process.

    The environment variable ``TORCHSTN_NATIVE=0`` sets the default to ``False``.
    """

    def __init__(self, enabled: bool) -> None:
        global _enabled
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled: expected True or False, got {enabled!r}")
        self.previous = _enabled
        _enabled = enabled

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        global _enabled
        _enabled = self.previous


def fused_enabled() -> bool:
    """Whether the fused path is switched on (see :class:`use_fused`)."""
    return _enabled


class use_triton:
    """Warp CUDA tensors with the Triton kernels of :mod:`torchstn.native.triton_affine`
    (``True``) or not (``False``, the default until they have run on a GPU: they are tested
    with Triton's interpreter only); as a context manager or called alone. The environment
    variable ``TORCHSTN_TRITON=1`` sets the default to ``True``."""

    def __init__(self, enabled: bool) -> None:
        global _triton
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled: expected True or False, got {enabled!r}")
        self.previous = _triton
        _triton = enabled

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        global _triton
        _triton = self.previous


def triton_enabled() -> bool:
    """Whether CUDA tensors take the Triton kernels (see :class:`use_triton`)."""
    return _triton


@torch.compiler.assume_constant_result
def triton_available() -> bool:
    """Whether Triton can be imported (``pip install triton``; CUDA wheels of PyTorch bring it)."""
    return importlib.util.find_spec("triton") is not None


def _cache_dir() -> Path:
    root = os.environ.get("TORCHSTN_NATIVE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "torchstn" / "native"


def _cpu_flags() -> str:
    """The CPU's instruction-set flags (the build targets the CPU it runs on)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def build_key() -> str:
    """What the cached build depends on: the source, torch, Python, the machine and its CPU."""
    h = hashlib.sha256(_SOURCE.read_bytes())
    for part in (torch.__version__, sys.version, platform.machine(), _cpu_flags(), repr(_FLAGS)):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _import(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(name: str, final: Path) -> tuple[ModuleType, str]:
    """Compile into a private folder and move the library into place in one rename, under a
    lock that dies with its process: a build killed halfway leaves no half library and no lock
    behind, and two processes build once."""
    from torch.utils import cpp_extension  # only to build: it imports setuptools

    final.parent.mkdir(parents=True, exist_ok=True)
    lock_path = final.parent / f"{name}.lock"
    with open(lock_path, "a+b") as lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): two builds may race, the rename is atomic
            pass
        if final.exists():  # built by another process while this one waited
            return _import(name, final), "cached"
        for stale in final.parent.glob(f"{name}.build-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f"{name}.build-", dir=final.parent))
        path = os.environ.get("PATH", "")
        try:
            print(
                f"torchstn: compiling the fused CPU kernels into {final.parent} "
                "(once per machine and torch version, one to two minutes)",
                file=sys.stderr,
            )
            # ninja from the ``fast`` extra lives beside this Python, maybe not on PATH
            os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + path
            errors = []
            for flags in _FLAGS:  # GCC's tuning flag first; a compiler without it, the rest
                try:
                    cpp_extension.load(
                        name,
                        [str(_SOURCE)],
                        build_directory=str(work),
                        extra_cflags=list(flags),
                        extra_ldflags=["-fopenmp"],
                        verbose=False,
                    )
                    break
                except Exception as e:
                    errors.append(e)
            else:
                raise errors[-1]
            built = next(work.glob(f"{name}*.so"))
            os.replace(built, final)
        finally:
            os.environ["PATH"] = path
            shutil.rmtree(work, ignore_errors=True)
    return _import(name, final), "built"


def kernels() -> ModuleType | None:
    """The compiled fused CPU kernels, built on the first call (cached on disk), or ``None``
    where they cannot be built (the reason is in :func:`status`)."""
    if _state["tried"]:
        return _state["module"]  # type: ignore[no-any-return]
    with _LOCK:
        if _state["tried"]:
            return _state["module"]  # type: ignore[no-any-return]
        try:
            if sys.platform == "win32":
                raise RuntimeError("the fused CPU kernels are built on Linux and macOS only")
            key = build_key()
            name = f"torchstn_fused_{key}"
            final = _cache_dir() / f"{name}.so"
            if final.exists():
                module, how = _import(name, final), "cached"
            else:
                module, how = _build(name, final)
            _state.update(module=module, reason=f"{how}: {final}")
        except Exception as e:  # no compiler, no ninja, a read-only cache: the unfused path
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            _state.update(module=None, reason=f"unavailable ({type(e).__name__}: {first[:200]})")
        _state["tried"] = True
    return _state["module"]  # type: ignore[no-any-return]


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the fused CPU kernels are there (built on the first call, see :func:`kernels`);
    a constant to ``torch.compile``, which does not trace the build."""
    return kernels() is not None


def status() -> dict[str, Any]:
    """Which fused paths there are: ``{"cpu": bool, "cpu_detail": str, "enabled": bool,
    "triton": bool}`` (``cpu_detail``: where the library came from, or why there is none;
    ``triton``: whether CUDA tensors take the Triton kernels, :class:`use_triton`)."""
    return {
        "enabled": _enabled,
        "cpu": _state["module"] is not None,
        "cpu_detail": _state["reason"],
        "triton": _triton,
    }


def record_path(path: str) -> None:
    """Count one warp by ``path`` (``"fused"`` or ``"unfused"``)."""
    _counts[path] += 1


def path_counts(reset: bool = False) -> dict[str, int]:
    """How many warps took each path in this process (``reset``: start counting again)."""
    counts = dict(_counts)
    if reset:
        _counts.clear()
    return counts
