"""Exporting a model or its spatial transformer to ONNX, TorchScript or a ``torch.export`` program.

Every export takes one input, ``input``: ``(B, C, H, W)`` floats in ``[0, 1]`` (a volume model:
``(B, C, D, H, W)``) with a dynamic batch size ``B``, and returns

* ``part="model"``: ``logits`` ``(B, num_classes)`` and, when the model has a spatial transformer
  that reads its input, ``params`` ``(B, P)``: the parameters of its first one (the localisation
  runs a second time for them; it is small next to the classifier);
* ``part="transformer"``: the first transformer alone, ``output`` ``(B, C, Ho, Wo)``
  (``(B, C, Do, Ho, Wo)``: the rectified image or volume) and ``params`` ``(B, P)`` (a bare
  :class:`SpatialTransformer` always exports this way).

A registration model (:class:`~torchstn.models.RegistrationNet`, ``reg_unet`` or ``reg_affine``:
a ``torchstn train`` run of the ``registration`` objective) takes two inputs instead, ``moving`` and
``fixed``, each ``(B, C, H, W)`` (or ``(B, C, D, H, W)``) with one shared dynamic batch size, and
returns ``warped`` ``(B, C, H, W)``, ``field`` ``(B, N, H, W)`` (the displacement in pixels, the
:mod:`torchstn.fields` convention) and ``params`` (what its transformer predicted: the field, or
velocity, at its own resolution; ``(B, P)`` for ``reg_affine``); it has no ``"transformer"`` part.

A model trained with ``data.normalize`` (see :mod:`torchstn.preprocess`) still takes ``[0, 1]``
images: the normalisation is in the exported graph. Its transformer's ``output`` is then in
normalised units (``(image - mean) / std``), as its classifier sees it.

Formats: ``"onnx"`` (``torch.onnx.export`` with the dynamo exporter, opset 18 by default, at
least 16 for ``GridSample``; needs ``pip install 'torchstn[export]'``), ``"torchscript"``
(``torch.jit.trace``; reload with :func:`torch.jit.load`) and ``"exported-program"``
(``torch.export.export`` + ``torch.export.save``; reload with :func:`torch.export.load`).

Volumes: ONNX's ``GridSample`` takes 5-D inputs from opset 20 (:data:`VOLUME_OPSET`), the default
for a model of ``(C, D, H, W)`` volumes. For runtimes without it (older onnxruntime, OpenVINO and
TensorRT), ``sampler="gather"`` writes the trilinear or nearest sampling as plain operators
instead (:func:`gather_sample`: ``Floor``, ``GatherElements`` of the 8 neighbours, weights,
masks), with the same numbers and any opset from 16; a 3-D registration model's warps and
integration squarings are sampled that way too.

Each file carries its metadata (:func:`read_metadata`): in ONNX as ``metadata_props``, one key
``torchstn.<name>`` per entry, each value JSON; in the two PyTorch formats as the extra file
``torchstn.json``. The entries: ``part``, ``input`` (``"image"`` or ``"volume"``), ``axes``
(``["C", "H", "W"]`` or ``["C", "D", "H", "W"]``), ``in_shape`` (of one input), ``inputs``
(their names: ``["input"]``, or ``["moving", "fixed"]``; a file without the entry takes
``["input"]``), ``outputs``, ``opset`` and
``sampler`` (ONNX; ``null`` in the others), ``transform`` and ``num_params`` (of the first
transformer, or ``null``; a registration model's own transformer) and, for a checkpoint's export,
``num_classes``, ``class_names``, ``model``, ``weights`` and ``config`` (the run's config: enough
to rebuild the transformer's geometry, which ``torchstn predict`` uses to draw).

The file is made in memory, written atomically to a temporary file beside it, checked against the
eager model at two batch sizes (``verify=True``), then renamed; a failed export leaves nothing
behind, and a full disk is one line naming the folder (:class:`~torchstn.errors.DataError`).

Reading (:func:`load_exported`, :func:`read_metadata`) tells the format from the file's content,
not its name, and checks the CRC-32 of every member of the two PyTorch formats first.

Example:
    >>> import tempfile, torch, torchstn
    >>> from torchstn.export import export, load_exported
    >>> st = torchstn.SpatialTransformer((1, 28, 28), "affine", out_size=(14, 14))
    >>> result = export(st, tempfile.mkdtemp() + "/st.pt", "torchscript", part="transformer")
    >>> result.outputs
    ('output', 'params')
    >>> output, params = load_exported(result.path)(torch.rand(5, 1, 28, 28))
    >>> output.shape, params.shape
    (torch.Size([5, 1, 14, 14]), torch.Size([5, 6]))
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import native
from ._atomic import atomic_path
from ._checks import check_choice
from .errors import DataError, InvalidInputError, TorchSTNError, first_line
from .functional.sample import PADDING_MODES, check_input_and_grid
from .inference import first_transformer, inference_device, load_with_info
from .models.registration import RegistrationNet
from .module import SpatialTransformer
from .preprocess import input_normalizer
from .train.checkpoint import identify, verify_archive
from .train.config import config_to_dict

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "MIN_OPSET",
    "PARTS",
    "REGISTRATION_INPUTS",
    "REGISTRATION_OUTPUTS",
    "SAMPLERS",
    "VOLUME_OPSET",
    "ClassifierWithParams",
    "ExportError",
    "ExportResult",
    "TransformerWithParams",
    "export",
    "export_checkpoint",
    "exportable",
    "format_of",
    "gather_sample",
    "load_exported",
    "read_metadata",
    "require",
]

FORMATS = ("onnx", "torchscript", "exported-program")
PARTS = ("model", "transformer")
DEFAULT_OPSET = 18
MIN_OPSET = 16  # GridSample
#: the first opset whose ``GridSample`` samples 5-D volumes: the default for volume models.
VOLUME_OPSET = 20
#: how an ONNX export samples: ``GridSample``, or plain operators (volumes, :func:`gather_sample`).
SAMPLERS = ("grid_sample", "gather")
#: the file suffix of each format (``format_of`` reads it back).
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
#: the inputs and outputs of a registration model's export (:class:`RegistrationNet`).
REGISTRATION_INPUTS = ("moving", "fixed")
REGISTRATION_OUTPUTS = ("warped", "field", "params")
#: the input of every other export (also what a file without an ``inputs`` entry takes).
_INPUTS = ("input",)
_META_FILE = "torchstn.json"
_META_PREFIX = "torchstn."
_INSTALL_HINT = "pip install 'torchstn[export]'"


class ExportError(TorchSTNError):
    """An export failed, or the exported file disagrees with the eager model."""


def require(*modules: str, purpose: str) -> None:
    """Raise a one-line :class:`TorchSTNError` with the install hint if a module is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise TorchSTNError(f"{purpose} needs {', '.join(missing)}: {_INSTALL_HINT}")


class ClassifierWithParams(nn.Module):
    """``x -> (model(x), transformer.localize(x))``: logits and the first transformer's params."""

    def __init__(self, model: nn.Module, transformer: SpatialTransformer) -> None:
        super().__init__()
        self.model = model
        self.transformer = transformer
        self.normalize = input_normalizer(model)  # the transformer reads normalised images

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x), self.transformer.localize(self.normalize(x))


class TransformerWithParams(nn.Module):
    """``x -> transformer(x, return_params=True)``: the rectified image and the params."""

    def __init__(self, transformer: SpatialTransformer, normalize: nn.Module | None = None) -> None:
        super().__init__()
        self.transformer = transformer
        self.normalize = normalize if normalize is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, params = self.transformer(self.normalize(x), return_params=True)
        return y, params


def exportable(
    model: nn.Module, in_shape: Sequence[int], part: str = "model"
) -> tuple[nn.Module, tuple[str, ...], SpatialTransformer | None]:
    """The module an export traces, its output names and the transformer whose params it returns.

    A :class:`~torchstn.models.RegistrationNet` is exported as it is (its inputs are
    :data:`REGISTRATION_INPUTS`, its outputs :data:`REGISTRATION_OUTPUTS`, its transformer the
    one that predicts ``params``); every other module takes one input.

    Args:
        model: a classifier (any module taking ``(B, *in_shape)``), a spatial transformer or a
            registration model.
        in_shape: ``(C, H, W)`` of the inputs, or ``(C, D, H, W)`` (a registration model: of
            one image, ``moving`` or ``fixed``).
        part: ``"model"`` or ``"transformer"`` (see the module docstring).
    """
    check_choice(part, "part", PARTS)
    if isinstance(model, RegistrationNet):
        if part != "model":
            raise InvalidInputError(
                f"part: a registration model exports whole, (moving, fixed) -> "
                f"({', '.join(REGISTRATION_OUTPUTS)}), not its {part}; export --part model"
            )
        if tuple(in_shape) != model.in_shape:
            raise InvalidInputError(
                f"in_shape: the registration model takes {model.in_shape} images, got "
                f"{tuple(in_shape)!r}"
            )
        return model, REGISTRATION_OUTPUTS, model.transformer
    st = first_transformer(model)
    if st is not None and st.in_shape != tuple(in_shape):
        st = None  # a transformer inside the network (it does not read the input): no params
    if part == "transformer" or isinstance(model, SpatialTransformer):
        if st is None:
            raise InvalidInputError(
                "part: the model has no spatial transformer reading its input; "
                "export --part model instead"
            )
        return TransformerWithParams(st, input_normalizer(model)).eval(), ("output", "params"), st
    if st is None:
        return model, ("logits",), None
    return ClassifierWithParams(model, st).eval(), ("logits", "params"), st


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote."""

    path: Path
    format: str
    part: str
    outputs: tuple[str, ...]
    in_shape: tuple[int, ...]  #: ``(C, H, W)``, or ``(C, D, H, W)`` for volumes
    opset: int | None
    seconds: float  #: time spent exporting (verification not included)
    max_abs_diff: float | None  #: largest difference from the eager model (None: not verified)
    metadata: dict[str, Any]
    sampler: str | None = None  #: ONNX only: ``"grid_sample"`` or ``"gather"``
    inputs: tuple[str, ...] = _INPUTS  #: ``("input",)``, or ``("moving", "fixed")``

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "part": self.part,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "in_shape": list(self.in_shape),
            "dynamic_batch": True,
            "opset": self.opset,
            "sampler": self.sampler,
            "seconds": round(self.seconds, 3),
            "max_abs_diff": self.max_abs_diff,
        }


def format_of(path: str | Path) -> str:
    """The format of an export file from its suffix (``.onnx``, ``.pt``/``.ts``, ``.pt2``)."""
    suffix = Path(path).suffix.lower()
    for fmt, ext in (*SUFFIXES.items(), ("torchscript", ".ts")):
        if suffix == ext:
            return fmt
    raise InvalidInputError(
        f"format: cannot tell it from the suffix {suffix or '(none)'!r} of {path}; "
        f"give one of {', '.join(FORMATS)}"
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, warnings and log messages."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _to_source(g: torch.Tensor, size: int, padding_mode: str, align_corners: bool) -> torch.Tensor:
    """Voxel coordinates along one axis of ``size`` voxels, computed as ``grid_sample``'s CPU
    kernel for volumes computes them (unnormalised, then reflected and/or clipped)."""
    if align_corners:
        x = ((g + 1) / 2) * (size - 1)
    else:
        x = ((g + 1) * size - 1) / 2
    if padding_mode == "reflection":
        low, high = (0, 2 * (size - 1)) if align_corners else (-1, 2 * size - 1)
        if low == high:  # one voxel with align_corners: every point reflects onto it
            return torch.zeros_like(x)
        span = (high - low) / 2
        x = (x - low / 2).abs()
        extra = torch.fmod(x, span)
        flips = torch.floor(x / span)
        even = flips - 2 * torch.floor(flips / 2) == 0
        x = torch.where(even, extra + low / 2, span - extra + low / 2)
    if padding_mode != "zeros":
        # clip to [0, size - 1] with Where, not Clip: the exporter (onnxscript 0.7) drops the
        # bounds of a second Clip of the same tensor
        x = torch.where(x < 0, 0.0, torch.where(x > size - 1, float(size - 1), x))
    return x


def _taps(
    x: torch.Tensor, size: int, nearest: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The neighbours of voxel coordinates ``x`` ``(B, N)`` along an axis of ``size`` voxels:
    their indices ``(B, N, K)`` (0 where outside), whether each is inside, and their weights
    (``None`` for the nearest voxel, ``K = 1``; ``floor(x)`` and ``floor(x) + 1`` otherwise)."""
    if nearest:  # round half to even, as grid_sample's nearbyint and ONNX's Round
        at, weight = torch.round(x).unsqueeze(-1), None
    else:
        x0 = torch.floor(x)
        at = torch.stack([x0, x0 + 1], -1)
        weight = torch.stack([x0 + 1 - x, x - x0], -1)
    inside = (at >= 0) & (at <= size - 1)  # on the floats: no integer overflow far outside
    return torch.where(inside, at, 0.0).to(torch.int64), inside, weight


def _gather_3d(
    input: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str, align_corners: bool
) -> torch.Tensor:
    """:func:`gather_sample` without its checks (the body the ONNX export traces): one gather
    of every output voxel's neighbours, ``K^3`` of them (``K`` = 2, or 1 for the nearest)."""
    b, c = input.shape[0], input.shape[1]
    d, h, w = (int(n) for n in input.shape[2:])
    flat = input.reshape(b, c, d * h * w)
    points = grid.reshape(b, -1, 3)  # (B, N, 3): x along W, y along H, z along D
    nearest = mode == "nearest"
    (xi, xin, xw), (yi, yin, yw), (zi, zin, zw) = (
        _taps(_to_source(points[..., axis], size, padding_mode, align_corners), size, nearest)
        for axis, size in enumerate((w, h, d))
    )
    # (B, N, Kz, Ky, Kx), flattened in grid_sample's order of the corners (tnw, tne, ... bse)
    index = (zi[..., :, None, None] * h + yi[..., None, :, None]) * w + xi[..., None, None, :]
    inside = zin[..., :, None, None] & yin[..., None, :, None] & xin[..., None, None, :]
    n, k = points.shape[1], index.shape[-1] ** 3
    values = flat.gather(2, index.reshape(b, 1, n * k).expand(-1, c, -1)).view(b, c, n, k)
    if xw is not None and yw is not None and zw is not None:
        weight = xw[..., None, None, :] * yw[..., None, :, None] * zw[..., :, None, None]
        values = values * weight.reshape(b, 1, n, k)
    out = torch.where(inside.reshape(b, 1, n, k), values, 0.0).sum(-1)  # (B, C, N)
    return out.reshape(b, c, *grid.shape[1:4])


def gather_sample(
    input: torch.Tensor,
    grid: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = False,
) -> torch.Tensor:
    """``grid_sample`` of volumes written with plain tensor ops: what ``sampler="gather"`` exports.

    Each output voxel reads its 8 neighbours (trilinear, ``mode="bilinear"``) or its nearest voxel
    (``mode="nearest"``, ties to even) with ``floor``, ``round``, index arithmetic and ``gather``
    (ONNX ``GatherElements``); a neighbour outside the volume is masked to 0 (``"zeros"``), and
    ``"border"`` and ``"reflection"`` move the coordinates first, as ``grid_sample`` does. The
    numbers are those of :func:`torch.nn.functional.grid_sample` on the CPU (the same
    coordinates, weights and order of the eight terms; float32 results were identical in the
    tests, float64 ones within an ulp), and both gradients flow; it is slower, and meant for
    export.

    Convention:
        ``grid[b, k, i, j] = (x, y, z)`` in the normalised frame of ``input``, z along ``D``
        (:mod:`torchstn.functional.coords`); ``align_corners`` as in ``grid_sample``.

    Args:
        input: ``(B, C, D, H, W)`` floating-point volumes.
        grid: ``(B, Do, Ho, Wo, 3)`` source coordinates, same dtype and device as ``input``.
        mode: ``"bilinear"`` (trilinear) or ``"nearest"``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        align_corners: see :mod:`torchstn.functional.coords`.

    Returns:
        ``(B, C, Do, Ho, Wo)`` sampled volumes.

    Raises:
        InvalidInputError: a 4-D input, mismatched shapes, dtypes or devices.
        UnknownNameError: another mode or padding mode.

    Example:
        >>> import torch.nn.functional as F
        >>> v = torch.rand(1, 2, 4, 5, 6)
        >>> g = torch.rand(1, 3, 3, 3, 3) * 2.4 - 1.2  # some points outside
        >>> torch.equal(gather_sample(v, g), F.grid_sample(v, g, align_corners=False))
        True
    """
    check_input_and_grid(input, grid)
    if input.dim() != 5:
        raise InvalidInputError(
            f"input: gather_sample samples 5-D volumes (B, C, D, H, W), got shape "
            f"{tuple(input.shape)}"
        )
    check_choice(mode, "mode", ("bilinear", "nearest"))
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    return _gather_3d(input, grid, mode, padding_mode, bool(align_corners))


def _gather_grid_sampler(
    input: torch.Tensor,
    grid: torch.Tensor,
    interpolation_mode: int,
    padding_mode: int,
    align_corners: bool,
) -> torch.Tensor:
    """``aten.grid_sampler`` (and ``grid_sampler_3d``) for the export's decomposition table:
    volumes through :func:`_gather_3d`, images left to ``grid_sampler_2d``."""
    if input.dim() != 5:
        return torch.ops.aten.grid_sampler_2d.default(
            input, grid, interpolation_mode, padding_mode, align_corners
        )
    if interpolation_mode not in (0, 1):  # pragma: no cover - volumes' bicubic is the kernel's
        raise ExportError("sampler: 'gather' samples volumes trilinearly or by nearest voxel")
    mode = "bilinear" if interpolation_mode == 0 else "nearest"
    return _gather_3d(input, grid, mode, PADDING_MODES[padding_mode], align_corners)


def _batch_dims(examples: tuple[torch.Tensor, ...]) -> tuple[dict[int, Any], ...]:
    """The ``dynamic_shapes`` of an export: every input's first axis is one shared batch size."""
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in examples)


def _gathered(
    module: nn.Module, examples: tuple[torch.Tensor, ...]
) -> torch.export.ExportedProgram:
    """``module`` as a ``torch.export`` program whose volume sampling is :func:`gather_sample`:
    the ``grid_sampler`` calls decomposed, nothing else changed (no hook in the model)."""
    program = torch.export.export(module, examples, dynamic_shapes=_batch_dims(examples))
    aten = torch.ops.aten
    table = {aten.grid_sampler.default: _gather_grid_sampler}
    table[aten.grid_sampler_3d.default] = _gather_grid_sampler
    return program.run_decompositions(table)


def _op_types(proto: Any) -> set[str]:
    """Every operator type of an ONNX model, its local functions included."""
    nodes = [*proto.graph.node, *(n for f in proto.functions for n in f.node)]
    return {n.op_type for n in nodes}


def _serialize(*args: Any, **kwargs: Any) -> bytes | memoryview:
    """:func:`_serialize_standard` with the fused kernels off: every exported file holds the
    standard operators (``GridSample`` in ONNX, ``grid_sampler`` in programs), so it loads
    without torchstn (the fused kernel is a runtime choice of :mod:`torchstn.native`)."""
    with native.use_fused(False):
        return _serialize_standard(*args, **kwargs)


def _serialize_standard(
    module: nn.Module,
    examples: tuple[torch.Tensor, ...],
    fmt: str,
    outputs: tuple[str, ...],
    opset: int | None,
    metadata: Mapping[str, Any],
    sampler: str = "grid_sample",
    inputs: tuple[str, ...] = _INPUTS,
) -> bytes | memoryview:
    """The exported file's bytes, made in memory: PyTorch's zip writer aborts the whole process
    (``terminate called after throwing c10::Error``) when a write to a file fails, a full disk
    for instance; written from memory by :func:`export`, such a failure is an ``OSError``.
    ``examples`` holds one tensor per name of ``inputs``."""
    if fmt == "onnx":
        if sampler == "gather":  # a program with the batch already dynamic
            program = torch.onnx.export(
                _gathered(module, examples),
                dynamo=True,
                opset_version=opset,
                input_names=list(inputs),
                output_names=list(outputs),
                verbose=False,
            )
        else:
            program = torch.onnx.export(
                module,
                examples,
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=_batch_dims(examples),
                input_names=list(inputs),
                output_names=list(outputs),
                verbose=False,
            )
        if program is None:  # pragma: no cover - the dynamo exporter always returns one
            raise ExportError("torch.onnx.export returned no program")
        if sampler == "gather" and "GridSample" in _op_types(program.model_proto):
            raise ExportError("sampler 'gather': the ONNX graph still has a GridSample node")
        for key, value in metadata.items():
            program.model.metadata_props[_META_PREFIX + key] = json.dumps(value)
        return bytes(program.model_proto.SerializeToString())
    buffer = io.BytesIO()
    if fmt == "torchscript":
        traced = torch.jit.trace(module, examples, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={_META_FILE: json.dumps(metadata)})
    else:
        exported = torch.export.export(module, examples, dynamic_shapes=_batch_dims(examples))
        torch.export.save(exported, buffer, extra_files={_META_FILE: json.dumps(metadata)})
    return buffer.getbuffer()


def _write_file(tmp: Path, data: bytes | memoryview) -> None:
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _verify(
    module: nn.Module,
    in_shape: tuple[int, ...],
    run: Callable[..., tuple[torch.Tensor, ...]],
    inputs: int = 1,
) -> float:
    """Largest difference between ``run`` and ``module`` on random inputs (``inputs`` of them,
    each ``(B, *in_shape)``) of batch 1 and 3, relative to the size of the outputs when they
    exceed 1."""
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for b in (1, 3):
        xs = tuple(torch.rand(b, *in_shape, generator=gen) for _ in range(inputs))
        with torch.no_grad():
            ref = module(*xs)
        ref = tuple(ref) if isinstance(ref, tuple) else (ref,)
        got = run(*xs)
        if len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref)):
            raise ExportError(
                f"the exported file gives outputs of shapes {[tuple(g.shape) for g in got]} "
                f"at batch {b}, the model {[tuple(r.shape) for r in ref]}"
            )
        for g, r in zip(got, ref):
            diff = float((g - r).abs().max()) / max(1.0, float(r.abs().max()))
            worst = max(worst, diff)
    return worst


def _onnx_opset(opset: object, sampler: str, volume: bool) -> int:
    """The opset an ONNX export uses (``opset`` checked, or the default for its input), and
    ``sampler`` checked against the input: ``"gather"`` is for volumes."""
    native = sampler == "grid_sample"
    if not volume and not native:
        raise InvalidInputError(
            f"sampler: {sampler!r} samples volumes (C, D, H, W); images export GridSample "
            f"(opset {MIN_OPSET} and up)"
        )
    if opset is None:
        return VOLUME_OPSET if volume and native else DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise InvalidInputError(
            f"opset: expected an int >= {MIN_OPSET} (GridSample), got {opset!r}"
        )
    if volume and native and opset < VOLUME_OPSET:
        raise InvalidInputError(
            f"opset: volumes need opset >= {VOLUME_OPSET} (5-D GridSample), got {opset}; "
            "sampler 'gather' takes any opset"
        )
    return opset


def export(
    model: nn.Module,
    path: str | Path,
    format: str | None = None,
    *,
    in_shape: Sequence[int] | None = None,
    part: str = "model",
    opset: int | None = None,
    sampler: str = "grid_sample",
    metadata: Mapping[str, Any] | None = None,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Export ``model`` (or its first spatial transformer) to ``path`` with a dynamic batch size.

    Args:
        model: a classifier, a :class:`SpatialTransformer` or a registration model
            (:class:`~torchstn.models.RegistrationNet`: two inputs, ``moving`` and ``fixed``),
            used in eval mode on the CPU.
        path: the file to write (atomically).
        format: ``"onnx"``, ``"torchscript"`` or ``"exported-program"``; ``None``: from the
            suffix of ``path`` (:func:`format_of`).
        in_shape: ``(C, H, W)`` of the inputs, ``(C, D, H, W)`` for volumes; default: that of
            the first transformer (a registration model: of its images).
        part: ``"model"`` or ``"transformer"`` (see the module docstring).
        opset: ONNX opset, at least :data:`MIN_OPSET`, and :data:`VOLUME_OPSET` for volumes
            sampled by ``GridSample``; ``None``: that minimum for volumes, :data:`DEFAULT_OPSET`
            otherwise (ONNX only).
        sampler: ``"grid_sample"`` (ONNX's ``GridSample``) or ``"gather"``: volumes sampled with
            plain operators (:func:`gather_sample`) for runtimes without a 5-D ``GridSample``
            (ONNX only; images always use ``GridSample``).
        metadata: extra JSON-ready entries stored in the file (see :func:`read_metadata`).
        verify: run the written file at batch sizes 1 and 3 and compare with the eager model.
        tolerance: the largest difference ``verify`` accepts (relative to outputs above 1).

    Raises:
        ExportError: the exporter failed, or the file disagrees with the model.
        TorchSTNError: ONNX without ``onnx``/``onnxscript``/``onnxruntime`` (with the install hint).
        InvalidInputError: a bad format, part, opset, sampler or shape.
    """
    fmt = format_of(path) if format is None else check_choice(format, "format", FORMATS)
    check_choice(sampler, "sampler", SAMPLERS)
    inputs: tuple[str, ...] = _INPUTS
    if isinstance(model, RegistrationNet):  # two images in, each of the model's in_shape
        inputs = REGISTRATION_INPUTS
        in_shape = model.in_shape if in_shape is None else in_shape
    if in_shape is None:
        st = first_transformer(model)
        if st is None:
            raise InvalidInputError("in_shape: required for a model without a spatial transformer")
        in_shape = st.in_shape
    shape = tuple(int(v) for v in in_shape)
    if len(shape) not in (3, 4):
        raise InvalidInputError(
            f"in_shape: expected (C, H, W) or (C, D, H, W), got {tuple(in_shape)!r}"
        )
    volume = len(shape) == 4
    if fmt == "onnx":
        opset = _onnx_opset(opset, sampler, volume)
        require("onnx", "onnxscript", *(("onnxruntime",) if verify else ()), purpose="ONNX export")
    elif sampler != "grid_sample":
        raise InvalidInputError(f"sampler: {sampler!r} applies to the onnx format only, not {fmt}")
    was_training = model.training
    if any(t.device.type != "cpu" for t in (*model.parameters(), *model.buffers())):
        model = copy.deepcopy(model).cpu()  # export on the CPU, leave the caller's model alone
    module, outputs, st = exportable(model.eval(), shape, part)
    meta: dict[str, Any] = {
        "format_version": 1,
        "part": part,
        "input": "volume" if volume else "image",
        "axes": ["C", "D", "H", "W"] if volume else ["C", "H", "W"],
        "in_shape": list(shape),
        "inputs": list(inputs),
        "outputs": list(outputs),
        "opset": opset if fmt == "onnx" else None,
        "sampler": sampler if fmt == "onnx" else None,
        "transform": None if st is None else st.transform.name,
        "num_params": None if st is None else st.transform.num_params,
        **dict(metadata or {}),
    }
    path = Path(path)
    gen = torch.Generator().manual_seed(0)
    examples = tuple(torch.rand(2, *shape, generator=gen) for _ in inputs)
    diff = None
    try:
        with atomic_path(path) as tmp:
            start = time.perf_counter()
            try:
                with _quiet():
                    data = _serialize(module, examples, fmt, outputs, opset, meta, sampler, inputs)
            except TorchSTNError:
                raise
            except Exception as err:
                raise ExportError(f"{fmt} export failed: {first_line(err)}") from None
            seconds = time.perf_counter() - start
            _write_file(tmp, data)  # a full disk: one line from atomic_path, no file left
            del data
            if verify:
                diff = _verify(module, shape, load_exported(tmp, fmt), len(inputs))
                if diff > tolerance:
                    raise ExportError(
                        f"the {fmt} file differs from the model by {diff:.3g} "
                        f"(tolerance {tolerance:g}); nothing written"
                    )
    finally:
        model.train(was_training)
    return ExportResult(
        path=path,
        format=fmt,
        part=part,
        outputs=outputs,
        in_shape=shape,
        opset=opset if fmt == "onnx" else None,
        seconds=seconds,
        max_abs_diff=diff,
        metadata=meta,
        sampler=sampler if fmt == "onnx" else None,
        inputs=inputs,
    )


def export_checkpoint(
    checkpoint: str | Path,
    path: str | Path,
    format: str | None = None,
    *,
    part: str = "model",
    weights: str = "best",
    opset: int | None = None,
    sampler: str = "grid_sample",
    verify: bool = True,
) -> ExportResult:
    """Export the trained model of a checkpoint (see :func:`export`); its metadata (class names,
    config, weights) goes into the file. The model of a ``registration`` run takes ``moving``
    and ``fixed``."""
    model, info = load_with_info(checkpoint, weights, "cpu")
    metadata = {
        "model": info.model_name,
        "num_classes": info.num_classes,
        "class_names": None if info.class_names is None else list(info.class_names),
        "data": info.data_name,
        "weights": info.weights,
        "config": config_to_dict(info.config),
        "preprocess": info.preprocess.to_dict(),
    }
    return export(
        model,
        path,
        format,
        in_shape=info.in_shape,
        part=part,
        opset=opset,
        sampler=sampler,
        metadata=metadata,
        verify=verify,
    )


def _existing_export(path: str | Path, format: str | None) -> tuple[Path, str]:
    """``(path, format)`` of an export file that must exist, its format read from its content
    (and checked against ``format`` when given), its CRC-32s checked (PyTorch formats).

    Raises:
        DataError: missing file, a file that is no export (named: a checkpoint, a text file...),
            another format than ``format``, or a damaged archive.
    """
    path = Path(path)
    if format is not None:
        check_choice(format, "format", FORMATS)
    if not path.is_file():
        raise DataError(f"export file not found: {path}")
    kind, description = identify(path)
    if kind not in FORMATS:
        raise DataError(
            f"{path}: {description}; expected an ONNX, TorchScript or exported-program file"
        )
    if format is not None and kind != format:
        raise DataError(f"{path}: {description}, not a {format} file")
    if kind != "onnx":
        verify_archive(path)
    return path, kind


def _check_inputs(path: Path, names: Sequence[str] | None, xs: tuple[object, ...]) -> None:
    """One tensor per input name (``names`` ``None``: a file that does not say how many)."""
    if names is not None and len(xs) != len(names):
        raise InvalidInputError(
            f"inputs: {path.name} takes {len(names)} ({', '.join(names)}), got {len(xs)}"
        )
    for x in xs:
        if not isinstance(x, torch.Tensor):
            raise InvalidInputError(f"inputs: expected tensors, got a {type(x).__name__}")


def load_exported(
    path: str | Path, format: str | None = None, device: str | torch.device = "cpu"
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """A function running an exported file: ``(B, C, H, W)`` tensor (``(B, C, D, H, W)`` for
    volumes) -> tuple of output tensors (on the CPU).

    A file of several inputs (a registration model: ``run(moving, fixed)``, the metadata's
    ``inputs``) takes one tensor per input, in that order, all with the same batch size.

    ONNX files run on onnxruntime (CPU), the others with PyTorch on ``device`` (``"cpu"``,
    ``"cuda"``, ...; see :func:`torchstn.inference.inference_device`). The format is read from
    the file's content; ``format``, when given, must agree.

    Raises:
        DataError: missing, damaged or foreign file (named in one line).
        InvalidInputError: (when run) another number of inputs than the file takes.

    Example:
        >>> import tempfile
        >>> from torchstn.models import create_model
        >>> reg = create_model("reg_affine", (1, 16, 16), 0, channels=(4,), hidden=8)
        >>> run = load_exported(export(reg, tempfile.mkdtemp() + "/reg.pt").path)
        >>> warped, field, params = run(torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16))
        >>> field.shape, params.shape
        (torch.Size([2, 2, 16, 16]), torch.Size([2, 6]))
    """
    dev = inference_device(device)
    path, fmt = _existing_export(path, format)
    try:
        if fmt == "onnx":
            require("onnxruntime", purpose="running an ONNX file")
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            onnx_names = [i.name for i in session.get_inputs()]

            def run_onnx(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
                _check_inputs(path, onnx_names, xs)
                feed = {n: x.detach().cpu().float().numpy() for n, x in zip(onnx_names, xs)}
                return tuple(torch.from_numpy(o) for o in session.run(None, feed))

            return run_onnx
        names = _zip_metadata(path).get("inputs")  # None: a file not written by torchstn
        if fmt == "torchscript":
            with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export
                warnings.simplefilter("ignore")
                module: Any = torch.jit.load(str(path), map_location=dev)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with open(path, "rb") as fh:
                    program = torch.export.load(fh)
                if dev.type != "cpu":
                    from torch.export.passes import move_to_device_pass  # only off the CPU

                    program = move_to_device_pass(program, dev)
                module = program.module()
    except TorchSTNError:
        raise
    except Exception as err:
        raise DataError(f"{path}: not a readable {fmt} file ({first_line(err)})") from None

    def run_torch(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _check_inputs(path, names if isinstance(names, list) else None, xs)
        with torch.no_grad():
            out = module(*(x.to(dev) for x in xs))
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        return tuple(o.cpu() for o in out)

    return run_torch


#: the largest metadata entry read from a PyTorch export (its JSON is a few KiB).
_MAX_META_BYTES = 16 << 20


def read_metadata(path: str | Path, format: str | None = None) -> dict[str, Any]:
    """The metadata a torchstn export carries (see the module docstring); ``{}`` for a file that
    was not written by torchstn. The format is read from the file's content; ``format``, when
    given, must agree. Nothing of the model is loaded: in the PyTorch formats the metadata is
    read from its zip member."""
    path, fmt = _existing_export(path, format)
    try:
        if fmt == "onnx":
            require("onnx", purpose="reading an ONNX file")
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            return {
                p.key[len(_META_PREFIX) :]: json.loads(p.value)
                for p in proto.metadata_props
                if p.key.startswith(_META_PREFIX)
            }
        return _zip_metadata(path)
    except TorchSTNError:
        raise
    except Exception as err:
        raise DataError(f"{path}: not a readable {fmt} file ({first_line(err)})") from None


def _zip_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a PyTorch export (a zip archive), ``{}`` when it has none."""
    with zipfile.ZipFile(path) as zf:
        members = [i for i in zf.infolist() if i.filename.endswith(f"extra/{_META_FILE}")]
        if not members:
            return {}
        if members[0].file_size > _MAX_META_BYTES:
            raise DataError(f"{path}: its {_META_FILE} is {members[0].file_size} bytes")
        text = zf.read(members[0]).decode("utf-8")
    meta = json.loads(text) if text else {}
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its {_META_FILE} holds a {type(meta).__name__}, not an object")
    return meta
