"""What the machine is: the CPU's name, the instruction sets that pick PyTorch's CPU kernels, and
whether bfloat16 is native here (the rule of ``run.precision: auto``).

Reduced-precision CPU kernels differ by instruction set: the same bfloat16 training step is
1.4-1.5x faster than float32 on a CPU with AVX-512 BF16 and 2-3x slower on one without
(docs/precision.md). Every benchmark figure and every run records :func:`cpu_flags` beside the CPU's
name so that a number can be read against the kernels that produced it.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch

__all__ = ["ISA_FLAGS", "cpu_flags", "cpu_name", "describe", "native_bf16"]

#: the instruction-set features that change which kernels PyTorch runs on a CPU (names as
#: :func:`torch.cpu.get_capabilities` gives them).
ISA_FLAGS = ("avx2", "avx512_bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, Any]:
    """What decides PyTorch's CPU kernels: the kernel path it runs (``capability``, which the
    environment variable ``ATEN_CPU_CAPABILITY`` can lower) and the :data:`ISA_FLAGS` the CPU has.

    Example:
        >>> sorted(cpu_flags())
        ['capability', 'flags']
    """
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        caps = torch.cpu.get_capabilities()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # older torch
        caps = {}
    return {"capability": capability, "flags": [f for f in ISA_FLAGS if caps.get(f)]}


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX): where bfloat16 autocast
    pays. The convolutions and matrix products that dominate a step run in oneDNN, which picks
    its kernels from the CPU itself: ``ATEN_CPU_CAPABILITY=avx2`` does not take them off the
    BF16 instructions (measured: bf16 steps at 0.49-0.70 of fp32 under it too).

    Example:
        >>> isinstance(native_bf16(), bool)
        True
    """
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()["flags"]))


def describe(device: torch.device | str = "cpu") -> str:
    """One line for a run record: the GPU's name, or the CPU's with its cores, torch threads,
    kernel path and instruction sets.

    Example:
        >>> "core" in describe("cpu")
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    info = cpu_flags()
    return (
        f"{cpu_name()}, {cores} {'core' if cores == 1 else 'cores'}, {threads} "
        f"{'thread' if threads == 1 else 'threads'}, {info['capability']} kernels"
        f" ({' '.join(info['flags']) or 'no AVX2'})"
    )
