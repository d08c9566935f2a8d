"""``torchstn reproduce ... --launcher submitit``: every run of a table as a job of a cluster
scheduler, through submitit (Slurm on a cluster, its local executor on one machine).

Each job runs ``torchstn reproduce`` for one run in a child process (the same command
``--jobs`` runs), with ``--resume``: a finished run is reused, a run cut short continues from its
checkpoint. The child records its entry in ``results/TABLE.json`` under the record's lock, so
jobs on many machines sharing the folder lose no entry.

Two ways a job comes back:

- **requeued** by submitit: when the scheduler pre-empts the job or its time limit nears, it
  signals the job (``USR2``); :meth:`RunJob.checkpoint` stops the child (``SIGTERM``: the trainer
  saves a checkpoint at its next step) and submitit submits the job again, which resumes the run
  (at most ``--max-requeues`` times for time limits).
- **resubmitted** by this launcher: a job that failed (its child exited with an error, or the
  node died) is submitted again, up to ``--retries`` times, and also resumes.

A job still failing after its retries fails the command with one line naming its log.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TorchSTNError

__all__ = ["LaunchOptions", "RunJob", "check_launch", "launch_submitit"]


@dataclass(frozen=True)
class LaunchOptions:
    """How ``--launcher submitit`` submits (see ``torchstn reproduce --help``)."""

    cluster: str | None = None  #: ``local``, ``slurm`` or None (Slurm where there is one)
    folder: Path | None = None  #: submitit's files (default: RUNS_DIR/.submitit)
    jobs: int | None = None  #: jobs queued or running at once (None: all; local: 1)
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    time_limit_minutes: float = 60.0
    partition: str | None = None
    retries: int = 1  #: resubmissions of a failed job
    max_requeues: int = 3  #: requeues after time limits (pre-emptions do not count)
    poll_seconds: float = 2.0


class RunJob:
    """One run as a submitit job: ``torchstn reproduce`` for one run in a child process, its
    output appended to ``log``. Requeued after pre-emption or near its time limit
    (:meth:`checkpoint`)."""

    def __init__(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self.env = dict(env or {})
        self._child: subprocess.Popen[bytes] | None = None

    def __call__(self) -> int:
        Path(self.log).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(
                f"--- job start, pid {os.getpid()}: torchstn {' '.join(self.argv)}\n".encode()
            )
            out.flush()
            self._child = subprocess.Popen(
                [sys.executable, "-m", "torchstn", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
            )
            rc = self._child.wait()
        if rc != 0:
            raise TorchSTNError(f"torchstn reproduce exited with status {rc}: see {self.log}")
        return rc

    def checkpoint(self) -> Any:
        """Called by submitit when the job is pre-empted or near its time limit: stop the child
        so that the trainer saves its checkpoint, then submit this job again (it resumes)."""
        from submitit.helpers import DelayedSubmission

        if self._child is not None:
            _stop(self._child.pid, STOP_SECONDS)
        with open(self.log, "ab") as out:
            out.write(b"--- job stopped by the scheduler: requeued, the run resumes\n")
        return DelayedSubmission(RunJob(self.argv, self.log, self.env))


#: how long a job stopped by its scheduler waits for the run to save its checkpoint (Slurm's
#: warning comes 90 s before the end)
STOP_SECONDS = 60.0


def _stop(pid: int, seconds: float) -> None:
    """SIGTERM the child ``pid`` (the trainer saves a checkpoint at its next step and exits) and
    reap it; SIGKILL after ``seconds``. Called inside submitit's signal handler while the job's
    ``Popen.wait`` is interrupted, so the child is waited for with ``os.waitpid`` directly
    (``Popen``'s own wait would block on the lock the interrupted wait holds)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    try:
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.1)
    except ChildProcessError:  # reaped already
        return


def _executor(options: LaunchOptions, folder: Path) -> tuple[Any, str]:
    """submitit's executor of ``options.cluster`` (Slurm where ``sbatch`` is on PATH, else
    local) and the cluster's name."""
    try:
        import submitit
    except ImportError:
        raise ConfigError(
            "--launcher submitit needs submitit: pip install 'torchstn[cluster]'"
        ) from None
    cluster = options.cluster or ("slurm" if shutil.which("sbatch") else "local")
    executor: Any
    if cluster == "slurm":
        try:
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=options.max_requeues)
        except RuntimeError as err:  # no srun here
            raise ConfigError(f"--cluster slurm: {err}") from None
        params: dict[str, Any] = {
            "time": max(1, math.ceil(options.time_limit_minutes)),
            "nodes": 1,
            "ntasks_per_node": 1,
            "job_name": "torchstn-reproduce",
        }
        if options.gpus_per_job:
            params["gpus_per_node"] = options.gpus_per_job
        if options.cpus_per_job:
            params["cpus_per_task"] = options.cpus_per_job
        if options.partition:
            params["partition"] = options.partition
    elif cluster == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=options.max_requeues)
        # fractions of a minute are fine here (the tests' time limits)
        params = {"timeout_min": options.time_limit_minutes, "tasks_per_node": 1}
        if options.gpus_per_job:
            params["gpus_per_node"] = options.gpus_per_job
    else:
        raise ConfigError(f"--cluster: expected local or slurm, got {cluster!r}")
    executor.update_parameters(**params)
    return executor, cluster


def check_launch(options: LaunchOptions) -> None:
    """Refuse launch settings no scheduler takes, before anything is submitted.

    Raises:
        ConfigError: a negative or zero count or time.
    """
    for flag, value, low in (
        ("--retries", options.retries, 0),
        ("--max-requeues", options.max_requeues, 0),
        ("--gpus-per-job", options.gpus_per_job, 0),
        ("--cpus-per-job", options.cpus_per_job, 1),
        ("--jobs", options.jobs, 1),
    ):
        if value is not None and value < low:
            raise ConfigError(f"{flag}: expected {low} or more, got {value}")
    if not options.time_limit_minutes > 0:
        raise ConfigError(f"--time-limit: expected minutes > 0, got {options.time_limit_minutes}")


def launch_submitit(
    runs: list[tuple[str, list[str], Path]],
    options: LaunchOptions,
    folder: Path,
    env: dict[str, str] | None = None,
    say: Any = print,
) -> list[tuple[str, Path]]:
    """Submit every run (``(label, argv of its one-run reproduce, log)``) as a job, at most
    ``options.jobs`` at a time, resubmitting failed jobs up to ``options.retries`` times; wait
    for all. Returns the runs that still failed, as ``(label, log)``."""
    check_launch(options)
    executor, cluster = _executor(options, folder)
    limit = options.jobs or (1 if cluster == "local" else len(runs))
    waiting = [(i, label, argv, log, 0) for i, (label, argv, log) in enumerate(runs, 1)]
    running: list[tuple[Any, int, str, list[str], Path, int]] = []
    failed: list[tuple[str, Path]] = []
    total = len(runs)
    while waiting or running:
        while waiting and len(running) < limit:
            i, label, argv, log, tries = waiting.pop(0)
            job = executor.submit(RunJob(argv, str(log), env))
            again = f" (resubmitted, try {tries + 1})" if tries else ""
            say(f"[{i}/{total}] {label}: job {job.job_id} submitted{again}, log {log}")
            running.append((job, i, label, argv, log, tries))
        time.sleep(options.poll_seconds)
        still = []
        for item in running:
            job, i, label, argv, log, tries = item
            if not job.done():
                still.append(item)
                continue
            error = job.exception()
            if error is None:
                say(f"[{i}/{total}] {label}: done")
            elif tries < options.retries:
                say(f"[{i}/{total}] {label}: job {job.job_id} failed ({_first_line(error)})")
                waiting.append((i, label, argv, log, tries + 1))
            else:
                say(
                    f"[{i}/{total}] {label}: FAILED after {tries + 1} "
                    f"tr{'y' if tries == 0 else 'ies'} ({_first_line(error)})"
                )
                failed.append((label, log))
        running = still
    return failed


def _first_line(error: BaseException) -> str:
    """The last line of a job's error that says something (submitit wraps the job's traceback)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for line in reversed(lines):
        if "Error" in line or "exited" in line:
            return line[:300]
    return (lines[-1] if lines else type(error).__name__)[:300]
