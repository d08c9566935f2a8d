"""``torchstn demo``: a fixed amount of training (not minutes), and an --out that is only ever
emptied when it is a previous demo run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from torchstn.cli import main
from torchstn.cli.demo import clear_previous_demo
from torchstn.errors import InvalidInputError
from torchstn.train import config_from_dict, load_config


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_the_packaged_demo_is_budgeted_in_epochs():
    values = load_config("demo")
    cfg = config_from_dict(values)
    assert cfg.run.minutes is None and cfg.run.epochs >= 4
    assert cfg.data.task == "cluttered" and cfg.model.name.startswith("st_")
    assert cfg.run.epochs * cfg.data.train_size <= 200_000  # minutes on a laptop CPU, not hours


def test_a_home_folder_is_refused_and_untouched(tmp_path, capsys):
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / ".bashrc").write_text("alias ll='ls -l'\n")
    (home / "docs" / "thesis.tex").write_text("\\begin{document}")
    (home / "config.json").write_text("{}")  # a name a demo writes too: still not a demo run
    before = _tree(home)
    assert main(["demo", "--out", str(home), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a previous demo run" in err and str(home) in err
    assert _tree(home) == before


@pytest.mark.parametrize(
    "files",
    [
        ["checkpoint.pt", "config.json", "metrics.jsonl", "result.json"],  # a train run
        ["demo.json", "stn.png", "notes.txt"],  # a demo run with the user's notes in it
    ],
)
def test_other_folders_are_refused(tmp_path, files):
    for name in files:
        (tmp_path / name).write_text("x")
    with pytest.raises(InvalidInputError, match="not a previous demo run"):
        clear_previous_demo(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)


def test_a_file_is_refused(tmp_path):
    target = tmp_path / "f"
    target.write_text("keep")
    with pytest.raises(InvalidInputError, match="not a folder"):
        clear_previous_demo(target)
    assert target.read_text() == "keep"


def test_previous_demo_runs_are_emptied(tmp_path):
    for names in (
        ["demo.json", "config.json", "checkpoint.pt", ".checkpoint.pt.abc123.tmp", ".lock"],
        ["config.json", "stn.png", "stn_curves.png", "result.json"],  # before the marker
    ):
        for name in names:
            (tmp_path / name).write_text("x")
        clear_previous_demo(tmp_path)
        assert tmp_path.is_dir() and list(tmp_path.iterdir()) == []
    clear_previous_demo(tmp_path / "new")  # nothing there: nothing to do
    assert not (tmp_path / "new").exists()


def test_a_tiny_demo_writes_a_folder_the_next_demo_may_empty(tmp_path, tiny_values, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_values))
    out = tmp_path / "demo"
    argv = ["demo", "--config", str(config), "--out", str(out), "--no-progress", "--epochs", "1"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "for 1 epoch of 192 images" in stdout and "after 1 epoch," in stdout
    assert (out / "stn.png").is_file() and (out / "stn_curves.png").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["run"]["minutes"] is None and saved["run"]["epochs"] == 1  # no time budget
    clear_previous_demo(out)  # what the next demo does first: it recognises its own folder
    assert out.is_dir() and list(out.iterdir()) == []
