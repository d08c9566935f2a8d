"""Training helpers against drift: ``param_groups`` and ``localization_parameters``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchstn import (
    InvalidInputError,
    ParallelTransformers,
    SequentialTransformers,
    SpatialTransformer,
    localization_parameters,
    param_groups,
)


def _model() -> nn.Module:
    return nn.Sequential(
        SpatialTransformer((1, 8, 8)), nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 3)
    )


def _ids(params: list) -> list[int]:
    return [id(p) for p in params]


def _assert_partition(model: nn.Module, groups: list[dict]) -> None:
    """Every parameter of ``model`` in exactly one group."""
    seen = [i for g in groups for i in _ids(list(g["params"]))]
    assert len(seen) == len(set(seen))
    assert set(seen) == set(_ids(list(model.parameters())))


class TestParamGroups:
    def test_localization_at_a_scaled_lr(self) -> None:
        model = _model()
        groups = param_groups(model, lr=0.02, loc_lr_scale=0.25)
        assert [g["lr"] for g in groups] == [0.02, pytest.approx(0.005)]
        st = model[0]
        assert set(_ids(groups[1]["params"])) == set(_ids(list(st.parameters())))
        assert set(_ids(groups[0]["params"])) == set(
            _ids(list(model[2].parameters()) + list(model[4].parameters()))
        )
        _assert_partition(model, groups)

    def test_default_scale_is_a_tenth(self) -> None:
        groups = param_groups(_model(), lr=0.01)
        assert groups[1]["lr"] == pytest.approx(0.001)

    def test_options_go_to_both_groups(self) -> None:
        groups = param_groups(_model(), lr=0.01, weight_decay=1e-4, momentum=0.9)
        assert all(g["weight_decay"] == 1e-4 and g["momentum"] == 0.9 for g in groups)

    @pytest.mark.parametrize(
        "model",
        [
            SpatialTransformer((1, 8, 8)),
            ParallelTransformers.replicate(3, (1, 8, 8)),
            nn.Sequential(
                SequentialTransformers(
                    SpatialTransformer((1, 24, 24), out_size=(12, 12)),
                    SpatialTransformer((1, 12, 12)),
                ),
                nn.Flatten(),
                nn.Linear(144, 2),
            ),
            nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
        ],
        ids=["transformer", "parallel", "nested", "no-transformer"],
    )
    def test_covers_every_parameter_exactly_once(self, model: nn.Module) -> None:
        groups = param_groups(model, lr=0.1)
        _assert_partition(model, groups)
        loc = set(_ids(localization_parameters(model)))
        for g in groups:
            ids = set(_ids(g["params"]))
            assert ids <= loc if g["lr"] != 0.1 else not (ids & loc)

    def test_shared_transformer_is_counted_once(self) -> None:
        st = SpatialTransformer((1, 8, 8))
        model = nn.Sequential(st, st)
        groups = param_groups(model, lr=0.1)
        _assert_partition(model, groups)
        assert len(localization_parameters(model)) == len(list(st.parameters()))

    def test_an_optimizer_accepts_the_groups_and_steps(self) -> None:
        model = _model()
        opt = torch.optim.SGD(param_groups(model, lr=0.1, loc_lr_scale=0.5), lr=0.1)
        head = model[0].head
        before_bias, before_last = head.bias.detach().clone(), model[4].bias.detach().clone()
        x = torch.rand(4, 1, 8, 8)
        nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
        grad_bias, grad_last = head.bias.grad.clone(), model[4].bias.grad.clone()  # type: ignore[union-attr]
        opt.step()
        torch.testing.assert_close(head.bias.detach(), before_bias - 0.05 * grad_bias)
        torch.testing.assert_close(model[4].bias.detach(), before_last - 0.1 * grad_last)

    @pytest.mark.parametrize(
        ("lr", "scale"),
        [
            (0.0, 0.1),
            (-0.1, 0.1),
            (0.1, 0.0),
            (0.1, -1.0),
            (float("nan"), 0.1),
            (0.1, float("inf")),
            ("0.1", 0.1),
        ],
    )
    def test_exceptions(self, lr: object, scale: object) -> None:
        with pytest.raises(InvalidInputError, match="lr"):
            param_groups(_model(), lr=lr, loc_lr_scale=scale)  # type: ignore[arg-type]


class TestLocalizationParameters:
    def test_includes_localization_net_and_head(self) -> None:
        st = SpatialTransformer((1, 8, 8))
        params = localization_parameters(nn.Sequential(st, nn.Linear(8, 2)))
        assert set(_ids(params)) == set(
            _ids(list(st.localization.parameters()) + list(st.head.parameters()))
        )

    def test_empty_without_transformers(self) -> None:
        assert localization_parameters(nn.Linear(3, 3)) == []
