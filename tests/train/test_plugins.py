"""The trainer takes what it runs: objectives found by name or passed in, callbacks, one step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from torchstn.errors import ConfigError
from torchstn.models import create_model
from torchstn.train import (
    Callback,
    Classification,
    EvalSettings,
    Objective,
    Trainer,
    TrainStep,
    config_from_dict,
    evaluate,
    get_objective,
    objective_names,
    register_objective,
)
from torchstn.train.objective import _REGISTRY


class Smoothed(Classification):
    """Classification with label smoothing: an objective of the user's own."""

    name = "test_smoothed"

    def loss(self, net, x, y, *, epoch, step, world):
        logits = net(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=0.5), logits


@pytest.fixture
def smoothed():
    register_objective(Smoothed)
    yield Smoothed
    _REGISTRY.pop(Smoothed.name, None)


def test_a_new_objective_is_one_class_that_registers_itself(tmp_path, tiny_values, smoothed):
    tiny_values["run"]["epochs"] = 1
    plain = Trainer(config_from_dict(tiny_values), tmp_path / "plain", progress=False).fit()
    tiny_values["objective"] = {"name": "test_smoothed"}
    by_name = Trainer(config_from_dict(tiny_values), tmp_path / "named", progress=False)
    assert isinstance(by_name.objective, Smoothed)
    result = by_name.fit()
    assert result["objective"] == "test_smoothed"
    # the smoothed loss differs from cross-entropy from the first step on
    logged = [json.loads(line) for line in (tmp_path / "named" / "metrics.jsonl").open()]
    reference = json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[0])
    assert logged[0]["train_loss"] != pytest.approx(reference["train_loss"], abs=1e-6)
    assert plain["objective"] == "classification"


def test_an_objective_class_can_be_passed_in(tmp_path, tiny_values):
    tiny_values["run"]["epochs"] = 1
    trainer = Trainer(
        config_from_dict(tiny_values), tmp_path / "r", progress=False, objective=Smoothed
    )
    assert isinstance(trainer.objective, Smoothed) and "test_smoothed" not in _REGISTRY
    assert trainer.fit()["test_error"] <= 100


def test_names_are_unique_and_unknown_names_list_the_known(smoothed):
    class Other(Classification):
        name = "test_smoothed"

    with pytest.raises(ConfigError, match="registered already"):
        register_objective(Other)
    register_objective(Smoothed)  # the same class again is no conflict
    with pytest.raises(ConfigError, match="Objective subclass"):
        register_objective(int)  # type: ignore[type-var]
    with pytest.raises(
        # registration joins the list when an earlier test has imported torchstn.fields
        ConfigError,
        match=r"expected classification or colocalization or .*test_smoothed, got 'x'",
    ):
        get_objective(config_from_dict({"objective": {"name": "x"}}))
    assert {"classification", "colocalization", "test_smoothed"} <= set(objective_names())


def test_training_does_not_import_its_plugins():
    """Validating and training a classification run imports nothing of co-localisation; asking
    for it by name finds it through its entry point."""
    code = (
        "import sys\n"
        "from torchstn.train import Trainer, config_from_dict, get_objective\n"
        "get_objective(config_from_dict({}))\n"
        "print(any(m.startswith('torchstn.colocalization') for m in sys.modules))\n"
        "cfg = config_from_dict({'objective': {'name': 'colocalization'},"
        " 'data': {'task': 'colocalization'}, 'model': {'name': 'st_attention_encoder'},"
        " 'optim': {'batch_size': 8}})\n"
        "print(type(get_objective(cfg)).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out == ["False", "ColocalizationObjective"]


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_fit_start(self, trainer):
        self.calls.append(("start", trainer.epoch))

    def on_epoch_end(self, trainer, record):
        self.calls.append(("epoch", record["epoch"], record.get("partial", False)))

    def on_fit_end(self, trainer, result):
        self.calls.append(("end", result["best_epoch"]))


def test_callbacks_see_every_point_of_a_run_in_order(tmp_path, tiny_values):
    first, second = Recorder(), Recorder()
    trainer = Trainer(
        config_from_dict(tiny_values), tmp_path / "r", progress=False, callbacks=[first, second]
    )
    result = trainer.fit()
    expected = [
        ("start", 0),
        ("epoch", 1, False),
        ("epoch", 2, False),
        ("end", result["best_epoch"]),
    ]
    assert first.calls == expected and second.calls == expected


def test_the_public_step_is_the_trainers_step(tiny_values):
    """TrainStep on the trainer's first batch gives the trainer's first update, bit for bit."""
    cfg = config_from_dict(tiny_values)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, (1, 28, 28), 10, **cfg.model.options)
    twin = create_model(cfg.model.name, (1, 28, 28), 10, **cfg.model.options)
    twin.load_state_dict(model.state_dict())
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    objective = get_objective(cfg)
    step = TrainStep(model, objective, torch.optim.SGD(model.parameters(), lr=0.1))
    loss = step(x, y)
    # by hand: cross-entropy, backward, an SGD step
    expected = F.cross_entropy(twin(x), y)
    expected.backward()
    with torch.no_grad():
        for p in twin.parameters():
            p -= 0.1 * p.grad
    assert loss == pytest.approx(float(expected.detach()), abs=0)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    bad = TrainStep(model, objective, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(Exception, match="loss became nan"):
        bad(torch.full_like(x, float("nan")), y)


def test_eval_settings_of_a_run(tiny_values):
    cfg = config_from_dict(tiny_values)
    settings = EvalSettings.of_run(cfg, torch.device("cpu"))
    assert (settings.batch_size, settings.precision, settings.skip_bad) == (64, "fp32", False)


def test_objective_base_is_abstract():
    objective = Objective(config_from_dict({}))
    with pytest.raises(NotImplementedError):
        objective.count(torch.zeros(1), torch.zeros(1))
    assert evaluate is not None  # the classification scorer is public


OBJECTIVE_PLUGIN = """
import torch.nn.functional as F
from torchstn.train import Classification, register_objective

@register_objective
class Hinge(Classification):
    name = "my_hinge"

    def loss(self, net, x, y, *, epoch, step, world):
        logits = net(x)
        return F.multi_margin_loss(logits.float(), y), logits
"""


def test_an_objective_of_ones_own_trains_through_the_command_line(tmp_path, tiny_values):
    import os

    import yaml

    (tmp_path / "my_objectives.py").write_text(OBJECTIVE_PLUGIN)
    tiny_values["objective"] = {"name": "my_hinge"}
    tiny_values["run"]["epochs"] = 1
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(tiny_values))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, "-m", "torchstn", "train", "--config", "cfg.yaml", "--no-progress"]
    run = subprocess.run(
        [*argv, "--out", "run", "--import", "my_objectives.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["objective"] == "my_hinge"
    # a multi-margin loss starts near 1 - (the margin of random logits), not near ln(10)
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_loss"] < 1.5
    missing = subprocess.run(
        [*argv, "--out", "other"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "'my_hinge'" in missing.stderr, missing.stderr
    assert "register_objective and pass --import" in missing.stderr
