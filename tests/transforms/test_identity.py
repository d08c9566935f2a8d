"""The classic trap: identity params must reproduce the input exactly, for every family, both
``align_corners`` conventions and any image shape."""

from __future__ import annotations

import pytest
import torch

from torchstn import transforms
from torchstn.functional import kernel_sample, sample

CASES = (
    [(name, {}) for name in transforms.names(ndim=2)]
    + [("tps", {"grid_size": g}) for g in (2, 3, 5, (3, 6))]
    + [("tps", {"grid_size": 4, "reg": 0.5})]
)


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{o}" if o else n for n, o in CASES])
@pytest.mark.parametrize("size", [(8, 8), (5, 9), (1, 6), (28, 28)])
def test_identity_reproduces_the_input(
    name: str, options: dict, size: tuple[int, int], align_corners: bool, device: torch.device
) -> None:
    t = transforms.get(name, **options)
    x = torch.rand(2, 3, *size, device=device)
    grid = t.grid(t.identity_params(device=device).expand(2, -1), size, align_corners)
    torch.testing.assert_close(
        sample(x, grid, "bilinear", align_corners=align_corners), x, rtol=0, atol=1e-5
    )
    torch.testing.assert_close(
        sample(x, grid, "bicubic", align_corners=align_corners), x, rtol=0, atol=1e-4
    )
    torch.testing.assert_close(
        kernel_sample(x, grid, align_corners=align_corners), x, rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("name", transforms.names(ndim=2))
def test_identity_with_resampling_keeps_a_constant_image(name: str, align_corners: bool) -> None:
    """Downsampling with the identity still covers the image: a constant image stays constant
    (no border of zeros from a shrunk or shifted grid)."""
    t = transforms.get(name)
    x = torch.full((1, 1, 12, 16), 0.7)
    grid = t.grid(t.identity_params()[None], (6, 8), align_corners)
    torch.testing.assert_close(
        sample(x, grid, align_corners=align_corners), torch.full((1, 1, 6, 8), 0.7)
    )
