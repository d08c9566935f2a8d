"""``torchstn bench``: the quick suite runs every group and writes well-formed results and
Markdown; ``--only`` merges; errors are one line. Timings are never checked."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from torchstn.bench import GROUPS, SCHEMA, read_results
from torchstn.cli import main


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    out = root / "results" / "cpu-quick.json"
    rc = main(
        [
            "bench",
            "--quick",
            "--out",
            str(out),
            "--results-dir",
            str(root / "results"),
            "--markdown",
            str(root / "BENCHMARKS.md"),
        ]
    )
    assert rc == 0
    return root, json.loads(out.read_text())


def test_every_group_runs_and_writes_well_formed_json(quick_run) -> None:
    root, doc = quick_run
    assert doc["schema"] == SCHEMA and doc["label"] == "cpu-quick"
    assert list(doc["groups"]) == list(GROUPS)
    for name, group in doc["groups"].items():
        assert group["quick"] is True and group["rows"], name
        assert group["env"]["torch"] and group["env"]["threads"] >= 1
        assert all(math.isfinite(n) for n in _numbers(group["rows"])), name
        timed = [r for r in group["rows"] if "skipped" not in r]
        assert timed, f"{name}: every row skipped"
    # the same document reads back through the reader the renderer uses
    assert (
        read_results(root / "results" / "cpu-quick.json")["groups"].keys() == doc["groups"].keys()
    )


def test_rows_compare_equal_work(quick_run) -> None:
    _, doc = quick_run
    sampler = [r for r in doc["groups"]["sampler"]["rows"] if "max_abs_diff" in r]
    # PyTorch's affine path and ours read the same points; kornia's TPS is another spline
    for r in sampler:
        if r["family"] != "tps":
            assert r["max_abs_diff"] < 1e-4, r
    module = doc["groups"]["module"]["rows"]
    assert all(r["max_abs_diff"] < 1e-5 for r in module)
    inference = [r for r in doc["groups"]["inference"]["rows"] if r.get("max_abs_diff") is not None]
    assert inference and all(r["max_abs_diff"] < 1e-4 for r in inference)


def test_data_rows_measure_the_prefetched_epoch(quick_run) -> None:
    root, doc = quick_run
    rows = doc["groups"]["data"]["rows"]
    assert rows
    for r in rows:
        assert r["prefetch_steps"] >= 2 and r["prefetch_s"] > 0, r
        assert 0.0 <= r["prefetch_wait_share"] < 1.0, r
        # the same work as the serial estimate, so the ratio is near 1, not orders away
        assert 0.05 < r["prefetch_vs_serial"] < 20, r
    assert "prefetched / serial" in (root / "BENCHMARKS.md").read_text()


def test_markdown_has_every_section_and_no_placeholder(quick_run) -> None:
    root, _ = quick_run
    text = (root / "BENCHMARKS.md").read_text()
    from torchstn.bench import group_module

    for name in GROUPS:
        assert f"## {group_module(name).TITLE}" in text
    assert "quick mode" in text and "nan" not in text.lower().split()
    # a quick run's sizes mean nothing: no figure, and the page says so
    assert "no figure for a quick-mode run" in text
    assert not (root / "benchmarks" / "figures").exists()


def test_the_scaling_figure_is_drawn_from_full_rows(quick_run, tmp_path) -> None:
    from torchstn.bench import scaling
    from torchstn.bench.markdown import render

    _, doc = quick_run
    full = json.loads(json.dumps(doc))
    full["groups"] = {"scaling": {**full["groups"]["scaling"], "quick": False}}
    text = render({"cpu": full}, tmp_path / "figures", tmp_path)
    figure = tmp_path / "figures" / "scaling-cpu.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000
    assert "](figures/scaling-cpu.png)" in text
    assert scaling.slope([1, 2, 4], [3.0, 6.0, 12.0]) == pytest.approx(1.0)


def test_only_merges_into_an_existing_results_file(quick_run, tmp_path) -> None:
    _, doc = quick_run
    out = tmp_path / "r.json"
    out.write_text(json.dumps(doc))
    assert main(["bench", "--quick", "--only", "bandwidth", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert list(merged["groups"]) == list(GROUPS)  # the other groups are kept
    assert merged["groups"]["bandwidth"]["env"]["date"] >= doc["groups"]["bandwidth"]["env"]["date"]
    assert merged["groups"]["bandwidth"]["command"] == "torchstn bench --quick --only bandwidth"


def test_sampler_rows_say_which_path_ran(quick_run) -> None:
    from torchstn import native

    _, doc = quick_run
    group = doc["groups"]["sampler"]
    assert group["env"]["fused"]["cpu"] == (native.kernels() is not None)
    rows = [r for r in group["rows"] if r["baseline"] == "pytorch"]
    for family in ("affine", "rotation", "translation"):
        paths = sorted(r["path"] for r in rows if r["family"] == family)
        want = "fused" if native.kernels() is not None else "unfused"
        assert paths == sorted(["unfused", want]), (family, paths)
    assert any("affine grid + sampling, fused" in h for h in group["headline"])


def test_kornia_rows_are_skipped_without_kornia(monkeypatch) -> None:
    from torchstn.bench import sampler
    from torchstn.bench.timing import Settings

    monkeypatch.setattr(sampler, "kornia_or_none", lambda: None)
    rows = sampler.run(Settings.make(True))["rows"]
    kornia = [r for r in rows if r["baseline"] == "kornia"]
    assert kornia and all(r["skipped"] == "no kornia" for r in kornia)
    assert any("fwd_ratio" in r for r in rows if r["baseline"] == "pytorch")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--only", "nonsense"], "unknown benchmark group 'nonsense'"),
        (["--render", "--results-dir", "{tmp}/none"], "no results files to render"),
        (["--threads", "0"], "--threads: expected at least 1"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["bench", "--quick", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_broken_results_file_is_refused(tmp_path) -> None:
    from torchstn.errors import InvalidInputError

    bad = tmp_path / "r.json"
    bad.write_text('{"schema": 99, "groups": {}}')
    with pytest.raises(InvalidInputError, match="not a benchmark results file"):
        read_results(bad)


def test_seeds_rows_measure_three_ways_of_training_several_models(quick_run) -> None:
    _, doc = quick_run
    rows = doc["groups"]["seeds"]["rows"]
    assert [r["way"] for r in rows] == ["sequential", "processes", "vmap"]
    assert rows[0]["vs_sequential"] == 1.0
    assert all(r["images_per_s"] > 0 and r["n"] == 2 for r in rows)
