"""Tiny checkpoints with random weights (nothing is trained), for load, export and predict."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from torch import nn

from torchstn import SpatialTransformer
from torchstn.inference import save_trained
from torchstn.models import create_model

#: small options per model-name prefix (the longest matching prefix wins); others: defaults.
TINY_OPTIONS: dict[str, dict] = {
    "cnn": {"channels": [4, 8], "kernels": [5, 5]},
    "fcn": {"hidden": [16]},
    "pool_cnn": {"channels": [4, 4, 8, 8]},
    "st_cnn_": {"channels": [4, 8], "kernels": [5, 5], "loc_channels": [4, 4], "loc_hidden": 8},
    "st_fcn_": {"hidden": [16], "loc_hidden": [8]},
    "st2_fcn_": {"hidden": [16], "loc_hidden": [8]},
    "st_attention_encoder": {"loc_channels": [4, 4, 4], "channels": [4, 8], "hidden": 16},
}


def tiny_options(name: str) -> dict:
    prefixes = [p for p in TINY_OPTIONS if name.startswith(p)]
    return dict(TINY_OPTIONS[max(prefixes, key=len)]) if prefixes else {}


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every transformer's zero-initialised head random weights, so that its params depend
    on the input (a fresh transformer is the identity whatever it sees)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for st in (m for m in model.modules() if isinstance(m, SpatialTransformer)):
            st.head.weight.copy_(torch.randn(st.head.weight.shape, generator=gen) * 0.05)
    return model.eval()


def _tiny_model(
    name: str, in_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10
) -> nn.Module:
    return randomize(create_model(name, in_shape, num_classes, **tiny_options(name)))


@pytest.fixture
def tiny_model() -> Callable[..., nn.Module]:
    """``tiny_model(name, in_shape=(1, 28, 28), num_classes=10)``: a small registry model in eval
    mode, its transformers' heads random."""
    return _tiny_model


def save_tiny(
    path: Path,
    name: str = "st_cnn_affine",
    in_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = 10,
    class_names: Sequence[str] | None = None,
) -> Path:
    model = _tiny_model(name, in_shape, num_classes)
    save_trained(
        path,
        model,
        name,
        in_shape,
        num_classes,
        options=tiny_options(name),
        class_names=class_names,
    )
    return path


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """``make(name, in_shape, num_classes, class_names=None) -> checkpoint path``."""

    def make(
        name: str = "st_cnn_affine",
        in_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        class_names: Sequence[str] | None = None,
    ) -> Path:
        path = tmp_path / f"{name}-{'x'.join(map(str, in_shape))}" / "checkpoint.pt"
        return save_tiny(path, name, in_shape, num_classes, class_names)

    return make


@pytest.fixture(scope="session")
def checkpoint_and_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 3-class ST-CNN checkpoint with class names, and its ONNX export (made once)."""
    from torchstn.export import export_checkpoint

    root = tmp_path_factory.mktemp("pair")
    names = ("zero", "one", "two")
    ckpt = save_tiny(root / "run" / "checkpoint.pt", "st_cnn_affine", (1, 28, 28), 3, names)
    onnx = root / "model.onnx"
    export_checkpoint(ckpt, onnx)
    return ckpt, onnx


def run_native(path: Path, fmt: str) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """Run an export with its own runtime (not torchstn's loader): onnxruntime, TorchScript or
    the exported program; the outputs as a tuple."""
    if fmt == "onnx":
        import onnxruntime as ort  # only where onnxruntime is installed (the tests skip otherwise)

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: tuple(torch.from_numpy(o) for o in session.run(None, {"input": x.numpy()}))
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(path).module()

    def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = module(x)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return run
