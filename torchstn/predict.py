"""Classifying image or volume files with a trained model (a checkpoint) or its ONNX export.

:func:`open_predictor` opens a checkpoint (file or run folder) or an ONNX file; :func:`predict`
reads each image with :mod:`torchstn.images` (any format and mode Pillow opens, converted to the
model's channels, transparency over black, fitted by ``"pad"`` or ``"stretch"``), classifies the
images in batches and yields one :class:`Prediction` (or :class:`Failure`) per file, whose
:meth:`Prediction.to_dict` is the JSON line of ``torchstn predict``. The image-reading names
(:func:`read_image`, :class:`Fit`, :func:`find_images`, ``FITS``, ``IMAGE_SUFFIXES``) are
re-exported here.

Volumes: a model whose ``in_shape`` is ``(C, D, H, W)`` takes volume files instead
(:data:`VOLUME_SUFFIXES`, found in folders by :func:`find_volumes`), one record per volume:

* ``.nii`` / ``.nii.gz``: one volume, read by :func:`torchstn.data.volumes.read_nifti` (one
  channel; the header's slope and intercept applied, the affine not);
* ``.npy``: one volume ``(D, H, W)`` (one channel) or ``(C, D, H, W)`` (its first axis the
  model's ``C``), or a stack ``(N, C, D, H, W)``, ``(N, D, H, W, C)`` (only its last axis ``C``)
  or, for a one-channel model, ``(N, D, H, W)``; a stack's volumes are named ``FILE[i]``.
  Memory-mapped, each volume converted on its own;
* ``.npz``: the volumes ``x`` as :func:`torchstn.data.volumes.read_volumes` reads training data
  (integers 0..255 or floats in ``[0, 1]``; labels ignored), named ``FILE[i]``.

Intensities (:attr:`VolumeFit.intensity`): integers within 0..255 (stored so: uint8, or NIfTI
integers without scaling) are divided by 255, as images are; floats within ``[0, 1]`` are taken
as they are; anything else (a scan in Hounsfield units, a NIfTI with a slope) is scaled by the
volume's own minimum and maximum to ``[0, 1]`` (``"min-max"``; a constant volume becomes 0). NaN
or infinite voxels fail that volume. Volumes are not quantised to 8 bits.

Size (``fit``): a volume of the model's ``(D, H, W)`` goes in as it is; ``"stretch"`` resamples
any other to it (trilinear, ``align_corners=False``, no antialiasing); ``"pad"`` keeps the aspect
ratio: a volume larger than the model's on some axis is first shrunk by one factor (trilinear)
until it fits, then every volume is centred in zeros. Unlike images, ``"pad"`` never enlarges a
smaller volume: its voxels keep their size. :class:`VolumeFit` records what was done. Files are
checked against :func:`torchstn.data.volumes.max_volume_voxels` before anything is read.

With an ONNX file, inference runs on onnxruntime; the file must come from ``torchstn export``
(``--part model``), whose metadata gives the input shape, the class names and the config from
which the transformer's geometry (to draw and to rectify with the predicted params) is rebuilt.

Example:
    >>> from PIL import Image
    >>> import numpy as np, tempfile, torch
    >>> path = tempfile.mkdtemp() + "/digit.png"
    >>> Image.fromarray(np.zeros((40, 30), np.uint8)).save(path)
    >>> always_3 = Predictor(  # a stand-in model: logits favouring class 3, no transformer
    ...     (1, 28, 28), 10, None, None, "torch",
    ...     lambda x: (torch.eye(10)[3].expand(len(x), 10), None),
    ... )
    >>> (record,) = predict(always_3, [path], top_k=2)
    >>> record.top_k[0][0], record.fit.resized, record.fit.padding
    (3, (28, 21), (3, 0, 4, 0))
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ._atomic import atomic_path
from ._checks import check_choice
from .data.volumes import (
    _NPY,
    _ZIP,
    NIFTI_SUFFIXES,
    map_npy,
    max_volume_voxels,
    read_nifti,
    read_nifti_header,
    read_volumes,
    scale_intensity,
)
from .errors import DataError, InvalidInputError, first_line
from .export import load_exported, read_metadata, require
from .images import (
    FITS,
    IMAGE_SUFFIXES,
    Fit,
    _fit,
    _in_source_pixels,
    _read_source,
    find_images,
    read_image,
)
from .inference import (
    MAX_INPUT_VALUES,
    build_on_meta,
    build_untrained,
    first_transformer,
    inference_device,
    load_with_info,
)
from .module import SpatialTransformer
from .preprocess import input_normalizer
from .train.checkpoint import CHECKPOINT, identify
from .transforms.warping import output_frame
from .viz._mpl import pyplot, save_figure
from .viz.volumes import VIEWS, draw_volume

__all__ = [
    "FITS",
    "IMAGE_SUFFIXES",
    "VOLUME_SUFFIXES",
    "Failure",
    "Fit",
    "Prediction",
    "Predictor",
    "VolumeFit",
    "find_images",
    "find_volumes",
    "open_predictor",
    "predict",
    "read_image",
]

_OUTLINE = (228, 87, 46)


# ---------------------------------------------------------------------------------- models
@dataclass
class Predictor:
    """A model ready to classify: a checkpoint's network or an ONNX session.

    Attributes:
        in_shape: ``(C, H, W)`` of its inputs, or ``(C, D, H, W)`` for a volume model.
        num_classes: number of classes.
        class_names: names of the classes, or ``None``.
        transformer: the first spatial transformer (for an ONNX file, rebuilt from its config
            without weights: only its geometry is used), or ``None``.
        backend: ``"torch"`` or ``"onnxruntime"``.
        run: ``(B, C, H, W)`` (volumes: ``(B, C, D, H, W)``) CPU tensor -> ``(logits (B, K),
            params (B, P) or None)`` on the CPU.
        fit: how the model's training fitted images to its size (``"pad"`` or ``"stretch"``):
            what :func:`predict` uses unless told otherwise.
    """

    in_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...] | None
    transformer: SpatialTransformer | None
    backend: str
    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] = field(repr=False)
    fit: str = "pad"


def _torch_predictor(path: Path, weights: str, device: str) -> Predictor:
    dev = inference_device(device)
    model, info = load_with_info(path, weights, dev)
    st = first_transformer(model)
    if st is not None and st.in_shape != info.in_shape:
        st = None
    normalize = input_normalizer(model)  # the transformer reads what the model's network reads

    @torch.no_grad()
    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x.to(dev)
        params = None if st is None else st.localize(normalize(x)).cpu()
        return model(x).cpu(), params

    return Predictor(
        info.in_shape,
        info.num_classes,
        info.class_names,
        st,
        "torch",
        run,
        info.preprocess.fit,
    )


def _from_metadata(
    path: Path,
    meta: dict[str, Any],
    backend: str,
    open_file: Callable[[], Callable[[torch.Tensor], Sequence[torch.Tensor]]],
) -> Predictor:
    """A :class:`Predictor` for an export file from its torchstn metadata. Once the metadata is
    checked, ``open_file()`` loads the file and returns what runs it (a ``(B, C, H, W)`` or
    ``(B, C, D, H, W)`` CPU batch -> its outputs, in the metadata's order, on the CPU)."""
    if not meta:
        raise DataError(f"{path}: no torchstn metadata; write the file with torchstn export")
    if meta.get("part") != "model":
        raise DataError(f"{path}: exports the {meta.get('part')} part; predict needs --part model")
    try:
        shape = tuple(int(v) for v in meta["in_shape"])
        outputs = list(meta["outputs"])
        names = meta.get("class_names")
        num_classes = int(meta["num_classes"])
        config = meta.get("config")
        fit = str((meta.get("preprocess") or {}).get("fit", "pad"))
        if "warped" in outputs and "field" in outputs:
            raise DataError(
                f"{path}: a registration model (inputs moving and fixed, outputs "
                f"{', '.join(outputs)}); predict classifies: use torchstn register with its run"
            )
        if "logits" not in outputs:
            raise ValueError(f"outputs {outputs} without logits")
        sizes = "x".join(str(v) for v in shape)
        if len(shape) not in (3, 4) or min(shape) < 1 or math.prod(shape) > MAX_INPUT_VALUES:
            raise ValueError(f"in_shape {sizes}")
        if num_classes < 1:
            raise ValueError(f"in_shape {sizes}, num_classes {num_classes}")
        if names is not None and len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: incomplete torchstn metadata ({err})") from None
    st = None
    if "params" in outputs and config is not None:
        st = _geometry(path, meta["model"], shape, num_classes, config)
        if st is None or st.transform.num_params != meta.get("num_params"):
            raise DataError(f"{path}: its metadata does not describe its transformer")
    with_params = "params" in outputs
    run_file = open_file()

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outs = run_file(x)
        logits = outs[outputs.index("logits")]
        params = outs[outputs.index("params")] if with_params else None
        return logits, params

    return Predictor(
        shape,
        num_classes,
        None if names is None else tuple(str(n) for n in names),
        st,
        backend,
        run,
        fit,
    )


def _geometry(
    path: Path, name: Any, in_shape: tuple[int, ...], num_classes: int, config: Any
) -> SpatialTransformer | None:
    """The first transformer of the model an export's metadata describes, with untrained
    weights: only its geometry is used (to draw, and to rectify with the file's params).

    The model is built on the meta device first: an honest export holds every weight of it, so
    a model larger than the file (metadata declaring huge sizes) is refused before it is built.
    """
    try:
        options = config["model"]["options"]
        meta_model = build_on_meta(name, in_shape, num_classes, options)
        size = sum(t.numel() * t.element_size() for t in meta_model.state_dict().values())
        if size > path.stat().st_size + (16 << 20):
            raise ValueError(f"its model would take {size >> 20} MiB, more than the file holds")
        return first_transformer(build_untrained(name, in_shape, num_classes, options))
    except Exception as err:
        raise DataError(f"{path}: its metadata does not describe a model ({err})") from None


def _onnx_predictor(path: Path, device: str) -> Predictor:
    require("onnxruntime", "onnx", purpose="predict with an ONNX file")
    import onnxruntime as ort  # optional: the [export] extra, checked above

    meta = read_metadata(path, "onnx")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") or device == "auto":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif device != "auto":
            raise InvalidInputError(f"device: onnxruntime has no CUDA provider here, got {device}")
    elif device != "cpu":
        raise InvalidInputError(f"device: expected auto, cpu or cuda for ONNX, got {device!r}")

    def open_file() -> Callable[[torch.Tensor], list[torch.Tensor]]:
        try:
            session = ort.InferenceSession(str(path), providers=providers)
        except Exception as err:
            first = " ".join(str(err).split())[:200]
            raise DataError(f"{path}: not a readable ONNX file ({first})") from None

        def run_file(x: torch.Tensor) -> list[torch.Tensor]:
            return [torch.from_numpy(o) for o in session.run(None, {"input": x.float().numpy()})]

        return run_file

    return _from_metadata(path, meta, "onnxruntime", open_file)


def _exported_predictor(path: Path, fmt: str, device: str) -> Predictor:
    """A TorchScript or ``torch.export`` file of ``torchstn export``, run by PyTorch."""
    meta = read_metadata(path, fmt)
    return _from_metadata(path, meta, "torch", lambda: load_exported(path, fmt, device))


#: what ``predict`` takes, for messages.
_TAKES = (
    "predict takes a checkpoint (or its run folder), or a TorchScript, exported-program or "
    "ONNX file of torchstn export"
)


def open_predictor(path: str | Path, *, weights: str = "best", device: str = "cpu") -> Predictor:
    """A :class:`Predictor` for a checkpoint (file or run folder) or a file of ``torchstn
    export`` (ONNX, TorchScript, exported program), told apart by their content, not their name.

    Raises:
        DataError: missing or unreadable file, a file that is none of those (named in one line:
            a pickled model, a text file...), or an export without torchstn's metadata.
        InvalidInputError: an unknown device, or one this machine does not have.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise DataError(f"model file not found: {path}")
    kind, description = identify(path)
    if kind == "onnx":
        return _onnx_predictor(path, device)
    inference_device(device)  # before anything is loaded
    if kind == CHECKPOINT:
        return _torch_predictor(path, weights, device)
    if kind in ("torchscript", "exported-program"):
        return _exported_predictor(path, kind, device)
    raise DataError(f"{path}: {description}; {_TAKES}")


# ---------------------------------------------------------------------------------- predict
@dataclass
class Prediction:
    """The record of one image or volume (:meth:`to_dict` is its JSON line).

    A volume of a stack (an ``.npy`` of several, an ``.npz``) has the path ``FILE[i]``.
    """

    path: Path
    top_k: list[tuple[int, str | None, float]]  #: ``(class, name, confidence)``, best first
    transform: str | None
    params: list[float] | None
    fit: Fit | VolumeFit
    #: the pictures written (``--out``); ``None`` without ``out_dir``, or when they could not be
    #: written (then ``output_error`` says why).
    outputs: dict[str, str] | None = None
    #: why this image's pictures were not written (the first failure, e.g. a full disk, stops
    #: the writing of pictures for this image and the later ones; the predictions go on).
    output_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        best = self.top_k[0]
        out: dict[str, Any] = {
            "path": str(self.path),
            "class": best[0],
            "class_name": best[1],
            "confidence": best[2],
            "top_k": [{"class": c, "class_name": n, "confidence": p} for c, n, p in self.top_k],
            "transform": self.transform,
            "params": self.params,
            "fit": self.fit.to_dict(),
        }
        if self.outputs is not None or self.output_error is not None:
            out["outputs"] = self.outputs
        if self.output_error is not None:
            out["output_error"] = self.output_error
        return out


@dataclass
class Failure:
    """An image or volume file (or one volume of a stack, ``FILE[i]``) that could not be read."""

    path: Path
    message: str


def _outline(st: SpatialTransformer, params: torch.Tensor, per_side: int = 32) -> torch.Tensor:
    """The border of the output frame mapped into the input (:func:`torchstn.output_frame`):
    ``(4 per_side + 1, 2)`` model-input pixel-centre coordinates of a closed polygon (top left
    to right, right side down, bottom right to left, left side up), for ``params`` ``(1, P)``."""
    dev = st.head.weight.device  # where the transform's buffers (TPS) live
    frame = output_frame(
        st.transform,
        params.to(dev),
        st.in_shape[1:],
        st.out_size,
        st.align_corners,
        2,
        per_side + 1,
    )[0].cpu()
    top, bottom, left, right = frame[0, 0], frame[0, 1], frame[1, 0], frame[1, 1]
    sides = (top[:-1], right[:-1], bottom.flip(0)[:-1], left.flip(0)[:-1], top[:1])
    return torch.cat(sides)


def _save_png(img: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _to_pil(x: torch.Tensor) -> Any:
    """``(C, H, W)`` in ``[0, 1]`` to an ``L`` or ``RGB`` Pillow image."""
    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _draw_outline(
    source: torch.Tensor, fit: Fit, size: Sequence[int], polygon: torch.Tensor
) -> Any:
    """The file's image as RGB with ``polygon`` (file pixel coordinates) drawn over it.

    The canvas also shows the model's input frame around the image (its padding black) and, in
    grey, what lies outside that frame but inside the sampled region (up to one frame size on each
    side). Small images are enlarged by an integer factor to at least 256 px.
    """
    frame = fit.to_source(
        torch.tensor([[-0.5, -0.5], [size[1] - 0.5, size[0] - 0.5]], dtype=polygon.dtype)
    )  # (2, 2): the frame's corners in file pixel coordinates
    lo, hi = frame[0], frame[1]
    extent = hi - lo
    lo_all = torch.maximum(torch.minimum(lo, polygon.min(0).values), lo - extent)
    hi_all = torch.minimum(torch.maximum(hi, polygon.max(0).values), hi + extent)
    x0, y0 = (math.floor(float(v) + 0.5) for v in lo_all)  # canvas origin, whole file pixels
    x1, y1 = (math.ceil(float(v) + 0.5) for v in hi_all)
    canvas = Image.new("RGB", (x1 - x0, y1 - y0), (64, 64, 64))
    fx0, fy0 = (round(float(v) + 0.5) for v in lo)
    fx1, fy1 = (round(float(v) + 0.5) for v in hi)
    canvas.paste((0, 0, 0), (fx0 - x0, fy0 - y0, fx1 - x0, fy1 - y0))
    image = _to_pil(source.expand(3, -1, -1) if source.shape[0] == 1 else source)
    canvas.paste(image.convert("RGB"), (-x0, -y0))
    k = max(1, math.ceil(256 / max(canvas.size)))
    if k > 1:
        canvas = canvas.resize((canvas.width * k, canvas.height * k), resample=0)  # nearest
    # file pixel-centre coordinates -> the enlarged canvas's (Pillow draws at pixel centres)
    pts = [((x + 0.5 - x0) * k - 0.5, (y + 0.5 - y0) * k - 0.5) for x, y in polygon.tolist()]
    ImageDraw.Draw(canvas).line(pts, fill=_OUTLINE, width=max(2, round(max(canvas.size) / 160)))
    return canvas


class _Pictures:
    """Where the pictures go, and whether writing them has failed (then it stops)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.error: str | None = None

    def failed(self, err: DataError | OSError | None) -> str:
        """Record the first write failure ``err``; the message each later image (``None``)
        carries."""
        if self.error is None and err is not None:
            text = str(err)
            if isinstance(err, OSError):
                text = f"{self.folder}: cannot write ({err.strerror or err})"
            self.error = f"{text}; no pictures written from this image on"
            return self.error
        return f"not written (an earlier image's pictures failed: {self.error})"


class _Names:
    """Unique output stems within one run (``a``, ``a-2``, ...)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, stem: str) -> str:
        name, i = stem, 1
        while name in self.used:
            i += 1
            name = f"{stem}-{i}"
        self.used.add(name)
        return name


def predict(
    predictor: Predictor,
    paths: Sequence[str | Path],
    *,
    top_k: int = 5,
    fit: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 32,
) -> Iterator[Prediction | Failure]:
    """Classify image files, in order: one :class:`Prediction` or :class:`Failure` per path.

    A volume model (``in_shape`` ``(C, D, H, W)``) takes volume files instead (see the module
    docstring): one record per volume, in order (a file of several gives several), and one
    :class:`Failure` for a file that cannot be read (or for one volume of it: ``FILE[i]``).

    Args:
        predictor: from :func:`open_predictor`.
        paths: image files (see :func:`find_images` for folders), or volume files
            (:func:`find_volumes`).
        top_k: classes listed per image (at most ``num_classes``).
        fit: ``"pad"`` or ``"stretch"`` (see the module docstring); ``None``: as the model was
            trained (:attr:`Predictor.fit`).
        out_dir: if given, write ``STEM_rectified.png`` (the first transformer's output: what the
            classifier sees, before any pooling) and ``STEM_grid.png`` (the image with the border
            of the sampled region drawn, the model's padding black around it and, in grey, any
            sampled area beyond the model's input) for models with a transformer. A folder that
            cannot be created raises before any image is read; a picture that cannot be written
            (a full disk) does not stop the predictions: that record's ``output_error`` says why,
            and no picture is written from there on (the later records say so too). Volumes:
            ``STEM_rectified.png`` draws the transformer's output and ``STEM_grid.png`` the
            file's volume with the sampled box, each as four views (:mod:`torchstn.viz.volumes`:
            the middle slices and the maximum over z); ``STEM`` is the file's name without its
            suffix, ``STEM_i`` for volume ``i`` of a stack.
        batch_size: images (volumes) run at once.

    Raises:
        DataError: ``out_dir`` cannot be created.
        TorchSTNError: pictures of volumes without matplotlib (the ``plot`` extra).
    """
    fit = predictor.fit if fit is None else check_choice(fit, "fit", FITS)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidInputError(f"top_k: expected a positive int, got {top_k!r}")
    k = min(top_k, predictor.num_classes)
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(
                f"{out}: cannot create the output folder ({err.strerror or err})"
            ) from None
    pictures = _Pictures(out)
    names = _Names()
    if len(predictor.in_shape) == 4:
        yield from _predict_volumes(predictor, paths, k, fit, pictures, names, batch_size)
        return
    size = (predictor.in_shape[1], predictor.in_shape[2])
    st = predictor.transformer
    draw = None if st is None else functools.partial(_image_pictures, st, size)
    for start in range(0, len(paths), batch_size):
        batch: list[tuple[Path, torch.Tensor, torch.Tensor, Fit]] = []
        results: list[Prediction | Failure | None] = []
        for p in paths[start : start + batch_size]:
            try:
                source, info = _read_source(p, predictor.in_shape[0], fit, size, fast=False)
            except DataError as err:
                results.append(Failure(Path(p), str(err)))
                continue
            x, info = _fit(source, info, size)
            batch.append((Path(p), source, x, info))
            results.append(None)
        preds = iter(
            _classify(predictor, batch, k, pictures, names, _path_stem, draw) if batch else []
        )
        for r in results:
            yield next(preds) if r is None else r


def _top_k(
    predictor: Predictor, logits: torch.Tensor, k: int
) -> list[list[tuple[int, str | None, float]]]:
    """``(class, name, confidence)`` of the ``k`` best classes of each row of ``logits``
    ``(B, K)``, best first."""
    conf, idx = logits.double().softmax(-1).topk(k, dim=-1)
    names = predictor.class_names
    return [
        [(int(c), None if names is None else names[int(c)], p) for c, p in zip(ci, pi)]
        for ci, pi in zip(idx.tolist(), conf.tolist())
    ]


#: writes ``files["rectified"]`` and ``files["grid"]`` of one input: ``(source, rectified,
#: params (1, P), fit, files)`` (see :func:`_image_pictures` and :func:`_volume_pictures`).
_Draw = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any, dict[str, Path]], None]


def _classify(
    predictor: Predictor,
    batch: Sequence[tuple[Path, torch.Tensor | None, torch.Tensor, Any]],
    k: int,
    pictures: _Pictures,
    names: _Names,
    stem: Callable[[Path], str],
    draw: _Draw | None,
) -> list[Prediction]:
    """One batch of ``(path, source, model input, fit)`` (images or volumes) classified, with
    each input's pictures (``stem(path)_rectified.png`` and ``_grid.png``, written by ``draw``)
    when ``pictures`` has a folder and the model a transformer (``draw`` is None without one)."""
    x = torch.stack([b[2] for b in batch])  # (B, C, H, W) or (B, C, D, H, W)
    logits, params = predictor.run(x)
    tops = _top_k(predictor, logits, k)
    st = predictor.transformer
    rectified = None
    out = pictures.folder
    if out is not None and st is not None and params is not None:
        with torch.no_grad():
            dev = st.head.weight.device
            rectified = st.transform_input(x.to(dev), params.to(dev, x.dtype)).cpu()
    records = []
    for i, (path, source, _, info) in enumerate(batch):
        outputs: dict[str, str] | None = None
        output_error = None
        if out is not None and pictures.error is not None:
            output_error = pictures.failed(None)
        elif out is not None:
            outputs = {}
            if (
                rectified is not None
                and draw is not None
                and params is not None
                and source is not None
            ):
                name = names(stem(path))
                files = {
                    "rectified": out / f"{name}_rectified.png",
                    "grid": out / f"{name}_grid.png",
                }
                try:
                    draw(source, rectified[i], params[i : i + 1], info, files)
                    outputs = {key: str(value) for key, value in files.items()}
                except (DataError, OSError) as err:
                    outputs, output_error = None, pictures.failed(err)
        records.append(
            Prediction(
                path=path,
                top_k=tops[i],
                transform=None if st is None or params is None else st.transform.name,
                params=None if params is None else params[i].tolist(),
                fit=info,
                outputs=outputs,
                output_error=output_error,
            )
        )
    return records


def _image_pictures(
    st: SpatialTransformer,
    size: Sequence[int],
    source: torch.Tensor,
    rectified: torch.Tensor,
    params: torch.Tensor,
    info: Fit,
    files: dict[str, Path],
) -> None:
    """Write ``files["rectified"]`` (``rectified`` ``(C, Ho, Wo)``) and ``files["grid"]`` (the
    file's ``source`` with the border of the region sampled for ``params`` ``(1, P)``, the
    model's input ``size`` ``(H, W)`` around it)."""
    _save_png(_to_pil(rectified), files["rectified"])
    pixels = _in_source_pixels(source, info)  # a large file comes shrunk
    with torch.no_grad():
        polygon = pixels.to_source(_outline(st, params.double()))
    _save_png(_draw_outline(source, pixels, size, polygon), files["grid"])


# ---------------------------------------------------------------------------------- volumes
#: what ``find_volumes`` collects from folders (any case; files named explicitly are always tried).
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy", ".npz")


@dataclass(frozen=True)
class VolumeFit:
    """How a volume became a model input (see the module docstring).

    Attributes:
        method: ``"pad"`` or ``"stretch"``.
        source_size: ``(D, H, W)`` of the file's volume.
        source_dtype: the dtype its voxels are stored in (a NIfTI's before its slope and
            intercept; an ``.npz``'s integers are read as ``"uint8"``).
        intensity: ``"divided by 255"``, ``"as is"`` or ``"min-max"`` (see the module docstring).
        source_range: ``(min, max)`` of its voxels before that.
        resized: ``(D', H', W')`` of the volume inside the model input.
        padding: zero voxels added ``(left, top, front, right, bottom, back)``: before, then
            after, along x (W), y (H) and z (D).
    """

    method: str
    source_size: tuple[int, int, int]
    source_dtype: str
    intensity: str
    source_range: tuple[float, float]
    resized: tuple[int, int, int]
    padding: tuple[int, int, int, int, int, int]

    def to_source(self, points: torch.Tensor) -> torch.Tensor:
        """Map ``(..., 3)`` voxel-centre ``(x, y, z)`` points of the model input to the file's."""
        d, h, w = self.source_size
        rd, rh, rw = self.resized
        scale = torch.tensor([rw / w, rh / h, rd / d], dtype=points.dtype)
        shift = torch.tensor(self.padding[:3], dtype=points.dtype)
        return (points + 0.5 - shift) / scale - 0.5

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the ``"fit"`` entry of a volume's record)."""
        return {
            "method": self.method,
            "source_size": list(self.source_size),
            "source_dtype": self.source_dtype,
            "intensity": self.intensity,
            "source_range": list(self.source_range),
            "resized": list(self.resized),
            "padding": list(self.padding),
        }


def find_volumes(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named in ``inputs``, with folders replaced by their volume files
    (:data:`VOLUME_SUFFIXES`, any case): recursively, sorted by their path in the folder, hidden
    files and folders skipped. Links to folders are followed, each folder walked once, and a link
    to the folder or one holding it is skipped, so a link can neither loop nor leave the folder
    by going up. A named file is kept whatever its suffix (and even if missing, so that reading
    it reports the error)."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        found += _scan(p, VOLUME_SUFFIXES) if p.is_dir() else [p]
    return found


def _scan(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under ``root`` whose names end in ``suffixes`` (see :func:`find_volumes`)."""
    real_root = os.path.realpath(root)
    walked = {_identity(os.stat(root))}
    found: list[Path] = []
    pending = [root]
    while pending:
        top = pending.pop()
        try:
            items = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:  # an unreadable folder is skipped, as os.walk does
            continue
        for item in items:
            if item.name.startswith("."):
                continue
            path = Path(top, item.name)
            try:
                key = _identity(item.stat()) if item.is_dir() else None  # follows links
            except OSError:
                continue
            if key is None:
                if item.name.lower().endswith(suffixes):
                    found.append(path)
            elif key not in walked and not (
                item.is_symlink() and _holds(os.path.realpath(path), real_root)
            ):
                walked.add(key)
                pending.append(path)
    return sorted(found, key=lambda f: f.relative_to(root).parts)


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _holds(folder: str, path: str) -> bool:
    """Whether the real folder ``folder`` is the real path ``path`` or holds it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


#: one volume read: the voxels ``(C, D, H, W)`` (a view of the file), their dtype, and whether
#: they are stored integers (divided by 255 when within 0..255).
_Voxels = tuple[np.ndarray | torch.Tensor, str, bool]


def _volume_items(path: Path, channels: int) -> Iterator[tuple[Path, _Voxels | DataError]]:
    """The volumes of the file ``path`` for a model of ``channels``: ``(name, voxels)``, or
    ``(name, error)`` for a volume that cannot be used. Raises :class:`DataError` for a file
    that cannot be read at all."""
    if path.is_dir():
        raise DataError(f"{path}: a folder, expected a volume file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        _check_channels(path, 1, channels)
        v = read_nifti(path)  # (1, D, H, W) float32
        header = read_nifti_header(path)  # read again: nibabel moves the scaling to the data
        yield path, (v, header.dtype, header.integers)
        return
    with path.open("rb") as f:
        head = f.read(len(_NPY))
    if head == _NPY:
        yield from _npy_items(path, channels)
    elif head[:4] in _ZIP:
        x = read_volumes(path, y=None).x  # (N, C', D, H, W) uint8, or float32 in [0, 1]
        _check_channels(path, int(x.shape[1]), channels)
        dtype, integers = str(x.dtype).removeprefix("torch."), x.dtype == torch.uint8
        for i in range(len(x)):
            yield Path(f"{path}[{i}]"), (x[i], dtype, integers)
    else:
        raise DataError(
            f"{path}: not a volume file (expected NIfTI named .nii or .nii.gz, .npy or .npz)"
        )


def _check_channels(path: Path, found: int, channels: int) -> None:
    if found != channels:
        raise DataError(
            f"{path} holds volumes of {found} channel{'s' * (found != 1)}; the model takes "
            f"{channels}"
        )


def _npy_items(path: Path, channels: int) -> Iterator[tuple[Path, _Voxels | DataError]]:
    """The volumes of an ``.npy`` file (see the module docstring), its header checked against
    its size and the voxel limit before it is memory-mapped."""

    def check(shape: tuple[int, ...], dtype: np.dtype[Any]) -> bool | None:
        if dtype.hasobject or dtype.kind not in "iuf":
            raise DataError(f"{path} holds {dtype} values; expected real numbers")
        return _npy_layout(path, shape, channels)

    a, stack = map_npy(path, max_volume_voxels(), check)
    dtype = a.dtype
    shape = a.shape
    integers = dtype.kind in "iu"
    if stack is None:
        yield path, (a.reshape(1, *shape) if a.ndim == 3 else a, dtype.name, integers)
        return
    if a.ndim == 4:  # (N, D, H, W)
        a = a[:, None]
    elif stack:  # (N, D, H, W, C)
        a = a.transpose(0, 4, 1, 2, 3)
    for i in range(len(a)):
        yield Path(f"{path}[{i}]"), (a[i], dtype.name, integers)


def _npy_layout(path: Path, shape: tuple[int, ...], channels: int) -> bool | None:
    """How an ``.npy`` of ``shape`` holds volumes for ``channels``: ``None`` one volume, ``False``
    a channels-first stack, ``True`` a channels-last one (see the module docstring)."""
    c = channels
    expected = (
        f"expected one volume {'(D, H, W) or ' * (c == 1)}({c}, D, H, W) or a stack "
        f"(N, {c}, D, H, W){', (N, D, H, W)' * (c == 1)} or (N, D, H, W, {c})"
    )
    if 0 in shape:
        raise DataError(f"{path} holds empty volumes, shape {shape}")
    n = len(shape)
    if (n == 3 and c == 1) or (n == 4 and shape[0] == c):
        return None
    if (n == 4 and c == 1) or (n == 5 and shape[1] == c):
        return False
    if n == 5 and shape[4] == c:
        return True
    raise DataError(
        f"{path}: shape {shape} is not a volume of {c} channel{'s' * (c != 1)}; {expected}"
    )


def _fit_volume(
    v: torch.Tensor, method: str, size: tuple[int, int, int]
) -> tuple[torch.Tensor, tuple[int, int, int], tuple[int, int, int, int, int, int]]:
    """``v`` ``(C, d, h, w)`` fitted to ``size`` ``(D, H, W)``: ``(C, D, H, W)``, the size of the
    volume inside it and the padding (see :class:`VolumeFit`)."""
    src = tuple(int(n) for n in v.shape[1:])
    if method == "stretch":
        resized = size
    else:
        s = min(1.0, *(o / n for o, n in zip(size, src)))
        resized = (
            max(1, min(size[0], round(src[0] * s))),
            max(1, min(size[1], round(src[1] * s))),
            max(1, min(size[2], round(src[2] * s))),
        )
    x = v[None]
    if resized != src:
        x = F.interpolate(x, size=resized, mode="trilinear", align_corners=False)
    before = [(o - r) // 2 for o, r in zip(size, resized)]  # (z, y, x)
    after = [o - r - b for o, r, b in zip(size, resized, before)]
    x = F.pad(x, (before[2], after[2], before[1], after[1], before[0], after[0]))
    padding = (before[2], before[1], before[0], after[2], after[1], after[0])
    return x[0].clamp_(0.0, 1.0), resized, padding


#: a volume ready to classify: its name, its voxels in [0, 1] (kept for the pictures, or None),
#: the model input and how it was made.
_Volume = tuple[Path, torch.Tensor | None, torch.Tensor, VolumeFit]


def _read_volumes(
    path: Path, in_shape: tuple[int, ...], method: str, keep: bool
) -> Iterator[_Volume | Failure]:
    """The volumes of one file, fitted (``keep``: with their voxels), or failures: one for the
    file, or one per volume that cannot be used."""
    size = (in_shape[1], in_shape[2], in_shape[3])
    try:
        for name, item in _volume_items(path, in_shape[0]):
            if isinstance(item, DataError):
                yield Failure(name, str(item))
                continue
            voxels, dtype, integers = item
            try:
                v, intensity, value_range = scale_intensity(voxels, name, integers)
            except DataError as err:
                yield Failure(name, str(err))
                continue
            x, resized, padding = _fit_volume(v, method, size)
            src = (int(v.shape[1]), int(v.shape[2]), int(v.shape[3]))
            info = VolumeFit(method, src, dtype, intensity, value_range, resized, padding)
            yield name, v if keep else None, x, info
    except DataError as err:
        yield Failure(path, str(err))
    except MemoryError:
        yield Failure(path, f"{path}: not enough memory to read the volume")
    except OSError as err:
        yield Failure(path, f"{path}: cannot read ({err.strerror or first_line(err)})")


def _predict_volumes(
    predictor: Predictor,
    paths: Sequence[str | Path],
    k: int,
    fit: str,
    pictures: _Pictures,
    names: _Names,
    batch_size: int,
) -> Iterator[Prediction | Failure]:
    """:func:`predict` for a volume model: batches of ``batch_size`` volumes, or fewer when the
    voxels kept for the pictures reach :func:`max_volume_voxels`."""
    keep = pictures.folder is not None and predictor.transformer is not None
    if keep:
        pyplot()  # refused in one line without matplotlib, before anything is read
    limit = max_volume_voxels()
    pending: list[_Volume | Failure] = []
    ready = held = 0
    for p in paths:
        for item in _read_volumes(Path(p), predictor.in_shape, fit, keep):
            pending.append(item)
            if isinstance(item, Failure):
                continue
            ready += 1
            held += 0 if item[1] is None else item[1].numel()
            if ready >= batch_size or held >= limit:
                yield from _flush(predictor, pending, k, pictures, names)
                pending, ready, held = [], 0, 0
    yield from _flush(predictor, pending, k, pictures, names)


def _flush(
    predictor: Predictor,
    pending: list[_Volume | Failure],
    k: int,
    pictures: _Pictures,
    names: _Names,
) -> Iterator[Prediction | Failure]:
    """The records of ``pending``, in order: its volumes classified in one batch."""
    batch = [item for item in pending if not isinstance(item, Failure)]
    st = predictor.transformer
    draw = None if st is None else functools.partial(_volume_pictures, st)
    records = iter(
        _classify(predictor, batch, k, pictures, names, _volume_stem, draw) if batch else []
    )
    for item in pending:
        yield item if isinstance(item, Failure) else next(records)


def _path_stem(path: Path) -> str:
    """``digit`` for ``digit.png``: the name of an image's pictures."""
    return path.stem


def _volume_stem(path: Path) -> str:
    """``scan`` for ``scan.nii.gz``, ``scan.npy``...; ``scan_3`` for ``scan.npy[3]``."""
    name, index = path.name, ""
    if name.endswith("]") and "[" in name:
        name, index = name[:-1].rsplit("[", 1)
        index = f"_{index}"
    for suffix in (*VOLUME_SUFFIXES, ".gz"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return name + index


def _volume_pictures(
    st: SpatialTransformer,
    source: torch.Tensor,
    rectified: torch.Tensor,
    params: torch.Tensor,
    info: VolumeFit,
    files: dict[str, Path],
) -> None:
    """Write ``files["rectified"]`` (the views of ``rectified`` ``(C, Do, Ho, Wo)``) and
    ``files["grid"]`` (those of the file's ``source`` ``(C, d, h, w)`` with the box the
    transformer samples for ``params`` ``(1, P)``, in the file's voxels)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(6.4, 1.9))
    draw_volume(axes, rectified)
    save_figure(fig, files["rectified"], bbox_inches="tight")
    dev = st.head.weight.device  # where the transform's buffers (TPS) live
    with torch.no_grad():
        box = output_frame(
            st.transform, params.to(dev).double(), st.in_shape[1:], st.out_size, st.align_corners
        )[0].cpu()  # (12, points, 3) model-input voxels
    box = info.to_source(box)
    fig, axes = plt.subplots(1, 4, figsize=(6.4, 1.9))
    draw_volume(axes, source, [box])
    _show_box(axes, box, info.source_size)
    save_figure(fig, files["grid"], bbox_inches="tight")


def _show_box(axes: Sequence[Any], box: torch.Tensor, size: tuple[int, int, int]) -> None:
    """Widen each view of a volume of ``size`` ``(D, H, W)`` to show ``box`` ``(12, points, 3)``
    too, up to one volume size beyond each side."""
    extent = (size[2], size[1], size[0])  # along x, y, z
    for ax, (cols, rows) in zip(axes, VIEWS.values()):
        (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()  # rows grow downwards
        margin = 0.05 * max(extent[cols], extent[rows])
        lo = box.amin((0, 1)) - margin
        hi = box.amax((0, 1)) + margin
        ax.set_xlim(
            max(min(x0, float(lo[cols])), -0.5 - extent[cols]),
            min(max(x1, float(hi[cols])), 2 * extent[cols] - 0.5),
        )
        ax.set_ylim(
            min(max(y1, float(hi[rows])), 2 * extent[rows] - 0.5),
            max(min(y0, float(lo[rows])), -0.5 - extent[rows]),
        )
