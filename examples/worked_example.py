"""The worked example of the spatial transformer's sampler, step by step.

A 4x4 grayscale image; every pixel is a unit cell whose centre is its coordinate. An affine matrix
maps the target pixel (1, 1) to the source point (2.5, 2.5), which falls between four pixel centres;
the sampled intensity is their bilinear blend, here the plain mean, and the influence of every input
pixel on that output is a 4x4 map with four weights of 1/4 (the article's 3-D picture).

Run: ``python examples/worked_example.py``.
"""

from __future__ import annotations

import torch

from torchstn.functional import influence_weights, kernel_sample, pixel_matrix_to_normalized, sample
from torchstn.transforms import get


def worked_example(align_corners: bool = False) -> dict[str, torch.Tensor]:
    """Compute every quantity of the example; returns them by name."""
    image = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)  # U, (B, C, H, W)
    # target (x_t, y_t, 1) -> source (x_s, y_s): a shift by 1.5 px in pixel-centre coordinates
    pixel_matrix = torch.tensor([[[1.0, 0.0, 1.5], [0.0, 1.0, 1.5]]])
    target = torch.tensor([1.0, 1.0, 1.0])
    source = pixel_matrix[0] @ target  # (2.5, 2.5)

    theta = pixel_matrix_to_normalized(pixel_matrix, (4, 4), align_corners=align_corners)
    affine = get("affine")
    grid = affine.grid(theta[:, :2, :].reshape(1, 6), (4, 4), align_corners)  # (1, 4, 4, 2)
    output = sample(image, grid, align_corners=align_corners)  # (1, 1, 4, 4)
    weights = influence_weights(grid, (4, 4), "bilinear", align_corners=align_corners)
    return {
        "image": image[0, 0],
        "source": source,
        "value": output[0, 0, 1, 1],
        "value_kernel": kernel_sample(image, grid, align_corners=align_corners)[0, 0, 1, 1],
        "expected": image[0, 0, 2:4, 2:4].mean(),
        "weights": weights[0, 1, 1],  # (4, 4) influence of each input pixel on output (1, 1)
    }


def main() -> None:
    r = worked_example()
    torch.set_printoptions(precision=4)
    print("input image U (4x4):\n", r["image"])
    print("target (1, 1) -> source", tuple(r["source"].tolist()))
    print(f"sampled intensity V = {r['value'].item():.4f} (grid_sample)")
    print(f"                    = {r['value_kernel'].item():.4f} (generic kernel formula, eq. 3)")
    print(f"mean of the four neighbours = {r['expected'].item():.4f}")
    print("influence of each input pixel on output (1, 1):\n", r["weights"])


if __name__ == "__main__":
    main()
