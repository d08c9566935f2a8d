"""The co-localisation objective's parts: its data, batch order, triplet net and gradient routing."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch

from torchstn.colocalization import (
    DistinctBatches,
    TripletNet,
    class_images,
    random_crop_params,
)
from torchstn.errors import InvalidInputError
from torchstn.models import create_model
from torchstn.train import EvalSettings, Trainer, config_from_dict


def test_class_images():
    s = class_images(4, 5, seed=1, clutter=True)
    assert s.x.shape == (5, 1, 84, 84) and s.y.tolist() == [4] * 5
    torch.testing.assert_close(s.boxes[:, 2:] - s.boxes[:, :2], torch.full((5, 2), 28.0))
    plain = class_images(4, 5, seed=1)
    assert torch.equal(plain.boxes, s.boxes) and not torch.equal(plain.x, s.x)  # clutter added
    with pytest.raises(InvalidInputError, match="digit"):
        class_images(10, 5)


def test_random_crops_stay_inside():
    unit = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    params = random_crop_params(torch.linspace(0.2, 1.0, 50), unit)
    assert bool((params[:, 1:].abs() <= (1 - params[:, :1]) + 1e-6).all())
    corners = random_crop_params(torch.full((2,), 0.25), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(corners[:, 1:], torch.tensor([[-0.75, -0.75], [0.75, 0.75]]))


class TestDistinctBatches:
    def test_distinct_images_seeded_per_step(self):
        order = list(DistinctBatches(10, 8, num_batches=5, seed=0, epoch=0))
        assert len(order) == 5 and all(len(set(b)) == 8 for b in order)
        assert order == list(DistinctBatches(10, 8, 5, 0, 0))
        assert order != list(DistinctBatches(10, 8, 5, 0, 1))  # another epoch
        assert order != list(DistinctBatches(10, 8, 5, 1, 0))  # another seed
        assert list(DistinctBatches(10, 8, 5, 0, 0, start=3)) == order[3:]  # resumed at step 3

    def test_ranks_share_every_batch(self):
        one = list(DistinctBatches(10, 8, 3, 0, 0))
        two = [list(DistinctBatches(10, 8, 3, 0, 0, rank=r, world_size=2)) for r in (0, 1)]
        assert [a + b for a, b in zip(*two)] == one

    def test_refuses_what_it_cannot_draw(self):
        with pytest.raises(Exception, match="distinct"):
            DistinctBatches(4, 8, 1, 0, 0)


class TestTripletNet:
    def _model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        model = create_model("st_attention_encoder", (1, 84, 84), 8, loc_channels=(4, 4, 4))
        with torch.no_grad():  # a score map that is not flat: the window moves with the image
            model.transformer.localization.score.weight.normal_()
        return model

    def test_losses_pair_the_crops_two_by_two(self):
        model = self._model()
        x, unit = torch.rand(4, 1, 84, 84), torch.rand(4, 2)
        losses = TripletNet(model, margin=1.0)(x, unit)
        crops, params = model.crop(x)
        a = model.embed(crops)
        r = model.embed(
            model.transformer.transform_input(x, random_crop_params(params[:, 0], unit))
        )
        p = a[[1, 0, 3, 2]]
        expected = ((a - p).pow(2).sum(1) - (a - r).pow(2).sum(1) + 1.0).clamp_min(0)
        torch.testing.assert_close(losses, expected)
        literal = TripletNet(model, margin=1.0, positive_grad=True)(x, unit)
        torch.testing.assert_close(literal, expected)  # the same values, another gradient

    def test_routed_gradient_reaches_the_transformer_only_through_the_random_crop_term(self):
        model = self._model()
        x, unit = torch.rand(4, 1, 84, 84), torch.rand(4, 2)
        TripletNet(model, margin=100.0)(x, unit).sum().backward()  # every hinge active
        routed = [p.grad.clone() for p in model.transformer.parameters()]
        model.zero_grad()
        crops, params = model.crop(x)
        r = model.embed(
            model.transformer.transform_input(x, random_crop_params(params[:, 0].detach(), unit))
        )
        (-(model.embed(crops) - r).pow(2).sum()).backward()  # the negative term alone
        for got, want in zip(routed, (p.grad for p in model.transformer.parameters())):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def _train(values: dict) -> Trainer:
    trainer = Trainer(config_from_dict(values), tempfile.mkdtemp(), progress=False)
    trainer.fit()
    return trainer


def test_same_seed_same_weights(tiny):
    a, b = _train(tiny), _train(tiny)
    other = copy.deepcopy(tiny)
    other["seed"] = 1
    c = _train(other)
    sa, sb, sc = (t.model.state_dict() for t in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]

    assert strip(a.history) == strip(b.history)


def test_routing_localises_where_the_literal_gradient_does_not():
    """50 steps on 64 plain (T) images of digit 3 from MNIST's training split, from one
    initialisation: with the routed gradient the windows find the digits; with the literal one
    the positive term holds every window in the centre of the canvas (near where all windows
    start, where two crops look most alike), which localises only the digits that lie there."""
    values = {
        "seed": 0,
        "device": "cpu",
        "objective": {
            "name": "colocalization",
            "options": {"digit": 3, "num_images": 64, "images": "train", "val_images": 8},
        },
        "data": {"task": "colocalization", "train_size": 1600},  # 50 steps of 32
        "model": {"name": "st_attention_encoder"},
        "optim": {"name": "adam", "lr": 0.003, "loc_lr_scale": 1 / 3, "batch_size": 32},
        "run": {"epochs": 1, "eval_batch_size": 64, "num_threads": 1},
    }
    routed = _train(values)
    values["objective"]["options"]["transformer_positive_grad"] = True
    literal = _train(values)
    images = routed.data.eval_split("test")
    settings = EvalSettings(batch_size=64, device=routed.device)
    scores = [routed.objective.evaluate(t.model, images, settings) for t in (routed, literal)]
    start = routed.objective.evaluate(
        create_model("st_attention_encoder", (1, 84, 84), 32), images, settings
    )
    assert start["localised"] < 10.0, start  # the centred start window
    assert scores[0]["localised"] >= 80.0 and scores[0]["mean_iou"] > 0.6, scores
    assert scores[1]["localised"] < 20.0 and scores[1]["mean_iou"] < 0.3, scores
    shift = [t.model.localize(images.x)[:, 1:].abs().mean().item() for t in (routed, literal)]
    assert shift[1] < 0.1 < shift[0], shift  # the literal windows stay near the centre


@pytest.mark.slow
@pytest.mark.parametrize(("column", "digit", "least"), [("T", 7, 90.0), ("TC", 7, 50.0)])
def test_shipped_configs_localise(column, digit, least):
    from torchstn.experiments import COLOCALIZATION
    from torchstn.train import load_config
    from torchstn.train.config import default_config_dir

    values = load_config(default_config_dir() / COLOCALIZATION.columns[column])
    values["objective"]["options"]["digit"] = digit
    values["run"]["num_threads"] = 1
    values["device"] = "cpu"
    result = Trainer(config_from_dict(values), tempfile.mkdtemp(), progress=False).fit()
    assert result["test_localised"] >= least, result
