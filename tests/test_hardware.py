"""The machine description and ``run.precision: auto``: bf16 exactly where the CPU has native
bfloat16 on PyTorch's kernel path."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from torchstn import hardware
from torchstn.train.evaluate import autocast_context, resolve_precision


def _capability_in_child(capability: str) -> tuple[str, bool]:
    code = (
        "import torch; from torchstn.hardware import cpu_flags, native_bf16; "
        "print(cpu_flags()['capability'], native_bf16())"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    cap, native = out.stdout.split()
    return cap, native == "True"


class TestCpuFlags:
    def test_flags_are_known_names_and_capability_is_torchs(self) -> None:
        info = hardware.cpu_flags()
        assert info["capability"] == torch.backends.cpu.get_cpu_capability()
        assert set(info["flags"]) <= set(hardware.ISA_FLAGS)

    def test_the_kernel_path_does_not_change_native_bf16(self) -> None:
        """oneDNN picks its kernels from the CPU, whatever ``ATEN_CPU_CAPABILITY`` says, so the
        answer is the CPU's under every kernel path."""
        here = hardware.native_bf16()
        for capability in ("default", "avx2"):
            cap, native = _capability_in_child(capability)
            assert cap == capability.upper() and native is here

    def test_native_bf16_needs_the_flag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cases = [
            ("AVX512", ["avx2", "avx512_bw", "avx512_bf16"], True),
            ("AVX512", ["avx2", "avx512_bw", "amx_bf16"], True),
            ("AVX512", ["avx2", "avx512_bw"], False),  # AVX-512 without BF16 (the Xeon)
            ("AVX2", ["avx2", "avx512_bw", "avx512_bf16"], True),  # oneDNN still uses BF16
            ("DEFAULT", [], False),
        ]
        for capability, flags, expected in cases:
            monkeypatch.setattr(
                hardware, "cpu_flags", lambda c=capability, f=flags: {"capability": c, "flags": f}
            )
            assert hardware.native_bf16() is expected, (capability, flags)

    def test_describe_names_threads_and_kernels(self) -> None:
        text = hardware.describe("cpu")
        assert hardware.cpu_flags()["capability"] in text
        n = torch.get_num_threads()
        assert f"{n} thread{'' if n == 1 else 's'}," in text


class TestAutoPrecision:
    @pytest.mark.parametrize("native", [True, False])
    def test_auto_is_bf16_exactly_where_native(
        self, native: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(hardware, "native_bf16", lambda: native)
        cpu = torch.device("cpu")
        assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
        x = torch.rand(2, 3)
        with autocast_context("auto", cpu):
            y = torch.nn.functional.linear(x, torch.rand(4, 3))
        assert y.dtype == (torch.bfloat16 if native else torch.float32)

    def test_explicit_precisions_are_kept(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(hardware, "native_bf16", lambda: True)
        for p in ("fp32", "bf16", "fp16"):
            assert resolve_precision(p, torch.device("cpu")) == p
        assert resolve_precision("auto", torch.device("meta")) == "fp32"  # not measured off CPU
