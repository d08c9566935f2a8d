"""The Triton kernels of ``torchstn.native`` (the CUDA path), run by Triton's interpreter on CPU
tensors (``TRITON_INTERPRET=1``): the same programs a GPU compiles, against ``affine_grid`` +
``grid_sample``. What the interpreter cannot show (speed, a GPU compiler's contractions and
its atomics) needs a GPU; these tests do not claim it."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from torchstn import SpatialTransformer, native, warp
from torchstn.functional.coords import grid_axes
from torchstn.native import sample

pytest.importorskip("triton")

MODES = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")
CASES = [
    # (input H, W, output Ho, Wo, how far the params move from the identity)
    (9, 11, 6, 7, 0.3),  # odd, smaller output
    (8, 10, 13, 16, 0.3),  # even input, larger output
    (7, 7, 7, 7, 3.0),  # points far outside the input
    (1, 5, 3, 4, 0.5),  # a side of one pixel
]


#: CUDA where there is one; elsewhere CPU tensors in Triton's interpreter (the repository's
#: conftest.py sets TRITON_INTERPRET=1 before anything imports triton)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def tri():
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU, and TRITON_INTERPRET=1 was not set before triton was imported")
    return importlib.import_module("torchstn.native.triton_affine")


def _reference(x, theta, out_size, mode, padding, ac):
    x = x.detach().clone().requires_grad_(True)
    theta = theta.detach().clone().requires_grad_(True)
    grid = F.affine_grid(theta, (x.shape[0], x.shape[1], *out_size), align_corners=ac)
    out = F.grid_sample(x, grid, mode, padding, align_corners=ac)
    return out, x, theta


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "sorted"])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=["smaller", "larger", "far", "one-pixel"])
def test_kernels_equal_grid_sample(tri, case, mode, padding, align_corners, deterministic):
    h, w, ho, wo, amp = case
    gen = torch.Generator().manual_seed(hash((case, mode, padding)) % 2**31)
    x = torch.rand(2, 3, h, w, generator=gen).to(DEVICE)
    theta = (torch.eye(2, 3) + amp * torch.randn(2, 2, 3, generator=gen)).to(DEVICE)
    want, xr, tr = _reference(x, theta, (ho, wo), mode, padding, align_corners)
    weights = torch.randn(want.shape, generator=gen).to(DEVICE)
    gx_want, gt_want = torch.autograd.grad((want * weights).sum(), (xr, tr))
    xs, ys = grid_axes((ho, wo), align_corners, device=torch.device(DEVICE))
    m, p = sample.MODES[mode], sample.PADDINGS[padding]
    got = tri.affine2d_forward(x, theta, xs, ys, m, p, align_corners)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    gx, gt = tri.affine2d_backward(
        weights, x, theta, xs, ys, m, p, align_corners, True, True, deterministic=deterministic
    )
    torch.testing.assert_close(gx, gx_want, rtol=1e-5, atol=1e-5)
    # the matrix's gradient sums every pixel: to 1e-5 of its largest entry
    scale = float(gt_want.abs().max().clamp(min=1.0))
    torch.testing.assert_close(gt, gt_want, rtol=0, atol=1e-5 * scale)


def test_gradients_only_where_asked(tri):
    x, theta = torch.rand(1, 2, 6, 6, device=DEVICE), torch.eye(2, 3, device=DEVICE)[None] * 0.9
    xs, ys = grid_axes((4, 5), False, device=torch.device(DEVICE))
    g = torch.ones(1, 2, 4, 5, device=DEVICE)
    gx, gt = tri.affine2d_backward(g, x, theta, xs, ys, 0, 0, False, False, True)
    assert gx is None and gt is not None and gt.abs().sum() > 0
    gx, gt = tri.affine2d_backward(g, x, theta, xs, ys, 0, 0, False, True, False)
    assert gt is None and gx is not None and gx.sum() > 0
    gx, gt = tri.affine2d_backward(g, x, theta, xs, ys, 1, 0, False, True, True)
    assert gt is not None and not gt.any()  # nearest: no slope in the matrix


def test_the_sorted_input_gradient_is_bitwise_repeatable(tri):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 2, 12, 12, generator=gen).to(DEVICE)
    theta = (0.4 * torch.randn(2, 2, 3, generator=gen)).to(DEVICE)  # zoom-out: many pixels a tap
    xs, ys = grid_axes((20, 20), False, device=torch.device(DEVICE))
    g = torch.randn(2, 2, 20, 20, generator=gen).to(DEVICE)
    runs = [
        tri.affine2d_backward(g, x, theta, xs, ys, 0, 1, False, True, True, deterministic=True)
        for _ in range(2)
    ]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("padding", ["zeros", "fill"])
def test_module_routes_opted_in_devices_to_the_triton_kernels(tri, monkeypatch, padding):
    """With ``use_triton(True)`` tensors of a Triton device take the kernels through the
    module (CPU tensors stand in for CUDA here); the unfused path gives the same numbers."""
    monkeypatch.setattr(sample, "TRITON_DEVICES", ("cuda", DEVICE))
    torch.manual_seed(0)
    st = SpatialTransformer(
        (2, 16, 16), "affine", out_size=(10, 12), padding_mode=padding,
        **({"fill": [0.5, -1.0]} if padding == "fill" else {}),
    )  # fmt: skip
    with torch.no_grad():
        for prm in st.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    st.to(DEVICE)
    x = torch.rand(3, 2, 16, 16, device=DEVICE)

    def step(**switch):
        st.zero_grad()
        xx = x.clone().requires_grad_(True)
        native.path_counts(reset=True)
        with native.use_triton(switch["triton"]), native.use_fused(switch["fused"]):
            out = st(xx)
        counts = native.path_counts(reset=True)
        (out * torch.linspace(-1, 1, out.numel(), device=DEVICE).view_as(out)).sum().backward()
        grads = [xx.grad, *(p.grad.clone() for p in st.parameters() if p.grad is not None)]
        return out.detach(), grads, counts

    out, grads, counts = step(triton=True, fused=True)
    assert counts == {"fused-triton": 1}
    ref, ref_grads, ref_counts = step(triton=False, fused=False)
    assert ref_counts == {"unfused": 1}
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        scale = float(b.abs().max().clamp(min=1.0))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_triton_is_opt_in_and_float32_only(monkeypatch):
    monkeypatch.setattr(sample, "TRITON_DEVICES", ("cuda", "cpu"))
    x = torch.rand(1, 1, 5, 5)
    assert not native.triton_enabled()  # the default until the kernels have run on a GPU
    assert native.status()["triton"] is False
    assert not sample.can_fuse_triton(x, "bilinear", "zeros")
    with native.use_triton(True):
        assert native.status()["triton"] is True
        assert sample.can_fuse_triton(x, "bilinear", "zeros")
        assert sample.can_fuse_triton(x, "nearest", "fill")
        assert not sample.can_fuse_triton(x.double(), "bilinear", "zeros")
        assert not sample.can_fuse_triton(x, "bicubic", "zeros")
        assert not sample.can_fuse_triton(x[:, :, None], "bilinear", "zeros")  # volumes
    with pytest.raises(TypeError, match="enabled"):
        native.use_triton(1)  # type: ignore[arg-type]
    native.path_counts(reset=True)
    warp(x, torch.tensor([[1.0, 0, 0, 0, 1, 0]]), "affine")
    assert "fused-triton" not in native.path_counts(reset=True)


def test_bench_sampler_times_the_triton_kernels_where_they_run(tri, monkeypatch):
    from torchstn.bench import sampler
    from torchstn.bench.timing import Settings

    monkeypatch.setattr(sample, "TRITON_DEVICES", ("cuda", DEVICE))
    monkeypatch.setattr(sampler, "FAMILIES", ("affine",))
    settings = Settings(device=DEVICE, quick=True, repeats=1, warmup=0, min_seconds=0.0)
    before = torch.are_deterministic_algorithms_enabled()
    rows = sampler.run(settings)["rows"]
    assert torch.are_deterministic_algorithms_enabled() == before
    paths = [r["path"] for r in rows if r.get("baseline") == "pytorch"]
    assert "fused-triton" in paths and "fused-triton (deterministic)" in paths
    for r in rows:
        if r["path"].startswith("fused-triton"):
            assert r["max_abs_diff"] < 1e-5, r
