"""Applying a trained registration run to users' files (``torchstn register``).

:func:`open_registration` loads the model of a ``torchstn train`` run whose config says
``objective.name: registration`` (:mod:`torchstn.inference`: checkpoint, best or last weights);
:func:`register_files` registers each moving file onto one fixed file and writes, per moving
file, four files atomically (:mod:`torchstn._atomic`) into the output folder:

* ``STEM_warped``: the moving image warped onto the fixed one, at the fixed image's size, in
  the moving file's format family: PNG for images, NIfTI (``.nii`` or ``.nii.gz``, as the
  moving file) with the fixed file's affine and header for NIfTI inputs (the moving file's when
  the fixed one is not NIfTI), ``.npy`` otherwise. Intensities are the moving file's units:
  the ``[0, 1]`` values the model reads (:func:`torchstn.data.volumes.scale_intensity`) are
  warped and mapped back (times 255, as they are, or back from min-max), so that what lies
  outside the moving image reads as its background (0, or its minimum for a min-max file).
* ``STEM_field``: the displacement in pixels (voxels) at the fixed image's size,
  ``warped = fields.warp(moving, field)``. ``.npy``: ``(N, *spatial)`` in torchstn's
  convention (channels ``x, y[, z]``, x along W) or, with ``field_convention``, MONAI's
  (:func:`torchstn.fields.to_monai_ddf`: channels in index order) or voxelmorph's
  (:func:`torchstn.fields.to_voxelmorph`, channels last as its scripts save warps:
  ``(*spatial, N)`` in index order). NIfTI: ``(X, Y, Z, 3)`` (intent ``vector``) with the
  components along the file's voxel axes ``i, j, k``: torchstn's ``x, y, z`` and also the
  index order of the arrays MONAI and voxelmorph load from the file with nibabel, so the three
  conventions write the same file. Voxels, not millimetres: the affine is not applied.
* ``STEM_jacobian``: :func:`torchstn.fields.jacobian_determinant` of that field (``.npy``, or
  NIfTI ``(X, Y, Z)`` for NIfTI inputs).
* ``STEM.json``: the record (:meth:`Registered.to_dict`): the share of folded pixels
  (:func:`torchstn.fields.folded_share`, 0 to 1), the Jacobian's min, max, mean and std
  (``torch.std``, unbiased), the seconds the registration took (model, field back to the
  file's size, warp; no file reading or writing), the sizes and each file's fit.

Inputs are read as ``torchstn predict`` reads them (:mod:`torchstn.predict`): a model of images
``(C, H, W)`` takes image files (any format Pillow opens; the model's channels, quantised to 8
bits, :mod:`torchstn.images`) and ``.npy`` arrays ``(H, W)`` or ``(C, H, W)`` (intensities as
volumes'); a model of volumes ``(C, D, H, W)`` takes NIfTI, ``.npy`` and ``.npz`` volumes (a
stack's volumes are ``FILE[i]``). The moving and the fixed image must have the same size; a size
other than the model's is fitted as ``predict`` fits it (``fit``: ``"pad"`` or ``"stretch"``,
default the run's): the model's field is cropped to where the image lies in the model input
and resized to the file's size with :func:`torchstn.fields.resize` (units rescaled), so every
output is at the file's size. A file that cannot be used (unreadable, truncated, declaring a
huge size, a link loop, a size other than the fixed image's) is one :class:`Failure`; the
other files are still registered.

Example:
    >>> import tempfile, numpy as np
    >>> from torchstn.models import create_model
    >>> from torchstn.fields import warp
    >>> net = create_model("reg_unet", (1, 8, 8), 0, enc=(4,), dec=(4, 4))
    >>> folder = tempfile.mkdtemp()
    >>> _ = [np.save(f"{folder}/{n}.npy", np.random.rand(8, 8)) for n in ("m", "f")]
    >>> reg = Registrar(net, (1, 8, 8), "pad")
    >>> (rec,) = register_files(reg, [f"{folder}/m.npy"], f"{folder}/f.npy", out_dir=folder)
    >>> sorted(rec.outputs)
    ['field', 'jacobian', 'record', 'warped']
    >>> u = torch.from_numpy(np.load(rec.outputs["field"]))[None]
    >>> m = torch.from_numpy(np.load(f"{folder}/m.npy")).float()[None, None]
    >>> bool(torch.allclose(torch.from_numpy(np.load(rec.outputs["warped"])), warp(m, u)[0]))
    True
"""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_write, atomic_write_bytes, atomic_write_text
from .._checks import check_choice
from ..data.volumes import (
    _NPY,
    NIFTI_SUFFIXES,
    _nibabel,
    map_npy,
    read_nifti_header,
    scale_intensity,
)
from ..errors import DataError, InvalidInputError, first_line
from ..fields import folded_share, jacobian_determinant, resize, to_monai_ddf, to_voxelmorph, warp
from ..images import FITS, IMAGE_SUFFIXES, Fit, _read_source, _resize_pad, max_image_pixels
from ..images import _fit as _fit_image
from ..inference import inference_device, load_with_info
from ..predict import (
    VOLUME_SUFFIXES,
    Failure,
    VolumeFit,
    _Names,
    _read_volumes,
    _save_png,
    _scan,
    _to_pil,
    _volume_stem,
)
from .data import _one_file
from .evaluate import register

__all__ = [
    "FIELD_CONVENTIONS",
    "Failure",
    "Registered",
    "Registrar",
    "find_inputs",
    "open_registration",
    "register_files",
]

#: how the saved field's channels are laid out (see the module docstring).
FIELD_CONVENTIONS = ("torchstn", "monai", "voxelmorph")


@dataclass
class Registrar:
    """A registration model ready to apply.

    Attributes:
        model: ``forward(moving, fixed) -> (warped, field, params)`` (``reg_unet``,
            ``reg_affine``), in eval mode.
        in_shape: ``(C, H, W)`` or ``(C, D, H, W)`` of one image.
        fit: how the run fitted its data (``"pad"`` or ``"stretch"``): the default fit.
        atlas: the run's one fixed image, when its data recorded one (a NIfTI folder with
            ``atlas.nii[.gz]`` in atlas mode), else ``None``.
        device: where the model runs.
        about: what the records say of the model (run, model name, weights, epoch).
    """

    model: nn.Module
    in_shape: tuple[int, ...]
    fit: str = "pad"
    atlas: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    about: dict[str, Any] = field(default_factory=dict)


def open_registration(run: str | Path, *, weights: str = "best", device: str = "cpu") -> Registrar:
    """The :class:`Registrar` of a registration run (its folder or ``checkpoint.pt``).

    Raises:
        DataError: missing or unreadable checkpoint (:func:`torchstn.inference.load_with_info`).
        InvalidInputError: the run is not a registration run (one line naming its objective).
    """
    dev = inference_device(device)
    model, info = load_with_info(run, weights, dev)
    cfg = info.config
    if cfg.objective.name != "registration":
        raise InvalidInputError(
            f"{run}: a {cfg.objective.name} run; register takes a registration run "
            "(objective.name: registration)"
        )
    atlas = None
    mode = (cfg.objective.options or {}).get("mode", "atlas")
    if cfg.data.path is not None and mode == "atlas":
        try:
            atlas = _one_file(Path(str(cfg.data.path)), "atlas")
        except (DataError, OSError):
            atlas = None
    about = {
        "run": str(info.path.parent),
        "model": info.model_name,
        "weights": info.weights,
        "epoch": info.weights_epoch,
    }
    return Registrar(model, info.in_shape, info.preprocess.fit, atlas, dev, about)


# ----------------------------------------------------------------------------------- inputs
@dataclass
class _Input:
    """One image or volume read: its name, its pixels ``(C, *size)`` in ``[0, 1]``, the model
    input ``(C, *model size)``, the fit, how to map ``[0, 1]`` back to the file's units
    (``rule``, ``span``: :func:`scale_intensity`'s; ``None`` for image files) and the family
    of its outputs (``png``, ``npy`` or ``nifti``)."""

    name: Path
    source: torch.Tensor
    x: torch.Tensor
    fit: Fit | VolumeFit
    rule: str | None
    span: tuple[float, float]
    family: str

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.source.shape[1:])

    def restore(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in ``[0, 1]`` units back in the file's units."""
        lo, hi = self.span
        if self.rule == "divided by 255":
            return t * 255.0
        if self.rule == "min-max":
            return t * (hi - lo) + lo
        return t


def find_inputs(inputs: Sequence[str | Path], volumes: bool) -> list[Path]:
    """Files named in ``inputs``, folders replaced by the files of the model's kind in them
    (images and ``.npy``, or :data:`~torchstn.predict.VOLUME_SUFFIXES`): recursively, sorted,
    hidden files skipped, links to folders followed once and never in a loop (as
    :func:`torchstn.predict.find_volumes`). Named files are kept whatever their suffix."""
    suffixes = VOLUME_SUFFIXES if volumes else (*IMAGE_SUFFIXES, ".npy")
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        found += _scan(p, suffixes) if p.is_dir() else [p]
    return found


def _checked(path: Path, what: str) -> None:
    """Refuse, in one line, a folder or a path that cannot be looked at (a link loop)."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or first_line(err)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a file, expected {what}")


def _is_npy(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(len(_NPY)) == _NPY


def _npy_image(path: Path, in_shape: tuple[int, ...], method: str) -> _Input:
    """An ``.npy`` image ``(H, W)`` (one channel) or ``(C, H, W)`` for a model of images."""
    c = in_shape[0]

    def check(shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        if dtype.hasobject or dtype.kind not in "iuf":
            raise DataError(f"{path} holds {dtype} values; expected real numbers")
        if 0 in shape or not ((len(shape) == 2 and c == 1) or (len(shape) == 3 and shape[0] == c)):
            want = f"(H, W) or ({c}, H, W)" if c == 1 else f"({c}, H, W)"
            raise DataError(f"{path}: shape {shape} is not an image; expected {want}")

    a, _ = map_npy(path, max_image_pixels() * c, check)
    v, rule, span = scale_intensity(a.reshape(c, *a.shape[-2:]), path, a.dtype.kind in "iu")
    size = (int(v.shape[1]), int(v.shape[2]))
    info = Fit(method, size, a.dtype.name, rule, size, (0, 0, 0, 0))
    x, info = _resize_pad(v, info, (in_shape[1], in_shape[2]))
    return _Input(path, v, x, info, rule, span, "npy")


def _read(path: Path, in_shape: tuple[int, ...], method: str) -> Iterator[_Input | Failure]:
    """The inputs of one file (a stack gives several), or failures."""
    volumes = len(in_shape) == 4
    try:
        _checked(path, "a volume file" if volumes else "an image or .npy file")
        if volumes:
            nifti = path.name.lower().endswith(NIFTI_SUFFIXES)
            for item in _read_volumes(path, in_shape, method, keep=True):
                if isinstance(item, Failure):
                    yield item
                    continue
                name, v, x, info = item
                assert v is not None  # keep=True
                family = "nifti" if nifti else "npy"
                yield _Input(name, v, x, info, info.intensity, info.source_range, family)
            return
        if _is_npy(path):
            yield _npy_image(path, in_shape, method)
            return
        source, fit = _read_source(path, in_shape[0], method, None, fast=False)
        x, fit = _fit_image(source, fit, (in_shape[1], in_shape[2]))
        yield _Input(path, source, x, fit, None, (0.0, 1.0), "png")
    except DataError as err:
        yield Failure(path, str(err))
    except MemoryError:
        yield Failure(path, f"{path}: not enough memory to read it")
    except OSError as err:
        yield Failure(path, f"{path}: cannot read ({err.strerror or first_line(err)})")


def _read_fixed(path: Path, in_shape: tuple[int, ...], method: str) -> _Input:
    items = list(_read(path, in_shape, method))
    if len(items) != 1:
        raise DataError(f"--fixed {path}: holds {len(items)} volumes; expected one")
    (item,) = items
    if isinstance(item, Failure):
        raise DataError(item.message)
    return item


# ----------------------------------------------------------------------------------- fields
def _placement(fit: Fit | VolumeFit) -> tuple[list[int], list[int]]:
    """Where the image lies in the model input, per tensor axis (``(H, W)`` or ``(D, H, W)``):
    the padding before it and its resized extent."""
    if isinstance(fit, VolumeFit):
        left, top, front = fit.padding[:3]
        return [front, top, left], list(fit.resized)
    left, top = fit.padding[0], fit.padding[1]
    return [top, left], list(fit.resized)


def _to_file_size(u: torch.Tensor, fit: Fit | VolumeFit, size: Sequence[int]) -> torch.Tensor:
    """The model's field ``u`` ``(1, N, *model size)`` at the file's ``size``: cropped to where
    the image lies in the model input, then resized with its units rescaled. The model input's
    pixel ``q`` and the file's ``p`` are related by one scale and shift per axis, so the file's
    displacement is the model's at ``q(p)`` divided by that scale: what the resize computes."""
    before, extent = _placement(fit)
    crop = u[(slice(None), slice(None), *(slice(b, b + e) for b, e in zip(before, extent)))]
    return resize(crop.contiguous(), tuple(size))


# ----------------------------------------------------------------------------------- records
@dataclass
class Registered:
    """The record of one moving file (:meth:`to_dict` is its JSON line and its ``.json`` file).

    Attributes:
        moving: the moving file (``FILE[i]`` for a volume of a stack).
        fixed: the fixed file.
        outputs: ``warped``, ``field``, ``jacobian`` and ``record``: the files written.
        field_convention: one of :data:`FIELD_CONVENTIONS`.
        size: the fixed (and moving) image's size, ``(H, W)`` or ``(D, H, W)``: the outputs'.
        model_size: the model's.
        fit: how the moving file was fitted to the model (``Fit`` or ``VolumeFit``); the fixed
            file's is ``fixed_fit``.
        folded_share: the share (0 to 1) of pixels whose Jacobian determinant is ``<= 0``.
        jacobian: ``min``, ``max``, ``mean`` and ``std`` of the determinant.
        seconds: the registration's time (model, field to the file's size, warp).
        model: the run, the model's name, the weights and their epoch.
    """

    moving: Path
    fixed: Path
    outputs: dict[str, str]
    field_convention: str
    size: tuple[int, ...]
    model_size: tuple[int, ...]
    fit: Fit | VolumeFit
    fixed_fit: Fit | VolumeFit
    folded_share: float
    jacobian: dict[str, float]
    seconds: float
    model: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        resized = self.size != self.model_size
        return {
            "moving": str(self.moving),
            "fixed": str(self.fixed),
            "outputs": dict(self.outputs),
            "field": {
                "convention": self.field_convention,
                "units": "pixels",
                "resized": (
                    "cropped to the image in the model input, fields.resize to the file's size "
                    "(units rescaled)"
                    if resized
                    else None
                ),
            },
            "size": list(self.size),
            "model_size": list(self.model_size),
            "fit": self.fit.to_dict(),
            "fixed_fit": self.fixed_fit.to_dict(),
            "folded_share": self.folded_share,
            "jacobian": dict(self.jacobian),
            "seconds": self.seconds,
            "model": dict(self.model),
        }


# ----------------------------------------------------------------------------------- writing
def _suffix(item: _Input) -> str:
    if item.family == "png":
        return ".png"
    if item.family == "nifti":
        return ".nii.gz" if item.name.name.lower().endswith(".gz") else ".nii"
    return ".npy"


def _save_npy(path: Path, a: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(a)))


def _nifti_header(fixed: _Input, moving: _Input) -> Any:
    """The nibabel image whose affine and header the NIfTI outputs take: the fixed file's, or
    the moving file's when the fixed one is not NIfTI."""
    nib = _nibabel()
    source = fixed if fixed.family == "nifti" else moving
    read_nifti_header(source.name)  # checked again: it may have changed since it was read
    return nib.load(source.name)


def _save_nifti(path: Path, a: np.ndarray, like: Any, vector: bool = False) -> None:
    """``a`` in the file's axes ``(X, Y, Z[, 3])`` as NIfTI with ``like``'s affine and header."""
    header = like.header.copy()
    header.set_data_dtype(np.float32)
    image = type(like)(np.ascontiguousarray(a, dtype=np.float32), like.affine, header)
    image.header.set_slope_inter(1.0, 0.0)
    if vector:
        image.header.set_intent("vector")
    data = image.to_bytes()
    atomic_write_bytes(path, gzip.compress(data, 6) if path.name.endswith(".gz") else data)


def _field_array(u: torch.Tensor, convention: str) -> np.ndarray:
    """The ``.npy`` array of a torchstn field ``(1, N, *spatial)`` in ``convention``."""
    if convention == "monai":
        u = to_monai_ddf(u)
    elif convention == "voxelmorph":
        u = to_voxelmorph(u, channels_last=True)
    return u[0].numpy()


def _write(
    folder: Path,
    stem: str,
    moving: _Input,
    fixed: _Input,
    warped: torch.Tensor,
    u: torch.Tensor,
    det: torch.Tensor,
    convention: str,
) -> dict[str, str]:
    """Write the warped image, the field and the Jacobian of one moving input."""
    files = {
        "warped": folder / f"{stem}_warped{_suffix(moving)}",
        "field": folder / f"{stem}_field{'.nii.gz' if moving.family == 'nifti' else '.npy'}",
        "jacobian": folder / f"{stem}_jacobian{'.nii.gz' if moving.family == 'nifti' else '.npy'}",
    }
    if moving.family == "png":
        _save_png(_to_pil(warped), files["warped"])
    elif moving.family == "npy":
        _save_npy(files["warped"], moving.restore(warped).numpy())
    else:
        like = _nifti_header(fixed, moving)
        # (D, H, W) tensors -> the file's (X, Y, Z) axes (NIfTI volumes have one channel)
        _save_nifti(files["warped"], moving.restore(warped)[0].permute(2, 1, 0).numpy(), like)
        _save_nifti(files["field"], u[0].permute(3, 2, 1, 0).numpy(), like, vector=True)
        _save_nifti(files["jacobian"], det[0].permute(2, 1, 0).numpy(), like)
        return {k: str(v) for k, v in files.items()}
    _save_npy(files["field"], _field_array(u, convention))
    _save_npy(files["jacobian"], det[0].numpy())
    return {k: str(v) for k, v in files.items()}


# ----------------------------------------------------------------------------------- register
def register_files(
    registrar: Registrar,
    moving: Sequence[str | Path],
    fixed: str | Path | None = None,
    *,
    out_dir: str | Path,
    fit: str | None = None,
    field_convention: str = "torchstn",
) -> Iterator[Registered | Failure]:
    """Register each moving file onto ``fixed`` and write its outputs into ``out_dir`` (see the
    module docstring): one :class:`Registered` or :class:`Failure` per moving image, in order (a
    stack of volumes gives one per volume).

    Args:
        registrar: from :func:`open_registration`.
        moving: image or volume files (:func:`find_inputs` for folders).
        fixed: the fixed file; ``None``: the run's atlas (:attr:`Registrar.atlas`).
        out_dir: the output folder (created).
        fit: ``"pad"`` or ``"stretch"``; ``None``: the run's.
        field_convention: one of :data:`FIELD_CONVENTIONS` (``.npy`` fields).

    Raises:
        InvalidInputError: no ``fixed`` and no atlas in the run, an unknown ``fit`` or
            convention.
        DataError: the fixed file cannot be used, or ``out_dir`` cannot be created.
    """
    method = registrar.fit if fit is None else check_choice(fit, "fit", FITS)
    convention = check_choice(field_convention, "field_convention", FIELD_CONVENTIONS)
    if fixed is None:
        if registrar.atlas is None:
            raise InvalidInputError("--fixed: required (this run records no atlas to register to)")
        fixed = registrar.atlas
    shape = registrar.in_shape
    target = _read_fixed(Path(fixed), shape, method)
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{folder}: cannot create the output folder ({err.strerror or err})"
        ) from None
    names = _Names()
    dev = registrar.device
    fixed_x = target.x[None].to(dev)
    for path in moving:
        for item in _read(Path(path), shape, method):
            if isinstance(item, Failure):
                yield item
                continue
            if item.size != target.size or item.source.shape[0] != target.source.shape[0]:
                yield Failure(
                    item.name,
                    f"{item.name}: size {item.size}, the fixed image's {target.size}; register "
                    "images of one size",
                )
                continue
            yield _one(registrar, item, target, fixed_x, folder, names, convention)


def _one(
    registrar: Registrar,
    item: _Input,
    target: _Input,
    fixed_x: torch.Tensor,
    folder: Path,
    names: _Names,
    convention: str,
) -> Registered | Failure:
    start = time.perf_counter()
    with torch.no_grad():
        _, u_model, _ = register(registrar.model, item.x[None].to(fixed_x.device), fixed_x)
        u = _to_file_size(u_model.float().cpu(), item.fit, item.size)  # (1, N, *size)
        warped = warp(item.source[None], u)[0]  # (C, *size) in [0, 1] units
    seconds = time.perf_counter() - start
    det = jacobian_determinant(u)  # (1, *size)
    flat = det.flatten().double()
    stem = names(_volume_stem(item.name) if item.family != "png" else item.name.stem)
    try:
        outputs = _write(folder, stem, item, target, warped, u, det, convention)
        record = Registered(
            item.name,
            target.name,
            {**outputs, "record": str(folder / f"{stem}.json")},
            convention,
            item.size,
            tuple(registrar.in_shape[1:]),
            item.fit,
            target.fit,
            float(folded_share(u)[0]),
            {
                "min": float(flat.min()),
                "max": float(flat.max()),
                "mean": float(flat.mean()),
                "std": float(flat.std()) if flat.numel() > 1 else 0.0,
            },
            seconds,
            registrar.about,
        )
        atomic_write_text(folder / f"{stem}.json", json.dumps(record.to_dict(), indent=2) + "\n")
    except DataError as err:
        return Failure(item.name, str(err))
    except OSError as err:
        return Failure(item.name, f"{folder}: cannot write ({err.strerror or first_line(err)})")
    return record
