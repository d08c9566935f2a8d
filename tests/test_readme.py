"""The README's Python examples run as printed: the module in ten lines and the model of one's
own (whose registration is undone afterwards)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from torchstn.models import create_model, model_names, registry

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_module_example_runs_and_gives_the_shapes_it_states() -> None:
    block = next(b for b in _python_blocks() if "SpatialTransformer(" in b and "loc" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["y"].shape == (8, 1, 30, 30) and scope["params"].shape == (8, 6)
    assert scope["st"].localization is scope["loc"]


def test_the_model_of_ones_own_registers_and_builds() -> None:
    block = next(b for b in _python_blocks() if "register_model" in b)
    name = re.search(r'register_model\("(\w+)"\)', block)
    assert name is not None and name.group(1) not in model_names()
    try:
        exec(compile(block, "README.md", "exec"), {})
        model = create_model(name.group(1), (1, 42, 42), 10)
        assert model(torch.rand(2, 1, 42, 42)).shape == (2, 10)
    finally:
        registry._MODELS.pop(name.group(1), None)
