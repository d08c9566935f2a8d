"""The runner of every table: plan its runs, run one, record one.

``torchstn reproduce TABLE`` is :func:`reproduce` (or, with ``--jobs``, :func:`reproduce_jobs`,
each run in a process of its own). A run is a ``torchstn train`` run in its own folder
(``RUNS/TABLE/COLUMN/...``); a finished one is reused unless ``force``. Its entry goes into
``results/TABLE.json`` under an exclusive lock (several reproduce commands may share a record),
and RESULTS.md is rendered again after every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .._atomic import atomic_write_text
from ..errors import ConfigError, TorchSTNError
from ..train import apply_overrides, config_from_dict, load_config
from ..train.config import RunConfig, default_config_dir
from ..train.distributed import World
from ..train.runfolder import RUN_FILES
from .curves import write_figures
from .launch import LaunchOptions, check_launch, launch_submitit
from .render import render_results
from .tables import Options, PlannedRun, Table, get_table, table_names

#: a run's checkpoint, which ``--resume`` continues from
CHECKPOINT = "checkpoint.pt"

__all__ = [
    "one_run_command",
    "record",
    "repo_relative",
    "reproduce",
    "reproduce_jobs",
    "reproduce_submitit",
    "run_one",
]

#: set by ``reproduce --jobs`` for its one-run children: the command the user ran
JOBS_COMMAND_ENV = "TORCHSTN_REPRODUCE_JOBS_COMMAND"


def repo_relative(path: str | Path) -> str:
    """``path`` as results files record it: relative to the folder holding ``configs/`` (a
    packaged config reads ``configs/...``), else to the source checkout holding the package
    (a ``--runs-dir`` given as an absolute path inside it reads ``runs/...``), so that records
    carry no machine's absolute paths; a path outside both as given."""
    package = default_config_dir().resolve().parent
    roots = [package]
    if (package.parent / "pyproject.toml").is_file():  # a source checkout, not site-packages
        roots.append(package.parent)
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    for root in roots:
        try:
            return p.resolve().relative_to(root).as_posix()
        except ValueError:
            continue
    return p.as_posix()


def _lock(fh: Any) -> None:
    """Wait for an exclusive lock on the open file ``fh`` (released when it is closed)."""
    if sys.platform == "win32":
        import msvcrt  # Windows only

        while True:
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:  # LK_LOCK gives up after 10 s: keep waiting
                continue
    import fcntl  # POSIX only: at the top it would make torchstn unimportable on Windows

    fcntl.flock(fh, fcntl.LOCK_EX)


@contextlib.contextmanager
def record(results_dir: Path, results_md: str | Path, name: str) -> Iterator[dict[str, Any]]:
    """Read ``results/NAME.json`` (or an empty record), let the caller change it, write it back
    and render RESULTS.md, all under an exclusive lock: several reproduce commands running side
    by side share the record, and one finishing while another writes must not lose either
    entry."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    with open(results_dir / f".{name}.lock", "w") as fh:
        _lock(fh)
        kept = json.loads(path.read_text()) if path.is_file() else {"runs": []}
        yield kept
        atomic_write_text(path, json.dumps(kept, indent=2) + "\n")
        if name in table_names():
            write_figures(results_dir, name, get_table(name), kept)
        atomic_write_text(results_md, render_results(results_dir))


def command_line(table: str) -> str:
    """The command that made a run, as its entry records it."""
    invoked = sys.argv[1:2] == ["reproduce"]
    return "torchstn " + shlex.join(sys.argv[1:]) if invoked else f"torchstn reproduce {table}"


def _shared(world: World, value: bool) -> bool:
    """Rank 0's ``value`` on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def run_minutes(options: Options, runs: int) -> float | None:
    """The time budget of one run: the table's, split evenly between its ``runs``."""
    return None if options.budget_minutes is None else options.budget_minutes / runs


def run_one(
    table: Table,
    run: PlannedRun,
    options: Options,
    minutes: float | None,
    world: World,
    say: Any,
    position: str,
) -> tuple[dict[str, Any], dict[str, Any], bool, Path, float]:
    """Train ``run`` (or reuse its finished folder); returns its entry without how it was made,
    the run's ``result.json``, whether it was reused, its folder and when it started."""
    cfg = config_from_dict(table.values(run, options, minutes))
    budget, slug = table.budget(cfg.run.epochs, minutes, options.protocol)
    run_dir = table.run_dir(run, options, slug)
    result_file = run_dir / "result.json"
    start = time.perf_counter()
    reused = _shared(world, result_file.is_file() and not options.force)
    # --resume: a run cut short (its checkpoint, no result) continues where it stopped
    resume = _shared(
        world,
        options.resume and not options.force and not reused and (run_dir / CHECKPOINT).is_file(),
    )
    if reused:
        result = json.loads(result_file.read_text())
        say(f"{position} {table.label(run)}: reusing {result_file}")
    else:
        if run_dir.exists() and world.is_main and not resume:  # cut short: start it afresh
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        if world.distributed:
            dist.barrier()
        announce = table.announce(run, run_dir)
        if announce:
            say(f"{position} {announce}" + (" (resumed from its checkpoint)" if resume else ""))
        result = table.execute(run, cfg, run_dir, resume=resume)
    where = {
        "budget": budget,
        "config": repo_relative(run.config),
        "run_dir": repo_relative(run_dir),
        "git_commit": result.get("git_commit"),
        "config_sha256": result.get("config_sha256"),
        "world_size": world.size,
    }
    return table.entry(run, cfg, result, options, where), result, reused, run_dir, start


def reproduce(
    table: Table,
    options: Options,
    world: World,
    results_dir: Path = Path("results"),
    results_md: str | Path = "RESULTS.md",
) -> int:
    """Train (or reuse) every run of ``table``'s plan for ``options`` and record each; under
    torchrun every rank walks the same plan and trains each run together, rank 0 alone prints
    and writes."""

    def say(text: str) -> None:
        if world.is_main:
            print(text, flush=True)

    table.check(options)
    plan = table.plan(options)
    minutes = run_minutes(options, len(plan))
    say(table.header(len(plan), minutes))
    command = command_line(table.name)
    launched_by = os.environ.get(JOBS_COMMAND_ENV)  # a --jobs run: the command that started it
    for i, run in enumerate(plan, 1):
        position = f"[{i}/{len(plan)}]"
        entry, result, reused, run_dir, start = run_one(
            table, run, options, minutes, world, say, position
        )
        if not world.is_main:
            continue
        picture = None if reused else table.picture(run_dir)
        if picture:
            say(f"    no boxes.png: {picture}")
        say(table.finished(position, run, entry, run_dir))
        with record(results_dir, results_md, table.name) as kept:
            old = [r for r in kept["runs"] if table.key(r) == table.key(entry)]
            made = ("wall_seconds", "command", "launched_by", "hardware")
            if reused and old:  # how the reused run was made
                entry.update({k: old[0][k] for k in made if k in old[0]})
            else:
                entry.update(
                    {
                        "wall_seconds": result["train_seconds"]
                        if reused
                        else time.perf_counter() - start,
                        "command": command,
                        **({"launched_by": launched_by} if launched_by else {}),
                        "hardware": result["hardware"],
                    }
                )
            kept["runs"] = [r for r in kept["runs"] if r not in old] + [entry]
            kept.update(
                {
                    "table": table.name,
                    "versions": result["versions"],
                    "platform": platform.platform(),
                    "date": datetime.date.today().isoformat(),
                }
            )
    say(f"wrote {results_dir / (table.name + '.json')} and {results_md}")
    return 0


def _config_epochs(path: Path, overrides: tuple[str, ...], epochs: int | None) -> int:
    """The epochs a run of the config at ``path`` trains for without a time budget: ``--epochs``,
    else the config's (after ``--set``), else the default; read without validating the config
    (the run's own process validates it, and a broken one still gets a log to say so)."""
    run = apply_overrides(load_config(path), list(overrides)).get("run") or {}
    return int(epochs or run.get("epochs") or RunConfig.epochs)


def one_run_command(
    table: Table,
    options: Options,
    run: PlannedRun,
    minutes: float | None,
    results_dir: Path,
    results_md: str | Path,
    overrides: list[str],
) -> tuple[list[str], Path]:
    """The ``torchstn reproduce`` arguments that make ``run`` alone (same budget, same record),
    naming only what differs from the defaults so that its entry's command stays short and
    names no folder of this machine; and the log beside its run folder (``FOLDER.log``)."""
    argv = ["reproduce", table.name, "--columns", run.column, "--models", str(run.item)]
    argv += ["--seeds", str(run.seed)]
    for flag, value, default in (
        ("--configs", options.config_dir, None),
        ("--device", options.device, "auto"),
        ("--runs-dir", options.runs_dir, Path("runs/reproduce")),
        ("--results-dir", results_dir, Path("results")),
        ("--results-md", results_md, "RESULTS.md"),
    ):
        if value is not None and value != default:
            argv += [flag, str(value)]
    if minutes is not None:
        argv += ["--budget-minutes", f"{minutes:g}"]
    if options.epochs:
        argv += ["--epochs", str(options.epochs)]
    if options.force:
        argv.append("--force")
    if options.resume:
        argv.append("--resume")
    if options.protocol != "budget":
        argv += ["--protocol", options.protocol]
    if options.variant:
        argv += ["--variant", options.variant]
    for value in overrides:
        argv += ["--set", value]
    _, slug = table.budget(
        _config_epochs(run.config, options.overrides, options.epochs), minutes, options.protocol
    )
    folder = table.run_dir(run, options, slug)
    return argv, folder.parent / f"{folder.name}.log"


def _with_threads(overrides: tuple[str, ...], threads: int | None) -> list[str]:
    """``--set`` overrides of a table's one-run children: the user's, and ``run.num_threads``
    = ``threads`` unless the user set it (or ``threads`` is None)."""
    extra = list(overrides)
    if threads and not any(s.split("=", 1)[0].strip() == "run.num_threads" for s in overrides):
        extra.append(f"run.num_threads={threads}")
    return extra


def _refuse_failed(failed: list[tuple[str, Path]], runs: int) -> None:
    """One line for runs that failed (``(label, log)``), naming the first's log."""
    if failed:
        name, log = failed[0]
        raise TorchSTNError(f"{len(failed)} of {runs} runs failed, the first {name}: see {log}")


def reproduce_jobs(
    table: Table,
    options: Options,
    jobs: int,
    results_dir: Path = Path("results"),
    results_md: str | Path = "RESULTS.md",
) -> int:
    """Train the runs of ``table``'s plan ``jobs`` at a time, each as its own ``torchstn
    reproduce`` process of one run (same budget, same record: the record's lock keeps every
    entry), with its output in ``RUN_FOLDER.log``; then render RESULTS.md."""
    if jobs < 1:
        raise ConfigError(f"--jobs: expected a positive number, got {jobs}")
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise ConfigError("--jobs: not under torchrun (every process would start its own jobs)")
    table.check(options)
    plan = table.plan(options)
    minutes = run_minutes(options, len(plan))
    extra = _with_threads(options.overrides, max(1, (os.cpu_count() or 1) // jobs))
    print(
        f"torchstn reproduce {table.name}: {len(plan)} runs, {jobs} at a time"
        + (f", {minutes:.1f} min each" if minutes else "")
        + f" ({extra[-1] if len(extra) > len(options.overrides) else 'threads as set'})",
        flush=True,
    )
    parent = command_line(table.name)  # each run's entry names it beside its own command

    def one(item: tuple[int, PlannedRun]) -> tuple[str, int, Path]:
        i, run = item
        argv, log = one_run_command(table, options, run, minutes, results_dir, results_md, extra)
        log.parent.mkdir(parents=True, exist_ok=True)
        name = table.label(run)
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

    with ThreadPoolExecutor(jobs) as pool:
        finished = list(pool.map(one, enumerate(plan, 1)))
    failed = [(name, log) for name, rc, log in finished if rc != 0]
    _refuse_failed(failed, len(plan))
    print(f"wrote {results_dir / (table.name + '.json')} and {results_md}")
    return 0


def reproduce_submitit(
    table: Table,
    options: Options,
    launch: LaunchOptions,
    results_dir: Path = Path("results"),
    results_md: str | Path = "RESULTS.md",
) -> int:
    """Submit every run of ``table``'s plan as a submitit job (:mod:`.launch`): each a one-run
    ``torchstn reproduce --resume`` (a finished run reused, one cut short continued), failed
    jobs resubmitted, pre-empted ones requeued; then render RESULTS.md."""
    if int(os.environ.get("WORLD_SIZE") or 1) > 1:
        raise ConfigError("--launcher submitit: not under torchrun")
    check_launch(launch)
    table.check(options)
    plan = table.plan(options)
    minutes = run_minutes(options, len(plan))
    options = dataclasses.replace(options, resume=True)
    extra = _with_threads(options.overrides, launch.cpus_per_job)
    runs = []
    for run in plan:
        argv, log = one_run_command(table, options, run, minutes, results_dir, results_md, extra)
        runs.append((table.label(run), argv, log))
    folder = launch.folder or options.runs_dir / ".submitit"
    print(
        f"torchstn reproduce {table.name}: {len(plan)} runs as submitit jobs"
        + (f", {minutes:.1f} min each" if minutes else "")
        + f" (files of the jobs in {folder})",
        flush=True,
    )
    failed = launch_submitit(runs, launch, folder, env={JOBS_COMMAND_ENV: command_line(table.name)})
    _refuse_failed(failed, len(plan))
    with record(results_dir, results_md, table.name):
        pass  # the children wrote the entries; render once more with all of them
    print(f"wrote {results_dir / (table.name + '.json')} and {results_md}")
    return 0
