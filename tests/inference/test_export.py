"""torchstn.export and ``torchstn export``: each format, reloaded with its own runtime, matches
the eager model at two batch sizes (the batch is dynamic), for every transform family and model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from torchstn import FCLocalization, ParallelTransformers, SpatialTransformer, transforms
from torchstn.cli import main
from torchstn.export import (
    ExportError,
    export,
    export_checkpoint,
    format_of,
    load_exported,
    read_metadata,
)
from torchstn.inference import first_transformer
from torchstn.models import model_names

from .conftest import run_native

FORMATS = ("torchscript", "exported-program", "onnx")
SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}
#: the model x format cases CI runs: a model without a transformer and one with TPS in every
#: format, two more layouts in TorchScript. The rest of the grid, and each family alone in ONNX,
#: are marked slow (on 2 cores an ONNX export takes about 4 s, an exported program 2 s);
#: ``test_every_family_transformer_alone`` (TorchScript, exported program) and
#: ``test_every_family_in_one_onnx_file`` cover every family in CI.
MODELS_IN_CI = {
    ("cnn", "torchscript"),
    ("cnn", "exported-program"),
    ("cnn", "onnx"),
    ("st_cnn_tps", "torchscript"),
    ("st_cnn_tps", "exported-program"),
    ("st_cnn_tps", "onnx"),
    ("st2_fcn_affine", "torchscript"),
    ("st_attention_encoder", "torchscript"),
}


def _assert_matches(eager, path: Path, fmt: str, in_shape) -> None:
    """Outputs equal to 1e-4 at batch sizes 1 and 5 (the export traced batch 2)."""
    run = run_native(path, fmt)
    for b in (1, 5):
        x = torch.rand(b, *in_shape)
        with torch.no_grad():
            ref = eager(x)
        got = run(x)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            torch.testing.assert_close(g, r, atol=1e-4, rtol=0)


def _model_outputs(model, in_shape):
    st = first_transformer(model)

    def eager(x):
        logits = model(x)
        return (logits,) if st is None else (logits, st.localize(x))

    return eager


def _random_st(family: str) -> SpatialTransformer:
    loc = FCLocalization((1, 20, 24), [8])
    st = SpatialTransformer((1, 20, 24), family, out_size=(10, 12), localization=loc)
    torch.nn.init.normal_(st.head.weight, std=0.05)
    return st.eval()


def _family_cases() -> list:
    return [
        pytest.param(family, fmt, marks=[pytest.mark.slow] if fmt == "onnx" else [])
        for family in transforms.names(ndim=2)
        for fmt in FORMATS
    ]


@pytest.mark.parametrize(("family", "fmt"), _family_cases())
def test_every_family_transformer_alone(family, fmt, tmp_path):
    st = _random_st(family)
    path = tmp_path / f"st{SUFFIX[fmt]}"
    result = export(st, path, fmt, part="transformer", verify=False)
    assert result.outputs == ("output", "params") and path.is_file()
    params = st.localize(torch.rand(3, 1, 20, 24))
    assert not torch.allclose(params[0], params[1])  # the params depend on the input
    _assert_matches(lambda x: st(x, return_params=True), path, fmt, (1, 20, 24))


def test_every_family_in_one_onnx_file(tmp_path):
    """CI's ONNX check of all families at once (one export instead of seven): every family's
    transformer side by side, their outputs concatenated (each depends on its params)."""
    heads = ParallelTransformers([_random_st(family) for family in transforms.names(ndim=2)])
    path = tmp_path / "families.onnx"
    result = export(heads, path, in_shape=(1, 20, 24), verify=False)
    assert result.outputs == ("logits", "params")  # the model part: output, first head's params
    first = heads.heads[0]
    _assert_matches(lambda x: (heads(x), first.localize(x)), path, "onnx", (1, 20, 24))


def _model_cases() -> list:
    return [
        pytest.param(
            name,
            fmt,
            marks=[] if (name, fmt) in MODELS_IN_CI else [pytest.mark.slow],
        )
        for name in model_names()
        if "3d" not in name  # the volume models: tests/inference/test_export3d.py
        and not name.startswith("reg_")  # registration: tests/inference/test_export_fields.py
        for fmt in FORMATS
    ]


@pytest.mark.parametrize(("name", "fmt"), _model_cases())
def test_every_model(name, fmt, tmp_path, tiny_model):
    model = tiny_model(name)
    path = tmp_path / f"m{SUFFIX[fmt]}"
    result = export(model, path, fmt, in_shape=(1, 28, 28), verify=False)
    has_st = first_transformer(model) is not None
    assert result.outputs == (("logits", "params") if has_st else ("logits",))
    _assert_matches(_model_outputs(model, (1, 28, 28)), path, fmt, (1, 28, 28))


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_transformer_part_of_a_classifier(fmt, tmp_path, tiny_model):
    model = tiny_model("st_cnn_projective", (3, 24, 32))
    path = tmp_path / f"st{SUFFIX[fmt]}"
    export(model, path, fmt, part="transformer", in_shape=(3, 24, 32))
    st = first_transformer(model)
    _assert_matches(lambda x: st(x, return_params=True), path, fmt, (3, 24, 32))


class TestCheckpointExport:
    @pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
    def test_metadata_and_loader(self, fmt, make_checkpoint, tmp_path):
        ckpt = make_checkpoint("st_fcn_affine", (1, 28, 28), 3, class_names=["a", "b", "c"])
        out = tmp_path / f"m{SUFFIX[fmt]}"
        result = export_checkpoint(ckpt, out)  # the format from the suffix
        assert result.format == fmt and result.max_abs_diff is not None
        assert result.max_abs_diff < 1e-5
        meta = read_metadata(out)
        assert meta["class_names"] == ["a", "b", "c"] and meta["num_classes"] == 3
        assert meta["in_shape"] == [1, 28, 28] and meta["outputs"] == ["logits", "params"]
        assert meta["transform"] == "affine" and meta["num_params"] == 6
        assert meta["config"]["model"]["name"] == "st_fcn_affine" and meta["weights"] == "last"
        logits, params = load_exported(out)(torch.rand(4, 1, 28, 28))
        assert logits.shape == (4, 3) and params.shape == (4, 6)

    def test_format_of(self):
        assert format_of("a/b.ONNX") == "onnx" and format_of("m.pt2") == "exported-program"
        assert format_of("m.ts") == "torchscript"
        with pytest.raises(ValueError, match="suffix"):
            format_of("model.bin")


class TestAtomic:
    def test_a_failed_export_leaves_nothing(self, tmp_path, tiny_model, monkeypatch):
        def boom(*args, **kwargs):
            raise RuntimeError("tracer exploded\nsecond line")

        monkeypatch.setattr(torch.jit, "trace", boom)
        out = tmp_path / "m.pt"
        with pytest.raises(ExportError, match="tracer exploded") as err:
            export(tiny_model("st_fcn_affine"), out, "torchscript")
        assert "\n" not in str(err.value)
        assert os.listdir(tmp_path) == []

    def test_a_failed_export_keeps_the_old_file(self, tmp_path, tiny_model, monkeypatch):
        out = tmp_path / "m.pt"
        out.write_bytes(b"previous")
        import torchstn.export as export_module

        monkeypatch.setattr(export_module, "_verify", lambda *args: 0.5)
        with pytest.raises(ExportError, match="differs"):
            export(tiny_model("st_fcn_affine"), out, "torchscript")
        assert out.read_bytes() == b"previous" and os.listdir(tmp_path) == ["m.pt"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, text: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchstn export: error:"), err
    assert text in lines[0], lines[0]


class TestCli:
    def test_onnx_with_opset(self, make_checkpoint, tmp_path, capsys):
        import onnx

        ckpt = make_checkpoint("st_fcn_affine")
        out = tmp_path / "m.onnx"
        code, stdout, err = _run(
            capsys, "export", str(ckpt), "--format", "onnx", "--out", str(out), "--opset", "17"
        )
        assert code == 0, err
        record = json.loads(stdout)
        assert record["format"] == "onnx" and record["opset"] == 17 and record["dynamic_batch"]
        assert record["max_abs_diff"] < 1e-4 and record["path"] == str(out)
        proto = onnx.load(str(out))
        assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
        assert read_metadata(out)["outputs"] == ["logits", "params"]
        assert stdout.count("\n") == 1  # nothing but the JSON line (no exporter chatter)

    def test_transformer_part(self, make_checkpoint, tmp_path, capsys):
        ckpt = make_checkpoint("st_cnn_affine")
        out = tmp_path / "st.pt2"
        code, stdout, err = _run(
            capsys, "export", str(ckpt.parent), "--out", str(out), "--part", "transformer"
        )
        assert code == 0, err
        assert json.loads(stdout)["outputs"] == ["output", "params"]
        output, params = load_exported(out)(torch.rand(3, 1, 28, 28))
        assert output.shape == (3, 1, 28, 28) and params.shape == (3, 6)

    def test_errors_are_one_line(self, make_checkpoint, tmp_path, capsys):
        ckpt = make_checkpoint("cnn")
        out = str(tmp_path / "m.onnx")
        code, _, err = _run(capsys, "export", str(tmp_path / "nope.pt"), "--out", out)
        _one_line_error(code, err, "not found")
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"\x00garbage" * 10)
        code, _, err = _run(capsys, "export", str(bad), "--out", out)
        _one_line_error(code, err, "not a model file")
        code, _, err = _run(capsys, "export", str(ckpt), "--format", "tflite", "--out", out)
        _one_line_error(code, err, "unknown format 'tflite'")
        code, _, err = _run(capsys, "export", str(ckpt), "--out", str(tmp_path / "m.bin"))
        _one_line_error(code, err, "suffix")
        code, _, err = _run(capsys, "export", str(ckpt), "--out", out, "--opset", "13")
        _one_line_error(code, err, "opset")
        code, _, err = _run(capsys, "export", str(ckpt), "--out", out[:-5] + ".pt", "--opset", "18")
        _one_line_error(code, err, "onnx only")
        code, _, err = _run(capsys, "export", str(ckpt), "--out", out, "--part", "transformer")
        _one_line_error(code, err, "no spatial transformer")
        code, _, err = _run(capsys, "export", str(ckpt), "--out", out, "--weights", "middle")
        _one_line_error(code, err, "best, last")
        assert sorted(os.listdir(tmp_path)) == ["bad.pt", "cnn-1x28x28"]

    def test_missing_onnx_packages_give_the_install_hint(
        self, make_checkpoint, tmp_path, capsys, monkeypatch
    ):
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "onnxscript" else real(name, *a),
        )
        code, _, err = _run(
            capsys, "export", str(make_checkpoint("cnn")), "--out", str(tmp_path / "m.onnx")
        )
        _one_line_error(code, err, "pip install 'torchstn[export]'")
        assert "onnxscript" in err
