"""``torchstn reproduce``: run a table of the paper and write RESULTS.md beside the paper's numbers."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..train.distributed import World

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run one of the paper's experiments and write RESULTS.md",
        description="Train every model of a table on every selected column, then write "
        "results/TABLE.json and regenerate RESULTS.md. Completed runs are reused unless --force.",
    )
    p.add_argument("table", help="table1, cluttered, addition or colocalization")
    p.add_argument("--columns", help="comma-separated subset of the columns (table1: R,RTS,P,E)")
    p.add_argument("--models", help="comma-separated subset of the models")
    p.add_argument(
        "--budget-minutes",
        type=float,
        help="training minutes for the whole table, "
        "split evenly between the runs (default: the configs' epochs)",
    )
    p.add_argument("--epochs", type=int, help="override the configs' epochs")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
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
    p.add_argument("--force", action="store_true", help="retrain runs that already have a result")
    p.set_defaults(func=run)


def _subset(value: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    from ..errors import UnknownNameError

    if value is None:
        return allowed
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in chosen if v not in allowed]
    if bad or not chosen:
        raise UnknownNameError(
            f"unknown {what} {', '.join(bad) or value!r}; valid choices: {', '.join(allowed)}"
        )
    return chosen


def _seeds(text: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None


def _write_record(args: argparse.Namespace, name: str, record: dict[str, Any]) -> Path:
    from ..experiments import render_results
    from ..train import atomic_write_text

    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    atomic_write_text(args.results_md, render_results(results_dir))
    return path


def _command(name: str) -> str:
    invoked = sys.argv[1:2] == ["reproduce"]
    return "torchstn " + shlex.join(sys.argv[1:]) if invoked else f"torchstn reproduce {name}"


def _colocalization(args: argparse.Namespace, columns: tuple[str, ...]) -> int:
    import torch

    from ..colocalization import run_colocalization_table
    from ..errors import ConfigError

    if args.models or args.epochs or args.set:
        raise ConfigError("colocalization takes no --models, --epochs or --set (edit its configs)")
    start = time.perf_counter()
    runs = run_colocalization_table(
        columns=columns,
        seeds=_seeds(args.seeds),
        budget_minutes=args.budget_minutes,
        runs_dir=args.runs_dir,
        device=args.device,
        config_dir=args.configs,
        log=lambda line: print(line, flush=True),
    )
    record = {
        "table": "colocalization",
        "command": _command("colocalization"),
        "runs": runs,
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "wall_seconds": time.perf_counter() - start,
        "date": datetime.date.today().isoformat(),
    }
    path = _write_record(args, "colocalization", record)
    print(f"wrote {path} and {args.results_md}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..experiments import default_config_dir, get_table
    from ..train.distributed import launched_world_size

    table = get_table(args.table)
    columns = _subset(args.columns, tuple(table.columns), "column")
    if table.name == "colocalization":
        if launched_world_size() > 1:
            raise ConfigError("colocalization runs in one process; start it without torchrun")
        return _colocalization(args, columns)
    models = _subset(args.models, table.models, "model")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    except ValueError:
        raise ConfigError(
            f"--seeds: expected comma-separated integers, got {args.seeds!r}"
        ) from None
    config_dir = Path(args.configs) if args.configs else default_config_dir()
    plan = []
    for column in columns:
        for model in models:
            path = config_dir / table.columns[column] / f"{model}.yaml"
            if not path.is_file():
                raise ConfigError(f"missing config {path} for {model} on {column}")
            for seed in seeds:
                plan.append((column, model, seed, path))
    minutes = None if args.budget_minutes is None else args.budget_minutes / len(plan)
    from ..train.distributed import init_from_env, shutdown

    # under torchrun every rank walks the same plan and trains each run together (DDP);
    # rank 0 alone prints and writes
    world, _ = init_from_env(args.device)
    try:
        return _run_plan(args, table, plan, minutes, world)
    finally:
        shutdown()


def _shared(world: World, value: bool) -> bool:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _run_plan(
    args: argparse.Namespace, table: Any, plan: list, minutes: float | None, world: World
) -> int:
    from ..train import Trainer, apply_overrides, config_from_dict, load_config

    def say(*items: Any, **kw: Any) -> None:  # rank 0 speaks for the group
        if world.is_main:
            print(*items, **kw)

    say(
        f"torchstn reproduce {table.name}: {len(plan)} runs"
        + (f", {minutes:.1f} min each" if minutes else ""),
        flush=True,
    )

    results_dir = Path(args.results_dir)
    record_path = results_dir / f"{table.name}.json"
    hardware = versions = None
    invoked = sys.argv[1:2] == ["reproduce"]
    command = (
        "torchstn " + shlex.join(sys.argv[1:]) if invoked else f"torchstn reproduce {table.name}"
    )
    for i, (column, model, seed, path) in enumerate(plan, 1):
        values = apply_overrides(load_config(path), args.set)
        values["seed"], values["device"] = seed, args.device
        values.setdefault("run", {})
        if minutes is not None:
            values["run"]["minutes"] = minutes
            values["run"]["epochs"] = args.epochs or max(int(values["run"].get("epochs", 10)), 1000)
        elif args.epochs:
            values["run"]["epochs"] = args.epochs
        cfg = config_from_dict(values)
        # runs of one table at different budgets are kept (and reported) side by side
        budget = f"{minutes:g} min" if minutes is not None else f"{cfg.run.epochs} epochs"
        slug = budget.replace(" min", "min").replace(" epochs", "ep")
        run_dir = Path(args.runs_dir) / table.name / column / f"{model}-seed{seed}-{slug}"
        result_file = run_dir / "result.json"
        run_start = time.perf_counter()
        reused = _shared(world, result_file.is_file() and not args.force)
        if reused:
            result = json.loads(result_file.read_text())
            say(
                f"[{i}/{len(plan)}] {model} on {column} seed {seed}: reusing {result_file}",
                flush=True,
            )
        else:
            if run_dir.exists() and world.is_main:
                for name in ("checkpoint.pt", "metrics.jsonl", "result.json", "config.json"):
                    (run_dir / name).unlink(missing_ok=True)
            if world.distributed:
                import torch.distributed as dist

                dist.barrier()
            say(f"[{i}/{len(plan)}] {model} on {column} seed {seed} -> {run_dir}", flush=True)
            result = Trainer(cfg, run_dir, progress=False).fit()
        hardware, versions = result["hardware"], result["versions"]
        entry = {
            "column": column,
            "model": model,
            "seed": seed,
            "budget": budget,
            "schedule": cfg.optim.schedule,
            "world_size": world.size,
            "config": str(path),
            "run_dir": str(run_dir),
            **{
                k: result[k]
                for k in (
                    "test_error",
                    "val_error",
                    "epochs",
                    "best_epoch",
                    "train_seconds",
                    "params",
                )
            },
        }
        say(
            f"    test error {entry['test_error']:.2f}% (val {entry['val_error']:.2f}%), "
            f"{entry['epochs']} epochs, {entry['train_seconds'] / 60:.1f} min, {entry['params']:,} params",
            flush=True,
        )
        # re-read the record just before writing: several reproduce commands may share it
        record = json.loads(record_path.read_text()) if record_path.is_file() else {"runs": []}
        old = [
            r
            for r in record["runs"]
            if (r["column"], r["model"], r["seed"], r.get("budget"))
            == (column, model, seed, budget)
        ]
        if reused and old and "wall_seconds" in old[0]:  # keep how the reused run was made
            entry.update(
                {k: old[0][k] for k in ("wall_seconds", "command", "hardware") if k in old[0]}
            )
        else:
            entry.update(
                {
                    "wall_seconds": time.perf_counter() - run_start,
                    "command": command,
                    "hardware": hardware,
                }
            )
        if not world.is_main:
            continue
        record["runs"] = [r for r in record["runs"] if r not in old] + [entry]
        record.update(
            {
                "table": table.name,
                "versions": versions,
                "platform": platform.platform(),
                "date": datetime.date.today().isoformat(),
            }
        )
        _write_record(args, table.name, record)
    say(f"wrote {record_path} and {args.results_md}")
    return 0
