"""The CUDA paths end to end: training in each precision, deterministic mode, streamed image
files with pinned memory, evaluation, prediction and export of a GPU-trained checkpoint.

Skipped where CUDA is unavailable (CI has no GPU); run on a GPU machine with
``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from torchstn.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

TINY = {
    "seed": 0,
    "device": "cuda",
    "data": {"task": "rotated", "train_size": 2048, "val_size": 128, "test_size": 128},
    "model": {
        "name": "st_cnn_affine",
        "options": {"channels": [4, 8], "loc_channels": [4, 4], "loc_hidden": 8},
    },
    "optim": {"lr": 0.05, "batch_size": 64},
    "run": {"epochs": 3, "eval_batch_size": 64},
}


def _train(tmp_path: Path, capsys, values: dict, name: str = "run", *extra: str) -> dict:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(values))
    out = tmp_path / name
    code = main(["train", "--config", str(cfg), "--out", str(out), "--no-progress", *extra])
    _, err = capsys.readouterr()
    assert code == 0, err
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_in_each_precision_and_eval_reproduces_it(tmp_path, capsys, precision):
    result = _train(tmp_path, capsys, TINY, "run", "--precision", precision)
    assert result["device"].startswith("cuda") and result["precision"] == precision
    assert result["test_error"] < 80  # it learned something in three tiny epochs
    assert main(["eval", str(tmp_path / "run"), "--device", "cuda"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["error"] == pytest.approx(result["test_error"], abs=1.0)


def test_deterministic_mode_runs_on_cuda(tmp_path, capsys):
    # grid_sample's CUDA backward has no deterministic kernel: a warning, not an error
    a = _train(tmp_path, capsys, TINY, "a", "--deterministic")
    b = _train(tmp_path, capsys, TINY, "b", "--deterministic")
    assert abs(a["test_error"] - b["test_error"]) <= 5.0


def test_streamed_files_with_pinned_memory(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(96):
        label = i % 3
        img = rng.integers(0, 40, (16, 16), dtype=np.uint8)
        img[2 + 4 * label : 5 + 4 * label, 2:-2] = 230
        path = tmp_path / "files" / f"c{label}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    values = {
        **TINY,
        "data": {
            "task": None,
            "path": str(tmp_path / "files"),
            "cache": False,
            "num_workers": 1,
            "normalize": True,
        },
        "optim": {"lr": 0.05, "batch_size": 16},
    }
    result = _train(tmp_path, capsys, values)
    assert result["device"].startswith("cuda")


def test_predict_and_export_of_a_gpu_checkpoint_match_the_cpu(tmp_path, capsys):
    _train(tmp_path, capsys, TINY)
    run = tmp_path / "run"
    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8)).save(img)
    outs = {}
    for device in ("cpu", "cuda"):
        assert main(["predict", str(run), str(img), "--device", device]) == 0
        outs[device] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert outs["cpu"]["class"] == outs["cuda"]["class"]
    assert outs["cpu"]["confidence"] == pytest.approx(outs["cuda"]["confidence"], abs=1e-3)
    assert (
        main(["export", str(run), "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 0
    )


def test_a_triton_training_step_never_waits_for_the_host():
    """Issue 25: with the Triton kernels and the trainer's settings (finite checks off), a
    forward, backward and SGD step of the ST-CNN reads nothing back from the GPU."""
    from torchstn import native, set_finite_checks
    from torchstn.models import create_model

    torch.manual_seed(0)
    model = create_model("st_cnn_affine", (1, 60, 60), 10).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(64, 1, 60, 60, device="cuda")
    y = torch.randint(10, (64,), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    with native.use_triton(True), set_finite_checks(False):
        step()  # warm-up: compiles the kernels, builds the caches
        torch.cuda.synchronize()
        native.path_counts(reset=True)
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert native.path_counts() == {"fused-triton": 1}


def test_compile_and_export_on_cuda_run_the_triton_operator():
    from torchstn import SpatialTransformer, native

    torch.manual_seed(0)
    st = SpatialTransformer((1, 28, 28), "affine", out_size=(14, 14)).cuda()
    x = torch.rand(8, 1, 28, 28, device="cuda")
    with native.use_triton(True):
        eager = st(x)
        torch._dynamo.reset()
        compiled = torch.compile(st, fullgraph=True)(x)
        program = torch.export.export(st, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert "torchstn.affine2d_sample.default" in targets
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(program.module()(x), eager, rtol=1e-5, atol=1e-6)
