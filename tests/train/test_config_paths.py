"""The experiment configs ship inside the package: ``--config NAME``, ``--config
table1/rts/st_cnn_affine`` and the old ``configs/...yaml`` paths work from any folder."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

import pytest

from torchstn.errors import ConfigError
from torchstn.train import config_from_dict, load_config
from torchstn.train.config import config_names, default_config_dir, find_config

PACKAGE = Path(__file__).resolve().parents[2] / "torchstn"


def test_the_configs_live_in_the_package():
    assert default_config_dir() == PACKAGE / "configs"
    assert {"demo", "table1/rts/st_cnn_affine", "colocalization/tc"} <= set(config_names())
    assert len(config_names()) >= 40


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib")
def test_package_data_covers_every_config():
    """pyproject.toml's package-data globs (what a wheel or an sdist install holds) match every
    file of torchstn/configs."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["torchstn"]
    shipped = {f for p in patterns for f in glob.glob(p, root_dir=PACKAGE, recursive=True)}
    files = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "configs").rglob("*.yaml")}
    assert files and files <= shipped


@pytest.mark.parametrize(
    "name",
    [
        "demo",
        "demo.yaml",
        "table1/rts/st_cnn_affine",
        "table1/rts/st_cnn_affine.yaml",
        "configs/table1/rts/st_cnn_affine.yaml",  # as RESULTS.md and results/*.json record them
        "configs/table1/rts/st_cnn_affine",
    ],
)
def test_names_and_old_paths_work_from_any_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: an installed package's situation
    stem = name.removeprefix("configs/").removesuffix(".yaml")
    assert find_config(name) == PACKAGE / "configs" / f"{stem}.yaml"
    values = load_config(name)
    assert config_from_dict(values).model.name


def test_a_file_that_exists_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    mine = tmp_path / "configs" / "demo.yaml"
    mine.write_text("seed: 7\n")
    assert load_config("configs/demo.yaml") == {"seed": 7}
    assert load_config(mine) == {"seed": 7}
    assert load_config("demo")["seed"] == 0  # a name without the folder: the packaged one


def test_unknown_names_fail_in_one_line_with_suggestions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="did you mean table1/rts/st_cnn_affine") as info:
        load_config("table1/rts/st_cnn_afine")
    assert "\n" not in str(info.value) and "config file not found" in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config("../configs/demo")  # no way out of the config folder
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_train_cli_takes_a_packaged_name(tmp_path, monkeypatch):
    from torchstn.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "table1/r/fcn", "--out", "run", "--epochs", "1", "--no-progress"]
    tiny = ["data.train_size=64", "data.val_size=32", "data.test_size=32", "optim.batch_size=32"]
    assert main([*argv, *(a for t in tiny for a in ("--set", t)), "--device", "cpu"]) == 0
    assert (tmp_path / "run" / "result.json").is_file()
