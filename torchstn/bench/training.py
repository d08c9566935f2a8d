"""Training throughput of the paper's CNN and ST-CNN, where a step's time goes, and its memory.

A step is what ``torchstn train`` does per batch: forward, cross-entropy, backward and an SGD
step with momentum, at batch 128 (the configs' batch), on random images of the task's shape.
Component shares time each part of the ST-CNN alone, forward and backward, on the tensors the
step gives it: the localisation net with its head, the grid generator, the sampler, and the
classifier with the loss; ``other`` is the rest of the step (optimizer, autograd bookkeeping).
Memory is the bytes autograd keeps for the backward pass (the activations: what grows with the
batch), plus, on CUDA, the allocator's peak.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import sample
from ..models import create_model
from ..models.st_models import STClassifier
from ..module import SpatialTransformer
from ..train import Classification, TrainStep, config_from_dict
from ..train.step import resolve_memory_format
from .timing import Settings, measure

__all__ = ["CASES", "COLUMNS", "DESCRIPTION", "TITLE", "make_step", "run"]

TITLE = "Training throughput"
DESCRIPTION = """
Images per second of training steps (forward, cross-entropy, backward, SGD with momentum) at
batch 128 on the inputs of the paper's experiments: cluttered MNIST 60x60, RTS 42x42 and rotated
28x28, with the models and options of `configs/` (ST-CNN with average pooling 2 after the
transformer on 60x60 and 42x42). `loc`, `grid`, `sampler`, `classifier`: the share of a step
each part of the ST-CNN takes, timed alone (forward and backward, same tensors); `other` is the
rest (optimizer, loss, autograd); parts timed alone can add up to more than the step (each pays
its own start-up and memory traffic), and `other` then reads 0. `layout`: the memory format
`torchstn train` uses by default (`run.memory_format: auto`). `activations MB`: what autograd
saves for the backward pass.
"""
COLUMNS = (
    ("task", "task", ""),
    ("model", "model", ""),
    ("layout", "layout", ""),
    ("step_ms", "step ms", ".1f"),
    ("images_per_s", "images/s", ",.0f"),
    ("loc", "loc", ".0%"),
    ("grid", "grid", ".0%"),
    ("sampler", "sampler", ".0%"),
    ("classifier", "classifier", ".0%"),
    ("other", "other", ".0%"),
    ("activations_mb", "activations MB", ".1f"),
    ("peak_mb", "CUDA peak MB", ".1f"),
)

#: (task, input shape, model, options)
CASES: tuple[tuple[str, tuple[int, int, int], str, dict[str, Any]], ...] = (
    ("cluttered", (1, 60, 60), "cnn", {}),
    ("cluttered", (1, 60, 60), "st_cnn_affine", {"pool": 2}),
    ("rts", (1, 42, 42), "cnn", {}),
    ("rts", (1, 42, 42), "st_cnn_affine", {"pool": 2}),
    ("rotated", (1, 28, 28), "cnn", {}),
    ("rotated", (1, 28, 28), "st_cnn_affine", {}),
)
QUICK_CASES: tuple[tuple[str, tuple[int, int, int], str, dict[str, Any]], ...] = (
    ("quick", (1, 16, 16), "st_cnn_affine", {"pool": 2}),
)
BATCH = 128


def make_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float = 0.01, momentum: float = 0.9
) -> Callable[[], None]:
    """One SGD-with-momentum training step of ``model`` on ``(x, y)``, as a closure: the
    :class:`~torchstn.train.TrainStep` that ``torchstn train`` takes (classification, fp32)."""
    objective = Classification(config_from_dict({}))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    train_step = TrainStep(model, objective, opt, device=x.device)

    def step() -> None:
        train_step(x, y)

    return step


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn()`` runs (each
    storage counted once)."""
    seen: dict[tuple[Any, ...], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), t.device)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _components(
    model: STClassifier, x: torch.Tensor, y: torch.Tensor, settings: Settings
) -> dict[str, float]:
    """Seconds of each ST-CNN part alone, forward and backward."""
    st = model.transformer
    assert isinstance(st, SpatialTransformer)
    pool = model.pool

    def loc() -> None:
        st.zero_grad(set_to_none=True)
        params = st.transform.constrain(st.head(st.localization(x)))
        params.backward(torch.ones_like(params))

    with torch.no_grad():
        params = st.localize(x)
    p = params.detach().requires_grad_(True)
    grid0 = st.transform(params, st.out_size, st.align_corners)

    def grid() -> None:
        p.grad = None
        g = st.transform(p, st.out_size, st.align_corners)
        g.backward(torch.ones_like(g))

    gq = grid0.detach().requires_grad_(True)
    xq = x.detach().requires_grad_(True)  # the input's gradient flows to the localisation net

    def sampler() -> None:
        gq.grad = xq.grad = None
        out = sample(xq, gq, st.mode, st.padding_mode, st.align_corners)
        out.backward(torch.ones_like(out))

    with torch.no_grad():
        warped = st.transform_input(x, params)
    wq = warped.detach().requires_grad_(True)

    def classifier() -> None:
        model.classifier.zero_grad(set_to_none=True)
        wq.grad = None
        inp = F.avg_pool2d(wq, pool) if pool > 1 else wq
        F.cross_entropy(model.classifier(inp), y).backward()

    return {
        name: measure(fn, settings).median
        for name, fn in (
            ("loc", loc),
            ("grid", grid),
            ("sampler", sampler),
            ("classifier", classifier),
        )
    }


def run(settings: Settings) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    device = torch.device(settings.device)
    batch = 8 if settings.quick else BATCH
    for task, shape, name, options in QUICK_CASES if settings.quick else CASES:
        torch.manual_seed(0)
        model = create_model(name, shape, 10, **options).to(device)
        layout = resolve_memory_format("auto", model, device)  # as torchstn train lays it out
        model = model.to(memory_format=layout)  # type: ignore[call-overload]
        x = torch.rand(batch, *shape, generator=gen).to(device).contiguous(memory_format=layout)
        y = torch.randint(0, 10, (batch,), generator=gen).to(device)
        step = make_step(model, x, y)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = measure(step, settings)
        row: dict[str, Any] = {
            "task": task,
            "input": "x".join(map(str, shape)),
            "layout": "channels_last" if layout == torch.channels_last else "contiguous",
            "model": name,
            "step_ms": t.ms(),
            "images_per_s": batch / t.median,
            "activations_mb": saved_bytes(partial(model, x)) / 1e6,
        }
        if device.type == "cuda":
            row["peak_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
        if isinstance(model, STClassifier):
            parts = _components(model, x, y, settings)
            for part, seconds in parts.items():
                row[part] = seconds / t.median
            row["other"] = max(0.0, 1.0 - sum(parts.values()) / t.median)
        rows.append(row)
    return {"rows": rows}
