"""bfloat16 autocast against float32 on this machine: training-step speed and test error.

Part 1 times optimisation steps (forward, backward, SGD) of the models of the cluttered-MNIST demo
at batch 128, in float32 and under ``torch.autocast(dtype=torch.bfloat16)``, in the same process:
median of ``--steps`` steps after ``--warmup``; ``ratio`` is bf16 time / fp32 time (below 1: bf16
is faster). Part 2 (``--train-minutes M``) trains ``configs/demo.yaml`` for M minutes in each
precision with the same seed and reports the test errors. The first line records the CPU's
name, its kernel path and instruction sets (AVX-512 BF16 decides whether bf16 pays). One JSON line per measurement.

Usage::

    python benchmarks/bench_precision.py                       # step times only
    python benchmarks/bench_precision.py --train-minutes 4     # and two 4-minute trainings
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from torchstn.bench.timing import environment
from torchstn.models import create_model
from torchstn.train import Trainer, config_from_dict, load_config
from torchstn.train.evaluate import autocast_context


def _step_seconds(name: str, options: dict, precision: str, args: argparse.Namespace) -> float:
    torch.manual_seed(0)
    model = create_model(name, (1, 60, 60), 10, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.batch, 1, 60, 60)
    y = torch.randint(0, 10, (args.batch,))
    device = torch.device("cpu")
    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        with autocast_context(precision, device):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train-minutes", type=float, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment("cpu")  # the CPU's name and flags: bf16 speed depends on AVX-512 BF16
    print(json.dumps({"environment": env}), flush=True)
    for name, options in (("st_cnn_affine", {"pool": 2}), ("cnn", {})):
        fp32 = _step_seconds(name, options, "fp32", args)
        bf16 = _step_seconds(name, options, "bf16", args)
        print(
            json.dumps(
                {
                    "model": name,
                    "batch": args.batch,
                    "fp32_ms": round(fp32 * 1e3, 1),
                    "bf16_ms": round(bf16 * 1e3, 1),
                    "ratio": round(bf16 / fp32, 2),
                    "fp32_img_s": round(args.batch / fp32),
                    "bf16_img_s": round(args.batch / bf16),
                }
            ),
            flush=True,
        )
    if args.train_minutes:
        for precision in ("fp32", "bf16"):
            values = load_config("demo")
            values["device"] = "cpu"
            values["run"].update({"minutes": args.train_minutes, "precision": precision})
            with tempfile.TemporaryDirectory() as tmp:
                result = Trainer(config_from_dict(values), tmp, progress=False).fit()
            print(
                json.dumps(
                    {
                        "train": "configs/demo.yaml",
                        "precision": precision,
                        "minutes": args.train_minutes,
                        "epochs": result["epochs"],
                        "test_error": result["test_error"],
                        "val_error": result["val_error"],
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
