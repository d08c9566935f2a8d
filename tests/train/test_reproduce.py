"""`torchstn reproduce` end to end on tiny configs: runs, results/TABLE.json, RESULTS.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from torchstn.cli import main
from torchstn.experiments import render_results

#: how a run was made, as every results entry records it
MADE = {
    "command": "torchstn reproduce x",
    "hardware": "cpu",
    "wall_seconds": 1.0,
    "schedule": "cosine",
}


def _tiny_configs(root: Path, tiny: dict) -> Path:
    folder = root / "configs" / "cluttered"
    folder.mkdir(parents=True)
    for model, options in (
        ("cnn", {"channels": [4, 8]}),
        ("st_cnn_affine", tiny["model"]["options"]),
    ):
        values = json.loads(json.dumps(tiny))
        values["model"] = {"name": model, "options": options}
        values["run"]["epochs"] = 1
        (folder / f"{model}.yaml").write_text(yaml.safe_dump(values))
    return root / "configs"


def _argv(root: Path, configs: Path, models: str) -> list[str]:
    """``torchstn reproduce cluttered`` on the tiny configs, writing everything under ``root``."""
    return [
        "reproduce",
        "cluttered",
        "--models",
        models,
        "--configs",
        str(configs),
        "--runs-dir",
        str(root / "runs"),
        "--results-dir",
        str(root / "results"),
        "--results-md",
        str(root / "RESULTS.md"),
        "--device",
        "cpu",
    ]


def test_reproduce_writes_results_beside_the_paper(tmp_path, tiny_values, capsys):
    argv = _argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn,st_cnn_affine")
    assert main(argv) == 0
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert sorted(r["model"] for r in record["runs"]) == ["cnn", "st_cnn_affine"]
    for r in record["runs"]:
        result = json.loads((Path(r["run_dir"]) / "result.json").read_text())
        assert r["test_error"] == result["test_error"]
    md = (tmp_path / "RESULTS.md").read_text()
    assert md == render_results(tmp_path / "results")
    st = next(r for r in record["runs"] if r["model"] == "st_cnn_affine")
    row = next(line for line in md.splitlines() if line.startswith("| st_cnn_affine |"))
    assert f"{st['test_error']:.2f}" in row and "| 1.7 |" in row  # ours beside the paper's

    capsys.readouterr()
    assert main(argv) == 0  # a second call reuses the finished runs
    assert capsys.readouterr().out.count("reusing") == 2


def test_reproduce_rejects_unknown_columns_and_models(tmp_path, capsys):
    assert main(["reproduce", "table1", "--columns", "R,XX"]) == 2
    assert "XX" in capsys.readouterr().err
    assert main(["reproduce", "cluttered", "--models", "vgg"]) == 2
    assert "st_cnn_affine" in capsys.readouterr().err


def test_runs_at_different_budgets_are_kept_side_by_side(tmp_path, tiny_values, capsys):
    common = _argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn")
    assert main(common) == 0  # the config's 1 epoch
    assert main([*common, "--epochs", "2"]) == 0
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    by_budget = {r["budget"]: r for r in record["runs"]}
    assert set(by_budget) == {"1 epochs", "2 epochs"}
    assert by_budget["1 epochs"]["epochs"] == 1 and by_budget["2 epochs"]["epochs"] == 2
    assert by_budget["1 epochs"]["run_dir"] != by_budget["2 epochs"]["run_dir"]
    md = (tmp_path / "RESULTS.md").read_text()
    # one sub-table per budget, the longer budget first, each with its own row
    assert md.index("### Budget: 2 epochs") < md.index("### Budget: 1 epochs")
    assert md.count("| cnn |") == 2


def test_a_fresh_run_does_not_inherit_a_stale_record(tmp_path, tiny_values):
    argv = _argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn")
    assert main(argv) == 0
    path = tmp_path / "results" / "cluttered.json"
    record = json.loads(path.read_text())
    (run,) = record["runs"]
    run["command"], run["wall_seconds"] = "torchstn reproduce (stale)", 1e6
    path.write_text(json.dumps(record))
    (Path(run["run_dir"]) / "result.json").unlink()  # the run must be trained again
    assert main(argv) == 0
    (fresh,) = json.loads(path.read_text())["runs"]
    assert fresh["command"] != "torchstn reproduce (stale)" and fresh["wall_seconds"] < 1e6
    # a reused run keeps what its record says about how it was made
    record = json.loads(path.read_text())
    record["runs"][0]["command"] = "torchstn reproduce (original)"
    path.write_text(json.dumps(record))
    assert main(argv) == 0
    assert json.loads(path.read_text())["runs"][0]["command"] == "torchstn reproduce (original)"


def test_records_carry_provenance_not_one_machines_paths(tmp_path, tiny_values, monkeypatch):
    """Entries name their config and run relative to the repository and carry the commit and
    the hash of the resolved config (tmp_path plays the repository: its configs/ is the
    default config folder)."""
    import hashlib

    from torchstn.experiments import repo_relative, runner

    configs = _tiny_configs(tmp_path, tiny_values)
    monkeypatch.setattr(runner, "default_config_dir", lambda: configs)
    monkeypatch.chdir(tmp_path)
    argv = _argv(tmp_path, configs, "cnn")
    argv[argv.index("--runs-dir") + 1] = str(tmp_path / "runs")
    assert main(argv) == 0
    (entry,) = json.loads((tmp_path / "results" / "cluttered.json").read_text())["runs"]
    assert entry["config"] == "configs/cluttered/cnn.yaml"
    assert entry["run_dir"].startswith("runs/") and not Path(entry["run_dir"]).is_absolute()
    saved = json.loads((tmp_path / entry["run_dir"] / "config.json").read_text())
    saved.pop("world_size")
    text = json.dumps(saved, sort_keys=True, separators=(",", ":"))
    assert entry["config_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert "git_commit" in entry  # None outside a checkout; a 40-hex id (maybe -dirty) inside
    commit = entry["git_commit"]
    assert commit is None or len(commit.removesuffix("-dirty")) == 40
    # a run folder outside the repository is recorded as given
    assert repo_relative("/elsewhere/runs/reproduce/x") == "/elsewhere/runs/reproduce/x"


def test_an_absolute_runs_dir_inside_the_checkout_is_recorded_relative():
    """The packaged configs live in torchstn/configs; a run folder given as an absolute path in
    the checkout around the package is recorded from the checkout (runs/...), a config from the
    package (configs/...)."""
    from torchstn.experiments import repo_relative
    from torchstn.train.config import default_config_dir

    package = default_config_dir().resolve().parent
    checkout = package.parent
    if not (checkout / "pyproject.toml").is_file():
        pytest.skip("torchstn is installed, not run from its checkout")
    assert repo_relative(checkout / "runs" / "reproduce" / "x") == "runs/reproduce/x"
    assert repo_relative(default_config_dir() / "demo.yaml") == "configs/demo.yaml"


def test_results_mark_single_seeds_and_summarise_st_against_plain(tmp_path):
    """RESULTS.md: one-seed cells carry the mark, several seeds show mean ± sd (n), and the
    summary compares each ST model with its plain counterpart at the same budget."""
    from torchstn.experiments.render import SINGLE_SEED, plain_counterpart

    def run(model, seed, err):
        return {
            "column": "TC",
            "model": model,
            "seed": seed,
            "budget": "30 min",
            "test_error": err,
            "val_error": err,
            "epochs": 3,
            "train_seconds": 60.0,
            "params": 1000,
            **MADE,
        }

    runs = [run("cnn", s, e) for s, e in ((0, 3.0), (1, 3.2), (2, 2.8))]
    runs += [run("st_cnn_affine", s, e) for s, e in ((0, 1.6), (1, 1.8), (2, 1.7))]
    runs += [run("st_fcn_affine", 0, 2.5), run("fcn", 0, 13.0)]
    runs = runs[::-1]  # recorded in any order (as runs finish)
    (tmp_path / "cluttered.json").write_text(json.dumps({"runs": runs}))
    md = render_results(tmp_path)
    # the per-run lines follow the table: its models in order, then the seeds
    listed = [
        " ".join(re.match(r"- (\S+) on TC \(seed (\d+)\)", line).groups())
        for line in md.splitlines()
        if line.startswith("- ")
    ]
    assert listed == [
        "fcn 0", "cnn 0", "cnn 1", "cnn 2", "st_fcn_affine 0",
        "st_cnn_affine 0", "st_cnn_affine 1", "st_cnn_affine 2",
    ]  # fmt: skip
    assert f"| 2.50{SINGLE_SEED} |" in md and "| 3.00 ± 0.20 (n=3) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| TC | st_cnn_affine | cnn |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5].startswith("-1.30 ± ") and cells[6] == "yes"
    row = next(line for line in md.splitlines() if line.startswith("| TC | st_fcn_affine | fcn |"))
    assert "-10.50 |" in row and row.endswith("| yes |")
    assert [plain_counterpart(m) for m in ("st2_fcn_tps", "st_cnn_tps", "pool_cnn")] == [
        "fcn",
        "cnn",
        None,
    ]


def test_render_rewrites_results_md_without_training(tmp_path, tiny_values):
    argv = _argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn")
    assert main(argv) == 0
    md = tmp_path / "RESULTS.md"
    md.write_text("stale")
    args = ["reproduce", "render", "--results-dir", str(tmp_path / "results")]
    assert main([*args, "--results-md", str(md)]) == 0
    assert md.read_text() == render_results(tmp_path / "results")


def test_results_md_names_a_partial_best_epoch(tmp_path):
    """The note on a best epoch past the epochs completed appears only when a run has one."""

    def entry(model, budget, commit):
        return {
            "column": "TC", "model": model, "seed": 0, "budget": budget, "test_error": 2.0,
            "val_error": 2.0, "epochs": 3, "best_epoch": 3, "train_seconds": 60.0,
            "params": 10, "git_commit": commit, **MADE,
        }  # fmt: skip

    results = tmp_path / "results"
    results.mkdir()
    path = results / "cluttered.json"
    path.write_text(json.dumps({"runs": [entry("cnn", "1 min", "abc")]}))
    assert "partial epoch" not in render_results(results)
    late = {**entry("cnn", "1 min", "abc"), "best_epoch": 4}  # 3 epochs done, a 4th cut short
    path.write_text(json.dumps({"runs": [late]}))
    assert "a best epoch one past the epochs completed is the last, partial epoch" in (
        render_results(results)
    )


def _append_entries(results: str, tag: str, n: int) -> None:
    import time

    from torchstn.experiments import record as shared_record

    for i in range(n):
        with shared_record(Path(results), Path(results) / "R.md", "shared") as record:
            time.sleep(0.005)  # widen the window between reading and writing
            record["runs"].append({"tag": tag, "i": i})


def test_side_by_side_commands_lose_no_entry(tmp_path):
    """Two reproduce commands finishing together both land in the shared record."""
    import multiprocessing

    results = str(tmp_path / "results")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_entries, args=(results, t, 15)) for t in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    runs = json.loads((tmp_path / "results" / "shared.json").read_text())["runs"]
    assert sorted((r["tag"], r["i"]) for r in runs) == [(t, i) for t in "ab" for i in range(15)]
    assert (tmp_path / "results" / "R.md").is_file()


def test_corner_noise_is_calibrated_on_the_papers_fcn(tmp_path):
    """The P sweep's record: the paper's P error scaled by our R/E level, interpolated."""
    from torchstn.experiments.render import calibrated_corner_sigma

    def run(column, sigma, err):
        extra = {} if sigma is None else {"ink_lost_mean": 0.1, "over_10pct": 0.2}
        return {"column": column, "corner_sigma": sigma, "test_error": err, "seed": 0, **extra}

    # our R and E are twice the paper's (2.1, 3.2): the paper's P 3.1 becomes 6.2 here
    runs = [run("R", None, 4.2), run("E", None, 6.4), run("P", 2.0, 4.0), run("P", 4.0, 8.4)]
    target, sigma = calibrated_corner_sigma({"runs": runs})
    assert target == pytest.approx(6.2)
    assert sigma == pytest.approx(3.0)
    assert calibrated_corner_sigma({"runs": runs[:3]}) is None  # does not bracket the target
    results = tmp_path / "results"
    results.mkdir()
    (results / "table1.json").write_text(json.dumps({"runs": []}))
    sweep = {"command": "python benchmarks/p_corner_sigma.py", "epochs": 5, "runs": runs}
    (results / "p_corner_sigma.json").write_text(json.dumps(sweep))
    text = render_results(results)
    assert "## The P column's corner noise" in text
    assert "6.20% here, reached at 3.00 px" in text


def test_jobs_train_runs_side_by_side_each_with_its_log(tmp_path, tiny_values, capsys):
    import os

    configs = _tiny_configs(tmp_path, tiny_values)
    argv = [*_argv(tmp_path, configs, "cnn,st_cnn_affine"), "--jobs", "2"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    assert sorted(r["model"] for r in record["runs"]) == ["cnn", "st_cnn_affine"]
    threads = max(1, (os.cpu_count() or 1) // 2)  # cores shared between the jobs
    for r in record["runs"]:
        # each entry names the one-run command that regenerates it
        assert f"--models {r['model']} " in r["command"]
        assert f"run.num_threads={threads}" in r["command"]
        # the options given, nothing else (the defaults are left out)
        given = (
            f"--configs {configs} --device cpu --runs-dir {tmp_path / 'runs'} "
            f"--results-dir {tmp_path / 'results'} --results-md {tmp_path / 'RESULTS.md'}"
        )
        assert r["command"] == (
            f"torchstn reproduce cluttered --columns TC --models {r['model']} --seeds 0 "
            f"{given} --set run.num_threads={threads}"
        )
        assert f", {threads} thread{'' if threads == 1 else 's'}, " in r["hardware"]
        assert torch.backends.cpu.get_cpu_capability() in r["hardware"]
        # and the command that started the jobs (run in-process here: its default name)
        assert r["launched_by"] == "torchstn reproduce cluttered"
    # RESULTS.md names the --jobs command once, not each one-run command
    commands = [ln for ln in render_results(tmp_path / "results").splitlines()
                if ln.startswith("Commands:")]  # fmt: skip
    assert commands == ["Commands: `torchstn reproduce cluttered`  "]
    logs = sorted((tmp_path / "runs" / "cluttered" / "TC").glob("*.log"))
    # each log sits beside its run folder, named alike
    assert [p.name for p in logs] == [f"{r}-seed0-1ep.log" for r in ("cnn", "st_cnn_affine")]
    assert all(p.with_suffix("").is_dir() for p in logs)
    assert all("test error" in p.read_text() for p in logs)
    assert (tmp_path / "RESULTS.md").read_text() == render_results(tmp_path / "results")

    # a run that fails is named in one line with its log; the other one still lands
    (configs / "cluttered" / "cnn.yaml").write_text("model: {name: no_such_model}\n")
    capsys.readouterr()
    assert main([*argv, "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "1 of 2 runs failed, the first cnn on TC seed 0" in err
    assert err.endswith("cnn-seed0-10ep.log")  # the broken config names no epochs: the default
    assert main([*argv[:-2], "--jobs", "0"]) == 2
    assert "--jobs: expected a positive number" in capsys.readouterr().err


def test_a_variant_is_kept_and_reported_beside_the_tables_own_cell(tmp_path, tiny_values, capsys):
    """``--variant NAME --set ...``: its own run folder and entry (the table's cell is kept),
    a row in RESULTS.md's variants section against that cell, reused like any run; the
    ``--jobs`` path passes it on and names the log alike."""
    argv = _argv(tmp_path, _tiny_configs(tmp_path, tiny_values), "cnn")
    assert main(argv) == 0
    variant = [*argv, "--variant", "lr2", "--set", "optim.lr=0.2"]
    assert main(variant) == 0
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    base, tried = sorted(record["runs"], key=lambda r: r.get("variant") or "")
    assert "variant" not in base and tried["variant"] == "lr2"
    assert tried["overrides"] == ["optim.lr=0.2"]
    assert Path(tried["run_dir"]).name == "cnn-seed0-1ep-lr2"
    assert json.loads((Path(tried["run_dir"]) / "config.json").read_text())["optim"]["lr"] == 0.2
    assert json.loads((Path(base["run_dir"]) / "config.json").read_text())["optim"]["lr"] != 0.2
    assert tried["test_error"] != base["test_error"]  # a different run, not the cell reused

    md = (tmp_path / "RESULTS.md").read_text()
    assert md == render_results(tmp_path / "results")
    table, variants = md.split("### Variants")
    assert table.count("| cnn |") == 1  # the table's cell is the baseline run's alone
    assert f"{base['test_error']:.2f}" in table and f"{tried['test_error']:.2f}" not in table
    row = next(line for line in variants.splitlines() if line.startswith("| lr2 |"))
    diff = tried["test_error"] - base["test_error"]
    assert f"| {tried['test_error']:.2f}¹ | {base['test_error']:.2f}¹ | {diff:+.2f} |" in row
    assert "`optim.lr=0.2`" in row and "Commands: `torchstn reproduce cluttered`" in variants

    capsys.readouterr()
    assert main(variant) == 0
    assert "reusing" in capsys.readouterr().out
    assert main([*variant, "--jobs", "2", "--force"]) == 0
    log = tmp_path / "runs" / "cluttered" / "TC" / "cnn-seed0-1ep-lr2.log"
    assert "test error" in log.read_text()
    runs = json.loads((tmp_path / "results" / "cluttered.json").read_text())["runs"]
    assert (
        len(runs) == 2 and "--variant lr2" in next(r for r in runs if r.get("variant"))["command"]
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--variant", "a b", "--set", "optim.lr=0.1"], "a folder name"),
        (["--variant", "../up", "--set", "optim.lr=0.1"], "a folder name"),
        (["--variant", "lr2"], "name the settings it changes with --set"),
    ],
)
def test_a_variant_needs_a_folder_name_and_its_settings(extra, message, capsys):
    assert main(["reproduce", "cluttered", *extra]) == 2
    assert message in capsys.readouterr().err
    assert main(["reproduce", "colocalization", "--variant", "x", "--set", "a=1"]) == 2
    assert "colocalization records no variants" in capsys.readouterr().err


def test_colocalization_selection_is_rendered_from_its_record(tmp_path):
    """The co-localisation settings' selection table comes from its record: every candidate's
    score on training images, the chosen one per column in bold, no score where it did not run."""
    results = tmp_path / "results"
    results.mkdir()
    coloc = {
        "column": "T", "digit": 3, "seed": 0, "budget": "4 epochs", "localised": 90.0,
        "mean_iou": 0.6, "val_localised": 88.0, "start_localised": 7.0, "train_seconds": 5.0,
        **MADE,
    }  # fmt: skip
    (results / "colocalization.json").write_text(json.dumps({"runs": [coloc]}))
    assert "settings were chosen" not in render_results(results)  # no record: no section
    selection = {
        "protocol": "each setting ran the table on training images.",
        "date": "2026-01-02",
        "chosen": {"T": "A", "TC": "B"},
        "settings": {
            "A": {
                "description": "constant rate",
                "overrides": [],
                "T": {"localised": 99.5, "mean_iou": 0.7712},
                "TC": {"localised": 61.25, "mean_iou": 0.5},
            },
            "B": {
                "description": "cosine",
                "overrides": ["optim.schedule=cosine"],
                "TC": {"localised": 70.0, "mean_iou": 0.55},
            },
        },
    }
    (results / "colocalization_selection.json").write_text(json.dumps(selection))
    md = render_results(results)
    assert "each setting ran the table on training images." in md and "2026-01-02" in md
    lines = md.splitlines()
    assert "| A: constant rate | – | **99.5 (0.771)** | 61.2 (0.500) |" in lines
    assert "| B: cosine | `optim.schedule=cosine` | – | **70.0 (0.550)** |" in lines


def test_a_run_records_the_commit_its_process_started_from(tmp_path, tiny_values, monkeypatch):
    """A commit made while runs train is not the code they run: every run of a process names
    the commit of the process's first run, however far the checkout moved on meanwhile."""
    from torchstn.train import Trainer, config_from_dict, provenance

    commits = iter(["a" * 40, "b" * 40, "c" * 40])
    monkeypatch.setattr(provenance, "source_commit", lambda: next(commits))
    monkeypatch.setattr(provenance, "_LOADED_COMMIT", [])  # a fresh process
    tiny_values["run"]["epochs"] = 1
    first = Trainer(config_from_dict(tiny_values), tmp_path / "run", progress=False)
    assert provenance.source_commit() == "b" * 40  # the checkout moved on meanwhile
    result = first.fit()
    assert result["git_commit"] == "a" * 40
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["git_commit"] == "a" * 40
    second = Trainer(config_from_dict(tiny_values), tmp_path / "run2", progress=False)
    assert second.fit()["git_commit"] == "a" * 40  # the process still runs the code of "a"


def test_colocalization_with_seeds_shows_the_spread_over_seeds(tmp_path):
    """Several seeds: each digit's cell is mean ± sd, and the column's mean carries the spread of
    the per-seed means over the digits (a seed that missed a digit is left out of the spread)."""
    results = tmp_path / "results"
    results.mkdir()

    def run(digit, seed, localised):
        return {
            "column": "T", "digit": digit, "seed": seed, "budget": "4 epochs",
            "localised": localised, "mean_iou": 0.5, "val_localised": 50.0,
            "start_localised": 7.0, "train_seconds": 1.0, **MADE,
        }  # fmt: skip

    # seed means: 90, 80, 70 (sd 10); seed 3 ran digit 0 only
    runs = [run(0, 0, 100.0), run(1, 0, 80.0), run(0, 1, 90.0), run(1, 1, 70.0)]
    runs += [run(0, 2, 60.0), run(1, 2, 80.0), run(0, 3, 10.0)]
    (results / "colocalization.json").write_text(json.dumps({"runs": runs}))
    row = next(ln for ln in render_results(results).splitlines() if ln.startswith("| T |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{sum(r['localised'] for r in runs) / 7:.1f} ± 10.0 (n=3)"
    assert cells[7:] == ["65.00 ± 40.41 (n=4)", "76.67 ± 5.77 (n=3)"]
    (results / "colocalization.json").write_text(json.dumps({"runs": runs[:2]}))
    row = next(ln for ln in render_results(results).splitlines() if ln.startswith("| T |"))
    assert row.split("|")[3].strip() == "90.0"  # one seed: no spread


def test_the_help_names_every_table():
    from torchstn.cli import build_parser
    from torchstn.experiments import table_names

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(a.help or "" for a in sub.choices["reproduce"]._actions)
    assert all(name in text for name in table_names())
