"""The fused affine warp of images on the CPU, as an autograd function (see :mod:`torchstn.native`)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..functional.sample import Fill
from . import kernels, ops, triton_available, triton_enabled

__all__ = [
    "MODES",
    "PADDINGS",
    "TRITON_DEVICES",
    "affine2d_sample",
    "affine3d_sample",
    "can_fuse",
    "can_fuse_triton",
    "field2d_sample",
    "field3d_sample",
    "field_sample",
    "projective2d_sample",
]

#: the sampler modes the fused kernel has (the others take the unfused path).
MODES = {"bilinear": 0, "nearest": 1}
#: the padding modes, in the kernel's numbering ("fill" is zeros padding of ``x - fill``).
PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}


def _tracing_graph() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` is tracing: the kernels then go into the
    graph as operators (:mod:`torchstn.native.ops`)."""
    return torch.compiler.is_compiling()


def _exporting_onnx() -> bool:
    onnx = sys.modules.get("torch.onnx")  # not imported: no ONNX export runs
    return onnx is not None and bool(onnx.is_in_onnx_export())


def can_fuse(x: torch.Tensor, mode: str, padding_mode: str) -> bool:
    """Whether the fused kernel samples ``x`` (before it is built: its settings only). Eager
    code needs a plain tensor (the kernel reads its memory); while ``torch.compile`` or
    ``torch.export`` traces, the inputs are fake tensors and the kernel goes into the graph as an
    operator. TorchScript (scripting and tracing), ONNX exports and ``torch.func`` transforms
    keep the standard operators (ONNX has no fused kernel: the fused path is a runtime choice,
    not a file format)."""
    return (
        (type(x) is torch.Tensor or (_tracing_graph() and not _exporting_onnx()))
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        # torch.func transforms (vmap over stacked models, grad): the standard operators, whose
        # batching rules they have
        and not torch._C._are_functorch_transforms_active()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.layout == torch.strided
        and x.dim() in (4, 5)
        and math.prod(x.shape[2:]) < 2**31 - 2  # the kernel's offsets are 32-bit
        and (mode in MODES if x.dim() == 4 else mode == "bilinear")  # volumes: trilinear only
        and padding_mode in (*PADDINGS, "fill")
    )


#: the devices whose tensors the Triton kernels warp (with :func:`torchstn.native.use_triton`)
TRITON_DEVICES: tuple[str, ...] = ("cuda",)


def can_fuse_triton(x: torch.Tensor, mode: str, padding_mode: str) -> bool:
    """Whether the Triton kernels warp ``x`` (2-D, float32, on a device of
    :data:`TRITON_DEVICES`; switched on by :class:`torchstn.native.use_triton`)."""
    return (
        triton_enabled()
        and x.device.type in TRITON_DEVICES
        and x.dtype == torch.float32
        and x.layout == torch.strided
        and x.dim() == 4
        and mode in MODES
        and padding_mode in (*PADDINGS, "fill")
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch._C._are_functorch_transforms_active()
        and not _exporting_onnx()
        and triton_available()
    )


class _TritonAffine2d(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        theta: torch.Tensor,
        xs: torch.Tensor,
        ys: torch.Tensor,
        mode: int,
        pad: int,
        align_corners: bool,
        check_finite: bool,
    ) -> torch.Tensor:
        from . import triton_affine  # needs triton (optional): imported where it runs

        ctx.save_for_backward(x, theta, xs, ys)
        ctx.settings = (mode, pad, align_corners)
        return triton_affine.affine2d_forward(x, theta, xs, ys, mode, pad, align_corners)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from . import triton_affine  # needs triton (optional): imported where it runs

        x, theta, xs, ys = ctx.saved_tensors
        mode, pad, align_corners = ctx.settings
        need_x, need_theta = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gtheta = triton_affine.affine2d_backward(
            grad, x, theta, xs, ys, mode, pad, align_corners, need_x, need_theta
        )
        return gx, gtheta, *(None,) * 6


class _Fused(torch.autograd.Function):
    """A fused CPU kernel of :func:`kernels` as an autograd function, for every kernel: its
    forward takes ``(x, second, *axes, *settings[, check_finite])`` (``second``: the matrices
    or the field; ``check_finite`` for the matrix kernels) and its backward ``(grad, x, second,
    *axes, *settings, need_x, need_second)`` and returns both gradients."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, name: str, n_axes: int, checks: bool, x: torch.Tensor, second: torch.Tensor,
        *rest: Any,
    ) -> torch.Tensor:  # fmt: skip
        ext = kernels()
        assert ext is not None
        axes, settings = rest[:n_axes], rest[n_axes : len(rest) - 1 if checks else len(rest)]
        ctx.save_for_backward(x, second, *axes)
        ctx.setup = (name, settings, 3 + len(rest))
        return getattr(ext, f"{name}_forward")(x, second, *rest)  # type: ignore[no-any-return]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, second, *axes = ctx.saved_tensors
        name, settings, n_rest = ctx.setup
        need_x, need_second = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        ext = kernels()
        assert ext is not None
        gx, gs = getattr(ext, f"{name}_backward")(
            grad, x, second, *axes, *settings, need_x, need_second
        )
        return (
            None, None, None,
            gx if need_x else None,
            gs if need_second else None,
            *(None,) * (n_rest - 3),
        )  # fmt: skip


def _fused(name: str, n_axes: int, checks: bool) -> Callable[..., torch.Tensor]:
    def apply(*args: Any) -> torch.Tensor:
        return _Fused.apply(name, n_axes, checks, *args)  # type: ignore[no-any-return]

    return apply


def _filled(
    x: torch.Tensor, padding_mode: str, fill: Fill, run: Callable[[torch.Tensor, int], torch.Tensor]
) -> torch.Tensor:
    """``run(x, pad)`` with the padding in the kernels' numbering; ``"fill"`` is zeros padding
    of ``x - fill``, plus ``fill``."""
    if padding_mode != "fill":
        return run(x, PADDINGS[padding_mode])
    shift = torch.tensor(fill, dtype=x.dtype).reshape(1, -1, *(1,) * (x.dim() - 2))
    return run(x - shift, PADDINGS["zeros"]) + shift


def affine2d_sample(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    mode: str,
    padding_mode: str,
    align_corners: bool,
    fill: Fill = 0.0,
    check_finite: bool = False,
) -> torch.Tensor:
    """``grid_sample(x, grid)`` with ``grid[b, i, j] = theta[b] @ (xs[j], ys[i], 1)``, fused.

    Args:
        x: ``(B, C, H, W)`` float32 or float64 images on the CPU.
        theta: ``(B, 2, 3)`` normalised matrices, the dtype of ``x``.
        xs, ys: the output's normalised column and row coordinates ``(Wo,)``, ``(Ho,)``
            (:func:`torchstn.functional.grid_axes`).
        mode, padding_mode, align_corners, fill: as :func:`torchstn.functional.sample`
            (``can_fuse`` tells which are fused).
        check_finite: raise ``RuntimeError("torchstn-nonfinite-matrix")`` where ``theta``
            holds NaN or Inf (checked in the kernel: no value read back through the dispatcher).

    Returns:
        ``(B, C, Ho, Wo)``; call it only where :func:`kernels` is not ``None``.
    """
    apply: Callable[..., torch.Tensor]
    if _tracing_graph():
        apply = ops.affine2d  # CPU: the C++ kernel; CUDA: the Triton kernel (registered)
    elif x.device.type in TRITON_DEVICES:
        apply = _TritonAffine2d.apply
    else:
        apply = _fused("affine2d", 2, True)
    return _filled(
        x, padding_mode, fill,
        lambda x, pad: apply(x, theta, xs, ys, MODES[mode], pad, align_corners, check_finite),
    )  # fmt: skip


def projective2d_sample(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    padding_mode: str,
    align_corners: bool,
    eps: float,
    fill: Fill = 0.0,
    check_finite: bool = False,
) -> torch.Tensor:
    """Bilinear ``grid_sample(x, grid)`` with ``grid[b, i, j] = (u, v) / w``, ``(u, v, w) =
    theta[b] @ (xs[j], ys[i], 1)`` and ``|w|`` floored at ``eps`` with its sign kept (the
    projective family's grid), fused, for ``(B, 3, 3)`` matrices."""
    apply = ops.projective2d if _tracing_graph() else _fused("projective2d", 2, True)
    return _filled(
        x, padding_mode, fill,
        lambda x, pad: apply(x, theta, xs, ys, pad, align_corners, eps, check_finite),
    )  # fmt: skip


def affine3d_sample(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    zs: torch.Tensor,
    padding_mode: str,
    align_corners: bool,
    fill: Fill = 0.0,
    check_finite: bool = False,
) -> torch.Tensor:
    """Trilinear ``grid_sample(x, grid)`` with ``grid[b, k, i, j] = theta[b] @ (xs[j], ys[i],
    zs[k], 1)``, fused: :func:`affine2d_sample` for ``(B, C, D, H, W)`` volumes and ``(B, 3, 4)``
    matrices."""
    apply = ops.affine3d if _tracing_graph() else _fused("affine3d", 3, True)
    return _filled(
        x, padding_mode, fill,
        lambda x, pad: apply(x, theta, xs, ys, zs, pad, align_corners, check_finite),
    )  # fmt: skip


def field_sample(
    x: torch.Tensor, u: torch.Tensor, padding_mode: str, align_corners: bool, fill: Fill = 0.0
) -> torch.Tensor:
    """:func:`field2d_sample` for images, :func:`field3d_sample` for volumes."""
    if x.dim() == 5:
        return field3d_sample(x, u, padding_mode, align_corners, fill)
    return field2d_sample(x, u, padding_mode, align_corners, fill)


def field3d_sample(
    x: torch.Tensor, u: torch.Tensor, padding_mode: str, align_corners: bool, fill: Fill = 0.0
) -> torch.Tensor:
    """Trilinear ``output(p) = x(p + u(p))`` for ``(B, C, D, H, W)`` volumes and a ``(B, 3, D,
    H, W)`` field in voxels, ``(x, y, z)`` channels, fused (no grid is made)."""
    apply = ops.field3d if _tracing_graph() else _fused("field3d", 0, False)
    return _filled(x, padding_mode, fill, lambda x, pad: apply(x, u, pad, align_corners))


def field2d_sample(
    x: torch.Tensor, u: torch.Tensor, padding_mode: str, align_corners: bool, fill: Fill = 0.0
) -> torch.Tensor:
    """Bilinear ``output(p) = x(p + u(p))`` for ``(B, C, H, W)`` images and a ``(B, 2, H, W)``
    field in pixels, ``(x, y)`` channels, fused (no grid is made): what
    :func:`torchstn.fields.warp` computes through a grid and the sampler."""
    apply = ops.field2d if _tracing_graph() else _fused("field2d", 0, False)
    return _filled(x, padding_mode, fill, lambda x, pad: apply(x, u, pad, align_corners))
