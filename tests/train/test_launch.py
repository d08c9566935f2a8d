"""`torchstn reproduce --launcher submitit` with submitit's local executor on tiny runs: every run
a job, finished runs reused, a failing job resubmitted and then reported, a job stopped at its
time limit requeued and resumed from its checkpoint; and the Slurm script it would submit."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from torchstn.cli import main
from torchstn.experiments import LaunchOptions, get_table
from torchstn.experiments.launch import RunJob, _executor
from torchstn.experiments.runner import JOBS_COMMAND_ENV, one_run_command
from torchstn.experiments.tables import Options

from .test_reproduce import _argv, _tiny_configs

submitit = pytest.importorskip("submitit")

LOCAL = ["--launcher", "submitit", "--cluster", "local", "--time-limit", "5"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_every_run_is_a_job_and_finished_runs_are_reused(tmp_path, tiny_values, capsys):
    configs = _tiny_configs(tmp_path, tiny_values)
    argv = [*_argv(tmp_path, configs, "cnn,st_cnn_affine"), *LOCAL, "--jobs", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("submitted") == 2 and out.count(": done") == 2
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert sorted(r["model"] for r in record["runs"]) == ["cnn", "st_cnn_affine"]
    for entry in record["runs"]:
        # each job's entry names the command that submitted it (under pytest, no argv of its
        # own: the table's name) and its own one-run command
        assert entry["launched_by"] == "torchstn reproduce cluttered"
        assert entry["command"].startswith("torchstn reproduce cluttered --columns TC")
        assert "--resume" in entry["command"]
    logs = sorted((tmp_path / "runs" / "cluttered" / "TC").glob("*.log"))
    assert [p.name for p in logs] == ["cnn-seed0-1ep.log", "st_cnn_affine-seed0-1ep.log"]
    before = {r["model"]: r["test_error"] for r in record["runs"]}
    # again: the jobs reuse the finished runs
    assert main(argv) == 0
    for log in logs:
        assert "reusing" in log.read_text()
    again = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert {r["model"]: r["test_error"] for r in again["runs"]} == before


def test_a_failing_job_is_resubmitted_then_reported(tmp_path, tiny_values, capsys):
    configs = _tiny_configs(tmp_path, tiny_values)
    bad = configs / "cluttered" / "cnn.yaml"
    bad.write_text(bad.read_text().replace("name: cnn", "name: no_such_model"))
    argv = [*_argv(tmp_path, configs, "cnn,st_cnn_affine"), *LOCAL, "--retries", "1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "cnn on TC seed 0: job" in captured.out and "failed" in captured.out
    assert "(resubmitted, try 2)" in captured.out
    assert "FAILED after 2 tries" in captured.out
    err = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert len(err) == 1 and "1 of 2 runs failed, the first cnn on TC seed 0: see" in err[0]
    log = tmp_path / "runs" / "cluttered" / "TC" / "cnn-seed0-1ep.log"
    text = log.read_text()
    assert text.count("--- job start") == 2 and "no_such_model" in text
    # the other run still trained and was recorded
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert [r["model"] for r in record["runs"]] == ["st_cnn_affine"]


def test_a_preempted_job_is_requeued_and_resumes(tmp_path, tiny_values):
    configs = _tiny_configs(tmp_path, tiny_values)
    table = get_table("cluttered")
    options = Options(
        columns=("TC",),
        models=("st_cnn_affine",),
        epochs=100,
        config_dir=configs,
        runs_dir=tmp_path / "runs",
        device="cpu",
        resume=True,
    )
    (run,) = table.plan(options)
    argv, log = one_run_command(
        table, options, run, None, tmp_path / "results", tmp_path / "RESULTS.md", []
    )
    run_dir = log.parent / log.name.removesuffix(".log")
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit", max_num_timeout=1)
    executor.update_parameters(timeout_min=5)
    job = executor.submit(RunJob(argv, str(log), {JOBS_COMMAND_ENV: "torchstn reproduce x"}))
    # once two epochs are logged, the scheduler's pre-emption signal (USR2) to the job
    deadline = time.monotonic() + 120
    metrics = run_dir / "metrics.jsonl"
    while not (metrics.is_file() and len(_lines(metrics)) >= 2):
        assert time.monotonic() < deadline and not job.done(), "the run did not start"
        time.sleep(0.05)
    pid = int(re.search(r"--- job start, pid (\d+)", log.read_text()).group(1))
    os.kill(pid, signal.SIGUSR2)
    assert job.result() == 0
    text = log.read_text()
    assert "requeued, the run resumes" in text and "interrupted by SIGTERM" in text
    assert text.count("--- job start") == 2 and "resumed from its checkpoint" in text
    epochs = [json.loads(ln)["epoch"] for ln in _lines(metrics)]
    # one record per epoch, in order: the resumed run went on, it did not start again
    assert epochs == list(range(1, 101))
    assert json.loads((run_dir / "result.json").read_text())["epochs"] == 100
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert [r["model"] for r in record["runs"]] == ["st_cnn_affine"]


def test_slurm_jobs_ask_for_gpus_time_and_partition(tmp_path, monkeypatch):
    # a stand-in srun on PATH: submitit refuses to build a Slurm executor without one
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    launch = LaunchOptions(gpus_per_job=2, cpus_per_job=8, time_limit_minutes=90.5, partition="gpu")
    executor, cluster = _executor(launch, tmp_path / "submitit")
    assert cluster == "slurm"  # found on PATH
    script = executor._make_submission_file_text("python -m x", "uid")
    for line in (
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=91",
        "#SBATCH --partition=gpu",
        "#SBATCH --signal=USR2@90",
    ):
        assert line in script


def test_launcher_refuses_a_cluster_it_cannot_reach(tmp_path, tiny_values, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    argv = [*_argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn")]
    assert main([*argv, "--launcher", "submitit", "--cluster", "slurm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cluster slurm" in err[0] and "srun" in err[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--retries", "-1"], "--retries: expected 0 or more, got -1"),
        (["--gpus-per-job", "-2"], "--gpus-per-job: expected 0 or more"),
        (["--cpus-per-job", "0"], "--cpus-per-job: expected 1 or more"),
        (["--jobs", "0"], "--jobs: expected 1 or more"),
        (["--time-limit", "0"], "--time-limit: expected minutes > 0"),
    ],
)
def test_launcher_refuses_bad_settings_before_submitting(
    tmp_path, tiny_values, capsys, flags, message
):
    argv = [*_argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn"), *LOCAL, *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "runs").exists()
