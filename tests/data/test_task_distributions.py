"""The sampled distortions follow the specified distributions (Kolmogorov-Smirnov and chi-square
tests at a 0.1% level, with fixed seeds, so the outcome is deterministic)."""

from __future__ import annotations

import math

import pytest
import torch

from torchstn import data

N = 4000
#: Kolmogorov's asymptotic critical value at alpha = 0.001: sqrt(-ln(alpha / 2) / 2).
KS_CRITICAL = math.sqrt(-math.log(0.001 / 2) / 2)


def ks_statistic(values: torch.Tensor, cdf) -> float:  # type: ignore[no-untyped-def]
    """The one-sample Kolmogorov-Smirnov statistic of ``values`` against ``cdf``."""
    v = values.double().flatten().sort().values
    n = v.numel()
    f = cdf(v)
    upper = (torch.arange(1, n + 1, dtype=torch.float64) / n - f).max()
    lower = (f - torch.arange(0, n, dtype=torch.float64) / n).max()
    return float(torch.maximum(upper, lower))


def assert_uniform(values: torch.Tensor, lo: float, hi: float) -> None:
    assert float(values.min()) >= lo and float(values.max()) <= hi
    d = ks_statistic(values, lambda v: ((v - lo) / (hi - lo)).clamp(0, 1))
    assert d < KS_CRITICAL / math.sqrt(values.numel()), (
        f"KS statistic {d:.4f}: not uniform on [{lo}, {hi}]"
    )


def assert_normal(values: torch.Tensor, sigma: float) -> None:
    d = ks_statistic(values, lambda v: 0.5 * (1 + torch.erf(v / (sigma * math.sqrt(2)))))
    assert d < KS_CRITICAL / math.sqrt(values.numel()), f"KS statistic {d:.4f}: not N(0, {sigma}^2)"


def assert_discrete_uniform(values: torch.Tensor, count: int) -> None:
    """Chi-square test of integers ``0 .. count - 1`` (Wilson-Hilferty critical value)."""
    observed = torch.bincount(values.long().flatten(), minlength=count).double()
    assert observed.numel() == count
    expected = values.numel() / count
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    k, z = count - 1, 3.09  # z of the 0.1% upper tail
    critical = k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3
    assert chi2 < critical, f"chi-square {chi2:.1f} >= {critical:.1f}"


class TestTheTestsHavePower:
    def test_ks_rejects_wrong_distributions(self) -> None:
        g = torch.Generator().manual_seed(0)
        with pytest.raises(AssertionError):
            assert_uniform(torch.rand(N, generator=g) ** 1.2, 0, 1)
        with pytest.raises(AssertionError):
            assert_uniform(torch.rand(N, generator=g) * 0.95, 0, 1)
        with pytest.raises(AssertionError):
            assert_normal(torch.randn(N, generator=g) * 1.1, 1.0)
        with pytest.raises(AssertionError):
            assert_discrete_uniform(torch.randint(0, 10, (N,), generator=g).clamp(max=8), 10)


class TestDefaults:
    def test_rotated(self) -> None:
        s = data.get_task("rotated").generate("train", num=N, seed=11)
        assert_uniform(s.params["angle"], -90, 90)

    def test_rts(self) -> None:
        s = data.get_task("rts").generate("train", num=N, seed=12)
        assert_uniform(s.params["angle"], -45, 45)
        assert_uniform(s.params["scale"], 0.7, 1.2)
        assert_uniform(s.params["tx"], -7, 7)
        assert_uniform(s.params["ty"], -7, 7)
        # drawn independently: no correlation between the parameters
        stacked = torch.stack([s.params[k] for k in ("angle", "scale", "tx", "ty")])
        corr = torch.corrcoef(stacked)
        assert float((corr - torch.eye(4)).abs().max()) < 4 / math.sqrt(N)

    def test_rts_positions_are_where_the_params_say(self) -> None:
        s = data.get_task("rts").generate("test", num=256, seed=1)
        centre = (s.boxes[:, :2] + s.boxes[:, 2:]) / 2
        inside = (s.boxes[:, :2] > 0) & (s.boxes[:, 2:] < 42)  # unclipped box sides
        torch.testing.assert_close(centre[:, 0][inside[:, 0]], (21 + s.params["tx"])[inside[:, 0]])
        # the ink's centre follows the digit's position
        ink_centre = (s.params["ink_box"][:, :2] + s.params["ink_box"][:, 2:]) / 2
        offset = ink_centre - 21 - torch.stack((s.params["tx"], s.params["ty"]), dim=1)
        assert float(offset.abs().mean()) < 2.0

    def test_addition(self) -> None:
        s = data.get_task("addition").generate("train", num=N // 2, seed=13)
        assert_uniform(s.params["angle"], -45, 45)
        assert_uniform(s.params["scale"], 0.7, 1.2)
        assert_uniform(s.params["tx"], -7, 7)
        assert float(torch.corrcoef(s.params["angle"].T)[0, 1]) < 4 / math.sqrt(N // 2)
        # each digit is uniform over the classes as MNIST is (roughly): all sums appear
        assert set(s.y.tolist()) == set(range(19))

    @pytest.mark.parametrize(("name", "side"), [("cluttered", 60), ("colocalization", 84)])
    def test_translated_positions(self, name: str, side: int) -> None:
        task = (
            data.get_task(name, clutter=True) if name == "colocalization" else data.get_task(name)
        )
        s = task.generate("train", num=N, seed=14)
        assert_discrete_uniform(s.boxes[:, 0], side - 27)
        assert_discrete_uniform(s.boxes[:, 1], side - 27)
        corners = s.params["distractor_boxes"][..., :2]
        assert_discrete_uniform(corners, side - 5)

    def test_projective_scale_and_noise(self) -> None:
        s = data.get_task("projective").generate("train", num=N // 4, seed=15)
        assert_uniform(s.params["scale"], 0.75, 1.0)
        # the calibrated default, 2.7 px, almost never folds the frame: Gaussian
        assert_normal(s.params["corner_offsets"], 2.7)
        # large noise is conditioned on a well-shaped quadrilateral (about 3% redrawn at 5 px)
        big = data.get_task("projective", corner_sigma=5.0).generate("train", num=N, seed=16)
        offsets = big.params["corner_offsets"]
        assert float(offsets.std()) == pytest.approx(5.0, rel=0.05)
        assert float(offsets.std()) < 5.0  # the redrawn (folded) draws are the large ones
        assert abs(float(offsets.mean())) < 0.1

    def test_elastic(self) -> None:
        s = data.get_task("elastic").generate("train", num=N // 8, seed=17)
        assert_normal(s.params["control_offsets"], 1.5)

    def test_custom_ranges(self) -> None:
        s = data.get_task("rts", angle=[10, 20], scale=[1.0, 1.1], translation=[-2, 3]).generate(
            "train", num=N, seed=18
        )
        assert_uniform(s.params["angle"], 10, 20)
        assert_uniform(s.params["scale"], 1.0, 1.1)
        assert_uniform(s.params["ty"], -2, 3)
