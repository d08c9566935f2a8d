"""Generation is batched (no per-sample Python loop); the wall-clock checks are marked slow
(speed is measured by ``benchmarks/bench_data.py``, not by the default suite)."""

from __future__ import annotations

import math
import time

import pytest
import torch

from torchstn import data
from torchstn.data.tasks import canvas


def count_sampler_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = canvas.sample

    def counting(input: torch.Tensor, grid: torch.Tensor, **kwargs: object) -> torch.Tensor:
        calls.append(input.shape[0])
        return original(input, grid, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(canvas, "sample", counting)
    return calls


def test_one_sampler_call_per_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_sampler_calls(monkeypatch)
    task = data.get_task("cluttered")
    task.generate("train", num=5000, seed=0, chunk_size=1000)
    assert calls == [1000] * 5
    calls.clear()
    task.generate("train", num=3000, seed=0)
    assert len(calls) == math.ceil(3000 / max(16, (1 << 21) // 3600))


@pytest.mark.slow  # a wall-clock bound: speed is measured by benchmarks/bench_data.py
def test_ten_thousand_cluttered_images_in_seconds() -> None:
    task = data.get_task("cluttered")
    task.generate("train", num=16, seed=0)  # load MNIST
    start = time.perf_counter()
    s = task.generate("train", num=10_000, seed=0)
    seconds = time.perf_counter() - start
    assert s.x.shape == (10_000, 1, 60, 60)
    # about 0.5 s on two idle cores; the bound leaves room for a loaded machine
    assert seconds < 15, f"{seconds:.1f} s for 10,000 images"


@pytest.mark.slow
def test_sixty_thousand_cluttered_images_in_seconds() -> None:
    task = data.get_task("cluttered")
    task.generate("train", num=16, seed=0)
    start = time.perf_counter()
    s = task.generate("train", num=60_000, seed=0)
    seconds = time.perf_counter() - start
    assert s.x.shape == (60_000, 1, 60, 60)
    assert seconds < 20, f"{seconds:.1f} s for 60,000 images"
