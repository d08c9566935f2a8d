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


def _kernel_1d(d: torch.Tensor, kernel: str, sigma: float) -> torch.Tensor:
    """1-D kernel ``k(d)`` evaluated at distances ``d = x - m``."""
    if kernel == "bilinear":
        # max(0, 1 - |d|); autograd gives the paper's sub-gradient (eq. 7) away from d = 0.
        return torch.relu(1 - d.abs())
    if kernel == "nearest":
        # delta(floor(x + 0.5) - m): no gradient flows to the grid.
        return (torch.floor(d.detach() + 0.5) == 0).to(d.dtype)
    # Gaussian, normalised as a density so that a constant image stays constant far from borders.
    return torch.exp(-0.5 * (d / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)


def _axis_weights(
    grid: torch.Tensor,
    in_size: Sequence[int],
    kernel: str,
    sigma: float,
    align_corners: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable weights: ``wx`` ``(B, N, W)`` and ``wy`` ``(B, N, H)`` for ``N = Ho * Wo`` points."""
    h, w = in_size
    b = grid.shape[0]
    pix = normalized_to_pixel(grid.reshape(b, -1, 2), (h, w), align_corners)  # (B, N, 2)
    ms = torch.arange(w, dtype=grid.dtype, device=grid.device)
    ns = torch.arange(h, dtype=grid.dtype, device=grid.device)
    wx = _kernel_1d(pix[..., 0:1] - ms, kernel, sigma)  # (B, N, W)
    wy = _kernel_1d(pix[..., 1:2] - ns, kernel, sigma)  # (B, N, H)
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
    ``kernel="bilinear"`` the result equals ``grid_sample(..., padding_mode="zeros")``, and
    gradients flow to both ``input`` and ``grid`` (the sub-gradients of eq. 6 and 7).

    Convention:
        ``grid`` holds normalised ``(x, y)`` source points (see :mod:`torchstn.functional.coords`).
        Kernels act in pixel units: ``nearest`` is ``delta(floor(x + 0.5) - m)`` (ties round up,
        unlike ``grid_sample``'s round-half-even), ``gaussian`` is the normal density with
        standard deviation ``sigma`` pixels, so every input pixel influences every output pixel.

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
    """
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
