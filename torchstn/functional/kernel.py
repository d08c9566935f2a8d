"""The paper's generic sampling formula (eq. 3), implemented directly.

``V[b, c, i] = sum_n sum_m U[b, c, n, m] k(x_i - m) k(y_i - n)`` where ``(x_i, y_i)`` is the
source point of output pixel ``i`` in pixel-centre coordinates. Every input pixel enters the sum;
the kernel decides its weight. This is slower than :func:`torchstn.functional.sample` (it costs
``O(Ho Wo (H + W) H)`` per channel rather than ``O(Ho Wo)``) but it is the formula itself, it
supports kernels that ``grid_sample`` lacks (Gaussian), and it exposes the per-pixel weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_choice, check_positive, check_size, check_tensor
from .coords import normalized_to_pixel
from .sample import check_input_and_grid

__all__ = ["KERNELS", "influence_weights", "kernel_sample"]

KERNELS = ("bilinear", "nearest", "gaussian")


def _two_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = a + b`` rounded and its exact rounding error ``e`` (Knuth): ``s + e == a + b``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fused_edges_to_pixel(g: torch.Tensor, size: int) -> torch.Tensor:
    """``((g + 1) * size - 1) / 2`` with one rounding after ``g + 1``, as a fused multiply-add.

    This is how ``grid_sample`` unnormalises with ``align_corners=False`` on CUDA and in PyTorch's
    AVX2/AVX-512 CPU kernels (the compiler fuses ``a * b - c``), and it matters: at the pixel
    centres of an identity grid a separately rounded product can land one ulp on the other side of
    an integer, where the bilinear kernel's one-sided derivative jumps. Float64 emulates the FMA
    exactly (Boldo & Melquiond 2008: exact product and sum, a sum rounded to odd, then to
    nearest); other dtypes compute the product exactly in float64 and round once.
    """
    a = g + 1
    if a.dtype != torch.float64:
        return ((a.double() * size - 1) / 2).to(a.dtype)
    # a * size exactly as hi * size + lo * size: hi = a to 24 bits, lo = a - hi to 29 bits.
    # (Casts and frexp rather than bit views, which torch.jit.trace cannot alias-analyse.)
    hi = a.float().double()
    uh, ul = _two_sum(hi * size, (a - hi) * size)  # uh + ul == a * size for size < 2**24
    th, tl = _two_sum(torch.full_like(uh, -1.0), uh)  # th + tl + ul == a * size - 1
    s, e = _two_sum(tl, ul)
    mantissa = torch.frexp(s)[0]  # s + e rounded to odd: s, or its neighbour if s is even
    even = torch.fmod(mantissa * 2.0**53, 2) == 0
    toward = torch.where(e > 0, math.inf, -math.inf).to(s.dtype)
    odd = torch.where((e != 0) & even, torch.nextafter(s, toward), s)
    return (th + odd) / 2


def _source_pixels(grid: torch.Tensor, in_size: Sequence[int], align_corners: bool) -> torch.Tensor:
    """``(B, N, 2)`` pixel coordinates of the grid's points, rounded exactly as ``grid_sample``
    rounds them, with the gradient of :func:`~torchstn.functional.normalized_to_pixel`."""
    h, w = in_size
    g = grid.reshape(grid.shape[0], -1, 2)
    pix = normalized_to_pixel(g, (h, w), align_corners)
    if align_corners:  # (g + 1) * (W - 1) / 2: one product, rounded once either way
        return pix
    g = g.detach()
    fused = torch.stack(
        (_fused_edges_to_pixel(g[..., 0], w), _fused_edges_to_pixel(g[..., 1], h)), -1
    )
    # the two differ by an ulp at most (exactly representable); non-finite points keep pix
    return pix + torch.nan_to_num(fused - pix.detach(), nan=0.0, posinf=0.0, neginf=0.0)


def _lattice_sum(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sum over all integers m of exp(-(x - m)^2 / (2 sigma^2))``, a smooth 1-periodic function.

    Summed directly (terms fall as ``exp(-j^2 / (2 sigma^2))``) for a narrow kernel, and through
    Poisson's formula ``sqrt(2 pi) sigma (1 + 2 sum_k exp(-2 pi^2 sigma^2 k^2) cos(2 pi k x))`` for
    a wide one; both truncated where what is left out is below 1e-16 of the sum.
    """
    f = torch.nan_to_num(x - torch.floor(x.detach()), nan=0.0)  # in [0, 1): the sum's period
    if sigma < 0.5:
        # j in [-reach, reach + 1] leaves out |f - j| > 9 sigma + 1: exp(-40.5) < 3e-18 each
        reach = math.ceil(9 * sigma)
        j = torch.arange(-reach, reach + 2, dtype=x.dtype, device=x.device)
        return torch.exp(-0.5 * ((f - j) / sigma) ** 2).sum(-1, keepdim=True)
    k = torch.arange(1, math.ceil(1.41 / sigma) + 1, dtype=x.dtype, device=x.device)
    terms = torch.exp(-2 * (math.pi * sigma * k) ** 2) * torch.cos(2 * math.pi * k * f)
    return math.sqrt(2 * math.pi) * sigma * (1 + 2 * terms.sum(-1, keepdim=True))


def _kernel_1d(x: torch.Tensor, ms: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    """1-D kernel weights ``k(x - m)``: ``x`` ``(B, N, 1)`` source coordinates, ``ms`` pixel
    indices ``(W,)``; returns ``(B, N, W)``."""
    zero = x.new_zeros(())
    if kernel == "bilinear":
        # max(0, 1 - |x - m|) written as grid_sample computes it: the neighbours floor(x) and
        # floor(x) + 1 with weights 1 - w and w, w = x - floor(x) (exact). Autograd then gives
        # d k / d x = -1 for x - m in [0, 1), +1 for x - m in [-1, 0) and 0 elsewhere: the
        # right-hand derivative, also at the kinks. Comparing integers, not the rounded x - m,
        # keeps a point a hair left of an integer from picking up a third, weight-0 neighbour.
        x0 = torch.floor(x.detach())
        frac = x - x0
        return torch.where(ms == x0, 1 - frac, torch.where(ms == x0 + 1, frac, zero))
    if kernel == "nearest":
        # delta(round(x) - m), ties to even as grid_sample's nearbyint; no gradient to the grid.
        return (torch.round(x.detach()) == ms).to(x.dtype)
    # Gaussian over the lattice sum: a constant image reads that constant away from the borders.
    return torch.exp(-0.5 * ((x - ms) / sigma) ** 2) / _lattice_sum(x, sigma)


def _axis_weights(
    grid: torch.Tensor,
    in_size: Sequence[int],
    kernel: str,
    sigma: float,
    align_corners: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable weights: ``wx`` ``(B, N, W)`` and ``wy`` ``(B, N, H)`` for ``N = Ho * Wo`` points."""
    h, w = in_size
    pix = _source_pixels(grid, (h, w), align_corners)  # (B, N, 2)
    ms = torch.arange(w, dtype=grid.dtype, device=grid.device)
    ns = torch.arange(h, dtype=grid.dtype, device=grid.device)
    wx = _kernel_1d(pix[..., 0:1], ms, kernel, sigma)  # (B, N, W)
    wy = _kernel_1d(pix[..., 1:2], ns, kernel, sigma)  # (B, N, H)
    return wx, wy


def _check_kernel(kernel: str, sigma: float) -> None:
    check_choice(kernel, "kernel", KERNELS)
    if kernel == "gaussian":
        check_positive(sigma, "sigma")


def kernel_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    kernel: str = "bilinear",
    sigma: float = 1.0,
    align_corners: bool = False,
) -> torch.Tensor:
    """Sample ``input`` at ``grid`` with the generic kernel formula of the paper (eq. 3).

    Points outside the image read zeros (the sum only runs over existing pixels). With
    ``kernel="bilinear"`` the result equals ``grid_sample(..., padding_mode="zeros")`` in the
    forward pass and in both gradients, to rounding (about 1e-15 in float64), integer points
    included; ``kernel="nearest"`` equals ``grid_sample(..., mode="nearest")``.

    Convention:
        ``grid`` holds normalised ``(x, y)`` source points (see :mod:`torchstn.functional.coords`),
        converted to pixel units rounded as ``grid_sample`` rounds them on CUDA and in PyTorch's
        AVX2/AVX-512 CPU kernels: with ``align_corners=False`` ``((g + 1) W - 1) / 2`` is rounded
        once, as a fused multiply-add. (A CPU build without them, ``ATEN_CPU_CAPABILITY=default``,
        rounds twice: some points within an ulp of an integer then fall on its other side, and
        ``grid_sample``'s grid gradient there is the other one-sided derivative.) Kernels act in
        pixel units:

        * ``bilinear``: ``max(0, 1 - |d|)`` with ``d = x - m``; gradients flow to ``input`` and
          ``grid`` (eq. 6 and 7). At the kinks ``d = 0`` and ``d = +-1`` the derivative is
          ``grid_sample``'s one-sided choice (neighbours ``floor(x)`` and ``floor(x) + 1``): -1 for
          ``d`` in ``[0, 1)``, +1 for ``d`` in ``[-1, 0)``, 0 elsewhere, i.e. the right-hand
          derivative of the output in ``x``, so a transformer at the identity grid (integer
          points) gets the image's slope. (Eq. 7 of the paper, taken literally, gives the centre
          pixel +1 and both neighbours 0 at ``d = 0``: ``dV/dx = U[x]``, a derivative from
          neither side.)
        * ``nearest``: ``delta(round(x) - m)``, ties at ``.5`` to even as ``grid_sample``'s
          ``nearbyint`` (the paper's ``floor(x + 0.5)`` rounds them up); no gradient to the grid.
        * ``gaussian``: ``exp(-d^2 / (2 sigma^2)) / S(x)`` with ``S(x)`` the sum of the numerator
          over every integer ``m`` (the infinite pixel lattice, not only the image), so that a
          constant image reads exactly that constant wherever the kernel lies inside the image,
          for every ``sigma``, while points outside fade to 0 as with zeros padding (the image's
          edge reads half the constant). Every input pixel influences every output pixel.

    Args:
        input: ``(B, C, H, W)`` floating-point images.
        grid: ``(B, Ho, Wo, 2)`` normalised source coordinates.
        kernel: ``"bilinear"``, ``"nearest"`` or ``"gaussian"``.
        sigma: Gaussian standard deviation in pixels (ignored by the other kernels).
        align_corners: see :mod:`torchstn.functional.coords`.

    Returns:
        ``(B, C, Ho, Wo)`` sampled images.

    Example:
        >>> x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> g = torch.zeros(1, 1, 1, 2)  # the centre of the image
        >>> kernel_sample(x, g)
        tensor([[[[1.5000]]]])
        >>> ones = torch.ones(1, 1, 9, 9, dtype=torch.float64)
        >>> kernel_sample(ones, g.double(), "gaussian", sigma=0.2)  # a constant stays constant
        tensor([[[[1.]]]], dtype=torch.float64)
    """
    check_tensor(input, "input", ndim=4)  # volumes: not yet (the 2-D kernel sampler)
    check_input_and_grid(input, grid)
    _check_kernel(kernel, sigma)
    b, c, h, w = input.shape
    ho, wo = grid.shape[1:3]
    wx, wy = _axis_weights(grid, (h, w), kernel, sigma, align_corners)
    rows = torch.einsum("bcnm,bim->bcin", input, wx)  # (B, C, N, H): each row read at x_i
    out = torch.einsum("bcin,bin->bci", rows, wy)  # (B, C, N)
    return out.reshape(b, c, ho, wo)


def influence_weights(
    grid: torch.Tensor,
    in_size: Sequence[int],
    kernel: str = "bilinear",
    sigma: float = 1.0,
    align_corners: bool = False,
) -> torch.Tensor:
    """The weight ``k(x_i - m) k(y_i - n)`` of every input pixel on every output pixel.

    This is the 3-D picture of the sampling formula: for output pixel ``(i, j)`` the slice
    ``weights[b, i, j]`` is an ``(H, W)`` map over the input whose weighted sum with the image is
    the output value.

    Args:
        grid: ``(B, Ho, Wo, 2)`` normalised source coordinates.
        in_size: input size ``(H, W)``.
        kernel, sigma, align_corners: as in :func:`kernel_sample`.

    Returns:
        ``(B, Ho, Wo, H, W)`` weights.

    Example:
        >>> g = torch.zeros(1, 1, 1, 2)
        >>> influence_weights(g, (2, 2))[0, 0, 0]
        tensor([[0.2500, 0.2500],
                [0.2500, 0.2500]])
    """
    check_tensor(grid, "grid", ndim=4, last_dim=2)
    h, w = check_size(in_size, "in_size")
    _check_kernel(kernel, sigma)
    b, ho, wo = grid.shape[:3]
    wx, wy = _axis_weights(grid, (h, w), kernel, sigma, align_corners)
    weights = wy[..., :, None] * wx[..., None, :]  # (B, N, H, W)
    return weights.reshape(b, ho, wo, h, w)
