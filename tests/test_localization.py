"""Default localisation networks (without their final layer)."""

from __future__ import annotations

import pytest
import torch

from torchstn import ConvLocalization, FCLocalization, InvalidInputError, default_localization
from torchstn.localization import CONV_MIN_SIZE


class TestFCLocalization:
    def test_shapes(self) -> None:
        net = FCLocalization((2, 5, 7), hidden=(16, 8))
        assert net(torch.rand(3, 2, 5, 7)).shape == (3, 8)
        assert net.out_features == 8

    def test_papers_default_is_three_layers_of_32(self) -> None:
        net = FCLocalization((1, 8, 8))
        linears = [m for m in net if isinstance(m, torch.nn.Linear)]
        assert [m.out_features for m in linears] == [32, 32, 32]
        assert linears[0].in_features == 64

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="hidden"):
            FCLocalization((1, 8, 8), hidden=())


class TestConvLocalization:
    @pytest.mark.parametrize("shape", [(1, 60, 60), (3, 28, 28), (1, 21, 33), (2, 42, 42)])
    def test_shapes(self, shape: tuple[int, int, int]) -> None:
        net = ConvLocalization(shape)
        assert net(torch.rand(2, *shape)).shape == (2, 20)
        assert net.out_features == 20

    def test_options(self) -> None:
        net = ConvLocalization((1, 40, 40), channels=(4, 6), hidden=12, downsample=1, kernel_size=3)
        assert net(torch.rand(2, 1, 40, 40)).shape == (2, 12)
        convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
        assert [c.out_channels for c in convs] == [4, 6] and convs[0].kernel_size == (3, 3)

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="in_shape"):
            ConvLocalization((1, 0, 28))


def test_default_localization_switches_at_conv_min_size() -> None:
    assert isinstance(default_localization((1, CONV_MIN_SIZE, CONV_MIN_SIZE)), ConvLocalization)
    assert isinstance(default_localization((1, CONV_MIN_SIZE - 1, 60)), FCLocalization)
