"""Shared fixtures of the test suite: per-test seeding, common parameters, hypothesis profile.

Tests marked ``slow`` are skipped unless a marker expression is given (``pytest -m slow`` runs
them, ``pytest -m "slow or not slow"`` runs everything), as the marker's description promises.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "torchstn",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("torchstn"), max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "torchstn"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("-m"):
        return
    skip = pytest.mark.skip(reason="slow test: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same random state, whatever ran before it."""
    torch.manual_seed(0)


@pytest.fixture(params=[False, True], ids=["edges", "centres"])
def align_corners(request: pytest.FixtureRequest) -> bool:
    """Both ``grid_sample`` conventions: -1/1 at the border pixels' edges, or at their centres."""
    return bool(request.param)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)
