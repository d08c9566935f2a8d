"""InputGradConv2d: the cheaper input gradient of a one-channel convolution equals PyTorch's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchstn.models import create_model
from torchstn.models.fastconv import InputGradConv2d, _InputGradConv


def _pair(k: int, bias: bool, out_channels: int = 5) -> tuple[InputGradConv2d, nn.Conv2d]:
    ours = InputGradConv2d(1, out_channels, k, padding=k // 2, bias=bias).double()
    ref = nn.Conv2d(1, out_channels, k, padding=k // 2, bias=bias).double()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("k", [1, 3, 5, 9])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [(7, 6), (3, 11), (12, 12)])
def test_output_and_every_gradient_match_conv2d(k: int, bias: bool, size: tuple[int, int]) -> None:
    ours, ref = _pair(k, bias)
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(3, 1, *size, generator=gen, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    assert ours._fast(xa)  # the hand-written path ran
    upstream = torch.randn(ya.shape, generator=gen, dtype=torch.float64)
    ya.backward(upstream)
    yb.backward(upstream)
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-12)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=0, atol=1e-12)
    if bias:
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, rtol=0, atol=1e-12)


def test_channels_last_float32_input() -> None:
    ours, ref = _pair(9, True, out_channels=8)
    ours, ref = ours.float(), ref.float()
    x = torch.randn(4, 1, 15, 15).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(xa).square().sum().backward()
    ref(xb).square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-3)


def test_gradcheck() -> None:
    ours, _ = _pair(3, True, out_channels=2)
    x = torch.randn(2, 1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: _InputGradConv.apply(x, w, b), (x, ours.weight, ours.bias)
    )


@pytest.mark.parametrize(
    "layer, needs_grad",
    [
        (InputGradConv2d(2, 4, 3, padding=1), True),  # two input channels
        (InputGradConv2d(1, 4, 3, padding=0), True),  # not 'same'
        (InputGradConv2d(1, 4, 3, padding=1, stride=2), True),
        (InputGradConv2d(1, 4, 4, padding=2), True),  # even kernel
        (InputGradConv2d(1, 4, 3, padding=1), False),  # the input needs no gradient
    ],
)
def test_falls_back_to_conv2d_where_it_does_not_apply(layer: nn.Conv2d, needs_grad: bool) -> None:
    x = torch.randn(2, layer.in_channels, 8, 8, requires_grad=needs_grad)
    assert not layer._fast(x)
    assert torch.equal(layer(x), nn.Conv2d.forward(layer, x))


def test_the_cnn_keeps_its_state_dict_keys() -> None:
    """Old checkpoints load: the layer swap and the pooling order leave the keys alone."""
    model = create_model("st_cnn_affine", (1, 28, 28), 10)
    keys = [k for k in model.state_dict() if k.startswith("classifier.")]
    assert keys == [
        "classifier.0.weight",
        "classifier.0.bias",
        "classifier.3.weight",
        "classifier.3.bias",
        "classifier.7.weight",
        "classifier.7.bias",
    ]
