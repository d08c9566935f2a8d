"""The fused kernels inside graphs: ``torch.compile(fullgraph=True)`` and ``torch.export`` hold
them as ``torch.ops.torchstn`` operators; ONNX and the files ``torchstn export`` writes hold the
standard operators."""

from __future__ import annotations

import io
import os
import shutil

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from torchstn import SpatialTransformer, fields, native
from torchstn.export import export
from torchstn.functional.coords import grid_axes
from torchstn.native import ops


@pytest.fixture(scope="module")
def ext():
    module = native.kernels()
    if module is None:
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            pytest.skip(f"no C++ compiler: {native.status()['cpu_detail']}")
        pytest.fail(f"the fused kernels did not build: {native.status()['cpu_detail']}")
    return module


class _Capture:
    """A ``torch.compile`` backend that runs the graphs as traced and keeps the operators of
    the forward and the backward graph."""

    def __init__(self) -> None:
        self.forward: list[str] = []
        self.backward: list[str] = []

    def __call__(self, gm, example_inputs):  # type: ignore[no-untyped-def]
        def keep(into):  # type: ignore[no-untyped-def]
            def compiler(g, _inputs):  # type: ignore[no-untyped-def]
                into.extend(str(n.target) for n in g.graph.nodes if n.op == "call_function")
                return make_boxed_func(g.forward)

            return compiler

        return aot_autograd(fw_compiler=keep(self.forward), bw_compiler=keep(self.backward))(
            gm, example_inputs
        )


def _module2d() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    st = SpatialTransformer((1, 20, 20), "affine", out_size=(12, 10))
    with torch.no_grad():  # off the identity: every tap and both gradients matter
        for p in st.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return st, torch.rand(3, 1, 20, 20)


def _projective() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(2)
    st = SpatialTransformer((1, 20, 20), "projective", out_size=(12, 10), padding_mode="border")
    with torch.no_grad():
        for p in st.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return st, torch.rand(3, 1, 20, 20)


def _module3d() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    st = SpatialTransformer((1, 8, 9, 10), "affine3d", out_size=(5, 6, 7), padding_mode="border")
    with torch.no_grad():
        for p in st.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return st, torch.rand(2, 1, 8, 9, 10)


class _FieldWarp(torch.nn.Module):
    """A learnable field warping its input: the field's and the image's gradients flow."""

    def __init__(self, integrate: bool, spatial: tuple[int, ...] = (11, 13)) -> None:
        super().__init__()
        self.u = torch.nn.Parameter(1.5 * torch.randn(1, len(spatial), *spatial))
        self.integrate = integrate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.u.expand(x.shape[0], *self.u.shape[1:])
        if self.integrate:
            u = fields.integrate(u, steps=3)
        return fields.warp(x, u, padding_mode="reflection")


CASES = {
    "affine": (_module2d, "affine2d_sample"),
    "affine3d": (_module3d, "affine3d_sample"),
    "projective": (_projective, "projective2d_sample"),
    "field": (lambda: (_FieldWarp(False), torch.rand(2, 3, 11, 13)), "field2d_sample"),
    "integrate": (lambda: (_FieldWarp(True), torch.rand(2, 1, 11, 13)), "field2d_sample"),
    "field3d": (
        lambda: (_FieldWarp(False, (5, 6, 7)), torch.rand(2, 2, 5, 6, 7)),
        "field3d_sample",
    ),
}


def _step(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Output, input gradient and parameter gradients of one weighted forward+backward."""
    module.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out = module(x)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out * w).sum().backward()
    return out.detach(), x.grad, *(p.grad.clone() for p in module.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_compile_fullgraph_runs_the_kernels_in_the_forward_and_backward_graph(ext, case) -> None:
    make, op = CASES[case]
    module, x = make()
    eager = _step(module, x)
    with native.use_fused(False):
        unfused = _step(module, x)
    torch._dynamo.reset()
    backend = _Capture()
    compiled = _step(torch.compile(module, backend=backend, fullgraph=True), x)
    assert f"torchstn.{op}.default" in backend.forward
    assert f"torchstn.{op}_backward.default" in backend.backward
    assert not any("grid_sampler" in t for t in backend.forward + backend.backward)
    for got, want, ref in zip(compiled, eager, unfused, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # the same kernel
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_compile_with_the_fused_path_off_holds_the_standard_operators(ext) -> None:
    module, x = _module2d()
    torch._dynamo.reset()
    backend = _Capture()
    with native.use_fused(False):
        _step(torch.compile(module, backend=backend, fullgraph=True), x)
    assert not any("torchstn" in t for t in backend.forward + backend.backward)
    assert any("grid_sampler" in t for t in backend.forward)


def test_inductor_compiles_a_model_with_the_kernels(ext) -> None:
    """The default backend: the operators are opaque calls in the generated code."""
    module, x = _module2d()
    eager = _step(module, x)
    torch._dynamo.reset()
    compiled = _step(torch.compile(module, fullgraph=True), x)
    for got, want in zip(compiled, eager, strict=True):
        # the localisation net's layers are inductor's own kernels, summing in another order
        scale = float(want.abs().max().clamp(min=1.0))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("case", ["affine", "affine3d", "projective", "field", "field3d"])
def test_torch_export_holds_the_operator_and_reloads(ext, case) -> None:
    make, op = CASES[case]
    module, x = make()
    module.eval()
    with torch.no_grad():
        want = module(x)
    program = torch.export.export(module, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert f"torchstn.{op}.default" in targets
    assert not any("grid_sampler" in t for t in targets)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(x), want, rtol=1e-6, atol=1e-6)


def test_onnx_export_writes_the_standard_operators(ext) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    module, x = _module2d()
    module.eval()
    program = torch.onnx.export(module, (x,), dynamo=True, verbose=False)
    assert program is not None
    kinds = {n.op_type for n in program.model_proto.graph.node}
    assert "GridSample" in kinds
    assert not any(n.domain.startswith("torchstn") for n in program.model_proto.graph.node)
    session = ort.InferenceSession(program.model_proto.SerializeToString())
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), module(x), rtol=1e-4, atol=1e-5)


def test_torchstn_export_writes_programs_without_the_operators(ext, tmp_path) -> None:
    """A file for deployment loads without torchstn: the fused path is a runtime choice."""
    module, _x = _module2d()
    path = tmp_path / "st.pt2"
    export(module.eval(), path, in_shape=(1, 20, 20))  # verify=True: compared with eager
    program = torch.export.load(str(path))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert not any("torchstn" in t for t in targets)
    assert any("grid_sampler" in t for t in targets)
    assert native.fused_enabled()  # switched off for the export only


def _affine_args(dtype: torch.dtype = torch.float64) -> tuple[object, ...]:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 7, 9, dtype=dtype, generator=gen, requires_grad=True)
    theta = torch.eye(2, 3, dtype=dtype) + 0.2 * torch.randn(2, 2, 3, dtype=dtype, generator=gen)
    xs, ys = grid_axes((5, 6), False, dtype=dtype)
    return x, theta.requires_grad_(), xs, ys, 0, 2, False, False


def test_the_operators_pass_opcheck(ext) -> None:
    """Schema, fake (meta) implementation, autograd registration and dispatch agree."""
    torch.library.opcheck(ops.affine2d, _affine_args())
    gen = torch.Generator().manual_seed(6)
    vol = torch.rand(1, 2, 4, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    theta = torch.eye(3, 4, dtype=torch.float64)[None] + 0.1 * torch.randn(
        1, 3, 4, dtype=torch.float64, generator=gen
    )
    xs, ys, zs = grid_axes((3, 4, 5), True, dtype=torch.float64)
    torch.library.opcheck(ops.affine3d, (vol, theta.requires_grad_(), xs, ys, zs, 1, True, False))
    x = torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    u = (2 * torch.rand(2, 2, 5, 6, dtype=torch.float64, generator=gen) - 1).requires_grad_()
    torch.library.opcheck(ops.field2d, (x, u, 0, False))
    x = torch.rand(1, 2, 3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    u = (2 * torch.rand(1, 3, 3, 4, 5, dtype=torch.float64, generator=gen) - 1).requires_grad_()
    torch.library.opcheck(ops.field3d, (x, u, 2, True))
    x = torch.rand(2, 2, 6, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    theta = torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(
        2, 3, 3, dtype=torch.float64, generator=gen
    )
    xs, ys = grid_axes((4, 5), False, dtype=torch.float64)
    torch.library.opcheck(
        ops.projective2d, (x, theta.requires_grad_(), xs, ys, 1, False, 1e-6, False)
    )


def test_without_the_kernels_the_operator_warps_with_grid_sample(ext, monkeypatch) -> None:
    """A program loaded where the kernels are missing still runs its forward (same numbers);
    its backward says what is missing."""
    x, theta, xs, ys, *settings = _affine_args(torch.float32)
    want = ops.affine2d(x, theta, xs, ys, *settings)
    field_args = (torch.rand(1, 2, 6, 7), 2 * torch.randn(1, 2, 6, 7), 1, True)
    field_want = ops.field2d(*field_args)
    volume_args = (torch.rand(1, 2, 4, 5, 6), 2 * torch.randn(1, 3, 4, 5, 6), 2, False)
    volume_want = ops.field3d(*volume_args)
    monkeypatch.setattr(ops, "kernels", lambda: None)
    torch.testing.assert_close(ops.field3d(*volume_args), volume_want, rtol=1e-5, atol=1e-6)
    got = ops.affine2d(x, theta, xs, ys, *settings)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ops.field2d(*field_args), field_want, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="needs the fused CPU kernels"):
        got.sum().backward()
