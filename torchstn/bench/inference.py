"""Inference latency of a CNN and an ST-CNN at batch 1 and 256: eager PyTorch, TorchScript and
ONNX Runtime.

Each model is exported with the project's own path (:func:`torchstn.export.export`, dynamic
batch size) to a TorchScript and an ONNX file in a temporary directory, and the files are loaded
the way a user would: :func:`torch.jit.load`, and an ``onnxruntime.InferenceSession`` on the
``CPUExecutionProvider`` with ``intra_op_num_threads`` set to ``torch.get_num_threads()`` (one
inter-op thread), so that both libraries use the same number of cores. The eager rows time the
very module the exporter traces (:func:`torchstn.export.exportable`), so every runtime does the
same work.
"""

from __future__ import annotations

import importlib.util
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import first_line
from ..export import export, exportable
from ..models import create_model
from .timing import Settings, measure

__all__ = ["BATCHES", "COLUMNS", "DESCRIPTION", "MODELS", "TITLE", "run"]

TITLE = "Inference latency: eager, TorchScript and ONNX Runtime"

DESCRIPTION = """
Latency of one forward pass of the registry's `cnn` and `st_cnn_affine` (`pool=2`), built with a
fixed seed for 1x60x60 cluttered-MNIST images and 10 classes, in eval mode, at batch 1 (one
request) and batch 256 (offline scoring). Each model is exported with `torchstn.export.export`
(dynamic batch size) to TorchScript (`torch.jit.trace`) and ONNX (dynamo exporter, opset 18);
the files are then loaded as a user would: `torch.jit.load`, and an ONNX Runtime
`InferenceSession` on the `CPUExecutionProvider` with `intra_op_num_threads` set to
`torch.get_num_threads()` (and one inter-op thread), so that PyTorch and ONNX Runtime use the
same cores. The exported graph of the ST-CNN returns the logits *and* the transformer's params
(its localisation net runs a second time for them, see `torchstn.export`); the eager rows time
that same module (`torchstn.export.exportable`), so every runtime does the same work. Eager and
TorchScript run under `torch.inference_mode()` on the benchmark's device; ONNX Runtime runs on
the CPU with a NumPy input prepared outside the clock (on a GPU run its rows say so and have no
ratio). `vs eager` is the runtime's latency over eager's at the same model and batch (below 1:
faster than eager); `max abs diff` is the largest difference between the file's outputs and
eager's on the largest batch's input; `export s` is the time the export took. (Quick mode:
1x28x28 images at batch 1 and 4, one repeat.)
"""

COLUMNS = (
    ("model", "model", ""),
    ("image", "image", ""),
    ("batch", "batch", "d"),
    ("runtime", "runtime", ""),
    ("device", "device", ""),
    ("latency_ms", "latency ms", ".3f"),
    ("images_per_s", "images/s", ",.0f"),
    ("vs_eager", "vs eager", ".2f"),
    ("max_abs_diff", "max abs diff", ".1e"),
    ("export_s", "export s", ".1f"),
    ("note", "note", ""),
    ("skipped", "skipped", ""),
)

#: (registry name, options) of the models measured.
MODELS: tuple[tuple[str, dict[str, Any]], ...] = (("cnn", {}), ("st_cnn_affine", {"pool": 2}))
IN_SHAPE = (1, 60, 60)
QUICK_IN_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
BATCHES = (1, 256)
QUICK_BATCHES = (1, 4)
RUNTIMES = ("eager", "torchscript", "onnxruntime")
_NAMES = {"eager": "eager", "torchscript": "TorchScript", "onnxruntime": "ONNX Runtime"}

Runner = Callable[[Any], Any]  # a tensor, or a NumPy array for ONNX Runtime


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _max_abs_diff(got: Sequence[Any], ref: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between two tuples of outputs.

    Raises:
        ValueError: their numbers or shapes differ.
    """
    if len(got) != len(ref):
        raise ValueError(f"{len(got)} outputs, eager gives {len(ref)}")
    worst = 0.0
    for g, r in zip(got, ref):
        g = torch.as_tensor(g).detach().cpu().float()
        r = r.detach().cpu().float()
        if g.shape != r.shape:
            raise ValueError(f"an output of shape {tuple(g.shape)}, eager's {tuple(r.shape)}")
        worst = max(worst, float((g - r).abs().max()))
    return worst


def _bound(call: Runner, x: Any) -> Callable[[], Any]:
    return lambda: call(x)


def _torchscript(path: Path, device: str) -> Runner:
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location=device)
    module.eval()

    def call(x: torch.Tensor) -> Any:
        with torch.inference_mode():
            return module(x)

    return call


def _onnxruntime(path: Path) -> Runner:
    import onnxruntime as ort  # optional: the [export] extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def call(x: Any) -> Any:  # x: a NumPy array (converted outside the clock)
        return session.run(None, {name: x})

    return call


def _onnx_missing() -> str | None:
    """Why ONNX rows cannot run (a missing package), or None."""
    for module in ("onnxruntime", "onnx", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            return f"no {module}"
    return None


def _model_rows(
    name: str,
    options: dict[str, Any],
    in_shape: tuple[int, int, int],
    batches: Sequence[int],
    settings: Settings,
    tmp: Path,
) -> list[dict[str, Any]]:
    """Rows of one model: every runtime at every batch size."""
    device = settings.device
    on_gpu = torch.device(device).type == "cuda"
    torch.manual_seed(0)
    model = create_model(name, in_shape, NUM_CLASSES, **options).eval()
    gen = torch.Generator().manual_seed(0)
    inputs = {b: torch.rand(b, *in_shape, generator=gen) for b in batches}
    check = inputs[max(batches)]

    # export first (on the CPU, where the exporter works), then move the eager module
    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    export_s: dict[str, float] = {}
    missing = _onnx_missing()
    for runtime, fmt in (("torchscript", "torchscript"), ("onnxruntime", "onnx")):
        if runtime == "onnxruntime" and missing:
            skipped[runtime] = missing
            continue
        path = tmp / f"{name}.{'pt' if fmt == 'torchscript' else 'onnx'}"
        try:
            result = export(model, path, fmt, in_shape=in_shape, verify=False)
            export_s[runtime] = result.seconds
            runners[runtime] = (
                _torchscript(path, device) if runtime == "torchscript" else _onnxruntime(path)
            )
        except Exception as err:  # an exporter or loader failure: recorded, not raised
            reason = first_line(err)
            skipped[runtime] = reason if "failed" in reason else f"export failed: {reason}"

    module: nn.Module = exportable(model, in_shape)[0].to(device).eval()

    def eager(x: torch.Tensor) -> Any:
        with torch.inference_mode():
            return module(x)

    runners = {"eager": eager, **runners}

    with torch.inference_mode():
        reference = _as_tuple(module(check.to(device)))
    diffs: dict[str, float] = {}
    for runtime, call in list(runners.items()):
        if runtime == "eager":
            continue
        x = check.numpy() if runtime == "onnxruntime" else check.to(device)
        try:
            diffs[runtime] = _max_abs_diff(_as_tuple(call(x)), reference)
        except Exception as err:  # a file that loads but does not run here (e.g. on a GPU)
            skipped[runtime] = f"run failed: {first_line(err)}"
            del runners[runtime]

    rows: list[dict[str, Any]] = []
    for b in batches:
        eager_ms: float | None = None
        for runtime in RUNTIMES:
            runs_on = "cpu" if runtime == "onnxruntime" else device
            row: dict[str, Any] = {
                "model": name,
                "image": "x".join(map(str, in_shape)),
                "batch": b,
                "runtime": runtime,
                "device": runs_on,
            }
            if runtime in skipped:
                rows.append({**row, "skipped": skipped[runtime]})
                continue
            call = runners[runtime]
            x_in: Any = inputs[b].numpy() if runtime == "onnxruntime" else inputs[b].to(device)
            ms = measure(_bound(call, x_in), settings).ms()
            row["latency_ms"] = ms
            row["images_per_s"] = b / (ms / 1e3) if ms > 0 else None
            if runtime == "eager":
                eager_ms = ms
            elif eager_ms and not (runtime == "onnxruntime" and on_gpu):
                row["vs_eager"] = ms / eager_ms
            if runtime in diffs:
                row["max_abs_diff"] = diffs[runtime]
            if runtime in export_s:
                row["export_s"] = export_s[runtime]
            if runtime == "onnxruntime" and on_gpu:
                row["note"] = "CPU (the eager row is on the GPU)"
            rows.append(row)
    return rows


def _notes(rows: Sequence[dict[str, Any]], batches: Sequence[int]) -> tuple[list[str], list[str]]:
    """One computed sentence per batch size (the fastest runtime of each model), and a headline."""
    notes: list[str] = []
    headline: list[str] = []
    for b in batches:
        parts = []
        for name, _ in MODELS:
            timed = [
                r
                for r in rows
                if r["model"] == name
                and r["batch"] == b
                and "latency_ms" in r
                and "note" not in r  # like with like: only rows on the eager row's device
            ]
            if len(timed) < 2:
                continue
            fastest = min(timed, key=lambda r: r["latency_ms"])
            slowest = max(timed, key=lambda r: r["latency_ms"])
            times = slowest["latency_ms"] / fastest["latency_ms"]
            parts.append(
                f"`{name}` runs fastest on {_NAMES[fastest['runtime']]} "
                f"({fastest['latency_ms']:.3g} ms, {times:.3g}x faster than "
                f"{_NAMES[slowest['runtime']]})"
            )
        if parts:
            notes.append(f"At batch {b}, " + "; ".join(parts) + ".")
    st = "st_cnn_affine"
    for b in batches:
        lat = {
            r["runtime"]: r["latency_ms"]
            for r in rows
            if r["model"] == st and r["batch"] == b and "latency_ms" in r and "note" not in r
        }
        if "eager" in lat and len(lat) > 1:
            others = ", ".join(
                f"{_NAMES[k]} {v:.3g} ms ({v / lat['eager']:.2g}x eager's)"
                for k, v in lat.items()
                if k != "eager"
            )
            headline.append(
                f"ST-CNN inference at batch {b}: eager {lat['eager']:.3g} ms, {others}."
            )
    return notes, headline


def run(settings: Settings) -> dict[str, Any]:
    """Rows for every (model, batch, runtime), the fastest runtime per batch, a headline."""
    batches = QUICK_BATCHES if settings.quick else BATCHES
    in_shape = QUICK_IN_SHAPE if settings.quick else IN_SHAPE
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="torchstn-bench-") as tmp:
        for name, options in MODELS:
            rows += _model_rows(name, options, in_shape, batches, settings, Path(tmp))
    notes, headline = _notes(rows, batches)
    return {"rows": rows, "notes": notes, "headline": headline}
