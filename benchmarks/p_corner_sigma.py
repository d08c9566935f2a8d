"""How hard is the P task at each corner noise? The FCN of Table 1 trained on P at several
``corner_sigma`` values, beside the same FCN, trained the same way, on R and E.

The paper gives its FCN's errors on R, P and E (2.1, 3.1 and 3.2%) but the size of P's corner
noise could not be checked here (../shared/PAPER.md: "unconfirmed"). Its own numbers fix the
difficulty of P relative to the other columns: the corner noise that puts our FCN's P error in the
same place between R and E is the one the P column uses. The script also reports, for each
sigma, how much of the digit's ink the warp pushes out of the 28 x 28 frame (lost information
that no classifier recovers).

    python benchmarks/p_corner_sigma.py [--sigmas 1.5,2,2.5,3,4,5] [--epochs 300]
        [--device auto] [--jobs 1] [--threads 1] [--out results/p_corner_sigma.json]

Every run is ``torchstn train --config configs/table1/{p,r,e}/fcn.yaml`` with a fixed number of
epochs (no time budget, so the answer does not depend on the machine's speed); finished runs in
``--runs-dir`` are reused. Writes the JSON record (atomically) and prints a Markdown table;
``torchstn reproduce render`` puts the record into RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from torchstn.experiments import repo_relative
from torchstn.train import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent


def ink_lost(sigma: float, num: int = 3000, seed: int = 1) -> dict[str, float]:
    """Share of each test digit's ink that the P warp at ``sigma`` maps outside the frame:
    the mean, and the fraction of digits losing more than 10% and 25% of it."""
    from torchstn.data import tasks
    from torchstn.data.tasks.projective import DIGIT, FRAME_CORNERS, destination_corners
    from torchstn.data.tasks.projective import homography_from_corners as from_corners
    from torchstn.functional import base_grid
    from torchstn.transforms import Projective

    warped = tasks.get("projective", corner_sigma=sigma).generate("test", num=num, seed=seed)
    plain = tasks.get("projective", corner_sigma=0.0, scale=[1.0, 1.0])
    digits = plain.generate("test", num=num, seed=seed)  # the same source digits, unwarped
    if not torch.equal(digits.params["source_index"], warped.params["source_index"]):
        raise RuntimeError("the unwarped digits are not the warped ones' sources")
    quads = (
        destination_corners(warped.params["scale"], warped.params["corner_offsets"]) / (DIGIT / 2)
        - 1
    )
    frame = torch.tensor(FRAME_CORNERS, dtype=torch.float64).expand_as(quads)
    forward = from_corners(quads, frame).float()  # digit frame -> warped quadrilateral
    points = base_grid((DIGIT, DIGIT)).reshape(1, -1, 2).expand(num, -1, -1)
    inside = (Projective().map_points(forward, points).abs() <= 1).all(-1).float()
    ink = digits.x.reshape(num, -1)
    lost = 1 - (ink * inside).sum(1) / ink.sum(1)
    return {
        "ink_lost_mean": round(float(lost.mean()) * 100, 3),
        "over_10pct": round(float((lost > 0.10).float().mean()) * 100, 2),
        "over_25pct": round(float((lost > 0.25).float().mean()) * 100, 2),
    }


def train(column: str, sigma: float | None, args: argparse.Namespace) -> dict:
    name = f"{column.lower()}-fcn" + ("" if sigma is None else f"-sigma{sigma:g}")
    run_dir = Path(args.runs_dir) / f"{name}-seed{args.seed}-{args.epochs}ep"
    result_file = run_dir / "result.json"
    config = ROOT / "configs" / "table1" / column.lower() / "fcn.yaml"
    if not result_file.is_file():
        command = [
            sys.executable, "-m", "torchstn", "train", "--config", str(config),
            "--out", str(run_dir), "--epochs", str(args.epochs), "--seed", str(args.seed),
            "--device", args.device, "--no-progress",
            "--set", "run.minutes=null", "--set", f"run.num_threads={args.threads}",
        ]  # fmt: skip
        if sigma is not None:
            command += ["--set", f"data.options.corner_sigma={sigma:g}"]
        log = run_dir.parent / f"{run_dir.name}.log"
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode:
            raise SystemExit(f"{name}: torchstn train failed (rc {done.returncode}), see {log}")
    result = json.loads(result_file.read_text())
    return {
        "column": column,
        "corner_sigma": sigma,
        "test_error": result["test_error"],
        "val_error": result["val_error"],
        "epochs": result["epochs"],
        "seed": args.seed,
        "run_dir": repo_relative(run_dir),
        **{k: result.get(k) for k in ("git_commit", "config_sha256", "hardware", "device")},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sigmas", default="1.5,2,2.5,3,4,5", help="corner noise values (pixels)")
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    p.add_argument("--threads", type=int, default=1, help="run.num_threads of each run")
    p.add_argument("--runs-dir", default="runs/p_corner_sigma")
    p.add_argument("--out", default="results/p_corner_sigma.json")
    args = p.parse_args(argv)
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        p.error(f"--sigmas: expected comma-separated numbers, got {args.sigmas!r}")
    plan: list[tuple[str, float | None]] = [("R", None), ("E", None)]
    plan += [("P", s) for s in sigmas]
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        runs = list(pool.map(lambda job: train(*job, args), plan))
    for run in runs:
        if run["corner_sigma"] is not None:
            run.update(ink_lost(run["corner_sigma"]))
    record = {
        "what": "FCN test error on P against its corner noise, beside R and E, at fixed epochs",
        "command": "python " + " ".join(["benchmarks/p_corner_sigma.py", *(argv or sys.argv[1:])]),
        "epochs": args.epochs,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print("| column | corner sigma (px) | FCN test error % | ink lost % | digits losing >10% |")
    print("|---|---|---|---|---|")
    for r in runs:
        sigma = "" if r["corner_sigma"] is None else f"{r['corner_sigma']:g}"
        lost = "" if r["corner_sigma"] is None else f"{r['ink_lost_mean']:.2f}"
        over = "" if r["corner_sigma"] is None else f"{r['over_10pct']:.1f}"
        print(f"| {r['column']} | {sigma} | {r['test_error']:.2f} | {lost} | {over} |")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
