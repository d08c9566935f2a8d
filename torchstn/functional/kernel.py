"""The paper's generic sampling formula (eq. 3), implemented directly, for images and volumes.

``V[b, c, i] = sum_n sum_m U[b, c, n, m] k(x_i - m) k(y_i - n)`` where ``(x_i, y_i)`` is the
source point of output pixel ``i`` in pixel-centre coordinates. Every input pixel enters the sum;
the kernel decides its weight. A volume adds a third factor: ``V[b, c, i] = sum_l sum_n sum_m
U[b, c, l, n, m] k(x_i - m) k(y_i - n) k(z_i - l)``, with ``z`` along the depth ``D``. This is
slower than :func:`torchstn.functional.sample` (it costs ``O(Ho Wo H W)`` per channel,
``O(Do Ho Wo D H W)`` for a volume, rather than ``O(Ho Wo)``) but it is the formula itself, it
supports kernels that ``grid_sample`` lacks (Gaussian; bicubic for volumes, i.e. tricubic), and
it exposes the per-pixel weights. The sum is evaluated one axis at a time with one ``(N, W)``,
``(N, H)`` (and ``(N, D)``) weight matrix per axis, never a dense ``(N, H W)`` one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._checks import check_choice, check_positive, check_size, check_spatial_size, check_tensor
from ..errors import InvalidInputError
from .coords import normalized_to_pixel
from .sample import check_input_and_grid

__all__ = ["KERNELS", "influence_weights", "kernel_sample"]

KERNELS = ("bilinear", "nearest", "gaussian", "bicubic")

#: the parameter ``a`` of Keys' cubic convolution kernel, as ``grid_sample``'s ``mode="bicubic"``.
_KEYS_A = -0.75


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
    """``(B, N, 2)`` pixel (``(B, N, 3)`` voxel) coordinates of the grid's points for an input of
    size ``(H, W)`` (``(D, H, W)``), rounded exactly as ``grid_sample`` rounds them, with the
    gradient of :func:`~torchstn.functional.normalized_to_pixel`.

    With ``align_corners=False`` images round ``((g + 1) W - 1) / 2`` once (a fused multiply-add)
    on every device, and volumes once on CUDA and twice elsewhere: PyTorch's 3-D CPU kernel is a
    scalar loop compiled without FMA (on every instruction set), its CUDA kernel fuses.
    """
    dims = len(in_size)
    g = grid.reshape(grid.shape[0], -1, dims)
    pix = normalized_to_pixel(g, tuple(in_size), align_corners)
    if align_corners:  # (g + 1) * (W - 1) / 2: one product, rounded once either way
        return pix
    if dims == 3 and grid.device.type != "cuda":  # ((g + 1) * W - 1) / 2 rounded twice
        return pix
    g = g.detach()
    sizes = list(in_size)[::-1]  # (W, H[, D]): the (x, y[, z]) order of the points
    fused = torch.stack([_fused_edges_to_pixel(g[..., i], n) for i, n in enumerate(sizes)], -1)
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


def _keys_inner(s: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel for ``|s| <= 1``: ``(a + 2) s^3 - (a + 3) s^2 + 1``."""
    return ((_KEYS_A + 2) * s - (_KEYS_A + 3)) * s * s + 1


def _keys_outer(s: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel for ``1 < |s| < 2``: ``a s^3 - 5 a s^2 + 8 a s - 4 a``."""
    return ((_KEYS_A * s - 5 * _KEYS_A) * s + 8 * _KEYS_A) * s - 4 * _KEYS_A


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
    if kernel == "bicubic":
        # Keys' kernel written as grid_sample computes it: the taps floor(x) - 1 ... floor(x) + 2
        # with the weights of t = x - floor(x) below, smooth (C1) in x, so at integer points the
        # one-sided choice does not matter.
        x0 = torch.floor(x.detach())
        t = x - x0
        taps = (_keys_outer(t + 1), _keys_inner(t), _keys_inner(1 - t), _keys_outer(2 - t))
        out = torch.where(ms == x0 + 2, taps[3], zero)
        for offset in (1, 0, -1):
            out = torch.where(ms == x0 + offset, taps[offset + 1], out)
        return out
    # Gaussian over the lattice sum: a constant image reads that constant away from the borders.
    return torch.exp(-0.5 * ((x - ms) / sigma) ** 2) / _lattice_sum(x, sigma)


def _axis_weights(
    grid: torch.Tensor,
    in_size: Sequence[int],
    kernel: str,
    sigma: float,
    align_corners: bool,
) -> list[torch.Tensor]:
    """Separable weights, one matrix per axis in ``(x, y[, z])`` order: ``wx`` ``(B, N, W)``,
    ``wy`` ``(B, N, H)`` and, for a volume, ``wz`` ``(B, N, D)``, for the grid's ``N`` points."""
    pix = _source_pixels(grid, in_size, align_corners)  # (B, N, 2) or (B, N, 3)
    weights = []
    for axis, n in enumerate(list(in_size)[::-1]):  # W, H[, D]
        index = torch.arange(n, dtype=grid.dtype, device=grid.device)
        weights.append(_kernel_1d(pix[..., axis : axis + 1], index, kernel, sigma))
    return weights


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
    included; ``kernel="nearest"`` equals ``grid_sample(..., mode="nearest")``. Volumes work the
    same way: ``"bilinear"`` is then trilinear (the product of the three 1-D kernels) and equals
    ``grid_sample``'s 5-D ``mode="bilinear"``, ``"nearest"`` its ``mode="nearest"``.

    Convention:
        ``grid`` holds normalised ``(x, y)`` source points (see :mod:`torchstn.functional.coords`),
        converted to pixel units rounded as ``grid_sample`` rounds them on CUDA and in PyTorch's
        AVX2/AVX-512 CPU kernels: with ``align_corners=False`` ``((g + 1) W - 1) / 2`` is rounded
        once, as a fused multiply-add. (A CPU build without them, ``ATEN_CPU_CAPABILITY=default``,
        rounds twice: some points within an ulp of an integer then fall on its other side, and
        ``grid_sample``'s grid gradient there is the other one-sided derivative.)

        A volume's ``grid`` holds ``(x, y, z)`` points, ``x`` along ``W``, ``y`` along ``H`` and
        ``z`` along ``D``, as ``grid_sample`` reads a 5-D grid, each converted as above with its
        own side, except that ``grid_sample``'s 3-D CPU kernel (a scalar loop, the same on every
        instruction set) rounds ``((g + 1) W - 1) / 2`` twice and its CUDA kernel once: volumes
        are rounded as it rounds them on their device.

        Kernels act in pixel units, along each axis, and the axes' weights multiply:
        ``k(x_i - m) k(y_i - n)`` for an image, ``k(x_i - m) k(y_i - n) k(z_i - l)`` for a volume.

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
          edge reads half the constant, a volume's face half and its corner an eighth). Every
          input pixel influences every output pixel.
        * ``bicubic``: Keys' cubic convolution kernel with ``a = -0.75``, the kernel of
          ``grid_sample``'s ``mode="bicubic"``: ``(a + 2)|d|^3 - (a + 3)|d|^2 + 1`` for
          ``|d| <= 1``, ``a|d|^3 - 5a|d|^2 + 8a|d| - 4a`` for ``1 < |d| < 2`` and 0 beyond, four
          pixels per axis. An image's result equals ``grid_sample(..., mode="bicubic",
          padding_mode="zeros")`` in value and both gradients, to rounding. In 3-D it is the
          tensor product of the same 1-D kernel along x, y and z: tricubic sampling, which
          ``grid_sample`` lacks. The weights sum to 1 but some are negative, so the output can
          overshoot the input's range.

    Args:
        input: ``(B, C, H, W)`` floating-point images, or ``(B, C, D, H, W)`` volumes.
        grid: ``(B, Ho, Wo, 2)`` normalised source coordinates (``(B, Do, Ho, Wo, 3)`` for a
            volume), same dtype and device as ``input``.
        kernel: ``"bilinear"``, ``"nearest"``, ``"gaussian"`` or ``"bicubic"``.
        sigma: Gaussian standard deviation in pixels (ignored by the other kernels).
        align_corners: see :mod:`torchstn.functional.coords`.

    Returns:
        ``(B, C, Ho, Wo)`` sampled images (``(B, C, Do, Ho, Wo)`` volumes).

    Example:
        >>> x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
        >>> g = torch.zeros(1, 1, 1, 2)  # the centre of the image
        >>> kernel_sample(x, g)
        tensor([[[[1.5000]]]])
        >>> ones = torch.ones(1, 1, 9, 9, dtype=torch.float64)
        >>> kernel_sample(ones, g.double(), "gaussian", sigma=0.2)  # a constant stays constant
        tensor([[[[1.]]]], dtype=torch.float64)
        >>> v = torch.arange(8.0).view(1, 1, 2, 2, 2)  # v[0, 0, z, y, x] = 4 z + 2 y + x
        >>> p = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.5]]).view(1, 1, 1, 2, 3)
        >>> kernel_sample(v, p)  # the centre, and voxel (x, y, z) = (1, 0, 1)
        tensor([[[[[3.5000, 5.0000]]]]])
    """
    check_input_and_grid(input, grid)
    _check_kernel(kernel, sigma)
    b, c = input.shape[:2]
    if input.dim() == 4:
        wx, wy = _axis_weights(grid, input.shape[2:], kernel, sigma, align_corners)
        rows = torch.einsum("bcnm,bim->bcin", input, wx)  # (B, C, N, H): each row read at x_i
        out = torch.einsum("bcin,bin->bci", rows, wy)  # (B, C, N)
    else:
        wx, wy, wz = _axis_weights(grid, input.shape[2:], kernel, sigma, align_corners)
        rows = torch.einsum("bcdhw,bnw->bcdhn", input, wx)  # (B, C, D, H, N): rows read at x_i
        planes = torch.einsum("bcdhn,bnh->bcdn", rows, wy)  # (B, C, D, N): planes read at y_i
        out = torch.einsum("bcdn,bnd->bcn", planes, wz)  # (B, C, N)
    return out.reshape(b, c, *grid.shape[1:-1])


def influence_weights(
    grid: torch.Tensor,
    in_size: Sequence[int],
    kernel: str = "bilinear",
    sigma: float = 1.0,
    align_corners: bool = False,
) -> torch.Tensor:
    """The weight ``k(x_i - m) k(y_i - n)`` of every input pixel on every output pixel
    (``k(x_i - m) k(y_i - n) k(z_i - l)`` of every voxel of a volume).

    This is the 3-D picture of the sampling formula: for output pixel ``(i, j)`` the slice
    ``weights[b, i, j]`` is an ``(H, W)`` map over the input whose weighted sum with the image is
    the output value; for output voxel ``(k, i, j)`` of a volume, ``weights[b, k, i, j]`` is a
    ``(D, H, W)`` map over the input volume. The result is dense (every output point times
    every input point), so keep the sizes small.

    Args:
        grid: ``(B, Ho, Wo, 2)`` normalised source coordinates, or ``(B, Do, Ho, Wo, 3)``
            ``(x, y, z)`` points in a volume.
        in_size: input size ``(H, W)``, or ``(D, H, W)`` with a volume's grid (one int stands
            for every side).
        kernel, sigma, align_corners: as in :func:`kernel_sample`.

    Returns:
        ``(B, Ho, Wo, H, W)`` weights, ``(B, Do, Ho, Wo, D, H, W)`` for a volume.

    Example:
        >>> g = torch.zeros(1, 1, 1, 2)
        >>> influence_weights(g, (2, 2))[0, 0, 0]
        tensor([[0.2500, 0.2500],
                [0.2500, 0.2500]])
        >>> influence_weights(torch.zeros(1, 1, 1, 1, 3), (2, 2, 2)).shape  # a volume's centre
        torch.Size([1, 1, 1, 1, 2, 2, 2])
    """
    check_tensor(grid, "grid", floating=False)  # the rank first, then the last dim and dtype
    if grid.dim() not in (4, 5):
        raise InvalidInputError(
            f"grid: expected 4 dims (B, Ho, Wo, 2) or 5 dims (B, Do, Ho, Wo, 3), received "
            f"{grid.dim()}-dim tensor of shape {tuple(grid.shape)}"
        )
    if grid.dim() == 4:
        check_tensor(grid, "grid", last_dim=2)
        size: tuple[int, ...] = check_size(in_size, "in_size")
    else:
        check_tensor(grid, "grid", last_dim=3)
        size = check_spatial_size(in_size, "in_size", 3)
    _check_kernel(kernel, sigma)
    per_axis = _axis_weights(grid, size, kernel, sigma, align_corners)
    if grid.dim() == 4:
        wx, wy = per_axis
        weights = wy[..., :, None] * wx[..., None, :]  # (B, N, H, W)
    else:
        wx, wy, wz = per_axis
        weights = wz[..., :, None, None] * wy[..., None, :, None] * wx[..., None, None, :]
    return weights.reshape(*grid.shape[:-1], *size)  # (B, [Do,] Ho, Wo, [D,] H, W)
