"""``torchstn explain``: write a guide to spatial transformers whose every number is computed."""

from __future__ import annotations

import argparse
import time
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="write a guide (Markdown + figures) computed by the library itself",
        description="Write OUT/guide.md and its figures (PNG files beside it): the architecture "
        "drawn from a trained model, the worked example of the sampler, the sampling kernels and "
        "their gradients, every transform family, a CNN with and without a spatial transformer "
        "at growing translation and clutter, and what the trained ST-CNN learned. Trains 8 small "
        "models: about 10-15 minutes on a 2-core CPU (--quick: well under a minute, numbers "
        "meaningless). The same seed gives the same guide. Needs matplotlib.",
    )
    p.add_argument("--out", required=True, help="folder for guide.md and its figures (created)")
    p.add_argument("--quick", action="store_true", help="a tiny training budget (a smoke test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training runs (default 0)")
    p.add_argument("--threads", type=int, help="PyTorch CPU threads (default: PyTorch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explain import write_guide

    start = time.perf_counter()
    path = write_guide(args.out, quick=args.quick, seed=args.seed, threads=args.threads)
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")
    return 0
