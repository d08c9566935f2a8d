from __future__ import annotations

import argparse

import pytest

from torchstn import ConfigError
from torchstn.cli.train import resolve_config
from torchstn.train import apply_overrides, config_from_dict, config_to_dict, load_config


class TestConfig:
    def test_defaults_round_trip(self):
        cfg = config_from_dict({})
        assert config_from_dict(config_to_dict(cfg)) == cfg

    @pytest.mark.parametrize(
        "values, match",
        [
            ({"bogus": 1}, "unknown key"),
            ({"optim": {"lrr": 0.1}}, r"optim: unknown key\(s\) lrr"),
            ({"optim": {"lr": -1}}, "optim.lr"),
            ({"optim": {"name": "rmsprop"}}, "optim.name"),
            ({"run": {"epochs": 0}}, "run.epochs"),
            ({"data": {"task": None}}, "give either"),
            ({"device": "tpu"}, "device"),
            ({"model": 3}, "model: expected a mapping"),
        ],
    )
    def test_bad_values(self, values, match):
        with pytest.raises(ConfigError, match=match):
            config_from_dict(values)

    def test_overrides_parse_yaml_scalars(self):
        out = apply_overrides(
            {"optim": {"lr": 0.1}}, ["optim.lr=0.5", "model.options.channels=[2, 3]"]
        )
        assert out == {"optim": {"lr": 0.5}, "model": {"options": {"channels": [2, 3]}}}
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            apply_overrides({}, ["novalue"])

    def test_flags_beat_set_beat_file(self, tiny_config):
        args = argparse.Namespace(
            config=str(tiny_config),
            set=["run.epochs=7", "seed=3"],
            epochs=None,
            minutes=None,
            seed=5,
            device=None,
            model=None,
        )
        cfg = resolve_config(args)
        assert cfg.run.epochs == 7 and cfg.seed == 5 and cfg.data.task == "rotated"

    def test_load_errors(self, tmp_path):
        with pytest.raises(ConfigError, match="not found"):
            load_config(tmp_path / "nope.yaml")
        bad = tmp_path / "bad.yaml"
        bad.write_text("a: [1, 2\n")
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_config(bad)
        listy = tmp_path / "list.yaml"
        listy.write_text("- 1\n")
        with pytest.raises(ConfigError, match="mapping"):
            load_config(listy)
