"""``torchstn export`` of registration runs: tiny 2-D (MNIST pairs) and 3-D (MNI152) runs trained
through ``torchstn train``, exported in each format through the command line, run with
``load_exported`` (onnxruntime, TorchScript, ``torch.export``) on a moving/fixed pair and compared
with the eager model of the checkpoint to 1e-4, at batch sizes 2 and 1; the files' metadata and
their refusals (the transformer part, the gather sampler on images, a missing input)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

import torchstn
from torchstn.cli import main
from torchstn.errors import InvalidInputError
from torchstn.export import export, export_checkpoint, load_exported, read_metadata
from torchstn.models import RegistrationNet, create_model

from .conftest import save_tiny

SUFFIX = {"torchscript": ".pt", "exported-program": ".pt2", "onnx": ".onnx"}
INPUTS, OUTPUTS = ["moving", "fixed"], ["warped", "field", "params"]
_ONNX = ("onnx", "onnxscript", "onnxruntime")
needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in _ONNX),
    reason="ONNX export needs onnx, onnxscript and onnxruntime: pip install 'torchstn[export]'",
)
needs_atlas = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("nilearn", "nibabel")),
    reason="the mni152 task reads nilearn's template with nibabel: pip install 'torchstn[atlas]'",
)

#: tiny runs that train in about a second, with a learning rate large enough for their fields
#: to move by a fraction of a pixel (at the registration tests' 0.003 they stay near 0.01).
_COMMON = {
    "seed": 0,
    "device": "cpu",
    "optim": {"name": "adam", "lr": 0.03, "batch_size": 4},
    "run": {"epochs": 2, "eval_batch_size": 4, "num_threads": 1},
}
_MNIST = {"task": "mnist_pairs", "options": {"digits": [1, 7]}}
_MNI = {"task": "mni152", "options": {"size": 16, "max_displacement": 2.0, "chunk": 4}}
_UNET = {"enc": [4, 4], "dec": [4, 4, 4]}
RUNS = {
    "2d": (_MNIST, "reg_unet", _UNET),  # velocity, 7 squarings
    "3d": (_MNI, "reg_unet", {**_UNET, "steps": 4}),
    "affine": (_MNIST, "reg_affine", {"channels": [4, 8], "hidden": 8}),
}


def _config(key: str) -> dict:
    data, model, options = RUNS[key]
    return {
        **_COMMON,
        "objective": {"name": "registration", "options": {"similarity": "mse"}},
        "data": {**data, "train_size": 8, "val_size": 4, "test_size": 4},
        "model": {"name": model, "options": options},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``trained(key) -> run folder`` of ``RUNS[key]``, trained through ``torchstn train`` once
    per module."""
    root = tmp_path_factory.mktemp("registration-runs")
    done: dict[str, Path] = {}

    def train(key: str) -> Path:
        if key not in done:
            config = root / f"{key}.yaml"
            config.write_text(yaml.safe_dump(_config(key)))
            run = root / key
            argv = ["train", "--config", str(config), "--out", str(run), "--no-progress"]
            assert main(argv) == 0
            done[key] = run
        return done[key]

    return train


def _pair(in_shape: tuple[int, ...], b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``b`` pairs: a noisy Gaussian blob (fixed) and the blob moved by a few pixels (moving)."""
    gen = torch.Generator().manual_seed(3)
    spatial = in_shape[1:]
    axes = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in spatial), indexing="ij")

    def blob(centre: torch.Tensor) -> torch.Tensor:
        d2 = sum((a - c) ** 2 for a, c in zip(axes, centre.tolist(), strict=True))
        return torch.exp(-torch.as_tensor(d2) / 0.2).expand(in_shape)

    fixed = torch.stack([blob(torch.zeros(len(spatial))) for _ in range(b)])
    moving = torch.stack([blob(0.3 * torch.rand(len(spatial), generator=gen)) for _ in range(b)])
    noise = 0.05 * torch.rand(fixed.shape, generator=gen)
    return moving, (fixed + noise).clamp(0, 1)


def _export(run: Path, out: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> dict:
    """``torchstn export RUN --out OUT FLAGS``: its JSON record."""
    capsys.readouterr()
    code = main(["export", str(run), "--out", str(out), *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record: dict = json.loads(captured.out.strip().splitlines()[-1])
    return record


def _assert_matches_eager(run: Path, out: Path) -> RegistrationNet:
    """The export equals the checkpoint's eager model on a moving/fixed pair (batch 2 and 1)."""
    model = torchstn.load(run)
    assert isinstance(model, RegistrationNet)
    moving, fixed = _pair(model.in_shape)
    with torch.no_grad():
        ref = model(moving, fixed)
    assert ref.field.abs().max() > 0.05  # a trained field: the export has something to get wrong
    runner = load_exported(out)
    for b in (2, 1):
        got = runner(moving[:b], fixed[:b])
        assert len(got) == 3
        for g, r in zip(got, ref, strict=True):
            torch.testing.assert_close(g, r[:b], atol=1e-4, rtol=0)
    return model


FORMATS = [
    pytest.param(key, fmt, marks=marks)
    for key, extra in (("2d", []), ("3d", [needs_atlas]))
    for fmt, marks in (
        ("torchscript", extra),
        ("exported-program", extra),
        ("onnx", [*extra, needs_onnx] + ([pytest.mark.slow] if key == "2d" else [])),
    )
]


@pytest.mark.parametrize(("key", "fmt"), FORMATS)
def test_registration_run_exports(
    key: str, fmt: str, trained: Callable[[str], Path], tmp_path: Path, capsys
) -> None:
    run = trained(key)
    out = tmp_path / f"reg{SUFFIX[fmt]}"
    record = _export(run, out, capsys, "--format", fmt)
    assert record["inputs"] == INPUTS and record["outputs"] == OUTPUTS
    assert record["max_abs_diff"] < 1e-4 and record["part"] == "model"
    model = _assert_matches_eager(run, out)
    meta = read_metadata(out)
    assert meta["inputs"] == INPUTS and meta["outputs"] == OUTPUTS
    assert meta["in_shape"] == list(model.in_shape)  # one image's, not the pair's 2C channels
    assert meta["input"] == ("volume" if key == "3d" else "image")
    assert meta["transform"] == ("velocity3d" if key == "3d" else "velocity")
    assert meta["config"]["objective"]["name"] == "registration" and meta["model"] == "reg_unet"
    if fmt == "onnx":
        assert meta["opset"] == (20 if key == "3d" else 18)
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == INPUTS
        assert [o.name for o in session.get_outputs()] == OUTPUTS


def test_predict_points_a_registration_export_to_register(
    trained: Callable[[str], Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "reg.pt2"
    _export(trained("2d"), out, capsys, "--format", "exported-program")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (32, 32)).save(image)
    from torchstn.cli import main

    assert main(["predict", str(out), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a registration model" in err[0] and "torchstn register" in err[0]


def test_affine_registration_run_exports(trained: Callable[[str], Path], tmp_path: Path, capsys):
    """reg_affine: the params are the ``(B, 6)`` matrix, the field its displacement."""
    run = trained("affine")
    out = tmp_path / "affine.pt2"
    record = _export(run, out, capsys)  # the format from the suffix
    assert record["format"] == "exported-program" and record["inputs"] == INPUTS
    _assert_matches_eager(run, out)
    assert read_metadata(out)["num_params"] == 6


@needs_atlas
@needs_onnx
@pytest.mark.slow  # about 10 s on 2 cores: every warp and squaring written out as gathers
def test_volume_registration_run_exports_gather(
    trained: Callable[[str], Path], tmp_path: Path, capsys
) -> None:
    """``--sampler gather``: the 3-D field's warps and the integration's squarings, without any
    5-D GridSample, at an opset before 20."""
    import onnx

    run = trained("3d")
    out = tmp_path / "reg.onnx"
    record = _export(run, out, capsys, "--sampler", "gather", "--opset", "17")
    assert record["sampler"] == "gather" and record["opset"] == 17
    proto = onnx.load(str(out))
    ops = {n.op_type for n in (*proto.graph.node, *(n for f in proto.functions for n in f.node))}
    assert "GridSample" not in ops and "GatherElements" in ops
    _assert_matches_eager(run, out)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--part", "transformer"], "part: a registration model exports whole"),
        pytest.param(
            ["--sampler", "gather"], "sampler: 'gather' samples volumes", marks=needs_onnx
        ),
    ],
)
def test_refusals(flags, match, trained: Callable[[str], Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "reg.onnx"
    code = main(["export", str(trained("2d")), "--out", str(out), *flags])
    err = capsys.readouterr().err
    assert code != 0 and match in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_runner_wants_both_inputs(trained: Callable[[str], Path], tmp_path: Path, capsys):
    out = tmp_path / "reg.pt"
    _export(trained("2d"), out, capsys)
    moving, fixed = _pair((1, 32, 32))
    with pytest.raises(InvalidInputError, match=r"reg\.pt takes 2 \(moving, fixed\), got 1"):
        load_exported(out)(moving)
    with pytest.raises(InvalidInputError, match="got 3"):
        load_exported(out)(moving, fixed, fixed)


def test_python_export_of_a_registration_model(tmp_path: Path) -> None:
    """:func:`export` takes the model's own ``in_shape`` by default and refuses another."""
    model = create_model("reg_affine", (1, 12, 10), 0, channels=(4,), hidden=8)
    result = export(model, tmp_path / "reg.pt")
    assert result.in_shape == (1, 12, 10) and result.inputs == ("moving", "fixed")
    with pytest.raises(InvalidInputError, match=r"in_shape: the registration model takes"):
        export(model, tmp_path / "other.pt", in_shape=(2, 12, 10))


def test_classifier_export_keeps_one_input(tmp_path: Path) -> None:
    """A classifier's export is unchanged: one input, ``input``, now also named in the metadata."""
    ckpt = save_tiny(tmp_path / "ckpt.pt")
    result = export_checkpoint(ckpt, tmp_path / "cls.pt")
    assert result.inputs == ("input",) and read_metadata(result.path)["inputs"] == ["input"]
    x = torch.rand(2, 1, 28, 28)
    logits, params = load_exported(result.path)(x)
    assert logits.shape == (2, 10) and params.shape == (2, 6)
    with pytest.raises(InvalidInputError, match=r"takes 1 \(input\), got 2"):
        load_exported(result.path)(x, x)
