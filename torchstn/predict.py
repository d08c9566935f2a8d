"""Classifying image files with a trained model (a checkpoint) or its ONNX export.

:func:`open_predictor` opens a checkpoint (file or run folder) or an ONNX file; :func:`predict`
reads each image with :mod:`torchstn.images` (any format and mode Pillow opens, converted to the
model's channels, transparency over black, fitted by ``"pad"`` or ``"stretch"``), classifies the
images in batches and yields one :class:`Prediction` (or :class:`Failure`) per file, whose
:meth:`Prediction.to_dict` is the JSON line of ``torchstn predict``. The image-reading names
(:func:`read_image`, :class:`Fit`, :func:`find_images`, ``FITS``, ``IMAGE_SUFFIXES``) are
re-exported here.

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

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from ._atomic import atomic_path
from ._checks import check_choice
from .errors import DataError, InvalidInputError
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

__all__ = [
    "FITS",
    "IMAGE_SUFFIXES",
    "Failure",
    "Fit",
    "Prediction",
    "Predictor",
    "find_images",
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
        in_shape: ``(C, H, W)`` of its inputs.
        num_classes: number of classes.
        class_names: names of the classes, or ``None``.
        transformer: the first spatial transformer (for an ONNX file, rebuilt from its config
            without weights: only its geometry is used), or ``None``.
        backend: ``"torch"`` or ``"onnxruntime"``.
        run: ``(B, C, H, W)`` CPU tensor -> ``(logits (B, K), params (B, P) or None)`` on the CPU.
        fit: how the model's training fitted images to its size (``"pad"`` or ``"stretch"``):
            what :func:`predict` uses unless told otherwise.
    """

    in_shape: tuple[int, int, int]
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
    checked, ``open_file()`` loads the file and returns what runs it (a ``(B, C, H, W)`` CPU
    batch -> its outputs, in the metadata's order, on the CPU)."""
    if not meta:
        raise DataError(f"{path}: no torchstn metadata; write the file with torchstn export")
    if meta.get("part") != "model":
        raise DataError(f"{path}: exports the {meta.get('part')} part; predict needs --part model")
    try:
        c, h, w = (int(v) for v in meta["in_shape"])
        outputs = list(meta["outputs"])
        names = meta.get("class_names")
        num_classes = int(meta["num_classes"])
        config = meta.get("config")
        fit = str((meta.get("preprocess") or {}).get("fit", "pad"))
        if "logits" not in outputs:
            raise ValueError(f"outputs {outputs} without logits")
        if min(c, h, w) < 1 or c * h * w > MAX_INPUT_VALUES or num_classes < 1:
            raise ValueError(f"in_shape {c}x{h}x{w}, num_classes {num_classes}")
        if names is not None and len(names) != num_classes:
            raise ValueError(f"{len(names)} class names for {num_classes} classes")
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: incomplete torchstn metadata ({err})") from None
    st = None
    if "params" in outputs and config is not None:
        st = _geometry(path, meta["model"], (c, h, w), num_classes, config)
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
        (c, h, w),
        num_classes,
        None if names is None else tuple(str(n) for n in names),
        st,
        backend,
        run,
        fit,
    )


def _geometry(
    path: Path, name: Any, in_shape: tuple[int, int, int], num_classes: int, config: Any
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
    """The record of one image (:meth:`to_dict` is its JSON line)."""

    path: Path
    top_k: list[tuple[int, str | None, float]]  #: ``(class, name, confidence)``, best first
    transform: str | None
    params: list[float] | None
    fit: Fit
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
    """An image that could not be read."""

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

    Args:
        predictor: from :func:`open_predictor`.
        paths: image files (see :func:`find_images` for folders).
        top_k: classes listed per image (at most ``num_classes``).
        fit: ``"pad"`` or ``"stretch"`` (see the module docstring); ``None``: as the model was
            trained (:attr:`Predictor.fit`).
        out_dir: if given, write ``STEM_rectified.png`` (the first transformer's output: what the
            classifier sees, before any pooling) and ``STEM_grid.png`` (the image with the border
            of the sampled region drawn, the model's padding black around it and, in grey, any
            sampled area beyond the model's input) for models with a transformer. A folder that
            cannot be created raises before any image is read; a picture that cannot be written
            (a full disk) does not stop the predictions: that record's ``output_error`` says why,
            and no picture is written from there on (the later records say so too).
        batch_size: images run at once.

    Raises:
        DataError: ``out_dir`` cannot be created.
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
    size = predictor.in_shape[1:]
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
        preds = iter(_classify(predictor, batch, k, pictures, names) if batch else [])
        for r in results:
            yield next(preds) if r is None else r


def _classify(
    predictor: Predictor,
    batch: list[tuple[Path, torch.Tensor, torch.Tensor, Fit]],
    k: int,
    pictures: _Pictures,
    names: _Names,
) -> list[Prediction]:
    x = torch.stack([b[2] for b in batch])  # (B, C, H, W)
    logits, params = predictor.run(x)
    probs = logits.double().softmax(-1)
    conf, idx = probs.topk(k, dim=-1)
    st = predictor.transformer
    rectified = None
    out = pictures.folder
    if out is not None and st is not None and params is not None:
        with torch.no_grad():
            dev = st.head.weight.device
            rectified = st.transform_input(x.to(dev), params.to(dev, x.dtype)).cpu()
    records = []
    for i, (path, source, _, info) in enumerate(batch):
        top = [
            (int(c), None if predictor.class_names is None else predictor.class_names[int(c)], p)
            for c, p in zip(idx[i].tolist(), conf[i].tolist())
        ]
        outputs: dict[str, str] | None = None
        output_error = None
        if out is not None and pictures.error is not None:
            output_error = pictures.failed(None)
        elif out is not None:
            outputs = {}
            if rectified is not None and st is not None and params is not None:
                stem = names(path.stem)
                files = {
                    "rectified": out / f"{stem}_rectified.png",
                    "grid": out / f"{stem}_grid.png",
                }
                try:
                    _save_png(_to_pil(rectified[i]), files["rectified"])
                    pixels = _in_source_pixels(source, info)  # a large file comes shrunk
                    with torch.no_grad():
                        polygon = pixels.to_source(_outline(st, params[i : i + 1].double()))
                    picture = _draw_outline(source, pixels, predictor.in_shape[1:], polygon)
                    _save_png(picture, files["grid"])
                    outputs = {key: str(value) for key, value in files.items()}
                except (DataError, OSError) as err:
                    outputs, output_error = None, pictures.failed(err)
        records.append(
            Prediction(
                path=path,
                top_k=top,
                transform=None if st is None or params is None else st.transform.name,
                params=None if params is None else params[i].tolist(),
                fit=info,
                outputs=outputs,
                output_error=output_error,
            )
        )
    return records
