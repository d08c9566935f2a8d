"""The fused kernels as PyTorch operators (``torch.ops.torchstn.*``), for ``torch.compile`` and
``torch.export``.

Eager code calls the kernels through autograd functions (:mod:`torchstn.native.sample`): an
operator call through :func:`torch.library.custom_op` costs about 45 microseconds more, a
third of a small warp. A graph cannot call into an opaque extension, so while
``torch.compile`` or ``torch.export`` traces, the same kernels run as these operators: each has
a fake implementation (the output's shape, for tracing), and its backward is a second operator,
so that the compiled or exported graph holds ``torchstn::affine2d_sample`` where eager code runs
the fused kernel, in the forward and the backward graph.

An exported program that holds them loads where ``torchstn`` is imported (importing it
registers the operators). Where the compiled kernels are missing there (no compiler on that
machine, another device), the forward computes the same warp with ``grid_sample``; the backward
needs the kernels. ``torchstn export`` writes the standard operators instead (ONNX has no
fused kernel; a file for deployment should not need torchstn).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..functional.coords import pixel_to_normalized
from . import kernels

__all__ = ["affine2d", "affine3d", "field2d", "field3d", "projective2d"]

_PADDING_NAMES = ("zeros", "border", "reflection")
_MODE_NAMES = ("bilinear", "nearest")


def _runs_fused(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


def _missing(name: str) -> RuntimeError:
    return RuntimeError(
        f"torchstn::{name}: the backward needs the fused CPU kernels, which are not available "
        "here (see torchstn.native.status()); export or compile with "
        "torchstn.native.use_fused(False) for a graph of standard operators"
    )


def _differentiable(op: Any, backward: Any, n_axes: int, checks: bool) -> None:
    """Give ``op`` ``(x, second, *axes, *settings[, check_finite])`` its autograd through
    ``backward`` ``(grad, x, second, *axes, *settings, need_x, need_second) -> (gx, gs)``, and
    ``backward`` its fake implementation (tensors of the inputs' shapes, or empty ones where a
    gradient is not asked for)."""

    @backward.register_fake  # type: ignore[untyped-decorator]
    def _(grad: torch.Tensor, x: torch.Tensor, second: torch.Tensor, *rest: Any) -> Any:
        need_x, need_second = rest[-2], rest[-1]
        return (
            torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else _empty(x),
            torch.empty_like(second, memory_format=torch.contiguous_format)
            if need_second
            else _empty(second),
        )

    def setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, second, *rest = inputs
        ctx.save_for_backward(x, second, *rest[:n_axes])
        ctx.settings = tuple(rest[n_axes : len(rest) - 1 if checks else len(rest)])
        ctx.n_rest = len(rest)

    def grad_fn(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, second, *axes = ctx.saved_tensors
        need_x, need_second = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gs = backward(grad, x, second, *axes, *ctx.settings, need_x, need_second)
        return (gx if need_x else None), (gs if need_second else None), *(None,) * ctx.n_rest

    op.register_autograd(grad_fn, setup_context=setup)


# -- 2-D matrices -----------------------------------------------------------------------------


@torch.library.custom_op("torchstn::affine2d_sample", mutates_args=())
def affine2d(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    mode: int,
    pad: int,
    align_corners: bool,
    check_finite: bool,
) -> torch.Tensor:
    """``grid_sample(x, grid)`` with ``grid[b, i, j] = theta[b] @ (xs[j], ys[i], 1)`` (mode and
    padding in the kernel's numbering: :data:`torchstn.native.sample.MODES`, ``PADDINGS``)."""
    ext = kernels()
    if ext is None or not _runs_fused(x):
        return _affine2d_reference(x, theta, xs, ys, mode, pad, align_corners)
    return ext.affine2d_forward(x, theta, xs, ys, mode, pad, align_corners, check_finite)  # type: ignore[no-any-return]


def _affine2d_reference(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    mode: int,
    pad: int,
    align_corners: bool,
) -> torch.Tensor:
    """:func:`affine2d` through the affine families' grid and ``grid_sample``."""
    from ..transforms._fastgrid import homogeneous_planes  # (transforms import this module)

    grid = homogeneous_planes(theta, xs, ys).permute(0, 2, 3, 1)
    return F.grid_sample(
        x, grid, _MODE_NAMES[mode], _PADDING_NAMES[pad], align_corners=align_corners
    )


@affine2d.register_fake
def _(x, theta, xs, ys, mode, pad, align_corners, check_finite):  # type: ignore[no-untyped-def]
    return x.new_empty((x.shape[0], x.shape[1], ys.shape[0], xs.shape[0]))


@torch.library.custom_op("torchstn::affine2d_sample_backward", mutates_args=())
def _affine2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    mode: int,
    pad: int,
    align_corners: bool,
    need_x: bool,
    need_theta: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    ext = kernels()
    if ext is None or not _runs_fused(x):
        raise _missing("affine2d_sample_backward")
    gx, gtheta = ext.affine2d_backward(
        grad, x, theta, xs, ys, mode, pad, align_corners, need_x, need_theta
    )
    return (gx if gx is not None else _empty(x)), (gtheta if gtheta is not None else _empty(theta))


_differentiable(affine2d, _affine2d_backward, n_axes=2, checks=True)


def _triton_module() -> Any:
    """:mod:`torchstn.native.triton_affine`, or ``None`` without Triton."""
    try:
        from . import triton_affine  # needs triton (optional): imported where it runs
    except ImportError:
        return None
    return triton_affine


@affine2d.register_kernel("cuda")
def _(x, theta, xs, ys, mode, pad, align_corners, check_finite):  # type: ignore[no-untyped-def]
    tri = _triton_module()
    if tri is None or x.dtype != torch.float32:
        return _affine2d_reference(x, theta, xs, ys, mode, pad, align_corners)
    return tri.affine2d_forward(x, theta, xs, ys, mode, pad, align_corners)


@_affine2d_backward.register_kernel("cuda")
def _(grad, x, theta, xs, ys, mode, pad, align_corners, need_x, need_theta):  # type: ignore[no-untyped-def]
    tri = _triton_module()
    if tri is None or x.dtype != torch.float32:
        raise _missing("affine2d_sample_backward")
    gx, gtheta = tri.affine2d_backward(
        grad, x, theta, xs, ys, mode, pad, align_corners, need_x, need_theta
    )
    return (gx if gx is not None else _empty(x)), (gtheta if gtheta is not None else _empty(theta))


# -- 3-D matrices -----------------------------------------------------------------------------


@torch.library.custom_op("torchstn::affine3d_sample", mutates_args=())
def affine3d(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    zs: torch.Tensor,
    pad: int,
    align_corners: bool,
    check_finite: bool,
) -> torch.Tensor:
    """Trilinear :func:`affine2d` for ``(B, C, D, H, W)`` volumes and ``(B, 3, 4)`` matrices."""
    ext = kernels()
    if ext is None or not _runs_fused(x):
        from ..transforms._fastgrid import homogeneous_volume  # (transforms import this module)

        grid = homogeneous_volume(theta, xs, ys, zs).permute(0, 2, 3, 4, 1)
        return F.grid_sample(x, grid, "bilinear", _PADDING_NAMES[pad], align_corners=align_corners)
    return ext.affine3d_forward(x, theta, xs, ys, zs, pad, align_corners, check_finite)  # type: ignore[no-any-return]


@affine3d.register_fake
def _(x, theta, xs, ys, zs, pad, align_corners, check_finite):  # type: ignore[no-untyped-def]
    return x.new_empty((x.shape[0], x.shape[1], zs.shape[0], ys.shape[0], xs.shape[0]))


@torch.library.custom_op("torchstn::affine3d_sample_backward", mutates_args=())
def _affine3d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    zs: torch.Tensor,
    pad: int,
    align_corners: bool,
    need_x: bool,
    need_theta: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    ext = kernels()
    if ext is None or not _runs_fused(x):
        raise _missing("affine3d_sample_backward")
    gx, gtheta = ext.affine3d_backward(
        grad, x, theta, xs, ys, zs, pad, align_corners, need_x, need_theta
    )
    return (gx if gx is not None else _empty(x)), (gtheta if gtheta is not None else _empty(theta))


_differentiable(affine3d, _affine3d_backward, n_axes=3, checks=True)


# -- dense fields -----------------------------------------------------------------------------


def _field_reference(
    x: torch.Tensor, u: torch.Tensor, pad: int, align_corners: bool
) -> torch.Tensor:
    """``output(p) = x(p + u(p))`` through a grid and ``grid_sample``, images or volumes."""
    spatial = x.shape[2:]
    axes = [torch.arange(n, dtype=u.dtype, device=u.device) for n in spatial]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], -1)  # (x, y[, z]) order
    grid = pixel_to_normalized(base + u.movedim(1, -1), spatial, align_corners)
    return F.grid_sample(x, grid, "bilinear", _PADDING_NAMES[pad], align_corners=align_corners)


# -- 2-D dense fields -------------------------------------------------------------------------


@torch.library.custom_op("torchstn::field2d_sample", mutates_args=())
def field2d(x: torch.Tensor, u: torch.Tensor, pad: int, align_corners: bool) -> torch.Tensor:
    """Bilinear ``output(p) = x(p + u(p))``, ``u`` a ``(B, 2, H, W)`` field in pixels."""
    ext = kernels()
    if ext is None or not _runs_fused(x):
        return _field_reference(x, u, pad, align_corners)
    return ext.field2d_forward(x, u, pad, align_corners)  # type: ignore[no-any-return]


@field2d.register_fake
def _(x, u, pad, align_corners):  # type: ignore[no-untyped-def]
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("torchstn::field2d_sample_backward", mutates_args=())
def _field2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    u: torch.Tensor,
    pad: int,
    align_corners: bool,
    need_x: bool,
    need_u: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    ext = kernels()
    if ext is None or not _runs_fused(x):
        raise _missing("field2d_sample_backward")
    gx, gu = ext.field2d_backward(grad, x, u, pad, align_corners, need_x, need_u)
    return (gx if gx is not None else _empty(x)), (gu if gu is not None else _empty(u))


_differentiable(field2d, _field2d_backward, n_axes=0, checks=False)


# -- 3-D dense fields -------------------------------------------------------------------------


@torch.library.custom_op("torchstn::field3d_sample", mutates_args=())
def field3d(x: torch.Tensor, u: torch.Tensor, pad: int, align_corners: bool) -> torch.Tensor:
    """Trilinear ``output(p) = x(p + u(p))``, ``u`` a ``(B, 3, D, H, W)`` field in voxels."""
    ext = kernels()
    if ext is None or not _runs_fused(x):
        return _field_reference(x, u, pad, align_corners)
    return ext.field3d_forward(x, u, pad, align_corners)  # type: ignore[no-any-return]


@field3d.register_fake
def _(x, u, pad, align_corners):  # type: ignore[no-untyped-def]
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("torchstn::field3d_sample_backward", mutates_args=())
def _field3d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    u: torch.Tensor,
    pad: int,
    align_corners: bool,
    need_x: bool,
    need_u: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    ext = kernels()
    if ext is None or not _runs_fused(x):
        raise _missing("field3d_sample_backward")
    gx, gu = ext.field3d_backward(grad, x, u, pad, align_corners, need_x, need_u)
    return (gx if gx is not None else _empty(x)), (gu if gu is not None else _empty(u))


_differentiable(field3d, _field3d_backward, n_axes=0, checks=False)


# -- 2-D projective matrices ------------------------------------------------------------------


@torch.library.custom_op("torchstn::projective2d_sample", mutates_args=())
def projective2d(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    pad: int,
    align_corners: bool,
    eps: float,
    check_finite: bool,
) -> torch.Tensor:
    """Bilinear sampling at ``(u, v) / w``, ``(u, v, w) = theta[b] @ (xs[j], ys[i], 1)``, ``|w|``
    floored at ``eps`` with its sign kept."""
    ext = kernels()
    if ext is None or not _runs_fused(x):
        from ..transforms._fastgrid import projective_grid  # (transforms import this module)

        grid = projective_grid(theta, xs, ys, eps)
        return F.grid_sample(x, grid, "bilinear", _PADDING_NAMES[pad], align_corners=align_corners)
    return ext.projective2d_forward(x, theta, xs, ys, pad, align_corners, eps, check_finite)  # type: ignore[no-any-return]


@projective2d.register_fake
def _(x, theta, xs, ys, pad, align_corners, eps, check_finite):  # type: ignore[no-untyped-def]
    return x.new_empty((x.shape[0], x.shape[1], ys.shape[0], xs.shape[0]))


@torch.library.custom_op("torchstn::projective2d_sample_backward", mutates_args=())
def _projective2d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    pad: int,
    align_corners: bool,
    eps: float,
    need_x: bool,
    need_theta: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    ext = kernels()
    if ext is None or not _runs_fused(x):
        raise _missing("projective2d_sample_backward")
    gx, gtheta = ext.projective2d_backward(
        grad, x, theta, xs, ys, pad, align_corners, eps, need_x, need_theta
    )
    return (gx if gx is not None else _empty(x)), (gtheta if gtheta is not None else _empty(theta))


_differentiable(projective2d, _projective2d_backward, n_axes=2, checks=True)
