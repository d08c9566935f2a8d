"""``torchstn reproduce``: run a table of the paper and write RESULTS.md beside the paper's numbers."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..train.distributed import World

__all__ = ["add_parser"]

#: set by ``reproduce --jobs`` for its one-run children: the command the user ran
JOBS_COMMAND_ENV = "TORCHSTN_REPRODUCE_JOBS_COMMAND"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run one of the paper's experiments and write RESULTS.md",
        description="Train every model of a table on every selected column, then write "
        "results/TABLE.json and regenerate RESULTS.md. Completed runs are reused unless --force.",
    )
    p.add_argument(
        "table",
        help="table1, cluttered, addition or colocalization; or render: rewrite RESULTS.md from "
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
        default=1,
        help="runs trained at the same time, each in its own process with its log beside its run "
        "folder (RUN.log); without run.num_threads in --set each gets cores / jobs threads. "
        "The budget per run is unchanged: --budget-minutes / runs",
    )
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


def _variant(name: str | None, overrides: list[str]) -> str | None:
    """``--variant``: a name fit for a folder, given with the overrides it names."""
    import re

    from ..errors import ConfigError

    if name is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(
            f"--variant: expected letters, digits, '.', '_' or '-' (a folder name), got {name!r}"
        )
    if not overrides:
        raise ConfigError(f"--variant {name}: name the settings it changes with --set KEY=VALUE")
    return name


def _run_dir(
    args: argparse.Namespace, table: str, column: str, model: str, seed: int, slug: str
) -> Path:
    """A run's folder; ``--jobs`` puts its log beside it, named alike with ``.log`` added."""
    name = f"{model}-seed{seed}-{slug}" + (f"-{args.variant}" if args.variant else "")
    return Path(args.runs_dir) / table / column / name


def _seeds(text: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers, got {text!r}") from None


def repo_relative(path: str | Path) -> str:
    """``path`` as results files record it: relative to the repository (the folder holding
    ``configs/``) when it lies inside, so that records do not carry one machine's absolute
    paths; a path outside (a ``--runs-dir`` elsewhere) as given."""
    from ..experiments import default_config_dir

    root = default_config_dir().resolve().parent
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()


def _provenance(result: dict[str, Any]) -> dict[str, Any]:
    """What a results entry records about how its run was made (None for runs made before
    result.json carried it)."""
    return {k: result.get(k) for k in ("git_commit", "config_sha256")}


@contextlib.contextmanager
def _record(args: argparse.Namespace, name: str) -> Iterator[dict[str, Any]]:
    """Read ``results/NAME.json`` (or an empty record), let the caller change it, write it back
    and regenerate RESULTS.md, all under an exclusive lock: several reproduce commands running
    side by side share the record, and one finishing while another writes must not lose either
    entry."""
    from .._atomic import atomic_write_text
    from ..results import render_results

    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    with open(results_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = json.loads(path.read_text()) if path.is_file() else {"runs": []}
        yield record
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        atomic_write_text(args.results_md, render_results(results_dir))


def _command(name: str) -> str:
    invoked = sys.argv[1:2] == ["reproduce"]
    return "torchstn " + shlex.join(sys.argv[1:]) if invoked else f"torchstn reproduce {name}"


def _colocalization(args: argparse.Namespace, columns: tuple[str, ...]) -> int:
    """The co-localisation table: one ``torchstn train`` run per (column, digit, seed)."""
    from ..errors import ConfigError
    from ..experiments import COLOCALIZATION, default_config_dir
    from ..train.distributed import init_from_env, shutdown_after

    if args.models:
        raise ConfigError("colocalization takes no --models (its model is in its configs)")
    digits = _digits(args.digits)
    config_dir = Path(args.configs) if args.configs else default_config_dir()
    plan = []
    for column in columns:
        path = config_dir / COLOCALIZATION.columns[column]
        if not path.is_file():
            raise ConfigError(f"missing config {path} for column {column}")
        plan += [(column, digit, seed, path) for digit in digits for seed in _seeds(args.seeds)]
    minutes = None if args.budget_minutes is None else args.budget_minutes / len(plan)
    world, _ = init_from_env(args.device)
    with shutdown_after():
        return _colocalization_plan(args, plan, minutes, world)


def _digits(text: str | None) -> tuple[int, ...]:
    from ..errors import ConfigError

    if text is None:
        return tuple(range(10))
    try:
        digits = tuple(int(s) for s in text.split(","))
    except ValueError:
        digits = ()
    if not digits or not all(0 <= d <= 9 for d in digits):
        raise ConfigError(f"--digits: expected comma-separated digits 0-9, got {text!r}")
    return digits


def _coloc_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    return (entry["column"], entry["digit"], entry["seed"], entry.get("budget"))


def _untrained_scores(cfg: Any) -> dict[str, float]:
    """The localisation of the untrained model (the run's initialisation) on the images a
    co-localisation run localises: what training starts from."""
    import torch

    from ..train import EvalSettings, build_model, get_objective

    objective = get_objective(cfg)
    data = objective.build_data()
    with torch.random.fork_rng(devices=[]):
        model = build_model(cfg, data.in_shape, data.num_classes)
    scores = objective.evaluate(
        model, data.eval_split("test"), EvalSettings(batch_size=cfg.run.eval_batch_size)
    )
    return {"start_localised": scores["localised"], "start_mean_iou": scores["mean_iou"]}


def _colocalization_plan(
    args: argparse.Namespace, plan: list, minutes: float | None, world: World
) -> int:
    """Train every (column, digit, seed) of ``plan``, keep ``results/colocalization.json``.

    With ``minutes`` each run stops at that budget or at its config's epochs, whichever comes
    first. Besides the run's own numbers, each entry has the untrained model's (``start_*``) and
    the run folder a picture of its crops (``boxes.png``, when matplotlib is installed).
    """
    from ..colocalization import save_run_boxes
    from ..errors import TorchSTNError
    from ..train import Trainer, apply_overrides, config_from_dict, load_config

    def say(*items: Any) -> None:  # rank 0 speaks for the group
        if world.is_main:
            print(*items, flush=True)

    say(
        f"torchstn reproduce colocalization: {len(plan)} runs"
        + (f", at most {minutes:.2f} min each" if minutes else "")
    )
    record_path = Path(args.results_dir) / "colocalization.json"
    command = _command("colocalization")
    for i, (column, digit, seed, path) in enumerate(plan, 1):
        values = apply_overrides(load_config(path), args.set)
        values["seed"], values["device"] = seed, args.device
        values.setdefault("objective", {}).setdefault("options", {})["digit"] = digit
        values.setdefault("run", {})
        if minutes is not None:
            values["run"]["minutes"] = minutes
        if args.epochs:
            values["run"]["epochs"] = args.epochs
        cfg = config_from_dict(values)
        budget = f"{cfg.run.epochs} epochs" + (f", {minutes:g} min" if minutes else "")
        slug = budget.replace(" epochs", "ep").replace(", ", "-").replace(" min", "min")
        run_dir = (
            Path(args.runs_dir) / "colocalization" / column / f"digit{digit}-seed{seed}-{slug}"
        )
        result_file = run_dir / "result.json"
        key = (column, digit, seed, budget)
        run_start = time.perf_counter()
        reused = _shared(world, result_file.is_file() and not args.force)
        if reused:
            say(f"[{i}/{len(plan)}] {column} digit {digit} seed {seed}: reusing {result_file}")
            result = json.loads(result_file.read_text())
        else:
            if run_dir.exists() and world.is_main:
                for name in ("checkpoint.pt", "metrics.jsonl", "result.json", "config.json"):
                    (run_dir / name).unlink(missing_ok=True)
            if world.distributed:
                import torch.distributed as dist

                dist.barrier()
            result = Trainer(cfg, run_dir, progress=False).fit()
        if not world.is_main:
            continue
        entry = {
            "column": column,
            "digit": digit,
            "seed": seed,
            "budget": budget,
            "config": repo_relative(path),
            "run_dir": repo_relative(run_dir),
            **_provenance(result),
            "localised": result["test_localised"],
            "mean_iou": result["test_mean_iou"],
            "val_localised": 100.0 - result["val_error"],
            "steps": result["epochs"] * max(cfg.data.train_size // cfg.optim.batch_size, 1)
            + result["steps_in_partial_epoch"],
            **{k: result[k] for k in ("epochs", "best_epoch", "train_seconds", "params")},
            "world_size": result["world_size"],
            **_untrained_scores(cfg),
            "wall_seconds": time.perf_counter() - run_start,
            "command": command,
            "hardware": result["hardware"],
        }
        if not reused:
            try:
                save_run_boxes(run_dir, run_dir / "boxes.png")
            except TorchSTNError as err:  # matplotlib missing: no picture
                say(f"    no boxes.png: {err}")
        say(
            f"[{i}/{len(plan)}] {column} digit {digit} seed {seed}: {entry['localised']:.0f}% "
            f"localised (val {entry['val_localised']:.0f}%), mean IoU {entry['mean_iou']:.2f}, "
            f"{entry['steps']} steps, {entry['train_seconds']:.1f} s -> {run_dir}"
        )
        with _record(args, "colocalization") as record:
            old = next((r for r in record["runs"] if _coloc_key(r) == key), None)
            if reused:  # keep how the reused run was made (its training time when not recorded)
                entry["wall_seconds"] = result["train_seconds"]
                entry.update({k: old[k] for k in ("wall_seconds", "command") if old and k in old})
            # entries of the earlier protocol (no budget) are dropped
            record["runs"] = [r for r in record["runs"] if "budget" in r and _coloc_key(r) != key]
            record["runs"].append(entry)
            for name in ("command", "hardware", "wall_seconds"):  # of the earlier protocol
                record.pop(name, None)
            record.update(
                {
                    "table": "colocalization",
                    "versions": result["versions"],
                    "platform": platform.platform(),
                    "date": datetime.date.today().isoformat(),
                }
            )
    say(f"wrote {record_path} and {args.results_md}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..experiments import default_config_dir, get_table

    if args.table == "render":
        from .._atomic import atomic_write_text
        from ..results import render_results

        atomic_write_text(args.results_md, render_results(Path(args.results_dir)))
        print(f"wrote {args.results_md} from {args.results_dir}")
        return 0
    table = get_table(args.table)
    columns = _subset(args.columns, tuple(table.columns), "column")
    args.variant = _variant(args.variant, args.set)
    if table.name == "colocalization":
        if args.variant:
            raise ConfigError("--variant: colocalization records no variants")
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
    if args.jobs != 1:
        return _run_jobs(args, table, plan, minutes)
    from ..train.distributed import init_from_env, shutdown_after

    # under torchrun every rank walks the same plan and trains each run together (DDP);
    # rank 0 alone prints and writes
    world, _ = init_from_env(args.device)
    with shutdown_after():
        return _run_plan(args, table, plan, minutes, world)


def _run_jobs(args: argparse.Namespace, table: Any, plan: list, minutes: float | None) -> int:
    """Train the runs of ``plan`` ``args.jobs`` at a time, each as its own ``torchstn reproduce``
    process of one run (same budget, same record: the record's lock keeps every entry), with
    its output in ``RUN_FOLDER.log``; then regenerate RESULTS.md."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import ConfigError, TorchSTNError

    if args.jobs < 1:
        raise ConfigError(f"--jobs: expected a positive number, got {args.jobs}")
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise ConfigError("--jobs: not under torchrun (every process would start its own jobs)")
    extra = list(args.set)
    if not any(s.split("=", 1)[0].strip() == "run.num_threads" for s in args.set):
        extra.append(f"run.num_threads={max(1, (os.cpu_count() or 1) // args.jobs)}")
    print(
        f"torchstn reproduce {table.name}: {len(plan)} runs, {args.jobs} at a time"
        + (f", {minutes:.1f} min each" if minutes else "")
        + f" ({extra[-1] if len(extra) > len(args.set) else 'threads as set'})",
        flush=True,
    )

    parent = _command(table.name)  # each run's entry names it beside its own one-run command

    def one(item: tuple[int, tuple[str, str, int, Path]]) -> tuple[str, int, Path]:
        i, (column, model, seed, path) = item
        argv = ["reproduce", table.name, "--columns", column, "--models", model]
        argv += ["--seeds", str(seed)]
        # only what differs from the defaults: the entry's command stays short and names no
        # folder of this machine
        for flag, value, default in (
            ("--configs", args.configs, None),
            ("--device", args.device, "auto"),
            ("--runs-dir", args.runs_dir, "runs/reproduce"),
            ("--results-dir", args.results_dir, "results"),
            ("--results-md", args.results_md, "RESULTS.md"),
        ):
            if value is not None and value != default:
                argv += [flag, value]
        if minutes is not None:
            argv += ["--budget-minutes", f"{minutes:g}"]
        if args.epochs:
            argv += ["--epochs", str(args.epochs)]
        if args.force:
            argv.append("--force")
        if args.variant:
            argv += ["--variant", args.variant]
        for value in extra:
            argv += ["--set", value]
        _, slug = _budget(minutes, _config_epochs(path, args.set, args.epochs))
        folder = _run_dir(args, table.name, column, model, seed, slug)
        log = folder.parent / f"{folder.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        name = f"{model} on {column} seed {seed}"
        # one write per line: the jobs' threads print side by side
        print(f"[{i}/{len(plan)}] {name}: started, log {log}\n", end="", flush=True)
        with open(log, "w") as out:
            rc = subprocess.run(
                [sys.executable, "-m", "torchstn", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                env={**os.environ, JOBS_COMMAND_ENV: parent},
            ).returncode
        done = "done" if rc == 0 else f"FAILED (exit status {rc})"
        print(f"[{i}/{len(plan)}] {name}: {done}\n", end="", flush=True)
        return name, rc, log

    with ThreadPoolExecutor(args.jobs) as pool:
        finished = list(pool.map(one, enumerate(plan, 1)))
    failed = [(name, log) for name, rc, log in finished if rc != 0]
    if failed:
        name, log = failed[0]
        raise TorchSTNError(
            f"{len(failed)} of {len(plan)} runs failed, the first {name}: see {log}"
        )
    print(f"wrote {Path(args.results_dir) / (table.name + '.json')} and {args.results_md}")
    return 0


def _budget(minutes: float | None, epochs: int) -> tuple[str, str]:
    """A run's budget as its results entry names it (``10 min``, ``30 epochs``) and as its run
    folder and log do (``10min``, ``30ep``); ``epochs``, the run's resolved epochs, names it
    when there is no time budget."""
    budget = f"{minutes:g} min" if minutes is not None else f"{epochs} epochs"
    return budget, budget.replace(" min", "min").replace(" epochs", "ep")


def _config_epochs(path: Path, overrides: list[str], epochs: int | None) -> int:
    """The epochs a run of the config at ``path`` trains for without a time budget: ``--epochs``,
    else the config's (after ``--set``), else the default; read without validating the config
    (the run's own process validates it, and a broken one still gets a log to say so)."""
    from ..train import apply_overrides, load_config
    from ..train.config import RunConfig

    run = apply_overrides(load_config(path), overrides).get("run") or {}
    return int(epochs or run.get("epochs") or RunConfig.epochs)


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
    command = _command(table.name)
    # a --jobs run: the parent command that started it (RESULTS.md lists that one)
    launched_by = os.environ.get(JOBS_COMMAND_ENV)
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
        budget, slug = _budget(minutes, cfg.run.epochs)
        run_dir = _run_dir(args, table.name, column, model, seed, slug)
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
            **({"variant": args.variant, "overrides": list(args.set)} if args.variant else {}),
            "config": repo_relative(path),
            "run_dir": repo_relative(run_dir),
            **_provenance(result),
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
        if not world.is_main:
            continue
        with _record(args, table.name) as record:  # several reproduce commands may share it
            key = (column, model, seed, budget, args.variant)
            old = [
                r
                for r in record["runs"]
                if (r["column"], r["model"], r["seed"], r.get("budget"), r.get("variant")) == key
            ]
            if reused and old and "wall_seconds" in old[0]:  # keep how the reused run was made
                made = ("wall_seconds", "command", "launched_by", "hardware")
                entry.update({k: old[0][k] for k in made if k in old[0]})
            else:
                entry.update(
                    {
                        "wall_seconds": time.perf_counter() - run_start,
                        "command": command,
                        **({"launched_by": launched_by} if launched_by else {}),
                        "hardware": hardware,
                    }
                )
            record["runs"] = [r for r in record["runs"] if r not in old] + [entry]
            record.update(
                {
                    "table": table.name,
                    "versions": versions,
                    "platform": platform.platform(),
                    "date": datetime.date.today().isoformat(),
                }
            )
    say(f"wrote {record_path} and {args.results_md}")
    return 0
