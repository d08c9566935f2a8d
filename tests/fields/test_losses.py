"""torchstn.fields.losses: every loss against a direct formula written here (loops or numpy on
small tensors), the known values, MONAI where the conventions match, gradcheck, bad inputs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torchstn.errors import InvalidInputError
from torchstn.fields.losses import (
    bending_energy,
    dice,
    diffusion_loss,
    mse_loss,
    ncc,
    ncc_loss,
    soft_dice_loss,
)

try:
    import monai.losses as monai_losses
except ImportError:  # pragma: no cover - monai is a dev dependency
    monai_losses = None

needs_monai = pytest.mark.skipif(monai_losses is None, reason="MONAI is not installed")

SHAPES = [(2, 1, 5, 6), (2, 2, 4, 5, 6)]  # images and volumes, no two sizes alike


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------------- mse


@pytest.mark.parametrize("shape", SHAPES)
def test_mse_is_the_mean_squared_difference(shape) -> None:
    a, b = _rand(*shape), _rand(*shape, seed=1)
    want = np.mean((a.numpy() - b.numpy()) ** 2)
    assert mse_loss(a, b).item() == pytest.approx(want, rel=1e-12)
    assert mse_loss(a, a).item() == 0.0


def test_mse_with_a_mask_averages_over_the_masked_pixels_only() -> None:
    a, b = _rand(2, 3, 4, 5), _rand(2, 3, 4, 5, seed=1)
    mask = _rand(2, 1, 4, 5, seed=2) > 0.5
    num = den = 0.0
    for i, c, y, x in itertools.product(range(2), range(3), range(4), range(5)):
        if mask[i, 0, y, x]:
            num += float(a[i, c, y, x] - b[i, c, y, x]) ** 2
            den += 1
    assert mse_loss(a, b, mask).item() == pytest.approx(num / den, rel=1e-12)
    weights = mask.double() * 0.25  # a constant weight does not change the mean
    assert mse_loss(a, b, weights).item() == pytest.approx(num / den, rel=1e-12)
    zero = mse_loss(a, b, torch.zeros(1, 1, 1, 1))
    assert zero.item() == 0.0


# ----------------------------------------------------------------------------------- ncc


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean over channels of np.corrcoef per sample and channel."""
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = np.mean(
            [np.corrcoef(a[i, c].ravel(), b[i, c].ravel())[0, 1] for c in range(a.shape[1])]
        )
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_global_ncc_is_pearson(shape) -> None:
    a, b = _rand(*shape), _rand(*shape, seed=1)
    b = b + 0.5 * a  # correlated
    np.testing.assert_allclose(ncc(a, b, eps=0).numpy(), _pearson(a.numpy(), b.numpy()), 1e-12)
    np.testing.assert_allclose(ncc(a, b).numpy(), _pearson(a.numpy(), b.numpy()), 1e-5)


def test_global_ncc_known_values() -> None:
    a = _rand(3, 1, 7, 8)
    np.testing.assert_allclose(ncc(a, a, eps=0).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(ncc(a, 2.5 * a - 3, eps=0).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(ncc(a, -a, eps=0).numpy(), -1.0, atol=1e-12)
    np.testing.assert_allclose(ncc(a, a).numpy(), 1.0, atol=1e-6)  # eps=1e-5 on 56 pixels
    constant = torch.ones_like(a, requires_grad=True)
    value = ncc(a, constant)
    assert torch.equal(value, torch.zeros(3, dtype=a.dtype))
    value.sum().backward()
    assert torch.isfinite(constant.grad).all()
    assert ncc_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert ncc_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)


def _local_ncc_loops(a: np.ndarray, b: np.ndarray, window: tuple[int, ...], eps: float):
    """VoxelMorph's windowed squared NCC, one window at a time on zero-padded images."""
    spatial = a.shape[2:]
    half = [w // 2 for w in window]
    pad = [(0, 0), (0, 0), *[(h, h) for h in half]]
    ap, bp = np.pad(a, pad), np.pad(b, pad)
    n = float(np.prod(window))
    out = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        values = []
        for c in range(a.shape[1]):
            for p in itertools.product(*[range(s) for s in spatial]):
                box = tuple(slice(q, q + w) for q, w in zip(p, window))
                wa, wb = ap[(i, c, *box)], bp[(i, c, *box)]
                cross = (wa * wb).sum() - wa.sum() * wb.sum() / n
                var_a = (wa * wa).sum() - wa.sum() ** 2 / n
                var_b = (wb * wb).sum() - wb.sum() ** 2 / n
                values.append(cross**2 / (var_a * var_b + eps))
        out[i] = np.mean(values)
    return out


@pytest.mark.parametrize(
    ("shape", "window"),
    [
        ((2, 1, 5, 6), 3),
        ((1, 2, 6, 7), (3, 5)),
        ((1, 1, 4, 5, 6), 3),
        ((2, 1, 3, 4, 5), (3, 3, 5)),
        ((1, 1, 3, 4, 5), 7),  # a window longer than every axis
        ((1, 1, 8, 3), (5, 5)),  # ... than one
    ],
)
def test_local_ncc_matches_the_windowed_formula(shape, window) -> None:
    a, b = _rand(*shape), _rand(*shape, seed=1)
    b = b + a
    sizes = (window,) * (len(shape) - 2) if isinstance(window, int) else window
    for eps in (0.0, 1e-5, 0.1):
        want = _local_ncc_loops(a.numpy(), b.numpy(), sizes, eps)
        np.testing.assert_allclose(ncc(a, b, window=window, eps=eps).numpy(), want, rtol=1e-10)
    assert ncc_loss(a, b, window, eps=0.1).item() == pytest.approx(1 - want.mean(), rel=1e-10)


def test_local_ncc_known_values_and_the_default_window() -> None:
    a = _rand(2, 1, 12, 11)  # noise: every window varies
    np.testing.assert_allclose(ncc(a, a, window=3).numpy(), 1.0, atol=1e-4)
    np.testing.assert_allclose(ncc(a, -2 * a, window=5).numpy(), 1.0, atol=1e-4)  # squared
    # the zero padding is not shifted with the intensities: an offset lowers the border windows
    assert (ncc(a, a + 1, window=5) < 0.9).all()
    assert ncc_loss(a, a, window="local").item() == pytest.approx(0.0, abs=1e-6)
    want = _local_ncc_loops(a.numpy(), a.numpy() ** 2, (9, 9), 1e-5)
    np.testing.assert_allclose(ncc(a, a**2, window="local").numpy(), want, rtol=1e-10)
    flat = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    assert ncc(flat, flat, window=3).item() == 0.0  # constant windows score 0, as VoxelMorph


@needs_monai
@pytest.mark.parametrize(("shape", "window"), [((2, 1, 9, 10), 3), ((2, 2, 6, 7, 8), 5)])
def test_local_ncc_loss_is_one_plus_monai(shape, window) -> None:
    a, b = _rand(*shape), _rand(*shape, seed=1)
    b = b + 0.3 * a
    dims = len(shape) - 2
    # with negligible eps on both sides the two conventions coincide exactly
    monai = monai_losses.LocalNormalizedCrossCorrelationLoss(
        spatial_dims=dims, kernel_size=window, smooth_nr=0.0, smooth_dr=1e-30
    )
    assert ncc_loss(a, b, window, eps=0.0).item() == pytest.approx(
        1 + monai(a, b).item(), abs=1e-12
    )
    # with each library's default eps they agree wherever both images vary in every window
    monai_default = monai_losses.LocalNormalizedCrossCorrelationLoss(
        spatial_dims=dims, kernel_size=window
    )
    got = ncc_loss(a.float(), b.float(), window).item()
    assert got == pytest.approx(1 + monai_default(a.float(), b.float()).item(), abs=1e-5)


@pytest.mark.parametrize("window", [None, 9])
def test_ncc_runs_in_float32_under_autocast_and_for_half_inputs(window) -> None:
    a = _rand(2, 1, 6, 12, 13).float()
    b = a + 0.3 * _rand(2, 1, 6, 12, 13, seed=1).float()
    want = ncc(a, b, window)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ncc(a, b, window)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6)
    a16, b16 = a.bfloat16(), b.bfloat16()
    got = ncc(a16, b16, window)
    assert got.dtype == torch.float32
    assert torch.allclose(got, ncc(a16.float(), b16.float(), window), atol=1e-6)


# ----------------------------------------------------------------------------------- dice


def _dice_loops(a: np.ndarray, b: np.ndarray, k: int, empty: float) -> np.ndarray:
    out = np.zeros((a.shape[0], k))
    for i in range(a.shape[0]):
        for c in range(k):
            inter = np.sum((a[i] == c) & (b[i] == c))
            total = np.sum(a[i] == c) + np.sum(b[i] == c)
            out[i, c] = 2 * inter / total if total else empty
    return out


@pytest.mark.parametrize("shape", [(3, 1, 6, 7), (2, 4, 5, 6), (2, 1, 3, 4, 5)])
def test_dice_matches_the_counting_formula(shape) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, shape, generator=g)
    b = torch.where(
        torch.rand(shape, generator=g) < 0.6, a, torch.randint(0, 4, shape, generator=g)
    )
    want = _dice_loops(a.numpy(), b.numpy(), 5, float("nan"))  # label 4 is never used
    got = dice(a, b, 5, ignore_background=False)
    assert got.shape == (shape[0], 5) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(dice(a, b, 5).numpy(), want[:, 1:], rtol=1e-6)
    np.testing.assert_allclose(dice(a, b, 5, empty=0.0)[:, -1].numpy(), 0.0)


def test_dice_of_identical_maps_is_one_and_of_disjoint_maps_zero() -> None:
    a = torch.tensor([[[0, 1, 2], [2, 1, 0]]], dtype=torch.uint8)
    assert torch.equal(dice(a, a, 3), torch.ones(1, 2))
    b = torch.tensor([[[0, 2, 1], [1, 2, 0]]], dtype=torch.uint8)
    assert torch.equal(dice(a, b, 3), torch.zeros(1, 2))


def _soft_dice_direct(p: np.ndarray, q: np.ndarray, eps: float) -> float:
    values = []
    for i, c in itertools.product(range(p.shape[0]), range(p.shape[1])):
        inter = np.sum(p[i, c] * q[i, c])
        values.append((2 * inter + eps) / (np.sum(p[i, c]) + np.sum(q[i, c]) + eps))
    return 1 - float(np.mean(values))


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (2, 2, 3, 4, 5)])
def test_soft_dice_loss_matches_the_formula(shape) -> None:
    p, q = _rand(*shape), _rand(*shape, seed=1)
    for eps in (0.0, 1e-5, 1.0):
        want = _soft_dice_direct(p.numpy(), q.numpy(), eps)
        assert soft_dice_loss(p, q, eps=eps).item() == pytest.approx(want, rel=1e-12)
    want = _soft_dice_direct(p[:, 1:].numpy(), q[:, 1:].numpy(), 1e-5)
    assert soft_dice_loss(p, q, ignore_background=True).item() == pytest.approx(want, rel=1e-12)


def test_soft_dice_loss_known_values() -> None:
    labels = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    onehot = F.one_hot(labels, 4).movedim(-1, 1).double()  # class 3 empty in both
    assert soft_dice_loss(onehot, onehot).item() == pytest.approx(0.0, abs=1e-12)
    shifted = F.one_hot((labels + 1) % 3, 4).movedim(-1, 1).double()
    # no overlap: classes 0..2 score eps / (total + eps) ~ 0, the empty class 3 scores 1
    assert soft_dice_loss(onehot, shifted).item() == pytest.approx(0.75, abs=1e-5)


@needs_monai
def test_soft_dice_loss_is_monai_dice_loss() -> None:
    p, q = _rand(2, 3, 5, 6, 7), _rand(2, 3, 5, 6, 7, seed=1)
    assert soft_dice_loss(p, q).item() == pytest.approx(monai_losses.DiceLoss()(p, q).item())
    monai = monai_losses.DiceLoss(include_background=False)
    assert soft_dice_loss(p, q, ignore_background=True).item() == pytest.approx(monai(p, q).item())


# ------------------------------------------------------------------------- regularisers


def _diffusion_loops(u: np.ndarray) -> float:
    """VoxelMorph's Grad('l2'): per axis the mean squared forward difference, then the mean."""
    n = u.ndim - 2
    means = []
    for axis in range(2, n + 2):
        d = np.take(u, range(1, u.shape[axis]), axis) - np.take(u, range(u.shape[axis] - 1), axis)
        means.append(np.mean(d**2))
    return float(np.mean(means))


@pytest.mark.parametrize("shape", [(2, 2, 4, 5), (1, 3, 3, 4, 5)])
def test_diffusion_loss_matches_the_formula(shape) -> None:
    u = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert diffusion_loss(u).item() == pytest.approx(_diffusion_loops(u.numpy()), rel=1e-12)
    constant = torch.full(shape, 2.5, dtype=torch.float64)
    assert diffusion_loss(constant).item() == 0.0
    ramp = torch.arange(shape[-1], dtype=torch.float64).expand(*shape)  # slope 1 along x
    n = len(shape) - 2
    assert diffusion_loss(ramp).item() == pytest.approx(1.0 / n, rel=1e-12)


def _bending_loops(u: np.ndarray) -> float:
    """Second differences at every interior pixel, one pixel at a time."""
    n = u.ndim - 2
    spatial = u.shape[2:]
    values = []
    for i, c in itertools.product(range(u.shape[0]), range(u.shape[1])):
        f = u[i, c]
        for p in itertools.product(*[range(1, s - 1) for s in spatial]):

            def at(*shift: tuple[int, int], f=f, p=p) -> float:
                q = list(p)
                for axis, step in shift:
                    q[axis] += step
                return float(f[tuple(q)])

            e = 0.0
            for a in range(n):
                e += (at((a, 1)) - 2 * at() + at((a, -1))) ** 2
                for b in range(a + 1, n):
                    mixed = at((a, 1), (b, 1)) - at((a, 1), (b, -1))
                    mixed += -at((a, -1), (b, 1)) + at((a, -1), (b, -1))
                    e += 2 * (mixed / 4) ** 2
            values.append(e)
    return float(np.mean(values))


@pytest.mark.parametrize("shape", [(2, 2, 4, 5), (1, 3, 3, 4, 5)])
def test_bending_energy_matches_the_formula(shape) -> None:
    u = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert bending_energy(u).item() == pytest.approx(_bending_loops(u.numpy()), rel=1e-12)


@pytest.mark.parametrize("spatial", [(5, 6), (4, 5, 6)])
def test_bending_energy_of_an_affine_field_is_zero(spatial) -> None:
    n = len(spatial)
    coords = torch.meshgrid(*[torch.arange(s, dtype=torch.float64) for s in spatial], indexing="ij")
    matrix = torch.randn(n, n + 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u = torch.einsum("ij,j...->i...", matrix[:, :n], torch.stack(coords))
    u = (u + matrix[:, n].view(n, *[1] * n))[None]
    assert bending_energy(u).item() == pytest.approx(0.0, abs=1e-24)
    assert diffusion_loss(u).item() > 0  # but it stretches


@needs_monai
@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence:UserWarning")  # inside MONAI
@pytest.mark.parametrize("shape", [(2, 2, 5, 6), (2, 3, 4, 5, 6)])
def test_bending_energy_is_monai_bending_energy_loss(shape) -> None:
    u = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = monai_losses.BendingEnergyLoss()(u).item()
    assert bending_energy(u).item() == pytest.approx(want, rel=1e-12)


# ------------------------------------------------------------------------------ gradcheck


def _gradcheck(fn, *inputs: torch.Tensor) -> None:
    leaves = [t.clone().requires_grad_(True) for t in inputs]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-5)


def test_gradcheck_image_losses() -> None:
    a, b = _rand(2, 1, 4, 5), _rand(2, 1, 4, 5, seed=1)
    mask = _rand(2, 1, 4, 5, seed=2)
    _gradcheck(mse_loss, a, b)
    _gradcheck(lambda x, y: mse_loss(x, y, mask), a, b)
    _gradcheck(lambda x, y: ncc(x, y), a, b)
    _gradcheck(lambda x, y: ncc_loss(x, y, window=3), a, b)
    a3, b3 = _rand(1, 1, 3, 4, 5), _rand(1, 1, 3, 4, 5, seed=1)
    _gradcheck(lambda x, y: ncc(x, y, window=3), a3, b3)
    _gradcheck(lambda x, y: ncc_loss(x, y), a3, b3)
    _gradcheck(soft_dice_loss, a, b)
    _gradcheck(soft_dice_loss, a3, b3)


@pytest.mark.parametrize("shape", [(1, 2, 4, 5), (1, 3, 3, 4, 4)])
def test_gradcheck_regularisers(shape) -> None:
    u = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _gradcheck(diffusion_loss, u)
    _gradcheck(bending_energy, u)


# ----------------------------------------------------------------------------- bad inputs

BAD_IMAGES = [
    (
        lambda: mse_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5)),
        r"b: expected the shape of a \(1, 1, 4, 4\), got \(1, 1, 4, 5\)",
    ),
    (
        lambda: mse_loss(torch.zeros(4, 4), torch.zeros(4, 4)),
        r"a: expected 4 or 5 dims, received 2-dim",
    ),
    (
        lambda: mse_loss(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 1, 4, 4)),
        r"a: expected a floating-point",
    ),
    (lambda: mse_loss([1.0], torch.zeros(1, 1, 4, 4)), r"a: expected a torch.Tensor, got list"),
    (
        lambda: mse_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.ones(2, 4, 4)),
        r"mask: expected a shape that broadcasts to a's \(2, 1, 4, 4\).*got \(2, 4, 4\)",
    ),
    (
        lambda: mse_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.ones(3, 1, 4, 4)),
        r"mask: .*got \(3, 1, 4, 4\)",
    ),
    (lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4)), r"b: expected the shape of a"),
    (
        lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window=4),
        r"window: expected None \(global\), 'local' \(9\) or an odd size >= 3 .* got 4",
    ),
    (lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window=1), r"window: .*got 1"),
    (
        lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window=(3, 3, 3)),
        r"window: .*2 spatial axes\), got \(3, 3, 3\)",
    ),
    (
        lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window=True),
        r"window: .*got True",
    ),
    (
        lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), window="global"),
        r"window: .*got 'global'",
    ),
    (
        lambda: ncc(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), eps=-1.0),
        r"eps: expected a finite number >= 0, got -1.0",
    ),
    (
        lambda: soft_dice_loss(
            torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), ignore_background=True
        ),
        r"p: ignore_background drops channel 0 and needs >= 2 channels",
    ),
    (
        lambda: soft_dice_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4)),
        r"q: expected the shape of p",
    ),
]

BAD_LABELS = [
    (
        lambda: dice(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), 2),
        r"a_labels: expected an integer label map .* got torch.float32",
    ),
    (
        lambda: dice(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long), 2
        ),
        r"b_labels: expected the shape of a_labels \(1, 4, 4\), got \(1, 4, 5\)",
    ),
    (
        lambda: dice(torch.full((1, 4, 4), 3), torch.zeros(1, 4, 4, dtype=torch.long), 3),
        r"a_labels: expected labels in 0..2 \(num_classes=3\), got values in 3..3",
    ),
    (
        lambda: dice(torch.zeros(1, 4, 4, dtype=torch.long), torch.full((1, 4, 4), -1), 3),
        r"b_labels: expected labels in 0..2",
    ),
    (
        lambda: dice(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long), 0
        ),
        r"num_classes: expected an integer >= 1, got 0",
    ),
    (
        lambda: dice(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long), 1
        ),
        r"num_classes: expected >= 2 with ignore_background",
    ),
]

BAD_FIELDS = [
    (
        lambda: diffusion_loss(torch.zeros(1, 3, 4, 4)),
        r"u: a field of 2-D images is \(B, 2, H, W\) .* got 3 channels",
    ),
    (
        lambda: bending_energy(torch.zeros(1, 2, 4, 4, 4)),
        r"u: a field of 3-D volumes .* got 2 channels",
    ),
    (
        lambda: diffusion_loss(torch.zeros(1, 2, 1, 4)),
        r"u: expected every spatial size >= 2 .* got shape \(1, 2, 1, 4\)",
    ),
    (
        lambda: bending_energy(torch.zeros(1, 2, 2, 4)),
        r"u: expected every spatial size >= 3 .* got shape \(1, 2, 2, 4\)",
    ),
    (lambda: bending_energy(torch.full((1, 2, 4, 4), float("nan"))), r"u: contains 32 NaN or Inf"),
]


@pytest.mark.parametrize(("call", "message"), BAD_IMAGES + BAD_LABELS + BAD_FIELDS)
def test_bad_inputs_get_one_line_naming_the_argument(call, message) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
