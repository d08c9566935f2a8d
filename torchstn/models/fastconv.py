"""A convolution with one input channel whose input gradient is cheap on the CPU.

The first layer of a classifier behind a spatial transformer (the ST-CNN's 9x9, 1 -> 32
convolution) needs the gradient with respect to its *input*: it flows back through the sampler
to the localisation net. For one input channel, PyTorch's CPU backward (oneDNN's backward-data
with a single output channel) runs far below the machine's arithmetic rate: it took about 70 ms of
a 250 ms ST-CNN step at batch 128 on cluttered 60x60. The same gradient is a matrix product (the
kernel's ``k x k`` taps against the output channels, ``(k^2, C) @ (C, B H W)``) followed by
``k^2`` shifted additions: about half the time, the same numbers to float rounding (tested).
The forward pass and the weight and bias gradients stay PyTorch's own.

:class:`InputGradConv2d` is an :class:`torch.nn.Conv2d` (same parameters, same ``state_dict``)
that takes this path when it applies (one input channel, stride 1, dilation 1, odd square kernel
with 'same' zero padding, a float32 or float64 input that needs a gradient, outside autocast, not
while tracing, scripting or compiling) and is a plain ``Conv2d`` otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .._checks import is_scripting_or_tracing

__all__ = ["InputGradConv2d"]


def single_channel_input_grad(grad: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to the ``(B, 1, H, W)`` input of a stride-1 'same' convolution
    with ``weight`` ``(C, 1, k, k)`` (odd ``k``, zero padding ``k // 2``), given the output's
    gradient ``grad`` ``(B, C, H, W)``."""
    b, c, h, w = grad.shape
    k = weight.shape[-1]
    pad = k // 2
    # taps[t, b, i, j] = sum_c weight[c, t] grad[b, c, i, j]: one matrix product
    flat = grad.transpose(0, 1).reshape(c, b * h * w)
    taps = (weight.reshape(c, k * k).t() @ flat).view(k * k, b, h, w)
    out = torch.zeros(b, h, w, dtype=grad.dtype, device=grad.device)
    # output (i, j) read input (i + dy, j + dx) with tap (dy + pad, dx + pad): send it back
    # there, keeping what lands inside the image (the padding's share is dropped)
    for ky in range(k):
        dy = ky - pad
        y0, y1 = max(0, -dy), min(h, h - dy)  # output rows whose input row is inside
        for kx in range(k):
            dx = kx - pad
            x0, x1 = max(0, -dx), min(w, w - dx)
            if y1 > y0 and x1 > x0:  # (a kernel wider than the image has taps outside it)
                out[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx] += taps[ky * k + kx, :, y0:y1, x0:x1]
    return out.unsqueeze(1)


class _InputGradConv(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        grad = grad.contiguous()
        grad_w = grad_b = None
        if need_w or need_b:
            pad = weight.shape[-1] // 2
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                [1, 1],
                [pad, pad],
                [1, 1],
                False,
                [0, 0],
                1,
                [False, bool(need_w), bool(need_b and ctx.has_bias)],
            )
        grad_x = single_channel_input_grad(grad, weight) if need_x else None
        return grad_x, grad_w if need_w else None, grad_b if need_b else None


class InputGradConv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` with a faster input gradient for one input channel (see the
    module docstring); the same layer in every other respect.

    Example:
        >>> conv = InputGradConv2d(1, 4, 5, padding=2)
        >>> x = torch.rand(2, 1, 8, 8, requires_grad=True)
        >>> conv(x).shape
        torch.Size([2, 4, 8, 8])
    """

    def _fast(self, x: torch.Tensor) -> bool:
        k = self.kernel_size
        return (
            self.in_channels == 1
            and self.groups == 1
            and k[0] == k[1]
            and k[0] % 2 == 1
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding == (k[0] // 2, k[1] // 2)
            and self.padding_mode == "zeros"
            and x.dim() == 4
            and x.requires_grad
            and torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled("cpu")
            and not is_scripting_or_tracing()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return _InputGradConv.apply(x, self.weight, self.bias)  # type: ignore[no-any-return]
        return super().forward(x)
