"""Streaming users' image files: loader throughput, peak memory and ST-CNN training beside it.

A class folder of small PNGs (60x60 grey, 10 class folders, rendered by the cluttered-MNIST task;
``--make-folder``) is read the way a training run streams it: ``scan_class_folder``, then
``FileSplit(ImageFiles(entries, 1, (60, 60)), num_workers=W)`` over the batches of
``EpochBatches(n, 256, seed=0, epoch=0)``. Every configuration runs in a fresh subprocess, so its
peak memory is its own:

* ``loader``: seconds of ``scan_class_folder`` over the folder and the memory its list takes;
  images/s for ``--batches`` batches with W = 0, 1, 2 workers (``steady``: after the
  first ``--warmup-batches``, so without the workers' start), the main process's peak RSS
  (``getrusage(RUSAGE_SELF).ru_maxrss``), the workers' peak RSS (their ``VmHWM`` in
  ``/proc/PID/status``, sampled every 0.2 s while they run; it counts the pages they share with
  the main process since the fork) and their peak private memory (``Private_Clean +
  Private_Dirty`` of ``/proc/PID/smaps_rollup``, same sampling), and ``RUSAGE_CHILDREN``'s
  ``ru_maxrss`` once the loader is gone (the largest worker's peak); the same with 2 workers
  over a folder of ``--small-num`` images (hard links to the big one's files) shows whether
  memory grows with the data set;
* ``cache``: what ``data.cache`` does (``FileSplit.cache`` with 2 workers: every image decoded
  into one uint8 tensor): seconds and peak RSS; beside it the bytes of the folder as uint8 and
  as float32 (computed: N x 60 x 60 x 1 or 4);
* ``train_memory``: optimisation steps (forward, backward, SGD with momentum) of the cluttered
  experiment's model (``configs/cluttered/st_cnn_affine.yaml``: ``st_cnn_affine``, ``pool: 2``,
  SGD lr 0.01 momentum 0.9) at batch ``--batch`` on ``--threads`` threads, fed from uint8 tensors
  in memory (``TensorSplit``); median step time of ``--steps`` steps after ``--warmup`` steps;
* ``train_stream``: the same training fed end to end by the streaming loader with W = 0, 1, 2
  workers: steps/s after the warm-up steps, the median step, and the share of the time the
  training loop waited for its next batch.

Each timed configuration runs ``--repeats`` times (interleaved: 0, 1, 2, 0, 1, 2...), the
small-folder and ``cache`` rows once. Before each measurement the script waits (up to
``--max-wait`` seconds) until the machine is quiet: 1-minute load average at most ``--max-load``
and other processes using at most ``--max-busy`` cores over 3 s; both are recorded with the
measurement. The files are read from
the page cache (the folder was just written or read, and ``os.sync`` has written it back first):
this measures decoding, not the disk.

One JSON line per measurement on stdout (and all of them in ``--out`` as one JSON document), then
Markdown tables.

Usage::

    python benchmarks/bench_loader.py --make-folder /tmp/torchstn-bench/cluttered --num 100000
    python benchmarks/bench_loader.py --folder /tmp/torchstn-bench/cluttered --out /tmp/loader.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

CHUNK = 5000  #: images generated and written at a time
SIZE = (60, 60)
MIB = 1024 * 1024


# ---------------------------------------------------------------------------- the folder
def _count_images(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(
        1
        for sub in folder.iterdir()
        if sub.is_dir() and not sub.name.startswith(".")
        for f in os.scandir(sub)
        if f.name.endswith(".png")
    )


def make_folder(folder: Path, num: int) -> int:
    """Write ``num`` cluttered-MNIST images as ``folder/LABEL/INDEX.png`` (skipped when there)."""
    import numpy as np
    from PIL import Image

    from torchstn.data import get_task

    have = _count_images(folder)
    if have >= num:
        print(f"{folder}: {have} images already, not generated", file=sys.stderr)
        return have
    task = get_task("cluttered")
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, lo in enumerate(range(0, num, CHUNK)):
        marker = folder / f".chunk-{i}"  # hidden: scan_class_folder skips it
        if marker.exists():
            continue
        s = task.generate("train", num=min(CHUNK, num - lo), seed=i)
        pixels = (s.x[:, 0] * 255.0).round().to(torch.uint8).numpy()  # (B, H, W)
        for j, (img, label) in enumerate(zip(pixels, s.y.tolist())):
            Image.fromarray(np.ascontiguousarray(img)).save(
                folder / str(label) / f"{lo + j:06d}.png"
            )
        marker.touch()
        print(f"{lo + len(pixels)} images ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    os.sync()  # written back now, not while the loader is timed
    return _count_images(folder)


def make_small_folder(folder: Path, small: Path, num: int) -> int:
    """``small``: hard links to the first ``num / 10`` images of each class of ``folder``."""
    if _count_images(small) >= num:
        return _count_images(small)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        (small / sub.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(sub.iterdir())[: num // 10]:
            target = small / sub.name / f.name
            if not target.exists():
                os.link(f, target)
    return _count_images(small)


# ---------------------------------------------------------------------------- the machine
def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values), idle


def _busy_cores(seconds: float = 3.0) -> float:
    """Cores kept busy by other processes over ``seconds`` (this one sleeps meanwhile)."""
    total0, idle0 = _cpu_times()
    time.sleep(seconds)
    total1, idle1 = _cpu_times()
    return (1 - (idle1 - idle0) / max(total1 - total0, 1)) * (os.cpu_count() or 1)


def wait_for_quiet(args: argparse.Namespace) -> dict[str, Any]:
    """Wait until the machine is quiet (see the module docstring); what it was at the end."""
    start = time.perf_counter()
    while True:
        busy = _busy_cores()
        load1 = os.getloadavg()[0]
        waited = time.perf_counter() - start
        quiet = load1 <= args.max_load and busy <= args.max_busy
        if quiet or waited >= args.max_wait:
            return {
                "load1": round(load1, 2),
                "busy_cores": round(busy, 2),
                "waited_s": round(waited),
                "quiet": quiet,
            }
        print(f"load {load1:.2f}, busy {busy:.2f} cores: waiting", file=sys.stderr, flush=True)
        time.sleep(10)


def _environment() -> dict[str, Any]:
    from torchstn import __version__
    from torchstn.bench.timing import cpu_name

    model = cpu_name()
    import PIL

    return {
        "torch": torch.__version__,
        "torchstn": __version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "date": time.strftime("%Y-%m-%d"),
    }


# ---------------------------------------------------------------------------- memory
def _status_kib(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _private_kib(pid: int) -> int:
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def _children() -> list[int]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return pids


class _WorkerMemory(threading.Thread):
    """Samples the peak ``VmHWM`` and private memory of this process's children (the workers)."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval, self.done = interval, threading.Event()
        self.hwm_kib, self.private_kib = 0, 0
        self.pids: set[int] = set()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            for pid in _children():
                try:
                    self.hwm_kib = max(self.hwm_kib, _status_kib(pid, "VmHWM"))
                    self.private_kib = max(self.private_kib, _private_kib(pid))
                    self.pids.add(pid)
                except (OSError, ValueError):
                    pass  # the worker has just exited

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.join()
        return {
            "workers_seen": len(self.pids),
            "worker_peak_rss_mib": round(self.hwm_kib / 1024, 1),
            "worker_peak_private_mib": round(self.private_kib / 1024, 1),
        }


def _memory(sampler: _WorkerMemory) -> dict[str, Any]:
    out = sampler.stop()
    out["main_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["children_maxrss_mib"] = round(children / 1024, 1)
    return out


# ---------------------------------------------------------------------------- measurements
def _scan(folder: Path) -> tuple[Any, float, float]:
    from torchstn.data.files import scan_class_folder

    before = _status_kib("self", "VmRSS") / 1024
    start = time.perf_counter()
    entries, _ = scan_class_folder(folder)
    seconds = time.perf_counter() - start
    return entries, seconds, _status_kib("self", "VmRSS") / 1024 - before


def _file_split(entries: Any, workers: int) -> Any:
    from torchstn.data.files import ImageFiles
    from torchstn.data.loader import FileSplit

    return FileSplit(ImageFiles(entries, 1, SIZE), num_workers=workers)


def child_loader(args: argparse.Namespace) -> dict[str, Any]:
    from torchstn.data.loader import EpochBatches

    entries, scan_s, entries_mib = _scan(args.folder)
    split = _file_split(entries, args.workers)
    order = list(itertools.islice(EpochBatches(len(split), args.batch, 0, 0), args.batches))
    sampler = _WorkerMemory()
    sampler.start()
    counts, times = [], []
    start = time.perf_counter()
    for b in split.batches(order):
        counts.append(int(b.y.shape[0]))
        times.append(time.perf_counter())
    seconds = times[-1] - start
    w = max(min(args.warmup_batches, len(times) - 2), 0)
    steady = sum(counts[w + 1 :]) / max(times[-1] - times[w], 1e-9)
    return {
        "measure": "loader",
        "folder_images": len(split),
        "workers": args.workers,
        "batch": args.batch,
        "batches": len(times),
        "images": sum(counts),
        "seconds": round(seconds, 2),
        "img_s": round(sum(counts) / seconds),
        "steady_img_s": round(steady),
        "first_batch_s": round(times[0] - start, 2),
        "scan_s": round(scan_s, 2),
        "entries_mib": round(entries_mib, 1),
        **_memory(sampler),
    }


def child_cache(args: argparse.Namespace) -> dict[str, Any]:
    entries, _, entries_mib = _scan(args.folder)
    split = _file_split(entries, args.workers)
    sampler = _WorkerMemory()
    sampler.start()
    start = time.perf_counter()
    cached, _ = split.cache(skip_bad=False, batch_size=args.batch)
    seconds = time.perf_counter() - start
    return {
        "measure": "cache",
        "folder_images": len(split),
        "workers": args.workers,
        "seconds": round(seconds, 2),
        "img_s": round(len(cached) / seconds),
        "cached_mib": round(cached.x.numel() * cached.x.element_size() / MIB, 1),
        "entries_mib": round(entries_mib, 1),
        "rss_end_mib": round(_status_kib("self", "VmRSS") / 1024, 1),
        **_memory(sampler),
    }


def _model_and_optimiser() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from torchstn.models import create_model

    torch.manual_seed(0)
    # configs/cluttered/st_cnn_affine.yaml: model options and optimiser
    model = create_model("st_cnn_affine", (1, *SIZE), 10, pool=2)
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def _train(split: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train on ``warmup + steps`` batches of ``split``; step times and time waiting for data."""
    import torch.nn.functional as F

    from torchstn.data.loader import EpochBatches

    model, opt = _model_and_optimiser()
    cpu = torch.device("cpu")
    total = args.warmup + args.steps
    order = list(itertools.islice(EpochBatches(len(split), args.batch, 0, 0), total))
    sampler = _WorkerMemory()
    sampler.start()
    waits, steps, ends = [], [], []
    start = last = time.perf_counter()
    it = iter(split.batches(order))
    for _ in range(total):
        batch = next(it)
        got = time.perf_counter()
        loss = F.cross_entropy(model(batch.inputs(cpu)), batch.y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        end = time.perf_counter()
        waits.append(got - last)
        steps.append(end - got)
        ends.append(end)
        last = end
    it.close()  # the loader's workers exit (and count in RUSAGE_CHILDREN)
    timed = slice(args.warmup, total)
    seconds = ends[-1] - ends[args.warmup - 1] if args.warmup else ends[-1] - start
    return {
        "steps": args.steps,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "steps_s": round(args.steps / seconds, 3),
        "img_s": round(args.steps * args.batch / seconds),
        "median_step_ms": round(statistics.median(a + b for a, b in zip(waits, steps)) * 1e3, 1),
        "median_compute_ms": round(statistics.median(steps[timed]) * 1e3, 1),
        "wait_share": round(sum(waits[timed]) / seconds, 3),
        "max_wait_ms": round(max(waits[timed]) * 1e3, 1),
        "first_batch_s": round(waits[0], 2),
        **_memory(sampler),
    }


def child_train_memory(args: argparse.Namespace) -> dict[str, Any]:
    from torchstn.data import get_task
    from torchstn.data.loader import TensorSplit

    s = get_task("cluttered").generate("train", num=args.batch * (args.warmup + args.steps), seed=0)
    x = (s.x * 255.0).round().to(torch.uint8)  # as users' images are held: uint8
    return {"measure": "train_memory", "workers": None, **_train(TensorSplit(x, s.y), args)}


def child_train_stream(args: argparse.Namespace) -> dict[str, Any]:
    entries, _, _ = _scan(args.folder)
    split = _file_split(entries, args.workers)
    return {"measure": "train_stream", "workers": args.workers, **_train(split, args)}


CHILDREN = {
    "loader": child_loader,
    "cache": child_cache,
    "train_memory": child_train_memory,
    "train_stream": child_train_stream,
}


# ---------------------------------------------------------------------------- the parent
def _run_child(kind: str, args: argparse.Namespace, run: int, **extra: Any) -> dict[str, Any]:
    gate = wait_for_quiet(args)
    options = {
        "folder": str(args.folder),
        "batch": args.batch,
        "batches": args.batches,
        "warmup_batches": args.warmup_batches,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "workers": 0,
        **extra,
    }
    cmd = [sys.executable, __file__, "--child", kind]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    result = {"run": run, **json.loads(out.strip().splitlines()[-1]), **gate}
    result["load1_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result), flush=True)
    return result


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(title for title, _ in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        cells = []
        for _, key in columns:
            v = r.get(key)
            if v is None:
                cells.append("-")
            elif isinstance(v, int) and not isinstance(v, bool):
                cells.append(f"{v:,}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(results: list[dict[str, Any]], n: int) -> str:
    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r["measure"] == "cache",
            r["measure"],
            -r.get("folder_images", 0),
            r["workers"] or -1,
            r["run"],
        )

    loader = sorted((r for r in results if r["measure"] in ("loader", "cache")), key=order)
    for r in loader:
        r["what"] = "cache()" if r["measure"] == "cache" else "stream"
    train = sorted((r for r in results if r["measure"].startswith("train")), key=order)
    for r in train:
        r["feed"] = "memory" if r["measure"] == "train_memory" else "stream"
        r["wait_pct"] = f"{100 * r['wait_share']:.1f}%"
    memory = [
        {"what": f"{n:,} images as uint8 (computed)", "mib": round(n * SIZE[0] * SIZE[1] / MIB)},
        {
            "what": f"{n:,} images as float32 (computed)",
            "mib": round(4 * n * SIZE[0] * SIZE[1] / MIB),
        },
    ]
    parts = [
        _table(
            loader,
            [
                ("read", "what"),
                ("run", "run"),
                ("folder images", "folder_images"),
                ("workers", "workers"),
                ("images", "images"),
                ("seconds", "seconds"),
                ("images/s", "img_s"),
                ("steady images/s", "steady_img_s"),
                ("first batch s", "first_batch_s"),
                ("scan s", "scan_s"),
                ("scan's RSS MiB", "entries_mib"),
                ("main peak RSS MiB", "main_peak_rss_mib"),
                ("worker peak RSS MiB", "worker_peak_rss_mib"),
                ("worker peak private MiB", "worker_peak_private_mib"),
                ("load", "load1"),
            ],
        ),
        _table(
            train,
            [
                ("feed", "feed"),
                ("run", "run"),
                ("workers", "workers"),
                ("steps", "steps"),
                ("steps/s", "steps_s"),
                ("images/s", "img_s"),
                ("median step ms", "median_step_ms"),
                ("median compute ms", "median_compute_ms"),
                ("waiting for data", "wait_pct"),
                ("main peak RSS MiB", "main_peak_rss_mib"),
                ("worker peak RSS MiB", "worker_peak_rss_mib"),
                ("load", "load1"),
            ],
        ),
        _table(memory, [("held in memory", "what"), ("MiB", "mib")]),
    ]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make-folder", type=Path, help="generate the folder, then exit")
    parser.add_argument("--num", type=int, default=100_000, help="images of --make-folder")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/torchstn-bench/cluttered"))
    parser.add_argument("--small-num", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200, help="batches read per loader run")
    parser.add_argument("--warmup-batches", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="training steps before timing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each timed configuration")
    parser.add_argument("--max-load", type=float, default=0.7)
    parser.add_argument("--max-busy", type=float, default=0.3)
    parser.add_argument("--max-wait", type=float, default=600.0)
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)), flush=True)
        return
    if args.make_folder:
        print(
            json.dumps(
                {"folder": str(args.make_folder), "images": make_folder(args.make_folder, args.num)}
            )
        )
        return
    n = _count_images(args.folder)
    if n == 0:
        parser.error(f"--folder {args.folder}: no images (generate them with --make-folder)")
    small = args.folder.with_name(args.folder.name + f"-{args.small_num}")
    make_small_folder(args.folder, small, args.small_num)
    env = _environment()
    print(json.dumps({"environment": env}), flush=True)
    os.sync()  # no write-back of the folder while timing
    results = []
    for run in range(1, args.repeats + 1):  # interleaved, so that a slow spell hits every row
        results += [_run_child("loader", args, run, workers=w) for w in (0, 1, 2)]
    batches = args.small_num // args.batch
    results.append(_run_child("loader", args, 1, workers=2, folder=small, batches=batches))
    results.append(_run_child("cache", args, 1, workers=2))
    for run in range(1, args.repeats + 1):
        results.append(_run_child("train_memory", args, run))
        results += [_run_child("train_stream", args, run, workers=w) for w in (0, 1, 2)]
    if args.out:
        args.out.write_text(
            json.dumps({"environment": env, "measurements": results}, indent=1) + "\n"
        )
    print()
    print(_markdown(results, n))


if __name__ == "__main__":
    main()
