"""``torchstn reproduce``: run a table of the paper and write RESULTS.md beside the paper's numbers
(the command line of :mod:`torchstn.experiments`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownNameError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run one of the paper's experiments and write RESULTS.md",
        description="Train every model of a table on every selected column, then write "
        "results/TABLE.json and regenerate RESULTS.md. Completed runs are reused unless --force.",
    )
    p.add_argument(
        "table",
        help="table1, cluttered, addition, volumes, colocalization or registration; or render: rewrite "
        "RESULTS.md from "
        "the records in --results-dir without training",
    )
    p.add_argument("--columns", help="comma-separated subset of the columns (table1: R,RTS,P,E)")
    p.add_argument("--models", help="comma-separated subset of the models")
    p.add_argument(
        "--budget-minutes",
        type=float,
        help="training minutes for the whole table, "
        "split evenly between the runs (default: the configs' epochs)",
    )
    p.add_argument("--epochs", type=int, help="override the configs' epochs")
    p.add_argument(
        "--digits", help="colocalization: comma-separated subset of the digits (default 0-9)"
    )
    p.add_argument("--seeds", help="comma-separated seeds (default 0; 0,1,2 with --protocol paper)")
    p.add_argument(
        "--protocol",
        choices=("budget", "paper"),
        default="budget",
        help="budget: the configs' epochs, or --budget-minutes; paper: train every run as the "
        "paper did (SGD, batch 256, 150,000 iterations, rate 0.01 divided by 10 every 50,000; "
        "seeds 0,1,2 unless --seeds), on whatever --device is there: hours a run on a CPU, "
        "minutes on a GPU",
    )
    p.add_argument("--configs", help="config folder (default: the checkout's configs/)")
    p.add_argument("--runs-dir", default="runs/reproduce", help="where the run folders go")
    p.add_argument("--results-dir", default="results", help="where TABLE.json goes")
    p.add_argument("--results-md", default="RESULTS.md", help="the Markdown file to regenerate")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every run (e.g. data.train_size=20000)",
    )
    p.add_argument(
        "--variant",
        metavar="NAME",
        help="name the --set overrides as an attempt to do better than the table's own settings: "
        "its runs get their own folders (MODEL-seedS-BUDGET-NAME) and results entries, "
        "reported beside the table's cells rather than in them",
    )
    p.add_argument("--force", action="store_true", help="retrain runs that already have a result")
    p.add_argument(
        "--jobs",
        type=int,
        help="runs trained at the same time, each in its own process with its log beside its run "
        "folder (RUN.log); without run.num_threads in --set each gets cores / jobs threads. "
        "The budget per run is unchanged: --budget-minutes / runs",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue runs cut short (a checkpoint, no result) from their checkpoints instead "
        "of starting them afresh",
    )
    cluster = p.add_argument_group(
        "cluster jobs",
        "--launcher submitit submits every run as a job through submitit: Slurm where sbatch is "
        "on PATH, else its local executor (pip install 'torchstn[cluster]'). Finished runs are "
        "reused, runs cut short resume, failed jobs are resubmitted (--retries), pre-empted "
        "or timed-out jobs requeued (--max-requeues); --jobs caps the jobs at once (default: "
        "all on Slurm, 1 locally).",
    )
    cluster.add_argument("--launcher", choices=("here", "submitit"), default="here")
    cluster.add_argument("--cluster", choices=("local", "slurm"), help="default: slurm if found")
    cluster.add_argument("--gpus-per-job", type=int, default=0)
    cluster.add_argument(
        "--cpus-per-job", type=int, help="also the runs' run.num_threads unless --set"
    )
    cluster.add_argument(
        "--time-limit", type=float, default=60.0, metavar="MINUTES", help="per job (default 60)"
    )
    cluster.add_argument("--partition", help="Slurm partition")
    cluster.add_argument("--retries", type=int, default=1, help="resubmissions of a failed job")
    cluster.add_argument(
        "--max-requeues", type=int, default=3, help="requeues of a job that hit its time limit"
    )
    cluster.add_argument("--submitit-dir", help="submitit's files (default RUNS_DIR/.submitit)")
    p.set_defaults(func=run)


def _subset(value: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if value is None:
        return allowed
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise UnknownNameError(
            f"unknown {what} {', '.join(bad) or value!r}; valid choices: {', '.join(allowed)}"
        )
    return chosen


def _variant(name: str | None, overrides: list[str]) -> str | None:
    """``--variant``: a name fit for a folder, given with the overrides it names."""
    if name is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(
            f"--variant: expected letters, digits, '.', '_' or '-' (a folder name), got {name!r}"
        )
    if not overrides:
        raise ConfigError(f"--variant {name}: name the settings it changes with --set KEY=VALUE")
    return name


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None


def _digits(text: str | None) -> tuple[int, ...]:
    if text is None:
        return tuple(range(10))
    try:
        digits = tuple(int(s) for s in text.split(","))
    except ValueError:
        digits = ()
    if not digits or not all(0 <= d <= 9 for d in digits):
        raise ConfigError(f"--digits: expected comma-separated digits 0-9, got {text!r}")
    return digits


def run(args: argparse.Namespace) -> int:
    # the experiments import training and the tables' plug-ins: loaded when the command runs
    from .. import experiments
    from .._atomic import atomic_write_text
    from ..train.distributed import init_from_env, shutdown_after

    results_dir = Path(args.results_dir)
    if args.table == "render":
        experiments.write_all_figures(results_dir)
        atomic_write_text(args.results_md, experiments.render_results(results_dir))
        print(f"wrote {args.results_md} from {args.results_dir}")
        return 0
    table = experiments.get_table(args.table)
    columns = _subset(args.columns, tuple(table.columns), "column")
    variant = _variant(args.variant, args.set)
    coloc = isinstance(table, experiments.ColocalizationTable)
    options = experiments.Options(
        columns=columns,
        seeds=_seeds(args.seeds or ("0,1,2" if args.protocol == "paper" else "0")),
        protocol=args.protocol,
        # co-localisation's own check refuses any --models (its model is in its configs)
        models=tuple(filter(None, (args.models or "").split(",")))
        if coloc
        else _subset(args.models, table.models, "model"),
        digits=_digits(args.digits) if coloc else tuple(range(10)),
        budget_minutes=args.budget_minutes,
        epochs=args.epochs,
        overrides=tuple(args.set),
        variant=variant,
        config_dir=Path(args.configs) if args.configs else None,
        runs_dir=Path(args.runs_dir),
        device=args.device,
        force=args.force,
        resume=args.resume,
    )
    if args.launcher == "submitit":
        launch = experiments.LaunchOptions(
            cluster=args.cluster,
            folder=Path(args.submitit_dir) if args.submitit_dir else None,
            jobs=args.jobs,
            gpus_per_job=args.gpus_per_job,
            cpus_per_job=args.cpus_per_job,
            time_limit_minutes=args.time_limit,
            partition=args.partition,
            retries=args.retries,
            max_requeues=args.max_requeues,
        )
        return experiments.reproduce_submitit(table, options, launch, results_dir, args.results_md)
    if args.jobs is not None and args.jobs != 1 and not coloc:
        return experiments.reproduce_jobs(table, options, args.jobs, results_dir, args.results_md)
    # under torchrun every rank walks the same plan and trains each run together (DDP)
    world, _ = init_from_env(args.device)
    with shutdown_after():
        return experiments.reproduce(table, options, world, results_dir, args.results_md)
