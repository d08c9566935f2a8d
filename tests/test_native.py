"""``torchstn.native``: the fused CPU kernel against the unfused path, and its fallbacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck
from torch.utils._python_dispatch import TorchDispatchMode

import torchstn
from torchstn import NonFiniteError, SpatialTransformer, native, transforms, warp
from torchstn.functional.coords import grid_axes
from torchstn.native.sample import affine2d_sample, affine3d_sample

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ext():
    """The compiled kernels; on a machine with a C++ compiler, failing to build them is a bug."""
    module = native.kernels()
    if module is None:
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            pytest.skip(f"no C++ compiler: {native.status()['cpu_detail']}")
        pytest.fail(f"the fused kernels did not build: {native.status()['cpu_detail']}")
    return module


def _run(x, params, name, out_size, mode, padding, ac, fill, fused):
    x = x.detach().clone().requires_grad_(True)
    params = params.detach().clone().requires_grad_(True)
    native.path_counts(reset=True)
    with native.use_fused(fused):
        out = warp(x, params, name, out_size, mode, padding, ac, fill)
    counts = native.path_counts(reset=True)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach(), x.grad, params.grad, counts


CASES = [
    # (input size, output size, how far the params move from the identity)
    ((9, 11), (6, 7), 0.3),  # odd, smaller output
    ((8, 10), (13, 16), 0.3),  # even input, larger output
    ((7, 7), (7, 7), 3.0),  # points far outside the input
]


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection", "fill"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("case", CASES, ids=["smaller", "larger", "far"])
@pytest.mark.parametrize("name", ["affine", "similarity", "translation"])
def test_fused_equals_unfused(ext, name, case, mode, padding, align_corners) -> None:
    (h, w), out_size, spread = case
    t = transforms.get(name)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}{h}{mode}{padding}".encode()))
    x = torch.rand(3, 2, h, w, generator=gen)
    params = t.identity_params() + spread * torch.randn(3, t.num_params, generator=gen)
    fill = (0.25, -1.0) if padding == "fill" else 0.0
    args = (x, params, name, out_size, mode, padding, align_corners, fill)
    fused = _run(*args, fused=True)
    unfused = _run(*args, fused=False)
    assert fused[3] == {"fused": 1} and unfused[3] == {"unfused": 1}
    _assert_same(fused, unfused, 1e-5)


def _assert_same(fused, unfused, tol: float) -> None:
    """Output and input gradient to ``tol``; the params' gradient, a sum over every output
    pixel summed in another order, to ``tol`` of its largest entry (about 60 here)."""
    for got, want in zip(fused[:2], unfused[:2]):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    scale = max(1.0, unfused[2].abs().max().item())
    torch.testing.assert_close(fused[2], unfused[2], rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_gradcheck_float64(ext, mode, padding, align_corners) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    # off-integer points: bilinear is smooth there; nearest has no theta gradient
    theta = eye + 0.37 * torch.rand(2, 2, 3, dtype=torch.float64, generator=gen)
    theta.requires_grad_(mode == "bilinear")
    xs, ys = grid_axes((4, 7), align_corners, dtype=torch.float64)

    def fn(x, theta):
        return affine2d_sample(x, theta, xs, ys, mode, padding, align_corners)

    assert gradcheck(fn, (x, theta), eps=1e-6, atol=1e-5)


CASES3 = [((5, 7, 6), (4, 6, 9), 0.3), ((6, 6, 6), (6, 6, 6), 3.0)]


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection", "fill"])
@pytest.mark.parametrize("case", CASES3, ids=["odd-mixed", "far"])
@pytest.mark.parametrize("name", ["affine3d", "rigid3d", "translation3d"])
def test_fused_equals_unfused_on_volumes(ext, name, case, padding, align_corners) -> None:
    ins, out_size, spread = case
    t = transforms.get(name)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}{ins}{padding}".encode()))
    x = torch.rand(2, 2, *ins, generator=gen)
    params = t.identity_params() + spread * torch.randn(2, t.num_params, generator=gen)
    fill = (0.25, -1.0) if padding == "fill" else 0.0
    args = (x, params, name, out_size, "bilinear", padding, align_corners, fill)
    fused, unfused = _run(*args, fused=True), _run(*args, fused=False)
    assert fused[3] == {"fused": 1} and unfused[3] == {"unfused": 1}
    _assert_same(fused, unfused, 1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_gradcheck_float64_volumes(ext, padding, align_corners) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 4, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    eye = torch.eye(4, dtype=torch.float64)[:3]
    theta = eye + 0.37 * torch.rand(2, 3, 4, dtype=torch.float64, generator=gen)
    theta.requires_grad_(True)
    xs, ys, zs = grid_axes((3, 4, 5), align_corners, dtype=torch.float64)

    def fn(x, theta):
        return affine3d_sample(x, theta, xs, ys, zs, padding, align_corners)

    assert gradcheck(fn, (x, theta), eps=1e-6, atol=1e-5)


def test_volume_backward_is_bitwise_thread_count_independent(ext) -> None:
    t = transforms.get("affine3d")
    x = torch.rand(4, 1, 9, 10, 11)
    params = t.identity_params() + 0.3 * torch.randn(4, 12)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (2, 1, 2):
            torch.set_num_threads(threads)
            runs.append(
                _run(x, params, "affine3d", (8, 8, 8), "bilinear", "zeros", False, 0.0, True)
            )
    finally:
        torch.set_num_threads(before)
    for again in runs[1:]:
        for a, b in zip(runs[0][:3], again[:3]):
            assert torch.equal(a, b)


def test_float64_fused_equals_unfused(ext) -> None:
    t = transforms.get("affine")
    x = torch.rand(2, 3, 12, 9, dtype=torch.float64)
    params = t.identity_params(torch.float64) + 0.5 * torch.randn(2, 6, dtype=torch.float64)
    fused = _run(x, params, "affine", (10, 10), "bilinear", "reflection", False, 0.0, True)
    unfused = _run(x, params, "affine", (10, 10), "bilinear", "reflection", False, 0.0, False)
    assert fused[3] == {"fused": 1}
    _assert_same(fused, unfused, 1e-12)


def test_backward_is_bitwise_deterministic_and_thread_count_independent(ext) -> None:
    t = transforms.get("affine")
    x = torch.rand(8, 3, 33, 31)
    params = t.identity_params() + 0.4 * torch.randn(8, 6)

    def grads(threads: int):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            out = _run(x, params, "affine", (40, 40), "bilinear", "zeros", False, 0.0, True)
        finally:
            torch.set_num_threads(before)
        return out

    first = grads(2)
    for again in (grads(2), grads(1)):
        for a, b in zip(first[:3], again[:3]):
            assert torch.equal(a, b)


def test_module_takes_the_fused_path_and_counts_it(ext) -> None:
    st = SpatialTransformer((1, 20, 20), "affine", out_size=(10, 10))
    x = torch.rand(4, 1, 20, 20)
    native.path_counts(reset=True)
    out = st(x)
    assert native.path_counts(reset=True) == {"fused": 1}
    with native.use_fused(False):
        ref = st(x)
    assert native.path_counts(reset=True) == {"unfused": 1}
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "kwargs", "why"),
    [
        ("affine", {"mode": "bicubic"}, "a sampler the kernel does not have"),
        ("projective", {"mode": "nearest"}, "projective: fused bilinear only"),
        ("tps", {}, "not a matrix family"),
        ("affine", {"dtype": torch.bfloat16}, "reduced precision"),
        ("affine3d", {"mode": "nearest"}, "volumes are fused trilinear only"),
        ("projective3d", {}, "perspective division in 3-D"),
    ],
)
def test_what_the_kernel_does_not_cover_takes_the_unfused_path(ext, name, kwargs, why) -> None:
    t = transforms.get(name)
    dtype = kwargs.pop("dtype", torch.float32)
    x = torch.rand(2, 1, *(9,) * t.ndim, dtype=dtype)
    params = t.identity_params(dtype) + 0.1 * torch.randn(2, t.num_params, dtype=dtype)
    native.path_counts(reset=True)
    warp(x, params, name, **kwargs)
    assert native.path_counts(reset=True) == {"unfused": 1}, why


def test_use_fused_is_a_switch_and_a_block() -> None:
    assert native.fused_enabled()
    with native.use_fused(False):
        assert not native.fused_enabled()
        with native.use_fused(True):
            assert native.fused_enabled()
        assert not native.fused_enabled()
    assert native.fused_enabled()
    with pytest.raises(TypeError, match="enabled"):
        native.use_fused("no")  # type: ignore[arg-type]


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def _count_module_step(fused: bool) -> Counter[str]:
    torch.manual_seed(0)
    st = SpatialTransformer((1, 28, 28), "affine")
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    with native.use_fused(fused):
        st(x)  # warm: lazy caches (the grid axes) are built outside the count
        with _Ops() as mode:
            st(x).sum().backward()
    return mode.ops


def test_dispatched_ops_and_host_syncs_of_a_module_step(ext) -> None:
    """A regression in the number of ATen ops or device-to-host reads shows here, on the CPU."""
    fused, unfused = _count_module_step(True), _count_module_step(False)
    assert "grid_sampler_2d" in unfused and "grid_sampler_2d" not in fused
    assert "grid_sampler_2d_backward" not in fused
    assert sum(fused.values()) < sum(unfused.values())
    # host syncs: the unfused finite check reads one flag back per forward; the fused kernel
    # checks the matrix where it reads it and reads nothing back
    assert fused["_local_scalar_dense"] == 0 and unfused["_local_scalar_dense"] <= 1
    assert sum(fused.values()) <= 100, fused


@pytest.mark.parametrize("name", ["affine", "affine3d"])
def test_the_fused_finite_check_keeps_its_guarantee_and_message(ext, name) -> None:
    t = transforms.get(name)
    x = torch.rand(2, 1, *(6,) * t.ndim)
    params = t.identity_params().repeat(2, 1)
    params[1, 0] = float("nan")
    messages = []
    for fused in (True, False):
        with native.use_fused(fused), pytest.raises(NonFiniteError) as info:
            warp(x, params, name)
        messages.append(str(info.value))
    assert messages[0] == messages[1] == "params: contains 1 NaN or Inf value(s)"
    with torchstn.set_finite_checks(False):  # switched off: NaN flows through, as unfused
        out = warp(x, params, name)
    assert bool(out[1].isnan().all()) and bool(out[0].isfinite().all())


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=300,
    )


_FALLBACK = """
    import torch, torchstn.native as native
    from torchstn import warp, transforms
    t = transforms.get("affine")
    x = torch.rand(2, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    p = t.identity_params() + 0.2 * torch.ones(2, 6)
    out = warp(x, p, "affine")
    with native.use_fused(False):
        ref = warp(x, p, "affine")
    print(native.status())
    print(native.path_counts())
    print(bool(torch.allclose(out, ref, atol=1e-6)))
"""


def test_environment_switch_turns_the_fused_path_off() -> None:
    run = _python(_FALLBACK, TORCHSTN_NATIVE="0")
    assert run.returncode == 0, run.stderr
    status, counts, same = run.stdout.splitlines()[-3:]
    assert "'enabled': False" in status
    assert counts == "{'unfused': 2}" and same == "True"


def test_a_cache_that_cannot_be_written_falls_back_with_a_reason(tmp_path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    run = _python(_FALLBACK, TORCHSTN_NATIVE_DIR=str(blocker / "native"))
    assert run.returncode == 0, run.stderr
    status, counts, same = run.stdout.splitlines()[-3:]
    assert "'cpu': False" in status and "unavailable" in status
    assert counts == "{'unfused': 2}" and same == "True"
    assert blocker.read_text().startswith("a file")


def test_a_corrupt_cached_library_falls_back_with_a_reason(tmp_path) -> None:
    key = native.build_key()
    (tmp_path / f"torchstn_fused_{key}.so").write_bytes(b"\x7fELF truncated")
    run = _python(_FALLBACK, TORCHSTN_NATIVE_DIR=str(tmp_path))
    assert run.returncode == 0, run.stderr
    status, counts, same = run.stdout.splitlines()[-3:]
    assert "'cpu': False" in status and "unavailable" in status
    assert counts == "{'unfused': 2}" and same == "True"


#: a stand-in for fused_cpu.cpp in the build-lock test: the same build, in seconds, not minutes
_TINY_SOURCE = """
#include <pybind11/pybind11.h>
int answer() { return 42; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("answer", &answer); }
"""


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_two_processes_building_at_once_build_once(tmp_path, monkeypatch) -> None:
    """Two processes on one empty cache folder: one compiles, the other waits on the lock and
    loads the same library; no build folder or half library is left behind. (The build of a
    small source: the real one takes minutes, and every test here has built it already.)"""
    source = tmp_path / "src" / "fused_cpu.cpp"
    source.parent.mkdir()
    source.write_text(_TINY_SOURCE)
    cache = tmp_path / "cache"
    code = f"""
        from pathlib import Path
        import torchstn.native as native
        native._SOURCE = Path({str(source)!r})
        assert native.kernels() is not None, native.status()
        assert native.kernels().answer() == 42
        print(native.status()["cpu_detail"])
    """
    env = {**os.environ, "TORCHSTN_NATIVE_DIR": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    details = sorted(out.strip().split(":", 1)[0] for out, _ in outs)
    assert details == ["built", "cached"]  # the second found the first's library
    monkeypatch.setattr(native, "_SOURCE", source)
    names = sorted(p.name for p in cache.iterdir())
    assert [n for n in names if n.endswith(".so")] == [f"torchstn_fused_{native.build_key()}.so"]
    assert not [n for n in names if ".build-" in n]


def _run_field(x, u, padding, ac, fill, fused):
    from torchstn import fields

    x = x.detach().clone().requires_grad_(True)
    u = u.detach().clone().requires_grad_(True)
    native.path_counts(reset=True)
    with native.use_fused(fused):
        out = fields.warp(x, u, "bilinear", padding, ac, fill)
    counts = native.path_counts(reset=True)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=out.dtype)
    (out * weights).sum().backward()
    return out.detach(), x.grad, u.grad, counts


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection", "fill"])
@pytest.mark.parametrize(("h", "w", "amp"), [(9, 11, 2.0), (16, 16, 12.0), (2, 7, 1.5)])
def test_fused_field_warp_equals_unfused(ext, padding, h, w, amp, align_corners) -> None:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{padding}{h}{w}".encode()))
    x = torch.rand(2, 3, h, w, generator=gen)
    u = amp * torch.randn(2, 2, h, w, generator=gen)
    fill = (0.25, -1.0, 0.5) if padding == "fill" else 0.0
    fused = _run_field(x, u, padding, align_corners, fill, True)
    unfused = _run_field(x, u, padding, align_corners, fill, False)
    assert fused[3] == {"fused": 1} and unfused[3] == {"unfused": 1}
    for got, want in zip(fused[:3], unfused[:3]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_field_warp_of_a_one_pixel_side_keeps_the_unfused_behaviour(ext) -> None:
    # align_corners=True: a side of one pixel has no extent, grid_sample reads pixel 0 there
    x, u = torch.rand(1, 1, 1, 7), torch.full((1, 2, 1, 7), 1.5)
    assert _run_field(x, u, "zeros", True, 0.0, True)[3] == {"unfused": 1}
    assert _run_field(x, u, "zeros", False, 0.0, True)[3] == {"fused": 1}


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_gradcheck_float64_field(ext, padding) -> None:
    from torchstn.native.sample import field2d_sample

    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    # off-integer points (bilinear is smooth there), some outside
    u = (2.3 * torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=gen) - 1.1).requires_grad_()

    def fn(x, u):
        return field2d_sample(x, u, padding, False)

    assert gradcheck(fn, (x, u), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection", "fill"])
@pytest.mark.parametrize(
    ("d", "h", "w", "amp"), [(5, 6, 7, 2.0), (8, 8, 8, 6.0), (3, 2, 5, 1.5), (1, 4, 5, 1.0)]
)
def test_fused_volume_field_warp_equals_unfused(ext, padding, d, h, w, amp, align_corners):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{padding}{d}{h}{w}".encode()))
    x = torch.rand(2, 3, d, h, w, generator=gen)
    u = amp * torch.randn(2, 3, d, h, w, generator=gen)
    fill = (0.25, -1.0, 0.5) if padding == "fill" else 0.0
    fused = _run_field(x, u, padding, align_corners, fill, True)
    unfused = _run_field(x, u, padding, align_corners, fill, False)
    one_voxel_side = align_corners and d == 1  # keeps the unfused behaviour, as in 2-D
    assert fused[3] == ({"unfused": 1} if one_voxel_side else {"fused": 1})
    assert unfused[3] == {"unfused": 1}
    for got, want in zip(fused[:3], unfused[:3]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_gradcheck_float64_volume_field(ext, padding) -> None:
    from torchstn.native.sample import field3d_sample

    gen = torch.Generator().manual_seed(5)
    x = torch.rand(1, 2, 3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    # off-integer points (trilinear is smooth there), some outside
    u = (2.3 * torch.rand(1, 3, 3, 4, 5, dtype=torch.float64, generator=gen) - 1.1).requires_grad_()

    def fn(x, u):
        return field3d_sample(x, u, padding, True)

    assert gradcheck(fn, (x, u), eps=1e-6, atol=1e-5)


def test_volume_field_backward_is_bitwise_thread_count_independent(ext) -> None:
    from torchstn.native.sample import field3d_sample

    gen = torch.Generator().manual_seed(6)
    x = torch.rand(3, 2, 6, 7, 8, generator=gen)
    u = 3 * torch.randn(3, 3, 6, 7, 8, generator=gen)
    g = torch.randn(3, 2, 6, 7, 8, generator=gen)
    threads = torch.get_num_threads()
    grads = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            xx, uu = x.clone().requires_grad_(), u.clone().requires_grad_()
            field3d_sample(xx, uu, "reflection", False).backward(g)
            grads.append((xx.grad, uu.grad))
    finally:
        torch.set_num_threads(threads)
    for gx, gu in grads[1:]:
        assert torch.equal(gx, grads[0][0]) and torch.equal(gu, grads[0][1])


def test_fused_volume_integrate_equals_unfused(ext) -> None:
    from torchstn import fields

    v = 2.0 * torch.randn(2, 3, 9, 10, 11, generator=torch.Generator().manual_seed(7))
    native.path_counts(reset=True)
    fused = fields.integrate(v, steps=5, padding_mode="border")
    assert native.path_counts(reset=True) == {"fused": 1}
    with native.use_fused(False):
        unfused = fields.integrate(v, steps=5, padding_mode="border")
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=2e-5)


PROJECTIVE_CASES = [
    # (input size, output size, the spread of the params around the identity)
    ((9, 11), (6, 7), 0.2),  # odd, smaller output, a mild perspective
    ((8, 10), (13, 16), 0.4),  # larger output, w changes sign on some rows: the horizon
    ((7, 7), (7, 7), 2.0),  # strong: points far outside, |w| floored near the horizon
]


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection", "fill"])
@pytest.mark.parametrize("case", PROJECTIVE_CASES, ids=["mild", "horizon", "far"])
def test_fused_projective_equals_unfused(ext, case, padding, align_corners) -> None:
    (h, w), out_size, spread = case
    t = transforms.get("projective")
    gen = torch.Generator().manual_seed(zlib.crc32(f"projective{h}{padding}".encode()))
    x = torch.rand(3, 2, h, w, generator=gen)
    params = t.identity_params() + spread * torch.randn(3, 8, generator=gen)
    fill = (0.25, -1.0) if padding == "fill" else 0.0
    args = (x, params, "projective", out_size, "bilinear", padding, align_corners, fill)
    fused = _run(*args, fused=True)
    unfused = _run(*args, fused=False)
    assert fused[3] == {"fused": 1} and unfused[3] == {"unfused": 1}
    _assert_same(fused, unfused, 1e-5)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_gradcheck_float64_projective(ext, padding, align_corners) -> None:
    from torchstn.native.sample import projective2d_sample

    gen = torch.Generator().manual_seed(8)
    x = torch.rand(2, 2, 6, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    theta = torch.eye(3, dtype=torch.float64) + 0.15 * torch.randn(
        2, 3, 3, dtype=torch.float64, generator=gen
    )
    theta = theta.requires_grad_()
    xs, ys = grid_axes((4, 5), align_corners, dtype=torch.float64)

    def fn(x, theta):
        return projective2d_sample(x, theta, xs, ys, padding, align_corners, 1e-6)

    assert gradcheck(fn, (x, theta), eps=1e-6, atol=1e-5)
