"""The packaged registration configs: valid, their objective and model built (no training)."""

from __future__ import annotations

import pytest

from torchstn.models import create_model
from torchstn.registration import RegistrationObjective
from torchstn.train import config_from_dict, load_config
from torchstn.train.config import config_names

NAMES = [n for n in config_names() if n.startswith("registration/")]


def test_the_table_has_its_configs():
    from torchstn.experiments import get_table

    table = get_table("registration")
    trained = [m for m in table.models if m != "classical"]
    assert {f"{folder}/{m}" for folder in table.columns.values() for m in trained} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_builds(name):
    cfg = config_from_dict(load_config(name))
    objective = RegistrationObjective(cfg)
    assert objective.options.mode in ("atlas", "pairwise")
    size = cfg.data.options["size"]
    spatial = (size,) * (3 if cfg.data.task == "mni152" else 2)
    model = create_model(cfg.model.name, (1, *spatial), 0, **cfg.model.options)
    assert sum(p.numel() for p in model.parameters()) > 0
