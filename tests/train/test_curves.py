"""Learning curves: images seen in every epoch record, the curve in result.json and the results
entry, and the SVG figures RESULTS.md links."""

from __future__ import annotations

import itertools
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from torchstn.cli import main
from torchstn.experiments import get_table, render_results
from torchstn.experiments.curves import PAPER_IMAGES, curve_svg, figures, write_figures
from torchstn.experiments.tables import thin_curve
from torchstn.train.trainer import images_before, learning_curve

from .test_reproduce import _argv, _tiny_configs

SVG = "{http://www.w3.org/2000/svg}"


def _points(element: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in element.get("points", "").split()]


def test_a_reproduce_run_records_its_curve_and_draws_it(tmp_path, tiny_values):
    configs = _tiny_configs(tmp_path, tiny_values)
    assert main([*_argv(tmp_path, configs, "cnn,st_cnn_affine"), "--epochs", "3"]) == 0
    record = json.loads((tmp_path / "results" / "cluttered.json").read_text())
    train_size = tiny_values["data"]["train_size"]
    for entry in record["runs"]:
        result = json.loads((Path(entry["run_dir"]) / "result.json").read_text())
        metrics = [
            json.loads(line)
            for line in (Path(entry["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        ]
        # every epoch's record counts the images trained on so far
        assert [m["images_seen"] for m in metrics] == [train_size * k for k in (1, 2, 3)]
        assert result["curve"] == [[m["images_seen"], m["val_error"]] for m in metrics]
        assert result["images_seen"] == 3 * train_size
        assert entry["curve"] == result["curve"] and entry["images_seen"] == 3 * train_size
    svg_path = tmp_path / "results" / "curves" / "cluttered-TC-3epochs.svg"
    root = ET.parse(svg_path).getroot()
    runs = root.findall(f"{SVG}polyline")
    assert sorted(r.get("data-model") for r in runs) == ["cnn", "st_cnn_affine"]
    assert all(len(_points(r)) == 3 for r in runs)
    # the paper's cluttered numbers of both models, as rings on one vertical line
    rings = root.findall(f"{SVG}circle[@class='paper']")
    assert sorted(r.get("data-model") for r in rings) == ["cnn", "st_cnn_affine"]
    assert len({r.get("cx") for r in rings}) == 1
    md = (tmp_path / "RESULTS.md").read_text()
    assert md == render_results(tmp_path / "results")
    assert "](results/curves/cluttered-TC-3epochs.svg)" in md
    assert re.search(r"images seen, mean over seeds: cnn 0\.576k; st_cnn_affine 0\.576k", md)


def test_images_seen_counts_a_partial_epoch_once():
    history = [
        {"epoch": 1, "images_seen": 100, "val_error": 50.0},
        {"epoch": 2, "partial": True, "steps": 2, "images_seen": 140, "val_error": 40.0},
    ]
    # the resumed run completes epoch 2: its count starts from epoch 1's, not the partial one's
    assert images_before(history) == 100
    assert images_before([]) == 0
    assert learning_curve(history) == [[100, 50.0], [140, 40.0]]
    # a checkpoint's history from before curves were kept has no points
    assert learning_curve([{"epoch": 1, "val_error": 3.0}]) == []


def test_thin_curve_keeps_the_ends_and_spreads_on_a_log_axis():
    curve = [[50_000 * k, 100.0 / k] for k in range(1, 800)]
    thin = thin_curve(curve, 24)
    assert thin[0] == curve[0] and thin[-1] == curve[-1]
    assert len(thin) <= 26
    steps = [b[0] / a[0] for a, b in itertools.pairwise(thin)]
    # no two kept points closer than the log step, except the forced last one
    assert min(steps[:-1]) >= (curve[-1][0] / curve[0][0]) ** (1 / 24) - 1e-9
    short = [[1, 2.0], [2, 1.0]]
    assert thin_curve(short) == short and thin_curve(short) is not short


def test_curve_svg_places_points_on_log_axes():
    svg = curve_svg(
        "t",
        [("a", [[1e4, 50.0], [1e5, 5.0], [1e6, 0.5]]), ("b", [[1e4, 20.0]])],
        {"a": 1.0, "b": 2.0},
        ["a", "b"],
    )
    root = ET.fromstring(svg)
    (a,) = [p for p in root.findall(f"{SVG}polyline") if p.get("data-model") == "a"]
    (x0, y0), (x1, y1), (x2, y2) = _points(a)
    # equal ratios are equal distances on both axes; more images to the right, less error higher up
    assert abs((x1 - x0) - (x2 - x1)) < 0.15 and x2 > x1 > x0
    assert abs((y1 - y0) - (y2 - y1)) < 0.15 and y2 > y1 > y0
    rings = {c.get("data-model"): c for c in root.findall(f"{SVG}circle[@class='paper']")}
    # the paper's point lies at 38.4M images, to the right of every run
    assert float(rings["a"].get("cx")) > x2
    lx = (float(rings["a"].get("cx")) - x0) / (x1 - x0)  # decades from 1e4
    assert abs(lx - math.log10(PAPER_IMAGES / 1e4)) < 0.01
    # 1% (paper a) lies between 5% and 0.5% on the log axis, 2% above it
    assert y1 < float(rings["a"].get("cy")) < y2
    assert float(rings["b"].get("cy")) < float(rings["a"].get("cy"))


def test_figures_skip_runs_without_curves_and_variants(tmp_path):
    table = get_table("table1")
    base = {"budget": "10 min", "seed": 0}
    record = {
        "runs": [
            {**base, "column": "R", "model": "fcn", "curve": [[1000, 9.0], [2000, 4.0]]},
            {**base, "column": "R", "model": "cnn"},  # recorded before curves were kept
            {**base, "column": "E", "model": "fcn", "curve": [[10, 1.0]], "variant": "v"},
        ]
    }
    made = figures(table, record)
    assert list(made) == ["table1-R-10min.svg"]
    (tmp_path / "curves").mkdir()
    stale = tmp_path / "curves" / "table1-E-10min.svg"
    other = tmp_path / "curves" / "cluttered-TC-10min.svg"
    stale.write_text("old")
    other.write_text("another table's")
    write_figures(tmp_path, "table1", table, record)
    assert (tmp_path / "curves" / "table1-R-10min.svg").read_text() == made["table1-R-10min.svg"][2]
    assert not stale.exists() and other.read_text() == "another table's"


def test_render_draws_the_figures_again_from_the_records(tmp_path, capsys):
    entry = {
        "column": "TC",
        "model": "fcn",
        "seed": 0,
        "budget": "30 min",
        "curve": [[50_000, 40.0], [100_000, 30.0]],
        "images_seen": 100_000,
        **{"schedule": "cosine", "config": "c", "run_dir": "r", "params": 10},
        **{"test_error": 31.0, "val_error": 30.0, "epochs": 2, "best_epoch": 2},
        **{"train_seconds": 6.0, "wall_seconds": 6.0, "hardware": "cpu", "command": "x"},
    }
    results = tmp_path / "results"
    results.mkdir()
    (results / "cluttered.json").write_text(json.dumps({"runs": [entry]}))
    stale = results / "curves" / "cluttered-TC-10min.svg"
    stale.parent.mkdir()
    stale.write_text("a figure no record makes")
    argv = ["reproduce", "render", "--results-dir", str(results)]
    assert main([*argv, "--results-md", str(tmp_path / "RESULTS.md")]) == 0
    figure = results / "curves" / "cluttered-TC-30min.svg"
    assert ET.parse(figure).getroot().find(f"{SVG}polyline") is not None
    assert not stale.exists()
