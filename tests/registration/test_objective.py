"""The registration objective: its loss and scores against direct computation, its settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchstn.errors import ConfigError
from torchstn.fields import integrate, jacobian_determinant, warp, warp_labels
from torchstn.fields.losses import ncc_loss
from torchstn.registration import (
    Pairs,
    PairSplit,
    RegistrationObjective,
    RegistrationOptions,
    mean_dice,
    registration_loss,
    registration_options,
    registration_scores,
)
from torchstn.train import EvalSettings, config_from_dict
from torchstn.train.distributed import World

from .conftest import ShiftNet


def _pair(seed: int = 0, size: int = 12):
    g = torch.Generator().manual_seed(seed)
    moving = torch.rand(3, 1, size, size, generator=g)
    fixed = torch.rand(3, 1, size, size, generator=g)
    v = 0.8 * torch.randn(3, 2, size, size, generator=g)
    u = integrate(v)
    return moving, fixed, v, u


def test_mse_and_diffusion_direct():
    moving, fixed, v, u = _pair()
    warped = warp(moving, u)
    t = registration_loss(warped, fixed, u, v, RegistrationOptions(reg_weight=0.5))
    sim = ((warped - fixed) ** 2).mean()
    dx = (v[..., :, 1:] - v[..., :, :-1]).pow(2).mean()
    dy = (v[..., 1:, :] - v[..., :-1, :]).pow(2).mean()
    torch.testing.assert_close(t.similarity, sim)
    torch.testing.assert_close(t.regulariser, (dx + dy) / 2)
    torch.testing.assert_close(t.total, sim + 0.5 * (dx + dy) / 2)
    assert float(t.dice) == 0


def test_global_ncc_is_one_minus_pearson_and_lncc_the_windowed_loss():
    moving, fixed, v, u = _pair(1)
    t = registration_loss(moving, fixed, u, v, RegistrationOptions(similarity="ncc", reg_weight=0))
    r = [
        torch.corrcoef(torch.stack((moving[i].flatten(), fixed[i].flatten())))[0, 1]
        for i in range(3)
    ]
    torch.testing.assert_close(t.similarity, 1 - torch.stack(r).mean(), atol=1e-4, rtol=0)
    o = RegistrationOptions(similarity="lncc", window=5, reg_weight=0)
    local = registration_loss(moving, fixed, u, v, o).similarity
    torch.testing.assert_close(local, ncc_loss(moving, fixed, window=5))


def test_bending_of_a_quadratic_field_and_no_regulariser_for_a_matrix():
    _y, x = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    v = torch.stack((0.5 * x**2, torch.zeros_like(x)))[None]  # d_xx = 1 for channel 0
    o = RegistrationOptions(regulariser="bending", reg_weight=1.0)
    img = torch.rand(1, 1, 6, 7)
    t = registration_loss(img, img, v, v, o)
    torch.testing.assert_close(t.regulariser, torch.tensor(0.5))  # (1 + 0) / 2 channels
    affine = torch.randn(1, 6)  # a matrix family's params: nothing to smooth
    assert float(registration_loss(img, img, v, affine, o).regulariser) == 0


def test_soft_dice_term_of_the_warped_one_hot_labels():
    g = torch.Generator().manual_seed(2)
    ml = torch.randint(0, 3, (2, 1, 9, 9), generator=g)
    fl = torch.randint(0, 3, (2, 1, 9, 9), generator=g)
    u = 0.7 * torch.randn(2, 2, 9, 9, generator=g)
    img = torch.rand(2, 1, 9, 9, generator=g)
    o = RegistrationOptions(dice_weight=2.0, reg_weight=0.0)
    t = registration_loss(img, img, u, u, o, moving_labels=ml, fixed_labels=fl, num_labels=3)
    p = warp(F.one_hot(ml[:, 0], 3).movedim(-1, 1).float(), u)[:, 1:]
    q = F.one_hot(fl[:, 0], 3).movedim(-1, 1).float()[:, 1:]
    inter, total = (p * q).sum((2, 3)), p.sum((2, 3)) + q.sum((2, 3))
    want = 1 - ((2 * inter + 1e-5) / (total + 1e-5)).mean()
    torch.testing.assert_close(t.dice, want)
    torch.testing.assert_close(t.total, t.similarity + 2.0 * want)


def test_loss_is_differentiable_for_the_model():
    moving, fixed, _, _ = _pair(3)
    net = ShiftNet((0.3, -0.2))
    warped, u, v = net(moving, fixed)
    registration_loss(warped, fixed, u, v, RegistrationOptions()).total.backward()
    assert net.v.grad is not None and bool(net.v.grad.abs().sum() > 0)


def _split(shift: float) -> PairSplit:
    """Label maps of a square and the square moved by ``shift`` columns (fixed = moving read
    ``shift`` columns to the right: a ShiftNet with velocity ``shift`` registers them)."""
    ml = torch.zeros(4, 1, 12, 12, dtype=torch.uint8)
    ml[:, :, 3:8, 4:9] = 1
    ml[:, :, 5:7, 5:7] = 2
    fl = torch.roll(ml, shifts=-int(shift), dims=3)
    moving, fixed = ml.float() / 2, fl.float() / 2
    return PairSplit(
        Pairs(moving, fixed, torch.arange(4), ml, fl, torch.zeros(4, dtype=torch.int64), 3)
    )


def test_scores_against_direct_computation():
    split = _split(2)
    o = RegistrationOptions()
    for shift, dice_after in ((0.0, None), (2.0, 1.0)):
        scores = registration_scores(ShiftNet((shift, 0.0)), split, EvalSettings(batch_size=3), o)
        p = split.pairs
        before = mean_dice(p.moving_labels, p.fixed_labels, 3).mean()
        assert scores["dice_before"] == pytest.approx(float(before))
        torch.testing.assert_close(
            torch.tensor(scores["similarity_before"]), ((p.moving - p.fixed) ** 2).mean()
        )
        if dice_after is None:
            assert scores["dice"] == pytest.approx(scores["dice_before"])
        else:
            assert scores["dice"] == pytest.approx(dice_after) and scores["similarity"] < 1e-10
        assert scores["error"] == pytest.approx(100 * (1 - scores["dice"]))
        assert scores["folded"] == 0 and scores["jacobian_std"] == pytest.approx(0, abs=1e-6)
        assert scores["ms_per_pair"] > 0 and scores["skipped"] == 0
    # a folding field: its folded share and the Jacobian's spread, pair by pair
    u = torch.zeros(4, 2, 12, 12)
    u[:, 0, :, 6] = 3.0

    class Fixed(torch.nn.Module):
        def forward(self, moving, fixed):
            return warp(moving, u[: len(moving)]), u[: len(moving)], u[: len(moving)]

    scores = registration_scores(Fixed(), split, EvalSettings(batch_size=4), o)
    det = jacobian_determinant(u)
    assert scores["folded"] == pytest.approx(100 * float((det <= 0).float().mean()))
    assert scores["jacobian_std"] == pytest.approx(float(det.flatten(1).std(1).mean()), rel=1e-5)


def test_without_labels_the_error_is_the_similarity():
    split = _split(1)
    split.pairs.moving_labels = split.pairs.fixed_labels = None
    scores = registration_scores(ShiftNet(), split, EvalSettings(), RegistrationOptions())
    assert "dice" not in scores and scores["error"] == scores["similarity"]


def _cfg(**options) -> dict:
    return {
        "objective": {"name": "registration", "options": options},
        "data": {"task": "mnist_pairs", "train_size": 8, "val_size": 4, "test_size": 4},
        "optim": {"batch_size": 4},
    }


def test_objective_loss_and_count():
    obj = RegistrationObjective(config_from_dict(_cfg(dice_weight=1.0)))
    data = obj.build_data()
    assert obj.num_labels == 2 and data.in_shape == (1, 32, 32)
    (batch,) = data.train(0).batches([[0, 1, 2, 3]])
    net = ShiftNet((0.5, 0.0))
    loss, folded = obj.loss(net, batch.x, batch.y, epoch=0, step=0, world=World())
    moving, fixed = batch.x[:, :1], batch.x[:, 1:2]
    ml, fl = batch.x[:, 2:3].long(), batch.x[:, 3:4].long()
    warped, u, v = net(moving, fixed)
    want = registration_loss(
        warped, fixed, u, v, obj.options, moving_labels=ml, fixed_labels=fl, num_labels=2
    ).total
    torch.testing.assert_close(loss, want)
    assert folded.shape == (4,) and obj.count(folded, batch.y) == 0
    with pytest.raises(ConfigError, match="returns \\(warped, field, params\\)"):
        obj.loss(torch.nn.Identity(), batch.x, batch.y, epoch=0, step=0, world=World())


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"similarity": "ssd"}, "similarity"),
        ({"window": 4}, "window"),
        ({"regulariser": "l1"}, "regulariser"),
        ({"reg_weight": -1}, "reg_weight"),
        ({"mode": "groupwise"}, "mode"),
        ({"lambda": 1}, "lambda"),
    ],
)
def test_bad_options(values, match):
    with pytest.raises(ConfigError, match=match):
        registration_options(values)


def test_bad_data_settings():
    bad = _cfg()
    bad["data"]["task"] = "rotated"
    with pytest.raises(ConfigError, match=r"data\.task"):
        RegistrationObjective(config_from_dict(bad))
    bad = _cfg()
    bad["data"]["options"] = {"size": 20}
    with pytest.raises(ConfigError, match=r"data\.options\.size"):
        RegistrationObjective(config_from_dict(bad)).build_data()


@pytest.mark.parametrize("method", ["linear", "nearest"])
def test_scores_warp_the_labels_as_the_options_say(method):
    split = _split(1)
    p = split.pairs
    net = ShiftNet((1.5, 0.5))
    o = RegistrationOptions(label_warp=method)
    scores = registration_scores(net, split, EvalSettings(), o)
    _, u, _ = net(p.moving, p.fixed)
    moved = warp_labels(p.moving_labels, u, method=method, num_classes=3)
    assert scores["dice"] == pytest.approx(float(mean_dice(moved, p.fixed_labels, 3).mean()))
