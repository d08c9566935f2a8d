"""The fused 2-D affine warp as Triton kernels: the CUDA path of :mod:`torchstn.native`.

One program per block of output pixels of one image computes each pixel's source point from
the matrix, reads its taps and writes every channel (no grid in memory). The backward pass
recomputes the points; the matrix's gradient is summed per block into a ``(B, blocks, 6)``
buffer and the blocks are added by PyTorch (a fixed order: deterministic); the input's gradient
is either added with atomics (fast, in no fixed order) or, where
``torch.are_deterministic_algorithms_enabled()``, written per tap and summed by
``index_put_(accumulate=True)``, which sorts by destination in deterministic mode.

Status: tested with Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors against
``affine_grid`` + ``grid_sample``; it has not run on a GPU, so nothing takes it by default:
``torchstn.native.use_triton(True)`` (or ``TORCHSTN_TRITON=1``) opts in for CUDA tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["affine2d_backward", "affine2d_forward"]

BLOCK = 128


@triton.jit
def _source(g, size, PAD: tl.constexpr, ALIGN: tl.constexpr):
    """Normalised coordinate -> pixel coordinate under the padding, and its slope."""
    sizef = size * 1.0  # (an int argument of 1 arrives as a constant)
    if ALIGN:
        scale = (sizef - 1.0) / 2.0
        x = (g + 1.0) * scale
        low = 0.0
        twice_span = (sizef - 1.0) * 2.0
    else:
        scale = sizef / 2.0
        x = (g + 1.0) * scale - 0.5
        low = -0.5
        twice_span = sizef * 2.0
    d = tl.zeros_like(x) + scale
    if PAD == 2:  # reflection about [low, low + span], then the border's clip
        shifted = x - low
        a = tl.abs(shifted)
        span = tl.maximum(twice_span, 1.0)  # 0 only for one pixel with ALIGN (then unused)
        extra = a - tl.floor(a / span) * span
        other = twice_span - extra
        flip = extra > other
        x = tl.where(flip, other, extra) + low
        d = tl.where(flip != (shifted < 0.0), -d, d)
        if ALIGN:
            empty = size <= 1
            x = tl.where(empty, 0.0, x)
            d = tl.where(empty, 0.0, d)
    if PAD >= 1:  # clip to [0, n - 1]; the bounds have no slope
        hi = sizef - 1.0
        lo = tl.maximum(x, 0.0)
        res = tl.minimum(lo, hi)
        d = tl.where((lo != 0.0) & (res != hi), d, 0.0)
        x = res
    return x, d


@triton.jit
def _round_half_even(x):
    r = tl.floor(x + 0.5)
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(((r - x) == 0.5) & odd, r - 1.0, r)


@triton.jit
def _points(theta_ptr, xs_ptr, ys_ptr, b, offs, mask, Wo, H, W, PAD, ALIGN):
    i = offs // Wo
    j = offs - i * Wo
    gx = tl.load(xs_ptr + j, mask=mask, other=0.0).to(tl.float32)
    gy = tl.load(ys_ptr + i, mask=mask, other=0.0).to(tl.float32)
    t = theta_ptr + b * 6
    a0 = tl.load(t + 0).to(tl.float32)
    a1 = tl.load(t + 1).to(tl.float32)
    a2 = tl.load(t + 2).to(tl.float32)
    a3 = tl.load(t + 3).to(tl.float32)
    a4 = tl.load(t + 4).to(tl.float32)
    a5 = tl.load(t + 5).to(tl.float32)
    px = a0 * gx + a1 * gy + a2
    py = a3 * gx + a4 * gy + a5
    ix, dx = _source(px, W, PAD, ALIGN)
    iy, dy = _source(py, H, PAD, ALIGN)
    # far points: kept finite and outside every tap (no integer overflow)
    ix = tl.minimum(tl.maximum(ix, -2.0), W * 1.0 + 1.0)
    iy = tl.minimum(tl.maximum(iy, -2.0), H * 1.0 + 1.0)
    return gx, gy, ix, iy, dx, dy


@triton.jit
def _forward_kernel(
    x_ptr, theta_ptr, xs_ptr, ys_ptr, out_ptr, C, H, W, Ho, Wo,
    MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Ho * Wo
    _, _, ix, iy, _, _ = _points(theta_ptr, xs_ptr, ys_ptr, b, offs, mask, Wo, H, W, PAD, ALIGN)
    plane = H * W
    x_base = x_ptr + b.to(tl.int64) * C * plane
    out_base = out_ptr + b.to(tl.int64) * C * Ho * Wo + offs
    if MODE == 1:  # nearest
        nx = _round_half_even(ix).to(tl.int32)
        ny = _round_half_even(iy).to(tl.int32)
        ok = mask & (nx >= 0) & (nx < W) & (ny >= 0) & (ny < H)
        at = ny * W + nx
        for c in range(0, C):
            v = tl.load(x_base + c * plane + at, mask=ok, other=0.0)
            tl.store(out_base + c * Ho * Wo, v, mask=mask)
    else:
        fx = tl.floor(ix)
        fy = tl.floor(iy)
        x0 = fx.to(tl.int32)
        y0 = fy.to(tl.int32)
        wx1 = ix - fx
        wy1 = iy - fy
        wx0 = 1.0 - wx1
        wy0 = 1.0 - wy1
        in_x0 = (x0 >= 0) & (x0 < W)
        in_x1 = (x0 + 1 >= 0) & (x0 + 1 < W)
        in_y0 = (y0 >= 0) & (y0 < H)
        in_y1 = (y0 + 1 >= 0) & (y0 + 1 < H)
        at = y0 * W + x0
        for c in range(0, C):
            p = x_base + c * plane + at
            v00 = tl.load(p, mask=mask & in_y0 & in_x0, other=0.0).to(tl.float32)
            v01 = tl.load(p + 1, mask=mask & in_y0 & in_x1, other=0.0).to(tl.float32)
            v10 = tl.load(p + W, mask=mask & in_y1 & in_x0, other=0.0).to(tl.float32)
            v11 = tl.load(p + W + 1, mask=mask & in_y1 & in_x1, other=0.0).to(tl.float32)
            v = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
            tl.store(out_base + c * Ho * Wo, v, mask=mask)


@triton.jit
def _backward_kernel(
    go_ptr, x_ptr, theta_ptr, xs_ptr, ys_ptr, gin_ptr, taps_ptr, idx_ptr, gth_ptr,
    C, H, W, Ho, Wo,
    MODE: tl.constexpr, PAD: tl.constexpr, ALIGN: tl.constexpr, BLOCK: tl.constexpr,
    NEED_X: tl.constexpr, NEED_THETA: tl.constexpr, ATOMIC: tl.constexpr,
):  # fmt: skip
    """The gradients of one block of output pixels: to the input (atomics, or per tap into
    ``taps`` ``(B, C, 4, Ho * Wo)`` with each tap's flat input index in ``idx`` ``(B, 4, Ho *
    Wo)``, ``H * W`` outside, for a sorted sum) and to the matrix (this block's sums)."""
    b = tl.program_id(1)
    blk = tl.program_id(0)
    offs = blk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < Ho * Wo
    gx, gy, ix, iy, dx, dy = _points(theta_ptr, xs_ptr, ys_ptr, b, offs, mask, Wo, H, W, PAD, ALIGN)
    plane = H * W
    n_out = Ho * Wo
    x_base = x_ptr + b.to(tl.int64) * C * plane
    gin_base = gin_ptr + b.to(tl.int64) * C * plane
    go_base = go_ptr + b.to(tl.int64) * C * n_out + offs
    taps_base = taps_ptr + b.to(tl.int64) * C * 4 * n_out + offs
    idx_base = idx_ptr + b.to(tl.int64) * 4 * n_out + offs
    if MODE == 1:  # nearest: the matrix's gradient is zero
        nx = _round_half_even(ix).to(tl.int32)
        ny = _round_half_even(iy).to(tl.int32)
        ok = mask & (nx >= 0) & (nx < W) & (ny >= 0) & (ny < H)
        at = ny * W + nx
        if NEED_X and not ATOMIC:
            outside = tl.zeros_like(at) + plane
            tl.store(idx_base, tl.where(ok, at, outside), mask=mask)
            for k in range(1, 4):
                tl.store(idx_base + k * n_out, outside, mask=mask)
        if NEED_X:
            for c in range(0, C):
                g = tl.load(go_base + c * n_out, mask=mask, other=0.0).to(tl.float32)
                if ATOMIC:
                    tl.atomic_add(gin_base + c * plane + at, g, mask=ok)
                else:
                    tl.store(taps_base + c * 4 * n_out, tl.where(ok, g, 0.0), mask=mask)
    else:
        fx = tl.floor(ix)
        fy = tl.floor(iy)
        x0 = fx.to(tl.int32)
        y0 = fy.to(tl.int32)
        wx1 = ix - fx
        wy1 = iy - fy
        wx0 = 1.0 - wx1
        wy0 = 1.0 - wy1
        m00 = mask & (y0 >= 0) & (y0 < H) & (x0 >= 0) & (x0 < W)
        m01 = mask & (y0 >= 0) & (y0 < H) & (x0 + 1 >= 0) & (x0 + 1 < W)
        m10 = mask & (y0 + 1 >= 0) & (y0 + 1 < H) & (x0 >= 0) & (x0 < W)
        m11 = mask & (y0 + 1 >= 0) & (y0 + 1 < H) & (x0 + 1 >= 0) & (x0 + 1 < W)
        at = y0 * W + x0
        if NEED_X and not ATOMIC:
            outside = tl.zeros_like(at) + plane
            tl.store(idx_base, tl.where(m00, at, outside), mask=mask)
            tl.store(idx_base + n_out, tl.where(m01, at + 1, outside), mask=mask)
            tl.store(idx_base + 2 * n_out, tl.where(m10, at + W, outside), mask=mask)
            tl.store(idx_base + 3 * n_out, tl.where(m11, at + W + 1, outside), mask=mask)
        gix = tl.zeros_like(ix)
        giy = tl.zeros_like(iy)
        for c in range(0, C):
            g = tl.load(go_base + c * n_out, mask=mask, other=0.0).to(tl.float32)
            if NEED_THETA:
                p = x_base + c * plane + at
                v00 = tl.load(p, mask=m00, other=0.0).to(tl.float32)
                v01 = tl.load(p + 1, mask=m01, other=0.0).to(tl.float32)
                v10 = tl.load(p + W, mask=m10, other=0.0).to(tl.float32)
                v11 = tl.load(p + W + 1, mask=m11, other=0.0).to(tl.float32)
                gix += g * (wy0 * (v01 - v00) + wy1 * (v11 - v10))
                giy += g * (wx0 * (v10 - v00) + wx1 * (v11 - v01))
            if NEED_X:
                q = gin_base + c * plane + at
                t = taps_base + c * 4 * n_out
                if ATOMIC:
                    tl.atomic_add(q, g * wy0 * wx0, mask=m00)
                    tl.atomic_add(q + 1, g * wy0 * wx1, mask=m01)
                    tl.atomic_add(q + W, g * wy1 * wx0, mask=m10)
                    tl.atomic_add(q + W + 1, g * wy1 * wx1, mask=m11)
                else:
                    tl.store(t, tl.where(m00, g * wy0 * wx0, 0.0), mask=mask)
                    tl.store(t + n_out, tl.where(m01, g * wy0 * wx1, 0.0), mask=mask)
                    tl.store(t + 2 * n_out, tl.where(m10, g * wy1 * wx0, 0.0), mask=mask)
                    tl.store(t + 3 * n_out, tl.where(m11, g * wy1 * wx1, 0.0), mask=mask)
        if NEED_THETA:
            gpx = tl.where(mask, gix * dx, 0.0)
            gpy = tl.where(mask, giy * dy, 0.0)
            out = gth_ptr + (b * tl.num_programs(0) + blk) * 6
            tl.store(out + 0, tl.sum(gpx * gx, axis=0))
            tl.store(out + 1, tl.sum(gpx * gy, axis=0))
            tl.store(out + 2, tl.sum(gpx, axis=0))
            tl.store(out + 3, tl.sum(gpy * gx, axis=0))
            tl.store(out + 4, tl.sum(gpy * gy, axis=0))
            tl.store(out + 5, tl.sum(gpy, axis=0))


def _blocks(ho: int, wo: int) -> int:
    return triton.cdiv(ho * wo, BLOCK)


def affine2d_forward(
    x: torch.Tensor,
    theta: torch.Tensor,
    xs: torch.Tensor,
    ys: torch.Tensor,
    mode: int,
    pad: int,
    align_corners: bool,
) -> torch.Tensor:
    """``(B, C, Ho, Wo)`` float32 output of the fused warp (float32 inputs)."""
    x, theta = x.contiguous(), theta.contiguous()
    b, c, h, w = x.shape
    ho, wo = ys.shape[0], xs.shape[0]
    out = torch.empty((b, c, ho, wo), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    _forward_kernel[(_blocks(ho, wo), b)](
        x, theta, xs.contiguous(), ys.contiguous(), out, c, h, w, ho, wo,
        MODE=mode, PAD=pad, ALIGN=bool(align_corners), BLOCK=BLOCK,
    )  # fmt: skip
    return out


def affine2d_backward(
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
    deterministic: bool | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients to ``x`` and ``theta`` (``None`` where not needed). ``deterministic``
    (default: ``torch.are_deterministic_algorithms_enabled()``) sums the input's gradient in a
    fixed order instead of with atomics."""
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    grad, x, theta = grad.contiguous(), x.contiguous(), theta.contiguous()
    b, c, h, w = x.shape
    ho, wo = ys.shape[0], xs.shape[0]
    blocks = _blocks(ho, wo)
    gin = torch.zeros_like(x) if need_x else None
    gth = torch.zeros((b, 2, 3), dtype=theta.dtype, device=x.device) if need_theta else None
    need_theta = need_theta and mode == 0  # nearest: piecewise constant in theta, zero gradient
    if grad.numel() == 0 or not (need_x or need_theta):
        return gin, gth
    atomic = not deterministic
    sorted_sum = need_x and not atomic
    taps = torch.empty((b, c, 4, ho * wo), dtype=x.dtype, device=x.device) if sorted_sum else None
    idx = torch.empty((b, 4, ho * wo), dtype=torch.int32, device=x.device) if sorted_sum else None
    partial = torch.empty((b, blocks, 6), dtype=torch.float32, device=x.device)
    _backward_kernel[(blocks, b)](
        grad, x, theta, xs.contiguous(), ys.contiguous(),
        gin if gin is not None else x.new_empty(1),
        taps if taps is not None else x.new_empty(1),
        idx if idx is not None else x.new_empty(1, dtype=torch.int32),
        partial, c, h, w, ho, wo,
        MODE=mode, PAD=pad, ALIGN=bool(align_corners), BLOCK=BLOCK,
        NEED_X=bool(need_x), NEED_THETA=bool(need_theta), ATOMIC=atomic,
    )  # fmt: skip
    if gth is not None and need_theta:
        gth.copy_(partial.sum(1).view(b, 2, 3))  # the blocks in order
    if gin is not None and taps is not None and idx is not None:
        _sum_taps(gin, taps, idx)
    return gin, gth


def _sum_taps(gin: torch.Tensor, taps: torch.Tensor, idx: torch.Tensor) -> None:
    """Add each output pixel's tap contributions into ``gin`` at the kernel's indices, with
    ``index_put_(accumulate=True)`` (sorted by destination, deterministic in deterministic
    mode); outside taps land in one spare slot per plane."""
    b, c, h, w = gin.shape
    flat = torch.zeros((b * c, h * w + 1), dtype=gin.dtype, device=gin.device)
    rows = torch.arange(b * c, device=gin.device)[:, None]
    dest = idx.long()[:, None].expand(b, c, 4, -1).reshape(b * c, -1)
    flat.index_put_((rows, dest), taps.reshape(b * c, -1), accumulate=True)
    gin.copy_(flat[:, : h * w].view(b, c, h, w))
