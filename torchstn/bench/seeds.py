"""Several runs on one device: N models trained at once, three ways.

The paper's protocol trains every cell with three seeds, and small models leave a GPU mostly
idle: running several at once is how a table becomes affordable. This group measures the total
training throughput of ``N`` models of one kind (each on its own batch, SGD with momentum):

- ``sequential``: one process steps the N models one after another (the baseline);
- ``processes``: N processes step one model each at the same time, as ``torchstn reproduce
  --jobs N`` runs them (on the CPU each gets cores / N threads; on a GPU they share it);
- ``vmap``: one process stacks the N models (``torch.func.stack_module_state``) and steps them
  as one (``vmap(grad(loss))`` and one stacked SGD update).
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

from ..models import create_model
from .timing import Settings, measure, synchronize
from .training import make_step

__all__ = ["CASES", "COLUMNS", "DESCRIPTION", "TITLE", "run", "stacked_step"]

TITLE = "Several runs on one device"
DESCRIPTION = """
Total training images per second of N models of one kind, each stepping on its own batch of 128
(forward, cross-entropy, backward, SGD with momentum): `sequential`, one process stepping them in
turn; `processes`, N processes at once, one model each (what `torchstn reproduce --jobs N`
does; on the CPU each gets cores / N threads); `vmap`, the N models stacked with
`torch.func.stack_module_state` and stepped as one (`vmap(grad(loss))`, one stacked update).
`vs sequential`: throughput over the sequential row's (above 1: faster).
"""
COLUMNS = (
    ("task", "task", ""),
    ("model", "model", ""),
    ("n", "N", "d"),
    ("way", "way", ""),
    ("images_per_s", "images/s", ",.0f"),
    ("vs_sequential", "vs sequential", ".2f"),
)

#: (task, input shape, model, options)
CASES: tuple[tuple[str, tuple[int, int, int], str, dict[str, Any]], ...] = (
    ("cluttered", (1, 60, 60), "fcn", {"hidden": [64, 64]}),
    ("cluttered", (1, 60, 60), "st_cnn_affine", {"pool": 2}),
    ("rts", (1, 42, 42), "cnn", {}),
)
QUICK_CASES: tuple[tuple[str, tuple[int, int, int], str, dict[str, Any]], ...] = (
    ("quick", (1, 16, 16), "st_cnn_affine", {"pool": 2}),
)
BATCH = 128
N_MODELS = 4
STEPS = 10  #: timed steps of each process


def _data(n: int, batch: int, shape: tuple[int, ...], device: str) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, batch, *shape, generator=gen).to(device)
    y = torch.randint(0, 10, (n, batch), generator=gen).to(device)
    return x, y


def stacked_step(
    models: list[torch.nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float = 0.01,
    momentum: float = 0.9,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """One SGD-with-momentum step of the ``models`` stacked as one, as a closure, and the
    stacked parameters it updates (``x``: ``(N, B, ...)``, ``y``: ``(N, B)``): each model's
    gradient is its own loss's (``vmap(grad(...))``), the update that of ``torch.optim.SGD``."""
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    params = {k: v.detach() for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p: Any, b: Any, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, (p, b), (xi,)), yi)

    gradients = vmap(grad(loss))
    keys = list(params)
    velocity: list[torch.Tensor] | None = None

    def step() -> None:
        nonlocal velocity
        g = gradients(params, buffers, x, y)
        grads = [g[k] for k in keys]
        with torch.no_grad():
            if velocity is None:  # torch.optim.SGD's first step: the buffer is the gradient
                velocity = [t.clone() for t in grads]
            else:
                torch._foreach_mul_(velocity, momentum)
                torch._foreach_add_(velocity, grads)
            torch._foreach_add_([params[k] for k in keys], velocity, alpha=-lr)

    return step, params


def _worker(args: tuple[Any, ...]) -> float:
    """One process of the ``processes`` way: build, wait for the others, time ``STEPS`` steps."""
    name, shape, options, batch, device, threads, steps, barrier = args
    if torch.device(device).type == "cpu":
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(name, shape, 10, **options).to(device)
    x, y = _data(1, batch, shape, device)
    step = make_step(model, x[0], y[0])
    step()  # warm-up
    synchronize(device)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - start


def _processes(
    name: str,
    shape: tuple[int, ...],
    options: dict[str, Any],
    n: int,
    batch: int,
    settings: Settings,
) -> float:
    """Total images per second of ``n`` processes stepping one model each at the same time."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(n)
    threads = max(1, torch.get_num_threads() // n)
    steps = 2 if settings.quick else STEPS
    work = [(name, shape, options, batch, settings.device, threads, steps, barrier)] * n
    with ctx.Pool(n) as pool:
        seconds = pool.map(_worker, work)
    return n * batch * steps / max(seconds)


def run(settings: Settings) -> dict[str, Any]:
    rows = []
    device = settings.device
    batch = 8 if settings.quick else BATCH
    n = 2 if settings.quick else N_MODELS
    for task, shape, name, options in QUICK_CASES if settings.quick else CASES:
        torch.manual_seed(0)
        models = [create_model(name, shape, 10, **options).to(device) for _ in range(n)]
        x, y = _data(n, batch, shape, device)
        steps = [make_step(m, x[i], y[i]) for i, m in enumerate(models)]

        def sequential(steps: list[Any] = steps) -> None:
            for s in steps:
                s()

        seq = n * batch / measure(sequential, settings).median
        stacked, _ = stacked_step([copy.deepcopy(m) for m in models], x, y)
        rates = {
            "sequential": seq,
            "processes": _processes(name, shape, options, n, batch, settings),
            "vmap": n * batch / measure(stacked, settings).median,
        }
        for way, rate in rates.items():
            rows.append(
                {
                    "task": task,
                    "model": name,
                    "input": "x".join(map(str, shape)),
                    "n": n,
                    "way": way,
                    "images_per_s": rate,
                    "vs_sequential": rate / seq,
                    "cpu_count": os.cpu_count(),
                }
            )
    return {"rows": rows}
