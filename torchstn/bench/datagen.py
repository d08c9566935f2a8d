"""Task generation rates, and what generating an epoch's data costs a training run.

A training epoch of a generated task starts with ``DataModule.train(epoch)``, which renders the
whole epoch's training split (fresh distortions every epoch) in the training process, before the
epoch's first step: generation is not overlapped with training. This group measures, for every
generated task of the paper's classification experiments (with the task's default options):

- the rate of ``task.generate("train", num, seed)`` (images per second, median and best repeat,
  torch's current thread count; every call draws another epoch's seed, as the trainer does);
- the median time of one SGD training step (forward, cross-entropy, backward, momentum step) of
  the plain model and the transformer model of the task's configs (``configs/table1``,
  ``configs/cluttered``, ``configs/addition``) at their batch size, on random inputs of the task's
  shape, times the steps of an epoch of the configs' training size;

and from them the share of an epoch's wall time spent generating its data. Co-localisation is left
out: its epochs are triplet-loss steps on 3,200 images, not classification steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch

from ..data import epoch_seed, get_task
from ..data.tasks import Task
from ..models import create_model
from ..train.datamodule import Prefetch
from .timing import Settings, Timing, measure, synchronize
from .training import make_step

__all__ = ["COLUMNS", "DESCRIPTION", "TASKS", "TITLE", "run"]

TITLE = "Data generation"

#: the configs' training size, batch size and SGD settings (``configs/table1``, ``cluttered``,
#: ``addition``: 50,000 images an epoch in batches of 128; an epoch drops the last partial batch).
TRAIN_SIZE = 50_000
BATCH_SIZE = 128
LR, MOMENTUM = 0.01, 0.9

#: task -> the (model, options) whose epochs are estimated: the plain FCN and the transformer
#: model of the task's configs (cluttered: also the CNN and ST-CNN of the paper's TC table).
TASKS: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "rotated": (("fcn", {}), ("st_fcn_affine", {})),
    "rts": (("fcn", {}), ("st_fcn_affine", {"pool": 2})),
    "projective": (("fcn", {}), ("st_fcn_affine", {})),
    "elastic": (("fcn", {}), ("st_fcn_affine", {})),
    "cluttered": (
        ("fcn", {"hidden": [64, 64]}),
        ("cnn", {}),
        ("st_cnn_affine", {"pool": 2}),
    ),
    "addition": (("fcn", {}), ("st2_fcn_affine", {})),
}
#: images generated per timed call.
GENERATE_IMAGES = 10_000
QUICK_GENERATE_IMAGES = 200
QUICK_TASKS = ("rotated", "cluttered", "addition")
#: at most this many timed repeats of a generation call (each renders 10,000 images).
GENERATE_REPEATS = 3
#: about how long the prefetched epoch runs its steps (at most an epoch's steps, at least 2).
PREFETCH_SECONDS = 2.0
QUICK_PREFETCH_SECONDS = 0.1

DESCRIPTION = f"""
Every generated task of the paper's classification experiments, with its default options:
**images/s** is the rate of `task.generate("train", num={GENERATE_IMAGES:,}, seed)` (the median
of {GENERATE_REPEATS} timed calls after one warm-up, each with another epoch's seed, at torch's
thread count; **best** is the fastest call), and **generate s** the time of one epoch's training
split at that rate ({TRAIN_SIZE:,} images, the training size of `configs/table1`,
`configs/cluttered` and `configs/addition`). By default on the CPU the trainer renders each
epoch's split in the training process before the epoch's first step (`DataModule.train(epoch)`
in `_run_epoch`); with `data.prefetch: true` (the default where training runs on a GPU) it
renders the next epoch's split in a background thread while the epoch trains.

Beside it, for the plain FCN and the transformer model of the task's configs (cluttered: also the
CNN; with the configs' model options), **step ms** is the median time of one training step at batch {BATCH_SIZE} on
random inputs of the task's shape (forward, cross-entropy, backward and an SGD step with momentum
{MOMENTUM}, finite checks off as in the trainer; assembling the batch from the split is not
timed), and **train epoch s** that times the epoch's {TRAIN_SIZE // BATCH_SIZE} steps
({TRAIN_SIZE:,} // {BATCH_SIZE}). **generation share** is generate s / (generate s + train epoch
s): the part of an epoch's wall time, and of a time budget, spent generating data rather than
training; **share (best)** is the same from the fastest generation call and the fastest step (less
sensitive to other load on the machine). Validation is not counted on either side.
**prefetched: waiting** runs it as `data.prefetch: true` does, scaled down: about
{PREFETCH_SECONDS:g} s of the model's training steps while a background thread renders one
image per trained image, then waits for the thread; the column is the share of that wall
time spent waiting for data, and **prefetched / serial** its wall time over the same work done
one after the other (generation at the measured rate, then the steps): below 1 the overlap
pays, above 1 both compete for the same cores and lose.
Co-localisation is left out (its epochs are triplet-loss steps on 3,200 images).
"""

COLUMNS = (
    ("task", "task", ""),
    ("image", "image", ""),
    ("images_per_s", "images/s", ",.0f"),
    ("images_per_s_best", "best images/s", ",.0f"),
    ("epoch_images", "epoch images", ",d"),
    ("generate_s", "generate s", ".2f"),
    ("model", "model", ""),
    ("step_ms", "step ms", ".2f"),
    ("steps", "steps", ",d"),
    ("train_epoch_s", "train epoch s", ".2f"),
    ("generation_share", "generation share", ".0%"),
    ("generation_share_best", "share (best)", ".0%"),
    ("prefetch_wait_share", "prefetched: waiting", ".0%"),
    ("prefetch_vs_serial", "prefetched / serial", ".2f"),
)


def _generation(task: Task, num: int, settings: Settings) -> Timing:
    """Seconds of ``task.generate("train", num)``, every call with the next epoch's seed."""
    task.generate("train", num=16, seed=0)  # MNIST decoded and cached: not part of the rate
    epochs = itertools.count(1)
    gen_settings = dataclasses.replace(
        settings,
        repeats=min(settings.repeats, GENERATE_REPEATS),
        warmup=min(settings.warmup, 1),
        min_seconds=0.0,
    )
    return measure(
        lambda: task.generate("train", num=num, seed=epoch_seed(0, next(epochs))), gen_settings
    )


def _step_fn(
    name: str, options: dict[str, Any], task: Task, settings: Settings
) -> Callable[[], None]:
    """One SGD step of model ``name`` at :data:`BATCH_SIZE` on random inputs."""
    device = torch.device(settings.device)
    torch.manual_seed(0)
    model = create_model(name, task.in_shape, task.num_classes, **options).to(device)
    x = torch.rand(BATCH_SIZE, *task.in_shape, device=device)
    y = torch.randint(task.num_classes, (BATCH_SIZE,), device=device)
    model.train()
    return make_step(model, x, y, LR, MOMENTUM)


def _prefetched(
    task: Task,
    step: Callable[[], None],
    step_s: float,
    gen_s_per_image: float,
    settings: Settings,
) -> dict[str, Any]:
    """A scaled-down epoch as ``data.prefetch: true`` runs it: the next epoch's data (one
    image per trained image) made by :class:`~torchstn.train.datamodule.Prefetch` in a
    background thread while the steps run, then waited for. Returns its wall time, the share of
    it spent waiting, and the serial estimate of the same work (generation, then the steps)."""
    device = settings.device
    seconds = QUICK_PREFETCH_SECONDS if settings.quick else PREFETCH_SECONDS
    steps = max(2, min(TRAIN_SIZE // BATCH_SIZE, round(seconds / max(step_s, 1e-6))))
    num = steps * BATCH_SIZE
    start = time.perf_counter()
    ahead = Prefetch(0, lambda: task.generate("train", num=num, seed=epoch_seed(0, 99)))
    for _ in range(steps):
        step()
    synchronize(device)  # the steps end when the device has run them
    trained = time.perf_counter()
    ahead.result()
    end = time.perf_counter()
    serial = num * gen_s_per_image + steps * step_s
    return {
        "prefetch_steps": steps,
        "prefetch_s": end - start,
        "prefetch_wait_share": (end - trained) / (end - start),
        "prefetch_vs_serial": (end - start) / serial,
    }


def _notes(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The accounting note, the largest and smallest shares, and the headline."""
    timed = [r for r in rows if r.get("generation_share") is not None]
    if not timed:
        return [], []
    ranked = sorted(timed, key=lambda r: r["generation_share"], reverse=True)

    def name(r: dict[str, Any]) -> str:
        return f"{r['task']} `{r['model']}` {r['generation_share']:.0%}"

    top = ranked[: min(3, len(ranked))]
    low = ranked[-1]
    fcn = [r for r in timed if r["model"] == "fcn"]
    over_half = [r for r in timed if r["generation_share"] > 0.5]
    notes = [
        "Accounting: the trainer starts an epoch's clock before it generates (or waits for) "
        "the epoch's training data, so a time budget (`run.minutes`) counts generation; "
        "serially (`data.prefetch: false`, the CPU's default) the generation share is the "
        "fraction of a budget spent generating rather than training, prefetched the waiting "
        "share is.",
        f"Largest generation shares: {', '.join(name(r) for r in top)}; smallest: {name(low)}. "
        f"{len(over_half)} of {len(timed)} (task, model) pairs spend more than half of an "
        "epoch generating its data"
        + (
            f"; the plain FCN between {min(r['generation_share'] for r in fcn):.0%} and "
            f"{max(r['generation_share'] for r in fcn):.0%}."
            if fcn
            else "."
        ),
    ]
    # running generation beside training could shorten an epoch to the longer of the two
    gains = [
        (r, (r["generate_s"] + r["train_epoch_s"]) / max(r["generate_s"], r["train_epoch_s"]))
        for r in timed
    ]
    best, gain = max(gains, key=lambda g: g[1])
    notes.append(
        "Generating the next epoch's data beside training would bound an epoch by the longer of "
        f"the two; the most it could gain here is {gain:.2f}x ({best['task']} `{best['model']}`: "
        f"{best['generate_s']:.2f} s generating, {best['train_epoch_s']:.2f} s training), less "
        "where both compete for the same CPU cores."
    )
    ahead = [r for r in timed if r.get("prefetch_vs_serial") is not None]
    if ahead:
        pays = [r for r in ahead if r["prefetch_vs_serial"] < 1.0]
        under = [r for r in ahead if r["prefetch_wait_share"] < 0.05]
        fastest = min(ahead, key=lambda r: r["prefetch_vs_serial"])
        slowest = max(ahead, key=lambda r: r["prefetch_vs_serial"])
        notes.append(
            f"Measured with prefetching: the overlap pays (prefetched / serial below 1) for "
            f"{len(pays)} of {len(ahead)} pairs, from {fastest['prefetch_vs_serial']:.2f} "
            f"({fastest['task']} `{fastest['model']}`) to {slowest['prefetch_vs_serial']:.2f} "
            f"({slowest['task']} `{slowest['model']}`); {len(under)} of {len(ahead)} wait for "
            f"data less than 5% of the time, at most "
            f"{max(r['prefetch_wait_share'] for r in ahead):.0%}."
        )
    headline = [
        f"Data generation: up to {ranked[0]['generation_share']:.0%} of an epoch's wall time "
        f"({ranked[0]['task']}, `{ranked[0]['model']}`); {len(over_half)} of {len(timed)} "
        "task/model pairs spend more than half of it generating data."
    ]
    return notes, headline


def run(settings: Settings) -> dict[str, Any]:
    """Rows for every (task, model): the task's generation rate and its share of an epoch."""
    names = QUICK_TASKS if settings.quick else tuple(TASKS)
    num = QUICK_GENERATE_IMAGES if settings.quick else GENERATE_IMAGES
    steps = TRAIN_SIZE // BATCH_SIZE
    rows: list[dict[str, Any]] = []
    for task_name in names:
        task = get_task(task_name)
        gen = _generation(task, num, settings)
        generate_s = TRAIN_SIZE * gen.median / num
        gen_best_s = TRAIN_SIZE * gen.best / num
        base: dict[str, Any] = {
            "task": task_name,
            "image": "x".join(str(v) for v in task.in_shape),
            "images_per_s": num / gen.median,
            "images_per_s_best": num / gen.best,
            "generate_images": num,
            "generate": gen.as_dict(),
            "epoch_images": TRAIN_SIZE,
            "generate_s": generate_s,
        }
        models = TASKS[task_name]
        if settings.quick:  # the plain model and the transformer model only
            models = (models[0], models[-1])
        for model, options in models:
            step_fn = _step_fn(model, options, task, settings)
            step = measure(step_fn, settings)
            train_s = step.median * steps
            ahead = _prefetched(task, step_fn, step.median, gen.median / num, settings)
            rows.append(
                {
                    **base,
                    "model": model,
                    "model_options": options,
                    "batch_size": BATCH_SIZE,
                    "step_ms": step.ms(),
                    "step": step.as_dict(),
                    "steps": steps,
                    "train_epoch_s": train_s,
                    "generation_share": generate_s / (generate_s + train_s),
                    "generation_share_best": gen_best_s / (gen_best_s + step.best * steps),
                    **ahead,
                    "threads": torch.get_num_threads(),
                }
            )
    notes, headline = _notes(rows)
    return {"rows": rows, "notes": notes, "headline": headline}
