"""``torchstn bench``: the benchmark suite (torchstn against PyTorch, kornia and a hand-written
transformer) and the tables of ``BENCHMARKS.md``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write_text
from ..errors import InvalidInputError

__all__ = ["add_parser"]

RESULTS_DIR = Path("benchmarks") / "results"


def add_parser(sub: Any) -> None:
    from ..bench import GROUPS  # lazy: bench code loads only when the command runs

    p = sub.add_parser(
        "bench",
        help="run the benchmark suite and regenerate BENCHMARKS.md",
        description="Time torchstn against PyTorch, kornia and MONAI (optional: pip install "
        "torchstn[bench]) and a hand-written transformer, in one process, and write the results "
        "as JSON. A full run stores them in benchmarks/results/LABEL.json (LABEL: cpu, or the "
        "GPU's name) and regenerates BENCHMARKS.md from every results file there. Groups: "
        + ", ".join(GROUPS)
        + ".",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one repeat: checks that everything runs (CI); stores nothing unless "
        "--out is given",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only these groups (repeat or separate with commas); the other groups of an "
        "existing results file are kept",
    )
    p.add_argument(
        "--out",
        help="results JSON to write (default for a full run: benchmarks/results/LABEL.json)",
    )
    p.add_argument(
        "--markdown",
        help="Markdown file to regenerate (default for a full run: BENCHMARKS.md)",
    )
    p.add_argument(
        "--results-dir",
        default=str(RESULTS_DIR),
        help="folder of the results files rendered into the Markdown (default benchmarks/results)",
    )
    p.add_argument(
        "--render",
        action="store_true",
        help="run nothing: regenerate the Markdown from the stored results files",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    p.set_defaults(func=run)


def _results_label(device: str, quick: bool) -> str:
    """The name of a results file: ``cpu`` or the GPU's name (``nvidia-h200``), ``-quick``
    appended for quick runs."""
    label = "cpu"
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(torch.device(device)).lower()
        label = re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cuda"
    return label + ("-quick" if quick else "")


def _groups(only: list[str] | None) -> list[str]:
    from ..bench import GROUPS, group_module  # lazy: bench code loads only when the command runs

    if not only:
        return list(GROUPS)
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    for name in names:
        group_module(name)  # a clear error for an unknown name
    return names


def _command(args: argparse.Namespace, names: list[str]) -> str:
    parts = ["torchstn bench"]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts.append("--only " + ",".join(names))
    if args.device != "cpu":
        parts.append(f"--device {args.device}")
    if args.threads:
        parts.append(f"--threads {args.threads}")
    return " ".join(parts)


def render_markdown(results_dir: Path, markdown: Path) -> None:
    """Regenerate ``markdown`` from every results file in ``results_dir`` (``cpu`` first)."""
    from ..bench import read_results  # lazy: bench code loads only when the command runs
    from ..bench.markdown import render  # lazy: bench code loads only when the command runs

    files = sorted(results_dir.glob("*.json"), key=lambda p: (p.stem != "cpu", p.stem))
    if not files:
        raise InvalidInputError(f"{results_dir}: no results files to render (run torchstn bench)")
    documents = {}
    for path in files:
        doc = read_results(path)
        documents[str(doc.get("label", path.stem))] = doc
    root = markdown.resolve().parent
    atomic_write_text(markdown, render(documents, root / "benchmarks" / "figures", root))


def run(args: argparse.Namespace) -> int:
    from ..bench import (  # lazy: bench code loads only when the command runs
        Settings,
        run_suite,
        write_results,
    )

    results_dir = Path(args.results_dir)
    markdown = Path(args.markdown) if args.markdown else None
    if args.render:
        render_markdown(results_dir, markdown or Path("BENCHMARKS.md"))
        print(f"torchstn bench: wrote {markdown or 'BENCHMARKS.md'}")
        return 0
    if args.threads is not None:
        if args.threads < 1:
            raise InvalidInputError(f"--threads: expected at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda: no CUDA device is available")
    names = _groups(args.only)
    label = _results_label(args.device, args.quick)
    out = Path(args.out) if args.out else None
    if out is None and not args.quick:
        out = results_dir / f"{label}.json"
        markdown = markdown or Path("BENCHMARKS.md")

    def log(line: str) -> None:
        print(f"torchstn bench: {line}", file=sys.stderr, flush=True)

    settings = Settings.make(args.quick, args.device)
    doc = run_suite(names, settings, log, _command(args, names))
    doc["label"] = label
    if out is not None:
        write_results(out, doc, merge=bool(args.only))
        log(f"wrote {out}")
    if markdown is not None:
        render_markdown(results_dir, markdown)
        log(f"wrote {markdown}")
    for name, group in doc["groups"].items():
        for line in group.get("headline", ()):
            print(f"{name}: {line}")
    return 0
