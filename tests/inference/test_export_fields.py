"""Exporting the field models: the registration models (reg_unet with a displacement or a velocity
field, reg_affine; images and volumes) and modules around ``fields.warp`` and
``fields.integrate``, to ONNX (opset 20: a 4-D or 5-D GridSample), TorchScript (``torch.jit.trace``)
and ``torch.export``; each file reloaded with its own runtime and compared with eager to 1e-4 at
batch sizes 1 and 3 (the export traced batch 2).

A registration model takes two inputs, ``moving`` and ``fixed``, and returns ``(warped, field,
params)``. These tests export the Python objects with PyTorch directly; ``torchstn export`` of a
registration run is tested in ``test_export_registration_cli.py``."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from torchstn import fields
from torchstn.models import RegistrationNet, create_model

from .conftest import randomize, run_native

SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}
OPSET = 20  # the first with a 5-D GridSample (volumes); images use it too here
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="ONNX export needs onnx, onnxscript and onnxruntime: pip install 'torchstn[export]'",
)
FORMATS = ["torchscript", "exported-program", pytest.param("onnx", marks=needs_onnx)]

IMAGE, VOLUME = (1, 16, 12), (1, 8, 6, 10)
SMALL = {"enc": (4, 8), "dec": (8, 8, 4)}
MODELS = {
    "unet-2d-displacement": ("reg_unet", IMAGE, {"field": "displacement", **SMALL}),
    "unet-2d-velocity-half": ("reg_unet", IMAGE, {"field": "velocity", "downsize": 2, **SMALL}),
    "unet-3d-displacement": ("reg_unet", VOLUME, {"field": "displacement", **SMALL}),
    "unet-3d-velocity": ("reg_unet", VOLUME, {"field": "velocity", "steps": 5, **SMALL}),
    "affine-2d": ("reg_affine", IMAGE, {"channels": (4, 8), "hidden": 16}),
    "affine-3d": ("reg_affine", VOLUME, {"channels": (4, 8), "hidden": 16}),
}
REGISTRATION_OUTPUTS = ["warped", "field", "params"]


class Warp(nn.Module):
    """``(x, u) -> fields.warp(x, u)`` with fixed sampler settings."""

    def __init__(self, mode: str = "bilinear", padding_mode: str = "zeros") -> None:
        super().__init__()
        self.mode, self.padding_mode = mode, padding_mode

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return fields.warp(x, u, self.mode, self.padding_mode)


class Integrate(nn.Module):
    """``v -> fields.integrate(v, steps)``."""

    def __init__(self, steps: int = 7) -> None:
        super().__init__()
        self.steps = steps

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return fields.integrate(v, self.steps)


def _export(
    module: nn.Module,
    examples: tuple[torch.Tensor, ...],
    path: Path,
    fmt: str,
    inputs: list[str],
    outputs: list[str],
) -> None:
    """Write ``module`` at ``examples`` to ``path``, the batch size dynamic (ONNX, exported
    program) or traced (TorchScript)."""
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in examples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            program = torch.onnx.export(
                module,
                examples,
                dynamo=True,
                opset_version=OPSET,
                dynamic_shapes=dynamic,
                input_names=inputs,
                output_names=outputs,
                verbose=False,
            )
            assert program is not None
            path.write_bytes(program.model_proto.SerializeToString())
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, examples, check_trace=False), str(path))
        else:
            torch.export.save(torch.export.export(module, examples, dynamic_shapes=dynamic), path)


def _load(path: Path, fmt: str, inputs: list[str]) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The export run by its own runtime, with several named inputs (``run_native`` of the
    conftest takes one, ``input``)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == inputs

        def run_onnx(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            feed = {name: x.numpy() for name, x in zip(inputs, xs, strict=True)}
            return tuple(torch.from_numpy(o) for o in session.run(None, feed))

        return run_onnx
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(path).module()

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = module(*xs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run


def _assert_matches(
    eager: Callable[..., object],
    run: Callable[..., tuple[torch.Tensor, ...]],
    make_inputs: Callable[[int], tuple[torch.Tensor, ...]],
) -> None:
    """The export's outputs equal eager's to 1e-4 at batch sizes 1 and 3."""
    for b in (1, 3):
        xs = make_inputs(b)
        with torch.no_grad():
            ref = eager(*xs)
        refs = tuple(ref) if isinstance(ref, tuple) else (ref,)
        got = run(*xs)
        assert len(got) == len(refs)
        for g, r in zip(got, refs, strict=True):
            assert isinstance(r, torch.Tensor) and g.shape == r.shape
            torch.testing.assert_close(g, r, atol=1e-4, rtol=0)


def _onnx_grid_samples(path: Path) -> tuple[int, int]:
    """The default-domain opset of an ONNX file and the rank of its GridSample inputs."""
    import onnx

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    ranks = {
        v.name: len(v.type.tensor_type.shape.dim)
        for v in (*proto.graph.value_info, *proto.graph.input)
    }
    samplers = [n for n in nodes if n.op_type == "GridSample"]
    assert samplers, "no GridSample in the graph"
    return opset, max(ranks.get(n.input[0], 0) for n in samplers)


def _registration(key: str) -> tuple[RegistrationNet, tuple[int, ...]]:
    name, in_shape, options = MODELS[key]
    model = randomize(create_model(name, in_shape, 0, **options))
    assert isinstance(model, RegistrationNet)
    if model.dense:  # a visible deformation: a dense head 10x larger than randomize's
        with torch.no_grad():
            model.transformer.head.weight.mul_(10.0)
    return model, in_shape


def _pair(in_shape: tuple[int, ...]) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    return lambda b: (torch.rand(b, *in_shape), torch.rand(b, *in_shape))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("key", list(MODELS))
def test_registration_models(key: str, fmt: str, tmp_path: Path) -> None:
    model, in_shape = _registration(key)
    make = _pair(in_shape)
    out = model(*make(2))
    assert out.field.abs().max() > 0.05  # the export has something to get wrong
    assert not torch.allclose(out.params[0], out.params[1])  # params depend on the input
    path = tmp_path / f"model{SUFFIX[fmt]}"
    _export(model, make(2), path, fmt, ["moving", "fixed"], REGISTRATION_OUTPUTS)
    _assert_matches(lambda m, f: tuple(model(m, f)), _load(path, fmt, ["moving", "fixed"]), make)
    if fmt == "onnx":
        assert _onnx_grid_samples(path) == (OPSET, len(in_shape) + 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("mode", "padding"), [("bilinear", "zeros"), ("nearest", "border")])
def test_warp(ndim: int, mode: str, padding: str, fmt: str, tmp_path: Path) -> None:
    spatial = IMAGE[1:] if ndim == 2 else VOLUME[1:]
    module = Warp(mode, padding)

    def make(b: int) -> tuple[torch.Tensor, torch.Tensor]:  # fields of a few pixels: some outside
        return torch.rand(b, 2, *spatial), 3 * torch.randn(b, ndim, *spatial)

    path = tmp_path / f"warp{SUFFIX[fmt]}"
    _export(module, make(2), path, fmt, ["x", "u"], ["output"])
    _assert_matches(module, _load(path, fmt, ["x", "u"]), make)
    if fmt == "onnx":
        assert _onnx_grid_samples(path) == (OPSET, ndim + 2)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_integrate(ndim: int, fmt: str, tmp_path: Path) -> None:
    spatial = IMAGE[1:] if ndim == 2 else VOLUME[1:]
    module = Integrate(steps=5)

    def make(b: int) -> tuple[torch.Tensor]:
        return (2 * torch.randn(b, ndim, *spatial),)

    path = tmp_path / f"integrate{SUFFIX[fmt]}"
    _export(module, make(2), path, fmt, ["input"], ["output"])
    _assert_matches(module, run_native(path, fmt), make)  # one input: the shared runner
    if fmt == "onnx":
        assert _onnx_grid_samples(path) == (OPSET, ndim + 2)


def test_traced_registration_model_is_a_plain_tuple(tmp_path: Path) -> None:
    """TorchScript's trace keeps ``(warped, field, params)`` as a tuple; the exported program
    keeps the :class:`~torchstn.models.Registration` named tuple."""
    model, in_shape = _registration("unet-2d-velocity-half")
    xs = _pair(in_shape)(2)
    traced = torch.jit.trace(model, xs, check_trace=False)
    out = traced(*xs)
    assert type(out) is tuple and len(out) == 3
    program = torch.export.export(model, xs).module()
    named = program(*xs)
    assert named.field.shape == (2, 2, *in_shape[1:])
    assert named.params.shape == (2, 2, *(n // 2 for n in in_shape[1:]))
