"""The 3-D families: identity, rotations as voxel permutations, exact inverses and compositions,
map_points against grid and sampling, gradients, reduced precision and shape errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchstn import InvalidInputError, transforms
from torchstn.functional import (
    base_grid,
    grid_axes,
    normalized_matrix_to_pixel,
    normalized_to_pixel,
    pixel_matrix_to_normalized,
    sample,
)
from torchstn.transforms import MatrixTransform
from torchstn.transforms.volumetric import rotation_matrix, rotation_vector

NAMES = transforms.names(ndim=3)
MATRIX = [n for n in NAMES if isinstance(transforms.get(n), MatrixTransform)]


def _random(name: str, batch: int = 3, spread: float = 0.25, seed: int = 0) -> torch.Tensor:
    t = transforms.get(name)
    gen = torch.Generator().manual_seed(seed)
    delta = (torch.rand(batch, t.num_params, generator=gen, dtype=torch.float64) * 2 - 1) * spread
    if name == "projective3d":
        delta[:, 12:] /= 4  # the perspective row: keep w well away from 0
    return t.identity_params(torch.float64) + delta


def test_the_registry_has_every_family_of_the_issue() -> None:
    assert NAMES == (
        "affine3d",
        "attention3d",
        "projective3d",
        "rigid3d",
        "similarity3d",
        "tps3d",
        "translation3d",
    )
    counts = {n: transforms.get(n).num_params for n in NAMES}
    assert counts == {
        "affine3d": 12,
        "attention3d": 4,
        "projective3d": 15,
        "rigid3d": 6,
        "similarity3d": 7,
        "tps3d": 81,
        "translation3d": 3,
    }
    assert all(transforms.get(n).ndim == 3 for n in NAMES)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_identity_grid_is_affine_grids(name: str, align_corners: bool) -> None:
    t = transforms.get(name)
    size = (3, 4, 5)
    grid = t.grid(t.identity_params(torch.float64)[None], size, align_corners)
    theta = torch.eye(3, 4, dtype=torch.float64)[None]
    ref = F.affine_grid(theta, (1, 1, *size), align_corners=align_corners)
    if name == "tps3d":  # a solved system: equal to rounding
        torch.testing.assert_close(grid, ref, rtol=0, atol=1e-12)
    else:
        assert torch.equal(grid, ref)
    # and the sampler reads the volume back
    x = torch.rand(2, 1, *size, dtype=torch.float64)
    params = t.identity_params(torch.float64).expand(2, -1)
    out = transforms.warping.warp(x, params, t, align_corners=align_corners)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
def test_affine3d_is_pytorchs_theta(align_corners: bool) -> None:
    params = _random("affine3d", spread=0.5)
    grid = transforms.get("affine3d").grid(params, (4, 3, 5), align_corners)
    ref = F.affine_grid(params.reshape(-1, 3, 4), (3, 1, 4, 3, 5), align_corners=align_corners)
    torch.testing.assert_close(grid, ref, rtol=0, atol=1e-14)


def _permuted(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """What a rotation by the integer matrix ``rot`` (output point -> input point, in (x, y, z)
    about the centre) reads from the cube ``x`` ``(B, C, n, n, n)``: index arithmetic only."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    c = (n - 1) / 2
    for k, i, j in itertools.product(range(n), repeat=3):
        p = torch.tensor([j - c, i - c, k - c], dtype=torch.float64)
        sx, sy, sz = (rot.double() @ p + c).round().long().tolist()
        out[..., k, i, j] = x[..., sz, sy, sx]
    return out


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("quarters", [1, 2, 3])
def test_quarter_turns_permute_the_voxels(axis: int, quarters: int, align_corners: bool) -> None:
    n = 5
    x = torch.rand(1, 2, n, n, n, dtype=torch.float64)
    vector = torch.zeros(1, 3, dtype=torch.float64)
    vector[0, axis] = quarters * math.pi / 2
    params = torch.cat((vector, torch.zeros(1, 3, dtype=torch.float64)), dim=1)
    rot = rotation_matrix(vector)[0]
    exact = rot.round()
    assert torch.allclose(rot, exact, atol=1e-15)
    expected = _permuted(x, exact)
    t = transforms.get("rigid3d")
    nearest = transforms.warping.warp(x, params, t, mode="nearest", align_corners=align_corners)
    assert torch.equal(nearest, expected)
    trilinear = transforms.warping.warp(x, params, t, align_corners=align_corners)
    torch.testing.assert_close(trilinear, expected, rtol=0, atol=1e-14)


def test_rotation_direction_is_right_handed_in_xyz() -> None:
    quarter = math.pi / 2
    for axis, (src, dst) in enumerate([(1, 2), (2, 0), (0, 1)]):  # x: y->z, y: z->x, z: x->y
        v = torch.zeros(1, 3, dtype=torch.float64)
        v[0, axis] = quarter
        unit = torch.zeros(3, dtype=torch.float64)
        unit[src] = 1
        moved = rotation_matrix(v)[0] @ unit
        expected = torch.zeros(3, dtype=torch.float64)
        expected[dst] = 1
        torch.testing.assert_close(moved, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 0.5, math.pi / 2, 3.0, math.pi - 1e-6, math.pi])
def test_rotation_vector_round_trip_at_every_angle(angle: float) -> None:
    gen = torch.Generator().manual_seed(1)
    axes = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    axes = torch.cat((axes, torch.eye(3, dtype=torch.float64)))
    vectors = axes / axes.norm(dim=-1, keepdim=True) * angle
    back = rotation_vector(rotation_matrix(vectors))
    if angle == math.pi:  # v and -v are the same rotation at 180 degrees
        same = torch.minimum((back - vectors).norm(dim=-1), (back + vectors).norm(dim=-1))
        assert same.max() < 1e-7
    else:
        torch.testing.assert_close(back, vectors, rtol=0, atol=1e-9)
    torch.testing.assert_close(rotation_matrix(back), rotation_matrix(vectors), rtol=0, atol=1e-12)


def test_rotation_matrices_are_orthonormal_with_determinant_one() -> None:
    v = torch.randn(20, 3, dtype=torch.float64) * 2
    r = rotation_matrix(v)
    torch.testing.assert_close(
        r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(20, 3, 3)
    )
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(20, dtype=torch.float64))


@pytest.mark.parametrize("name", MATRIX)
def test_inverse_and_compose_are_exact(name: str) -> None:
    t = transforms.get(name)
    assert isinstance(t, MatrixTransform)
    a, b, c = (_random(name, seed=s) for s in (1, 2, 3))
    pts = torch.rand(3, 20, 3, dtype=torch.float64) * 2 - 1
    # inverse: a after a^-1 is the identity
    back = t.map_points(a, t.map_points(t.inverse_params(a), pts))
    torch.testing.assert_close(back, pts, rtol=0, atol=1e-12)
    # compose: one map equals the two in turn, associative, identity neutral
    torch.testing.assert_close(
        t.map_points(t.compose(a, b), pts),
        t.map_points(a, t.map_points(b, pts)),
        rtol=0,
        atol=1e-12,
    )
    torch.testing.assert_close(
        t.compose(t.compose(a, b), c), t.compose(a, t.compose(b, c)), rtol=0, atol=1e-12
    )
    ident = t.identity_params(torch.float64).expand(3, -1)
    torch.testing.assert_close(t.compose(a, ident), a, rtol=0, atol=1e-12)
    # the matrix round trip
    torch.testing.assert_close(t.from_matrix(t.to_matrix(a)), a, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_map_points_is_the_grid(name: str, align_corners: bool) -> None:
    t = transforms.get(name)
    params = _random(name, batch=2)
    size = (3, 4, 5)
    grid = t.grid(params, size, align_corners)
    pts = base_grid(size, align_corners, dtype=torch.float64).reshape(1, -1, 3).expand(2, -1, -1)
    mapped = t.map_points(params, pts.contiguous()).reshape(grid.shape)
    torch.testing.assert_close(grid, mapped, rtol=0, atol=1e-12)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("name", MATRIX)
def test_map_points_and_sampling_agree_in_voxels(name: str, align_corners: bool) -> None:
    """A volume whose voxels hold their own x, y, z coordinates, warped, reads back the mapped
    voxel coordinates (trilinear interpolation of a linear function is exact inside)."""
    t = transforms.get(name)
    assert isinstance(t, MatrixTransform)
    size = (6, 7, 8)
    d, h, w = size
    zz, yy, xx = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float64) for n in size), indexing="ij"
    )
    coords = torch.stack((xx, yy, zz))[None].expand(2, -1, -1, -1, -1)
    params = _random(name, batch=2, spread=0.05)
    out = transforms.warping.warp(coords, params, t, (3, 4, 5), align_corners=align_corners)
    out_pts = base_grid((3, 4, 5), align_corners, dtype=torch.float64).reshape(1, -1, 3)
    src = t.map_points(params, out_pts.expand(2, -1, -1).contiguous())
    pix = normalized_to_pixel(src, size, align_corners)  # (2, N, 3)
    inside = ((pix >= 0) & (pix <= torch.tensor([w - 1, h - 1, d - 1]))).all(-1)
    got = out.flatten(2).transpose(1, 2)  # (2, N, 3)
    assert inside.sum() > 20
    torch.testing.assert_close(got[inside], pix[inside], rtol=0, atol=1e-10)
    # and the matrix in voxel units says the same
    m = normalized_matrix_to_pixel(t.to_matrix(params), size, (3, 4, 5), align_corners)
    out_vox = normalized_to_pixel(out_pts, (3, 4, 5), align_corners)
    homo = torch.cat((out_vox, torch.ones_like(out_vox[..., :1])), -1) @ m.transpose(1, 2)
    torch.testing.assert_close(homo[..., :3] / homo[..., 3:], pix, rtol=0, atol=1e-10)
    back = pixel_matrix_to_normalized(m, size, (3, 4, 5), align_corners)
    torch.testing.assert_close(back, t.to_matrix(params), rtol=0, atol=1e-12)


def test_tps3d_interpolates_its_control_points() -> None:
    t = transforms.get("tps3d")
    params = _random("tps3d", batch=2, spread=0.2)
    centres = t.control_points(torch.float64)[None].expand(2, -1, -1).contiguous()
    mapped = t.map_points(params, centres)
    torch.testing.assert_close(mapped, params.reshape(2, -1, 3), rtol=0, atol=1e-10)


def test_tps3d_reproduces_an_affine_map_exactly() -> None:
    """The spline's affine part: control points moved by an affine map move every point so."""
    t = transforms.get("tps3d", grid_size=(2, 3, 2))
    affine = transforms.get("affine3d")
    theta = _random("affine3d", batch=1, spread=0.3)
    centres = t.control_points(torch.float64)[None]
    params = affine.map_points(theta, centres).reshape(1, -1)
    pts = torch.rand(1, 30, 3, dtype=torch.float64) * 2 - 1
    torch.testing.assert_close(
        t.map_points(params, pts), affine.map_points(theta, pts), rtol=0, atol=1e-10
    )


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_of_grid_and_trilinear_sampling(name: str) -> None:
    t = transforms.get(name, **({"grid_size": 2} if name == "tps3d" else {}))
    gen = torch.Generator().manual_seed(4)
    params = t.identity_params(torch.float64)[None] + 0.1 * torch.rand(
        1, t.num_params, generator=gen, dtype=torch.float64
    )
    x = torch.rand(1, 1, 3, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    params.requires_grad_()
    assert gradcheck(lambda a, p: sample(a, t.grid(p, (2, 3, 2))), (x, params))


def test_gradcheck_of_rotations_at_the_identity_and_far_from_it() -> None:
    for v in (torch.zeros(1, 3), torch.tensor([[0.3, -2.0, 1.0]]), torch.tensor([[0.0, 0.0, 3.1]])):
        v = v.double().requires_grad_()
        assert gradcheck(rotation_matrix, (v,))
    m = rotation_matrix(torch.tensor([[0.4, -0.2, 0.9]], dtype=torch.float64)).requires_grad_()
    assert gradcheck(rotation_vector, (m,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_reduced_precision_grids_are_finite(name: str, dtype: torch.dtype) -> None:
    t = transforms.get(name)
    params = _random(name, batch=2, spread=3.0).to(dtype)
    grid = t.grid(params, (3, 4, 5))
    assert grid.dtype == dtype and torch.isfinite(grid).all()
    x = torch.rand(2, 1, 3, 4, 5, dtype=dtype)
    out = transforms.warping.warp(x, params, t)
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_grid_axes_of_a_volume() -> None:
    xs, ys, zs = grid_axes((2, 3, 4), align_corners=True, dtype=torch.float64)
    assert (len(xs), len(ys), len(zs)) == (4, 3, 2)
    torch.testing.assert_close(
        base_grid((2, 3, 4), True, dtype=torch.float64)[1, 2, 3], torch.stack((xs[3], ys[2], zs[1]))
    )


class TestShapeErrors:
    def test_out_size_of_the_wrong_length_names_the_family(self) -> None:
        t = transforms.get("affine3d")
        with pytest.raises(
            InvalidInputError,
            match=r"out_size: the 'affine3d' transform is 3-D and takes \(D, H, W\), got \(4, 4\)",
        ):
            t.grid(t.identity_params()[None], (4, 4))
        with pytest.raises(
            InvalidInputError,
            match=r"out_size: the 'affine' transform is 2-D and takes \(H, W\), got \(4, 4, 4\)",
        ):
            transforms.get("affine").grid(
                transforms.get("affine").identity_params()[None], (4, 4, 4)
            )

    def test_points_must_have_three_coordinates(self) -> None:
        t = transforms.get("rigid3d")
        with pytest.raises(InvalidInputError, match="points"):
            t.map_points(t.identity_params()[None], torch.zeros(1, 5, 2))

    def test_a_volume_to_a_2d_family_and_an_image_to_a_3d_family(self) -> None:
        warp = transforms.warping.warp
        vol, img = torch.rand(1, 1, 4, 4, 4), torch.rand(1, 1, 4, 4)
        with pytest.raises(
            InvalidInputError,
            match=r"x: the 'affine' transform warps 4-D \(B, C, H, W\) images, got shape \(1, 1, 4, 4, 4\)",
        ):
            warp(vol, transforms.get("affine").identity_params()[None], "affine")
        with pytest.raises(
            InvalidInputError,
            match=r"x: the 'affine3d' transform warps 5-D \(B, C, D, H, W\) volumes, got shape \(1, 1, 4, 4\)",
        ):
            warp(img, transforms.get("affine3d").identity_params()[None], "affine3d")

    def test_tps3d_needs_two_points_per_side(self) -> None:
        with pytest.raises(InvalidInputError, match="grid_size"):
            transforms.get("tps3d", grid_size=(1, 3, 3))
        with pytest.raises(InvalidInputError, match="grid_size"):
            transforms.get("tps3d", grid_size=(3, 3))
