"""Images per second of every task generator, one JSON line per task.

Each task generates ``--num`` images (60,000 for ``cluttered``, as in the issue) after a warm-up
that loads MNIST; the best of ``--repeat`` runs is reported. As a baseline in the same process,
the same generator renders ``--baseline-num`` images one at a time (``chunk_size=1``, a per-sample
loop over the same code), and ``speedup`` is the ratio of the two rates.

Usage::

    python benchmarks/bench_data.py                  # all tasks, torch's default threads
    python benchmarks/bench_data.py --threads 1 --tasks cluttered rts
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from torchstn import __version__, data
from torchstn.bench.timing import cpu_name


def _rate(
    task: data.Task, num: int, repeat: int, chunk_size: int | None = None
) -> tuple[float, float]:
    best = float("inf")
    for i in range(repeat):
        start = time.perf_counter()
        task.generate("train", num=num, seed=i, chunk_size=chunk_size)
        best = min(best, time.perf_counter() - start)
    return best, num / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="*", default=list(data.task_names()))
    parser.add_argument(
        "--num", type=int, default=20_000, help="images per run (cluttered: 60,000)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-num", type=int, default=500)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.tasks:
        task = data.get_task(name)
        task.generate("train", num=16, seed=0)  # warm-up: MNIST decoded and cached
        num = 60_000 if name == "cluttered" else args.num
        seconds, rate = _rate(task, num, args.repeat)
        _, baseline = _rate(task, args.baseline_num, 1, chunk_size=1)
        record = {
            "task": name,
            "in_shape": list(task.in_shape),
            "num": num,
            "seconds": round(seconds, 3),
            "images_per_s": round(rate),
            "baseline_per_sample_images_per_s": round(baseline),
            "speedup": round(rate / baseline, 1),
            "threads": torch.get_num_threads(),
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "torch": torch.__version__,
            "torchstn": __version__,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
