"""Exporting volumes' transformers: ONNX (a 5-D GridSample at opset 20, or the gather sampler of
plain operators at any opset), TorchScript and ``torch.export``, each reloaded with its own
runtime and compared with the eager model to 1e-4 at two batch sizes; the gather sampler against
``grid_sample`` in eager mode."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchstn import FCLocalization, ParallelTransformers, SpatialTransformer, transforms
from torchstn.cli import main
from torchstn.errors import DataError, InvalidInputError, UnknownNameError
from torchstn.export import VOLUME_OPSET, export, gather_sample, load_exported, read_metadata
from torchstn.inference import first_transformer, load_info
from torchstn.models import create_model, model_names

from .conftest import run_native

VOLUME = (2, 6, 7, 8)  # (C, D, H, W)
OUT = (5, 6, 7)
FAMILIES = transforms.names(ndim=3)
#: every setting of grid_sample's volume sampler: mode x padding x align_corners.
SETTINGS = [
    (mode, padding, align)
    for mode in ("bilinear", "nearest")
    for padding in ("zeros", "border", "reflection")
    for align in (False, True)
]
#: the gather ONNX test in CI: each mode, padding and align_corners at least once (exporting a
#: gather sampler is slow on 2 cores, about 2 s a head; the twelve are marked slow).
SETTINGS_IN_CI = [
    ("bilinear", "zeros", True),
    ("bilinear", "reflection", False),
    ("nearest", "border", False),
    ("nearest", "reflection", True),
]
SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="ONNX export needs onnx, onnxscript and onnxruntime: pip install 'torchstn[export]'",
)


def _random_st(family: str, mode="bilinear", padding="zeros", align=False, zoom=1.0):
    """A volume transformer whose params depend on the input; ``zoom`` > 1 widens the affine
    start so that part of the grid reads outside the volume (the padding shows)."""
    loc = FCLocalization(VOLUME, [8])
    st = SpatialTransformer(
        VOLUME,
        family,
        out_size=OUT,
        localization=loc,
        mode=mode,
        padding_mode=padding,
        align_corners=align,
    )
    gen = torch.Generator().manual_seed(len(family) + 7 * len(padding) + align)
    with torch.no_grad():
        st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * 0.05)
        st.head.bias.mul_(zoom)
    return st.eval()


def _settings_heads(settings=SETTINGS) -> ParallelTransformers:
    """One affine3d head per sampler setting, each reading partly outside the volume."""
    return ParallelTransformers([_random_st("affine3d", *s, zoom=1.4) for s in settings]).eval()


def _assert_matches(eager, path: Path, fmt: str, in_shape=VOLUME) -> float:
    """Outputs equal to 1e-4 at batch sizes 1 and 4 (the export traced batch 2); returns the
    largest difference."""
    run = run_native(path, fmt)
    worst = 0.0
    for b in (1, 4):
        x = torch.rand(b, *in_shape)
        with torch.no_grad():
            ref = eager(x)
        got = run(x)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            torch.testing.assert_close(g, r, atol=1e-4, rtol=0)
            worst = max(worst, float((g - r).abs().max()))
    return worst


def _onnx_ops(path: Path) -> tuple[int, set[str]]:
    """The default-domain opset of an ONNX file and its operator types."""
    import onnx

    proto = onnx.load(str(path))
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    return opset, {n.op_type for n in nodes}


def _outputs_of(model: nn.Module):
    st = first_transformer(model)
    return lambda x: (model(x), st.localize(x))


class TestGatherSample:
    """gather_sample = grid_sample, in value (float32, 1e-5) and gradients (float64)."""

    @staticmethod
    def _voxel_centres(size: tuple[int, int, int], align: bool) -> torch.Tensor:
        """``(1, D, H, W, 3)`` points at the centres of every voxel, (x, y, z) order."""
        axes = []
        for n in size[::-1]:  # W, H, D
            i = torch.arange(n, dtype=torch.float32)
            axes.append(2 * i / max(n - 1, 1) - 1 if align else (2 * i + 1) / n - 1)
        zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return torch.stack([xx, yy, zz], -1)[None]

    @pytest.mark.parametrize(("mode", "padding", "align"), SETTINGS)
    def test_random_points_inside_and_outside(self, mode, padding, align):
        gen = torch.Generator().manual_seed(0)
        v = torch.randn(2, 3, 6, 7, 8, generator=gen)
        grid = torch.rand(2, 5, 4, 6, 3, generator=gen) * 5 - 2.5  # about half outside
        ref = F.grid_sample(v, grid, mode, padding, align)
        torch.testing.assert_close(
            gather_sample(v, grid, mode, padding, align), ref, atol=1e-5, rtol=0
        )

    @pytest.mark.parametrize(("mode", "padding", "align"), SETTINGS)
    def test_voxel_centres_faces_and_far_points(self, mode, padding, align):
        """Integer voxels (the identity reads the volume), points on and beyond the faces,
        several reflections away, and far outside."""
        v = torch.randn(1, 2, 6, 7, 8, generator=torch.Generator().manual_seed(1))
        centres = self._voxel_centres((6, 7, 8), align)
        got = gather_sample(v, centres, mode, padding, align)
        torch.testing.assert_close(got, v, atol=1e-5, rtol=0)
        special = torch.tensor([-1.0, 1.0, -1.5, 1.5, -3.25, 3.25, 7.0, -1e6, 1e6, 0.0])
        pts = torch.cartesian_prod(special, special, special).view(1, 10, 10, 10, 3)
        ref = F.grid_sample(v, pts, mode, padding, align)
        torch.testing.assert_close(
            gather_sample(v, pts, mode, padding, align), ref, atol=1e-5, rtol=0
        )

    @pytest.mark.parametrize("align", [False, True])
    @pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
    def test_one_voxel_thick_axis(self, padding, align):
        v = torch.randn(1, 1, 1, 5, 6, generator=torch.Generator().manual_seed(2))
        grid = torch.rand(1, 3, 4, 5, 3, generator=torch.Generator().manual_seed(3)) * 4 - 2
        for mode in ("bilinear", "nearest"):
            ref = F.grid_sample(v, grid, mode, padding, align)
            got = gather_sample(v, grid, mode, padding, align)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("align", [False, True])
    def test_gradients_equal_grid_sample(self, align):
        gen = torch.Generator().manual_seed(4)
        v = torch.randn(2, 2, 4, 5, 6, dtype=torch.float64, generator=gen)
        grid = torch.rand(2, 3, 3, 4, 3, dtype=torch.float64, generator=gen) * 2.6 - 1.3
        weights = torch.randn(2, 2, 3, 3, 4, dtype=torch.float64, generator=gen)
        grads = []
        for fn in (lambda a, g: F.grid_sample(a, g, align_corners=align), gather_sample):
            a, g = v.clone().requires_grad_(), grid.clone().requires_grad_()
            out = fn(a, g) if fn is not gather_sample else fn(a, g, align_corners=align)
            grads.append(torch.autograd.grad((out * weights).sum(), (a, g)))
        for got, ref in zip(grads[1], grads[0]):
            torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)

    def test_gradcheck(self):
        gen = torch.Generator().manual_seed(5)
        v = torch.randn(1, 1, 3, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
        grid = torch.rand(1, 2, 2, 2, 3, dtype=torch.float64, generator=gen) * 2.2 - 1.1
        grid.requires_grad_()
        for padding in ("zeros", "border", "reflection"):
            assert torch.autograd.gradcheck(
                lambda a, g, p=padding: gather_sample(a, g, "bilinear", p), (v, grid)
            )

    def test_errors(self):
        v, grid = torch.rand(1, 1, 4, 4, 4), torch.rand(1, 2, 2, 2, 3)
        with pytest.raises(InvalidInputError, match="5-D volumes"):
            gather_sample(torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2, 2))
        with pytest.raises(UnknownNameError, match="bilinear, nearest"):
            gather_sample(v, grid, "bicubic")
        with pytest.raises(UnknownNameError, match="border, reflection, zeros"):
            gather_sample(v, grid, padding_mode="fill")
        with pytest.raises(InvalidInputError, match="grid"):
            gather_sample(v, torch.rand(1, 2, 2, 2, 2))


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_in_pytorch_formats(family, fmt, tmp_path):
    st = _random_st(family)
    path = tmp_path / f"st{SUFFIX[fmt]}"
    result = export(st, path, fmt, part="transformer", verify=False)
    assert result.outputs == ("output", "params") and result.in_shape == VOLUME
    params = st.localize(torch.rand(3, *VOLUME))
    assert not torch.allclose(params[0], params[1])  # the params depend on the input
    _assert_matches(lambda x: st(x, return_params=True), path, fmt)


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_every_sampler_setting_in_pytorch_formats(fmt, tmp_path):
    heads = _settings_heads()
    path = tmp_path / f"heads{SUFFIX[fmt]}"
    export(heads, path, fmt, in_shape=VOLUME, verify=False)
    first = heads.heads[0]
    _assert_matches(lambda x: (heads(x), first.localize(x)), path, fmt)


@needs_onnx
class TestOnnx:
    @pytest.mark.parametrize(
        "sampler", ["grid_sample", pytest.param("gather", marks=pytest.mark.slow)]
    )
    def test_every_family_in_one_file(self, sampler, tmp_path):
        """Every 3-D family side by side (one export): opset 20 and a 5-D GridSample, or the
        gather sampler at opset 17 without one."""
        heads = ParallelTransformers([_random_st(family) for family in FAMILIES]).eval()
        path = tmp_path / "families.onnx"
        opset = None if sampler == "grid_sample" else 17
        result = export(heads, path, in_shape=VOLUME, opset=opset, sampler=sampler, verify=False)
        assert result.outputs == ("logits", "params") and result.sampler == sampler
        first = heads.heads[0]
        _assert_matches(lambda x: (heads(x), first.localize(x)), path, "onnx")
        version, ops = _onnx_ops(path)
        if sampler == "grid_sample":
            assert version == VOLUME_OPSET == result.opset and "GridSample" in ops
        else:
            assert version == 17 == result.opset and "GridSample" not in ops
            assert {"GatherElements", "Floor"} <= ops

    @pytest.mark.parametrize(
        ("sampler", "opset", "settings"),
        [
            ("grid_sample", 20, SETTINGS),
            ("gather", 17, SETTINGS_IN_CI),
            pytest.param("gather", 17, SETTINGS, marks=pytest.mark.slow),
        ],
    )
    def test_every_sampler_setting(self, sampler, opset, settings, tmp_path):
        """bilinear and nearest x zeros, border and reflection x both align_corners, each head
        reading partly outside the volume."""
        heads = _settings_heads(settings)
        path = tmp_path / "heads.onnx"
        export(heads, path, in_shape=VOLUME, opset=opset, sampler=sampler, verify=False)
        first = heads.heads[0]
        _assert_matches(lambda x: (heads(x), first.localize(x)), path, "onnx")
        assert ("GridSample" in _onnx_ops(path)[1]) == (sampler == "grid_sample")

    def test_verify_and_metadata(self, tmp_path):
        st = _random_st("rigid3d")
        path = tmp_path / "st.onnx"
        result = export(st, path, sampler="gather", metadata={"note": "vol"})
        assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
        assert result.to_dict()["sampler"] == "gather" and result.to_dict()["opset"] == 18
        meta = read_metadata(path)
        assert meta["input"] == "volume" and meta["axes"] == ["C", "D", "H", "W"]
        assert meta["in_shape"] == list(VOLUME) and meta["outputs"] == ["output", "params"]
        assert meta["opset"] == 18 and meta["sampler"] == "gather" and meta["note"] == "vol"
        assert meta["transform"] == "rigid3d" and meta["num_params"] == 6
        output, params = load_exported(path)(torch.rand(3, *VOLUME))
        assert output.shape == (3, 2, *OUT) and params.shape == (3, 6)

    def test_images_keep_opset_18_and_grid_sample(self, tmp_path):
        st = SpatialTransformer(
            (1, 10, 12), "affine", localization=FCLocalization((1, 10, 12), [8])
        )
        path = tmp_path / "st.onnx"
        result = export(st, path, verify=False)
        assert result.opset == 18 and result.sampler == "grid_sample"
        assert _onnx_ops(path)[0] == 18 and "GridSample" in _onnx_ops(path)[1]
        meta = read_metadata(path)
        assert meta["input"] == "image" and meta["axes"] == ["C", "H", "W"]

    def test_refusals(self, tmp_path):
        st = _random_st("affine3d")
        out = tmp_path / "st.onnx"
        with pytest.raises(InvalidInputError, match=r"opset >= 20 \(5-D GridSample\), got 18"):
            export(st, out, opset=18)
        with pytest.raises(InvalidInputError, match="applies to the onnx format only"):
            export(st, tmp_path / "st.pt", sampler="gather")
        with pytest.raises(UnknownNameError, match="gather, grid_sample"):
            export(st, out, sampler="loops")
        image_st = SpatialTransformer((1, 10, 12), "affine")
        with pytest.raises(InvalidInputError, match="samples volumes"):
            export(image_st, out, sampler="gather")
        assert not list(tmp_path.iterdir())


#: small options for the volume models (the registry's defaults are sized for 32^3).
TINY = {
    "cnn3d": {"channels": [2, 4], "kernels": [3, 3]},
    "st_cnn3d_affine": {
        "channels": [2, 4],
        "kernels": [3, 3],
        "loc_channels": [2, 2],
        "loc_hidden": 8,
    },
}
MODEL_VOLUME = (1, 8, 8, 8)


FORMAT_SAMPLERS = [
    ("torchscript", "grid_sample"),
    ("exported-program", "grid_sample"),
    ("onnx", "grid_sample"),
    ("onnx", "gather"),
]


def _model_cases() -> list:
    present = set(model_names())
    cases = []
    for name in ("cnn3d", "st_cnn3d_affine"):
        missing = pytest.mark.skipif(
            name not in present, reason=f"the model registry has no {name!r} yet"
        )
        for fmt, sampler in FORMAT_SAMPLERS:
            if name == "cnn3d" and sampler == "gather":
                continue  # nothing to gather: it samples nothing
            marks = [missing, *([needs_onnx] if fmt == "onnx" else [])]
            cases.append(pytest.param(name, fmt, sampler, marks=marks))
    return cases


@pytest.mark.parametrize(("name", "fmt", "sampler"), _model_cases())
def test_registry_models(name, fmt, sampler, tmp_path):
    model = create_model(name, MODEL_VOLUME, 3, **TINY[name]).eval()
    st = first_transformer(model)
    if st is not None:
        with torch.no_grad():
            st.head.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    path = tmp_path / f"m{SUFFIX[fmt]}"
    result = export(model, path, fmt, in_shape=MODEL_VOLUME, sampler=sampler, verify=False)
    eager = (lambda x: (model(x),)) if st is None else _outputs_of(model)
    assert result.outputs == (("logits",) if st is None else ("logits", "params"))
    _assert_matches(eager, path, fmt, MODEL_VOLUME)
    if fmt == "onnx" and st is not None:
        assert ("GridSample" in _onnx_ops(path)[1]) == (sampler == "grid_sample")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, text: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchstn export: error:"), err
    assert text in lines[0], lines[0]


def _volume_checkpoint(make_checkpoint) -> Path:
    """A tiny st_cnn3d_affine checkpoint, or a skip while the registry or the checkpoint loader
    (torchstn.inference) does not take volumes."""
    if "st_cnn3d_affine" not in model_names():
        pytest.skip("the model registry has no 'st_cnn3d_affine' yet")
    ckpt = make_checkpoint("st_cnn3d_affine", MODEL_VOLUME, 3)
    try:
        load_info(ckpt)
    except DataError as err:
        pytest.skip(f"checkpoints of volumes do not load yet: {err}")
    return ckpt


class TestCli:
    def test_sampler_flag_errors(self, make_checkpoint, tmp_path, capsys):
        ckpt = str(make_checkpoint("cnn"))  # an image model: these need no volume checkpoint
        onnx_out, pt_out = str(tmp_path / "m.onnx"), str(tmp_path / "m.pt")
        code, _, err = _run(capsys, "export", ckpt, "--out", pt_out, "--sampler", "gather")
        _one_line_error(code, err, "--sampler: applies to --format onnx only")
        code, _, err = _run(capsys, "export", ckpt, "--out", onnx_out, "--sampler", "loops")
        _one_line_error(code, err, "gather, grid_sample")
        code, _, err = _run(capsys, "export", ckpt, "--out", onnx_out, "--sampler", "gather")
        _one_line_error(code, err, "samples volumes (C, D, H, W)")
        assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.pt").exists()

    @needs_onnx
    def test_volume_model_with_a_stub_loader(self, make_checkpoint, tmp_path, capsys, monkeypatch):
        """The command's volume path with the loader stubbed: a 2-D checkpoint's info with a
        volume model and its in_shape (until checkpoints of volumes load)."""
        if "st_cnn3d_affine" not in model_names():
            pytest.skip("the model registry has no 'st_cnn3d_affine' yet")
        import torchstn.export as export_module

        _, info = export_module.load_with_info(make_checkpoint("cnn"), "best", "cpu")
        model = create_model("st_cnn3d_affine", MODEL_VOLUME, 10, **TINY["st_cnn3d_affine"])
        info = dataclasses.replace(info, in_shape=MODEL_VOLUME, model_name="st_cnn3d_affine")
        monkeypatch.setattr(export_module, "load_with_info", lambda *a: (model.eval(), info))
        self._check_gather_at_opset_17(tmp_path / "run", tmp_path / "m.onnx", capsys)

    @needs_onnx
    def test_volume_checkpoint_with_gather_at_opset_17(self, make_checkpoint, tmp_path, capsys):
        self._check_gather_at_opset_17(
            _volume_checkpoint(make_checkpoint), tmp_path / "m.onnx", capsys
        )

    @staticmethod
    def _check_gather_at_opset_17(ckpt: Path, out: Path, capsys) -> None:
        code, _, err = _run(capsys, "export", str(ckpt), "--out", str(out), "--opset", "18")
        _one_line_error(code, err, "opset >= 20")
        code, stdout, err = _run(
            capsys, "export", str(ckpt), "--out", str(out), "--sampler", "gather", "--opset", "17"
        )
        assert code == 0, err
        record = json.loads(stdout)
        assert record["sampler"] == "gather" and record["opset"] == 17
        assert record["in_shape"] == list(MODEL_VOLUME) and record["max_abs_diff"] < 1e-4
        assert stdout.count("\n") == 1
        opset, ops = _onnx_ops(out)
        assert opset == 17 and "GridSample" not in ops
        meta = read_metadata(out)
        assert meta["input"] == "volume" and meta["sampler"] == "gather" and meta["opset"] == 17
