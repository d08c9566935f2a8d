"""``torchstn.fields``: the displacement convention, warping and the field algebra."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

from torchstn import InvalidInputError, NonFiniteError, SpatialTransformer, fields, warp
from torchstn.functional import pixel_matrix_to_normalized
from torchstn.transforms import get, names

SIZES = {2: (7, 10), 3: (5, 6, 7)}  # odd and even, non-square


def _smooth(b: int, size: tuple[int, ...], amp: float, seed: int = 0) -> torch.Tensor:
    """A smooth random field: coarse noise upsampled (amplitude ``amp`` pixels)."""
    g = torch.Generator().manual_seed(seed)
    n = len(size)
    coarse = torch.randn(b, n, *([3] * n), generator=g, dtype=torch.float64)
    mode = "bilinear" if n == 2 else "trilinear"
    return amp * F.interpolate(coarse, size=size, mode=mode, align_corners=True)


def _image(b: int, c: int, size: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    return torch.rand(
        b, c, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


# ----------------------------------------------------------------------------- convention
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("align_corners", [False, True])
def test_zero_field_is_identity(n: int, align_corners: bool) -> None:
    x = _image(2, 3, SIZES[n])
    y = fields.warp(x, torch.zeros(2, n, *SIZES[n], dtype=x.dtype), align_corners=align_corners)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, -3])
def test_constant_field_shifts_by_k_pixels(n: int, align_corners: bool, axis: int, k: int) -> None:
    """Channel ``axis`` (x, y, z) of k pixels reads k pixels along that axis, in both
    conventions; the pixels read from outside are zeros."""
    if axis >= n:
        pytest.skip("2-D has no z")
    size = SIZES[n]
    x = _image(1, 2, size)
    u = torch.zeros(1, n, *size, dtype=x.dtype)
    u[:, axis] = k
    y = fields.warp(x, u, align_corners=align_corners)
    dim = x.dim() - 1 - axis  # x along the last tensor dim
    length = size[len(size) - 1 - axis]
    want = torch.zeros_like(x)
    src = [slice(None)] * x.dim()
    dst = [slice(None)] * x.dim()
    if k >= 0:
        src[dim], dst[dim] = slice(k, length), slice(0, length - k)
    else:
        src[dim], dst[dim] = slice(0, length + k), slice(-k, length)
    want[tuple(dst)] = x[tuple(src)]
    torch.testing.assert_close(y, want, atol=1e-9, rtol=0)


def test_channel_order_is_xy_not_index_order() -> None:
    """Channel 0 moves along W (columns): the classic ij/xy mix-up gives another image."""
    x = _image(1, 1, (6, 8))
    u = torch.zeros(1, 2, 6, 8, dtype=x.dtype)
    u[:, 0] = 1
    y = fields.warp(x, u)
    torch.testing.assert_close(y[..., :-1], x[..., 1:])
    assert not torch.allclose(y[..., :-1, :], x[..., 1:, :])


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic", "gaussian"])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "fill"])
def test_warp_matches_grid_sample_of_its_grid(mode: str, padding_mode: str) -> None:
    """fields.warp is the sampler of torchstn.warp on the field's grid, in every mode."""
    if mode == "gaussian" and padding_mode != "zeros":
        pytest.skip("the gaussian sampler pads with zeros only")
    x = _image(2, 3, (9, 8)).float()
    u = _smooth(2, (9, 8), 2.5).float()
    fill = 0.25 if padding_mode == "fill" else 0.0
    y = fields.warp(x, u, mode, padding_mode, fill=fill)
    from torchstn.transforms.warping import resample

    want = resample(x, fields.to_grid(u), mode, padding_mode, False, fill)
    torch.testing.assert_close(y, want)


def test_batch_of_one_broadcasts() -> None:
    x = _image(1, 1, (6, 6))
    u = _smooth(3, (6, 6), 1.0)
    y = fields.warp(x, u)
    assert y.shape == (3, 1, 6, 6)
    torch.testing.assert_close(y[2:], fields.warp(x, u[2:]))
    y = fields.warp(_image(4, 1, (6, 6)), u[:1])
    assert y.shape == (4, 1, 6, 6)


def test_grid_round_trip() -> None:
    for n in (2, 3):
        for ac in (False, True):
            u = _smooth(2, SIZES[n], 3.0)
            torch.testing.assert_close(fields.from_grid(fields.to_grid(u, ac), ac), u)


# ----------------------------------------------------------------------------- bad fields
@pytest.mark.parametrize(
    ("u", "x", "words"),
    [
        (torch.zeros(1, 3, 6, 6), torch.zeros(1, 1, 6, 6), ["u:", "3 channels", "(1, 3, 6, 6)"]),
        (torch.zeros(1, 2, 5, 6), torch.zeros(1, 1, 6, 6), ["u:", "(5, 6)", "(6, 6)"]),
        (
            torch.zeros(1, 2, 6, 6),
            torch.zeros(1, 1, 4, 6, 6),
            ["u:", "(1, 2, 6, 6)", "5-D" if False else "(1, 1, 4, 6, 6)"],
        ),
        (torch.zeros(2, 2, 6, 6), torch.zeros(3, 1, 6, 6), ["u:", "batch size 2", "3"]),
        (torch.zeros(6, 6), torch.zeros(1, 1, 6, 6), ["u:", "(6, 6)"]),
    ],
)
def test_bad_field_one_line(u: torch.Tensor, x: torch.Tensor, words: list[str]) -> None:
    with pytest.raises(InvalidInputError) as err:
        fields.warp(x, u)
    text = str(err.value)
    assert "\n" not in text
    for w in words:
        assert w in text, (w, text)


def test_nan_field_refused() -> None:
    u = torch.zeros(1, 2, 4, 4)
    u[0, 1, 2, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="u: contains 1 NaN"):
        fields.warp(torch.zeros(1, 1, 4, 4), u)
    with pytest.raises(NonFiniteError, match="v: contains"):
        fields.integrate(u)


# ----------------------------------------------------------------------------- labels
def test_warp_labels_nearest_and_linear() -> None:
    lab = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    lab[..., 2:6, 2:6] = 1
    lab[..., 3:5, 3:5] = 2
    u = torch.zeros(1, 2, 8, 8)
    u[:, 1] = 2  # read two rows down
    for method in ("nearest", "linear"):
        out = fields.warp_labels(lab, u, method)
        assert out.dtype == lab.dtype and out.shape == lab.shape
        want = torch.zeros_like(lab)
        want[..., :6, :] = lab[..., 2:, :]
        assert torch.equal(out, want), method
    assert fields.warp_labels(lab[:, 0], u).shape == (1, 8, 8)
    with pytest.raises(InvalidInputError, match="integer label map"):
        fields.warp_labels(lab.float(), u)


def test_warp_labels_linear_is_smoother_than_nearest() -> None:
    """Half-pixel shifts of a disc: nearest snaps, linear keeps the disc's centre."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    lab = (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 25).long()[None, None]
    u = torch.full((1, 2, 16, 16), 0.5)
    lin = fields.warp_labels(lab, u, "linear", num_classes=2)
    assert 0 < int((lin != lab).sum()) < int(lab.sum())


# ----------------------------------------------------------------------------- integrate
@pytest.mark.parametrize("n", [2, 3])
def test_integrate_constant_velocity_is_translation(n: int) -> None:
    v = torch.zeros(1, n, *SIZES[n], dtype=torch.float64)
    shift = torch.tensor([1.5, -0.75, 0.5][:n], dtype=torch.float64)
    v += shift.view(1, n, *([1] * n))
    u = fields.integrate(v, padding_mode="border")
    torch.testing.assert_close(u, v, atol=1e-10, rtol=0)
    # zeros padding (MONAI's and voxelmorph's default) agrees two shifts from the border
    big = torch.zeros(1, n, *([12] * n), dtype=torch.float64) + shift.view(1, n, *([1] * n))
    u0 = fields.integrate(big, steps=7)
    inner = (slice(None), slice(None), *([slice(4, -4)] * n))
    torch.testing.assert_close(u0[inner], big[inner], atol=1e-4, rtol=0)
    assert not torch.allclose(u0, big)  # ... and not at the border


def test_integrate_steps_zero_and_bad_steps() -> None:
    v = _smooth(1, (6, 6), 1.0)
    assert fields.integrate(v, steps=0) is v
    for bad in (-1, 1.5, True):
        with pytest.raises(InvalidInputError, match="steps"):
            fields.integrate(v, steps=bad)  # type: ignore[arg-type]


def test_integrate_matches_explicit_scaling_and_squaring() -> None:
    """The normalised-unit loop equals the pixel-unit recipe written out."""
    v = _smooth(2, (9, 11), 4.0)
    u = v / 2**5
    for _ in range(5):
        u = u + fields.warp(u, u)
    torch.testing.assert_close(fields.integrate(v, steps=5), u, atol=1e-10, rtol=0)


def test_integrate_matches_monai_dvf2ddf() -> None:
    """Same numbers as MONAI's DVF2DDF (index-order channels, align_corners=True)."""
    blocks = pytest.importorskip("monai.networks.blocks")
    for n in (2, 3):
        v = _smooth(2, SIZES[n], 3.0).float()
        ours = fields.integrate(v, steps=7, align_corners=True)
        theirs = blocks.DVF2DDF(num_steps=7)(v.flip(1)).flip(1)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_integrated_smooth_velocity_does_not_fold() -> None:
    v = _smooth(2, (24, 24), 6.0, seed=3)
    u = fields.integrate(v, padding_mode="border")
    assert float(fields.folded_share(u).max()) == 0.0
    # the same field used as a displacement folds: the reason to integrate
    assert float(fields.folded_share(v * 4).max()) > 0.0


# ----------------------------------------------------------------------------- compose
def test_compose_is_warping_twice() -> None:
    x = _smooth(1, (32, 32), 1.0, seed=8)[:, :1]  # a smooth image: interpolation is exact-ish
    a, b = _smooth(1, (32, 32), 1.0, seed=4), _smooth(1, (32, 32), 1.0, seed=5)
    twice = fields.warp(fields.warp(x, b), a)
    once = fields.warp(x, fields.compose(a, b))
    inner = (..., slice(4, -4), slice(4, -4))
    torch.testing.assert_close(once[inner], twice[inner], atol=0.05, rtol=0)


def test_compose_with_matrices_is_exact() -> None:
    size = (6, 9)
    u = _smooth(2, size, 1.5)
    m = torch.tensor([[1.1, 0.2, 0.5], [-0.1, 0.9, 1.0], [0, 0, 1]], dtype=u.dtype)
    # compose(u, M): M (p + u(p)) - p
    c = fields.compose(u, m)
    p = fields.from_matrix(torch.eye(3, dtype=u.dtype), size) + torch.stack(
        torch.meshgrid(torch.arange(9.0), torch.arange(6.0), indexing="xy"), 0
    ).to(u.dtype)
    q = p + u
    want = torch.einsum("ij,bj...->bi...", m[:2, :2], q) + m[:2, 2].view(1, 2, 1, 1) - p
    torch.testing.assert_close(c, want)
    # compose(M, 0) is the matrix's field
    torch.testing.assert_close(
        fields.compose(m, torch.zeros_like(u)), fields.from_matrix(m, size).expand(2, -1, -1, -1)
    )
    with pytest.raises(InvalidInputError, match="both matrices"):
        fields.compose(m, m)


def test_inverse_of_displacement_has_small_reported_residual() -> None:
    u = _smooth(2, (24, 24), 1.5, seed=6)
    inv = fields.inverse(u, iterations=30)
    assert inv.residual.shape == (2,)
    assert float(inv.residual.max()) < 1e-3
    back = fields.compose(inv.field, u)  # ~ 0 everywhere
    assert float(back.abs().max()) < 1e-3
    # the other order too, away from the border where the inverse reads extrapolated values
    fwd = fields.compose(u, inv.field)
    assert float(fwd[..., 3:-3, 3:-3].abs().max()) < 0.15  # u is up to ~2 px
    # one iteration is worse: the residual tells
    assert float(fields.inverse(u, iterations=1).residual.min()) > float(inv.residual.max())


def test_inverse_of_velocity_is_negation() -> None:
    v = _smooth(1, (24, 24), 1.0, seed=7)
    inv = fields.inverse(v, velocity=True)
    torch.testing.assert_close(inv.field, fields.integrate(-v, padding_mode="border"))
    c = fields.compose(inv.field, fields.integrate(v, padding_mode="border"))
    inner = float(c[..., 4:-4, 4:-4].norm(dim=1).max())
    assert inner < 0.05  # exact but for discretisation inside (v reaches ~3 px)
    assert inner <= float(inv.residual) < 0.5  # the residual bounds it (borders included)


# ----------------------------------------------------------------------------- matrices
@pytest.mark.parametrize("align_corners", [False, True])
def test_from_matrix_warp_equals_matrix_warp(align_corners: bool) -> None:
    """A pixel matrix's field warps as the projective family warps with that matrix."""
    size = (7, 10)
    x = _image(1, 2, size)
    m = torch.tensor([[[0.9, 0.1, 0.7], [-0.2, 1.1, -0.4], [0.01, -0.02, 1.0]]], dtype=x.dtype)
    u = fields.from_matrix(m, size)
    theta = pixel_matrix_to_normalized(m, size, align_corners=align_corners)
    want = warp(
        x,
        theta[:, :3, :3].flatten(1)[:, :8] / theta[:, 2:, 2],
        "projective",
        align_corners=align_corners,
    )
    got = fields.warp(x, u, align_corners=align_corners)
    torch.testing.assert_close(got, want, atol=1e-9, rtol=0)
    # normalised matrices: PyTorch's theta
    theta_a = torch.tensor([[[0.8, 0.2, 0.1], [-0.1, 1.2, 0.05]]], dtype=x.dtype)
    un = fields.from_matrix(theta_a, size, normalized=True, align_corners=align_corners)
    grid = F.affine_grid(theta_a, [1, 2, *size], align_corners=align_corners)
    torch.testing.assert_close(fields.to_grid(un, align_corners), grid, atol=1e-9, rtol=0)


@pytest.mark.parametrize("family", ["tps", "affine3d", "rigid3d"])
def test_from_transform(family: str) -> None:
    t = get(family)
    size = (8, 9) if t.ndim == 2 else (4, 5, 6)
    params = t.identity_params(torch.float64)[None] + 0.1 * torch.randn(
        2, t.num_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    x = _image(2, 1, size)
    torch.testing.assert_close(
        fields.warp(x, fields.from_transform(t, params, size)),
        warp(x, params, family),
        atol=1e-9,
        rtol=0,
    )


# ----------------------------------------------------------------------------- resize
@pytest.mark.parametrize("align_corners", [False, True])
def test_resize_moves_points_as_far(align_corners: bool) -> None:
    """A field at half resolution, resized, reads what the full-resolution one reads."""
    m = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m[0, 2], m[1, 2] = 0.8, -0.6
    theta = m[None].double()
    full = fields.from_matrix(theta, (16, 20), normalized=True, align_corners=align_corners)
    half = fields.from_matrix(theta, (8, 10), normalized=True, align_corners=align_corners)
    torch.testing.assert_close(
        fields.resize(half, (16, 20), align_corners), full, atol=1e-9, rtol=0
    )
    assert fields.resize(full, (16, 20)) is full
    with pytest.raises(InvalidInputError, match="size"):
        fields.resize(full, (16, 20, 3))


# ----------------------------------------------------------------------------- jacobian
@pytest.mark.parametrize("n", [2, 3])
def test_jacobian_of_identity_is_one(n: int) -> None:
    det = fields.jacobian_determinant(torch.zeros(2, n, *SIZES[n]))
    assert det.shape == (2, *SIZES[n])
    assert torch.equal(det, torch.ones_like(det))


@pytest.mark.parametrize("n", [2, 3])
def test_jacobian_of_affine_is_its_determinant(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    a = torch.eye(n, dtype=torch.float64) + 0.3 * torch.randn(
        n, n, generator=g, dtype=torch.float64
    )
    m = torch.cat((a, torch.randn(n, 1, generator=g, dtype=torch.float64)), 1)
    det = fields.jacobian_determinant(fields.from_matrix(m, SIZES[n]))
    torch.testing.assert_close(det, torch.full_like(det, float(torch.linalg.det(a))))


def test_jacobian_matches_numpy_gradient_formula() -> None:
    np = pytest.importorskip("numpy")
    u = _smooth(1, (6, 7, 8), 2.0, seed=9)
    phi = u[0].numpy()
    # d u_i / d x_j with x_j along tensor axis (2 - j) of the (D, H, W) volume
    grads = [np.gradient(phi[i]) for i in range(3)]  # grads[i][axis]
    jac = np.empty((3, 3, *phi.shape[1:]))
    for i, j in itertools.product(range(3), range(3)):
        jac[i, j] = grads[i][2 - j] + (1.0 if i == j else 0.0)
    want = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
    torch.testing.assert_close(fields.jacobian_determinant(u)[0], torch.from_numpy(want))


def test_folded_share_of_hand_made_fold() -> None:
    u = torch.zeros(2, 2, 10, 10)
    u[1, 0, :, 4] = 3.0  # column 4 reads column 7, column 5 reads 5: folds at 5
    share = fields.folded_share(u)
    det = fields.jacobian_determinant(u)
    assert float(share[0]) == 0.0
    assert float(share[1]) == pytest.approx(float((det[1] <= 0).float().mean()))
    assert float(share[1]) == pytest.approx(0.1)  # one column of ten


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_warp_compose_integrate_jacobian() -> None:
    x = _image(1, 2, (5, 6)).requires_grad_()
    u = (_smooth(1, (5, 6), 0.7) + 0.13).requires_grad_()  # off the pixel lattice
    w = (_smooth(1, (5, 6), 0.5, seed=2) + 0.21).requires_grad_()
    assert gradcheck(lambda a, b: fields.warp(a, b), (x, u))
    assert gradcheck(lambda a, b: fields.compose(a, b), (u, w))
    assert gradcheck(lambda a: fields.integrate(a, steps=3), (u,))
    assert gradcheck(lambda a: fields.jacobian_determinant(a), (u,))
    v3 = (_smooth(1, (3, 4, 5), 0.5) + 0.11).requires_grad_()
    x3 = _image(1, 1, (3, 4, 5)).requires_grad_()
    assert gradcheck(lambda a, b: fields.warp(a, b), (x3, v3))
    assert gradcheck(lambda a: fields.integrate(a, steps=2), (v3,))


# ----------------------------------------------------------------------------- dense families
def test_dense_families_are_listed_apart() -> None:
    assert names(dense=True) == ("displacement", "displacement3d", "velocity", "velocity3d")
    assert "velocity" not in names(ndim=2)
    assert set(names(dense=None)) == set(names()) | set(names(dense=True))


@pytest.mark.parametrize("family", ["displacement", "velocity", "displacement3d", "velocity3d"])
def test_dense_transformer_starts_at_identity_and_learns(family: str) -> None:
    n = get(family).ndim
    size = (8, 8) if n == 2 else (4, 8, 8)
    conv = nn.Conv2d if n == 2 else nn.Conv3d
    pool = nn.AvgPool2d if n == 2 else nn.AvgPool3d
    net = nn.Sequential(conv(2, 6, 3, padding=1), nn.LeakyReLU(0.2), pool(2))  # half resolution
    st = SpatialTransformer((2, *size), family, localization=net)
    x = torch.rand(2, 2, *size)
    params = st.localize(x)
    assert params.shape == (2, n, *[s // 2 for s in size])
    y = st.transform_input(x[:, :1], params)  # warp another channel count
    torch.testing.assert_close(y, x[:, :1], atol=1e-3, rtol=0)
    y.square().sum().backward()
    assert net[0].weight.grad is not None and float(net[0].weight.grad.abs().sum()) > 0


def test_dense_transformer_refusals() -> None:
    with pytest.raises(InvalidInputError, match="no default"):
        SpatialTransformer((1, 8, 8), "velocity")
    with pytest.raises(InvalidInputError, match="feature maps"):
        SpatialTransformer((1, 8, 8), "velocity", localization=nn.Sequential(nn.Flatten()))
    with pytest.raises(InvalidInputError, match="do not divide"):
        SpatialTransformer((1, 8, 8), "velocity", localization=nn.Conv2d(1, 2, 2))
    with pytest.raises(InvalidInputError, match="input's own size"):
        SpatialTransformer((1, 8, 8), "velocity", out_size=4, localization=nn.Conv2d(1, 2, 1))
    with pytest.raises(InvalidInputError, match="velocity3d"):
        get("velocity").check_params(torch.zeros(1, 3, 2, 2, 2))


def test_dense_map_points_reads_the_field() -> None:
    t = get("displacement")
    u = torch.zeros(1, 2, 8, 8)
    u[:, 0] = 2.0  # two pixels of eight: 0.5 normalised units
    pts = torch.tensor([[[0.0, 0.0], [0.3, -0.4]]])
    torch.testing.assert_close(t.map_points(u, pts), pts + torch.tensor([0.5, 0.0]))
