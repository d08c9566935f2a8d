"""Users' own volumes: ``.npy`` / ``.npz`` arrays of many volumes, and NIfTI files of one.

Rules of :func:`read_volumes` (the rules of :mod:`torchstn.data.arrays`, one axis more):

- ``.npz``: volumes under the name ``x``, labels under ``y`` (``y=None``: no labels), both with
  the same number of samples ``N >= 1``. ``.npy``: the volumes alone, never labels (store them
  beside the volumes in an ``.npz`` to have them). The file's first bytes say which it is, not
  its name.
- Volumes: ``(N, D, H, W)`` (one channel), ``(N, C, D, H, W)`` or ``(N, D, H, W, C)``, read as
  ``(N, C, D, H, W)``. Layout ``"auto"``: a 5-D array is channels-last when its last axis has at
  most 4 entries and axis 1 more than 4, otherwise channels-first; ``"channels_first"`` or
  ``"channels_last"`` overrides the rule (a 4-D array is always ``(N, D, H, W)``).
- Voxel values: uint8 stays uint8; other integer dtypes become uint8 when all values lie in
  0..255; float16/32/64 become float32 and must be finite and within ``[0, 1]``. Labels as in
  :func:`torchstn.data.read_arrays`.

:func:`read_nifti` reads one ``.nii`` / ``.nii.gz`` volume (needs ``nibabel``: the ``nifti``
extra) as float32 ``(1, D, H, W)``, scaled by the header's slope and intercept, not normalised;
:func:`read_nifti_header` what its header declares, without reading voxels.

Intensities: :func:`scale_intensity` brings a volume of any range to ``[0, 1]``, the one rule of
``torchstn predict`` and of NIfTI training folders (:func:`read_nifti_volumes`), so that a model
trained on a folder is given a file of it exactly as it was in training: integers within 0..255
(stored so: a NIfTI's integers without slope or intercept) are divided by 255, floats within
``[0, 1]`` taken as they are, and anything else scaled by the volume's own minimum and maximum
(``"min-max"``; a constant volume becomes 0).

Convention: NIfTI stores voxels as ``a[i, j, k]``, ``i`` along the file's x axis; torchstn reads
``(D, H, W) = (k, j, i)`` (the array transposed), so that the file's x, y and z are torchstn's
x (along W), y (along H) and z (along D): file voxel ``(i, j, k)`` is the ``(x, y, z)`` point
``(i, j, k)`` of :func:`torchstn.functional.pixel_to_normalized`. The affine (voxel to world) is not applied: voxel axes are
taken as stored, not turned to a canonical orientation, and voxel sizes are not returned.

Size limits: nothing is allocated from a size a file declares. An ``.npy`` header (or an
``.npz`` entry's, with :func:`~torchstn.data.arrays.check_member`) must declare exactly the bytes
the file holds after it, and a NIfTI header at most those its file holds (uncompressed) or
:data:`~torchstn.data.arrays.MAX_RATIO` times its size (gzipped); a file may declare at most
:func:`max_volume_voxels` voxels (:data:`MAX_VOLUME_VOXELS`; the environment variable
``TORCHSTN_MAX_VOLUME_VOXELS`` raises or lowers it), and the NIfTI files read together by
:func:`read_nifti_volumes` as many in all, counted from their headers before any is read. An
``.npy`` file is memory-mapped and copied once into the dtype it is returned in.

Anything else raises :class:`~torchstn.errors.DataError`, one line naming the file (and array).
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypeVar, cast

import numpy as np
import torch

from .._checks import env_limit
from ..errors import ConfigError, DataError, first_line
from .arrays import LAYOUTS, MAX_RATIO, _labels, _load, _open, _pixels

T = TypeVar("T")

__all__ = [
    "INTENSITY_RULES",
    "MAX_VOLUME_VOXELS",
    "NIFTI_SUFFIXES",
    "VOXELS_ENV",
    "NiftiHeader",
    "VolumeSet",
    "map_npy",
    "max_volume_voxels",
    "read_nifti",
    "read_nifti_header",
    "read_nifti_volumes",
    "read_volumes",
    "scale_intensity",
]

#: files declaring more voxels (all volumes of an ``.npy``/``.npz`` together) are refused unread.
MAX_VOLUME_VOXELS = 500_000_000
#: the environment variable that overrides :data:`MAX_VOLUME_VOXELS` (a positive whole number).
VOXELS_ENV = "TORCHSTN_MAX_VOLUME_VOXELS"
#: the names :func:`read_nifti` reads (any case).
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: how :func:`scale_intensity` brings voxels to ``[0, 1]``.
INTENSITY_RULES = ("divided by 255", "as is", "min-max")
_NPY = b"\x93NUMPY"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_SHAPES = "(N, D, H, W), (N, C, D, H, W) or (N, D, H, W, C)"


@dataclass
class VolumeSet:
    """Volumes (and their labels) read from an ``.npy`` or ``.npz`` file.

    Attributes:
        x: volumes ``(N, C, D, H, W)``, contiguous, in memory (not mapped to the file); uint8
            (0..255) if stored as integers, else float32 in ``[0, 1]``.
        y: labels ``(N,)``, int64, ``>= 0``; ``None`` for an ``.npy`` file or ``y=None``.
        num_classes: ``K`` when the labels were one-hot ``(N, K)``, else ``None``.
        where: the file and array names, for messages: ``"data.npz (x, y)"``, ``"v.npy"``.
        layout: the layout used, ``"channels_first"`` or ``"channels_last"``.
    """

    x: torch.Tensor
    y: torch.Tensor | None
    num_classes: int | None
    where: str
    layout: str


def max_volume_voxels() -> int:
    """The most voxels a file may declare: ``TORCHSTN_MAX_VOLUME_VOXELS`` if set, else
    :data:`MAX_VOLUME_VOXELS`.

    Raises:
        ConfigError: the variable is set to anything but a positive whole number.
    """
    return env_limit(VOXELS_ENV, MAX_VOLUME_VOXELS, "voxels")


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise DataError(f"{path}: a folder, expected {what}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")


def _check_count(shape: tuple[int, ...], at: str, limit: int) -> None:
    count = math.prod(shape)
    if count > limit:
        raise DataError(
            f"{at} declares shape {shape}, {count} values; at most {limit} per file "
            f"(set {VOXELS_ENV} to change the limit)"
        )


def _volume_shape(shape: tuple[int, ...], at: str, layout: str) -> str:
    """The layout that reads ``shape`` as volumes (see the module), after checking it."""
    if len(shape) not in (4, 5):
        raise DataError(f"{at}: expected volumes {_SHAPES}, got shape {shape}")
    if shape[0] == 0:
        raise DataError(f"{at} holds no volumes, shape {shape}")
    if 0 in shape:
        raise DataError(f"{at} holds empty volumes, shape {shape}")
    if len(shape) == 4 or layout == "channels_first":
        return "channels_first"
    if layout == "auto":
        return "channels_last" if shape[4] <= 4 < shape[1] else "channels_first"
    return layout


def _ncdhw(a: np.ndarray, layout: str) -> np.ndarray:
    """A view ``(N, C, D, H, W)`` of volumes ``a`` checked by :func:`_volume_shape`."""
    if a.ndim == 4:
        return a[:, None]
    return a.transpose(0, 4, 1, 2, 3) if layout == "channels_last" else a


def _header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` header at ``f`` (10,000 bytes at most:
    NumPy's limit), ``f`` left at the data.

    Raises:
        ValueError: not an ``.npy`` header, or one NumPy cannot read.
    """
    fmt = np.lib.format
    major, _ = fmt.read_magic(f)
    if major == 1:
        return fmt.read_array_header_1_0(f)
    if major in (2, 3):  # 3.0: 2.0 with UTF-8 field names
        return fmt.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy format version {major}")


def _entry_shape(data: Any, name: str) -> tuple[int, ...] | None:
    """The shape the ``.npy`` header of archive entry ``name`` declares, or ``None`` when there
    is none to read (no such entry, not ``.npy``, unreadable: :func:`_load` reports it)."""
    if name not in data.files:
        return None
    archive = data.zip
    member = name if name in archive.namelist() else f"{name}.npy"
    try:
        with archive.open(member) as f:
            return _header(f)[0]
    except (OSError, ValueError, EOFError, zlib.error, NotImplementedError, RuntimeError):
        return None


def _check_lengths(path: Path, x: str, y: str, n: int, m: int) -> None:
    if n != m:
        raise DataError(f"{path}: arrays {x!r} and {y!r} differ in length: {n} volumes, {m} labels")


def _read_npz(
    path: Path, x: str, y: str | None, layout: str, limit: int
) -> tuple[torch.Tensor, torch.Tensor | None, int | None, str]:
    """Volumes, labels, ``num_classes`` and layout: every declared shape checked before any
    array is read (then :func:`~torchstn.data.arrays.check_member` checks its bytes)."""
    at_x, at_y = f"{path}: array {x!r}", f"{path}: array {y!r}"
    with _open(path) as data:
        xs = _entry_shape(data, x)
        if xs is not None:
            _volume_shape(xs, at_x, layout)
            _check_count(xs, at_x, limit)
        ys = None if y is None else _entry_shape(data, y)
        if y is not None and xs is not None and ys is not None:
            if len(ys) == 0:
                raise DataError(f"{at_y} is a scalar; expected one label per volume")
            _check_lengths(path, x, y, xs[0], ys[0])
            _check_count(ys, at_y, limit)
        ya = None if y is None or x not in data.files else _load(data, path, y)  # the smaller
        xa = _load(data, path, x)
    used = _volume_shape(xa.shape, at_x, layout)  # the array read: its header was checked
    volumes = _pixels(_ncdhw(xa, used), at_x)
    if y is None or ya is None:
        return volumes, None, None, used
    if ya.ndim == 0:
        raise DataError(f"{at_y} is a scalar; expected one label per volume")
    _check_lengths(path, x, y, len(xa), len(ya))
    labels, num_classes = _labels(ya, at_y)
    return volumes, labels, num_classes, used


def _map(
    f: BinaryIO,
    path: Path,
    shape: tuple[int, ...],
    order: Literal["C", "F"],
    dtype: np.dtype[Any],
    offset: int,
) -> np.ndarray:
    """The array of the open ``.npy`` file ``f`` whose header was checked against its size:
    memory-mapped (a private mapping: writable, so torch takes it without a warning), or read
    where the file system cannot map it."""
    try:  # numpy's stubs want a writable file object; a private mapping needs none
        return np.memmap(cast(Any, f), dtype, "c", offset, shape, order)
    except (OSError, ValueError):
        f.seek(offset)
        a = np.fromfile(f, dtype=dtype, count=math.prod(shape))
    if a.size != math.prod(shape):  # shortened since its size was checked
        raise DataError(f"{path}: truncated while read ({a.size} of {math.prod(shape)} values)")
    return a.reshape(shape, order=order)


def map_npy(
    path: Path, limit: int, check: Callable[[tuple[int, ...], np.dtype[Any]], T]
) -> tuple[np.ndarray, T]:
    """An ``.npy`` file memory-mapped (or read) once its header is checked, and what ``check``
    said of it.

    Order of the checks: the header parses; ``check(shape, dtype)`` (the caller's dtype and
    layout rules, raising :class:`DataError`); the declared bytes equal the file's; at most
    ``limit`` values. Nothing is read before all of them pass.
    """
    with path.open("rb") as f:
        try:
            shape, fortran, dtype = _header(f)
        except (ValueError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy file ({first_line(err)})") from None
        offset, size = f.tell(), os.fstat(f.fileno()).st_size
        said = check(shape, dtype)
        declared = math.prod(shape) * dtype.itemsize
        if offset + declared != size:
            raise DataError(
                f"{path} declares shape {shape} of {dtype} ({declared} bytes), the file holds "
                f"{size - offset} after its header (corrupted, truncated or forged)"
            )
        _check_count(shape, str(path), limit)
        return _map(f, path, shape, "F" if fortran else "C", dtype, offset), said


def _read_npy(path: Path, layout: str, limit: int) -> tuple[torch.Tensor, str]:
    """Volumes and layout of an ``.npy`` file, memory-mapped once its header is checked."""
    at = str(path)

    def check(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str:
        if dtype.hasobject:
            raise DataError(
                f"{path} holds Python objects (dtype object), not loaded for safety; store numbers"
            )
        return _volume_shape(shape, at, layout)

    a, used = map_npy(path, limit, check)
    volumes = _pixels(_ncdhw(a, used), at)
    if isinstance(a, np.memmap) and np.may_share_memory(volumes.numpy(), a):
        # stored as returned: a view of the mapping, copied off the file
        volumes = volumes.clone()
    return volumes, used


def read_volumes(
    path: str | os.PathLike[str],
    *,
    x: str = "x",
    y: str | None = "y",
    layout: str = "auto",
) -> VolumeSet:
    """Read volumes ``x`` and labels ``y`` from an ``.npz`` file, or volumes from an ``.npy``.

    Volumes may be ``(N, D, H, W)``, ``(N, C, D, H, W)`` or ``(N, D, H, W, C)``; they come back
    as ``(N, C, D, H, W)``, uint8 if stored as integers in 0..255, else float32 in ``[0, 1]``.

    Convention: with ``layout="auto"`` a 5-D array is channels-last when its last axis has at
    most 4 entries and axis 1 more than 4; otherwise channels-first. ``"channels_first"`` and
    ``"channels_last"`` override the rule. A 4-D array is one channel, ``(N, D, H, W)``.

    Args:
        path: an ``.npz`` archive (read with ``allow_pickle=False``) or an ``.npy`` file holding
            only the volumes; its first bytes say which.
        x: name of the volumes array in an ``.npz``.
        y: name of the labels array in an ``.npz``: integers ``(N,)`` or ``(N, 1)`` (floats only
            if integral), or one-hot ``(N, K)``, ``K >= 2``; all ``>= 0``. ``None``: no labels.
            An ``.npy`` file has none.
        layout: one of :data:`torchstn.data.arrays.LAYOUTS`.

    Returns:
        A :class:`VolumeSet`; its ``y`` is ``None`` without labels.

    Raises:
        ConfigError: ``layout`` is not valid, or ``TORCHSTN_MAX_VOLUME_VOXELS`` is not a
            positive whole number.
        DataError: the file is missing, a folder, neither ``.npy`` nor ``.npz``, corrupted,
            truncated, larger than :func:`max_volume_voxels`, or an array is missing, of the
            wrong shape, dtype or range, or ``x`` and ``y`` differ in length; one line naming
            the file and the array.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "scans.npz"
        >>> scans = np.zeros((5, 16, 32, 32, 2), np.uint8)  # (N, D, H, W, C)
        >>> np.savez(f, scans=scans, labels=np.array([0, 1, 1, 0, 2]))
        >>> s = read_volumes(f, x="scans", y="labels")
        >>> s.x.shape, s.x.dtype, s.layout, s.y.tolist()
        (torch.Size([5, 2, 16, 32, 32]), torch.uint8, 'channels_last', [0, 1, 1, 0, 2])
        >>> np.save(f.with_suffix(".npy"), np.full((3, 8, 8, 8), 0.5))  # (N, D, H, W) float64
        >>> s = read_volumes(f.with_suffix(".npy"))
        >>> s.x.shape, s.x.dtype, s.y
        (torch.Size([3, 1, 8, 8, 8]), torch.float32, None)
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    limit = max_volume_voxels()
    path = Path(path)
    _check_file(path, "a .npy or .npz file")
    with path.open("rb") as f:
        head = f.read(len(_NPY))
    if head == _NPY:
        volumes, used = _read_npy(path, layout, limit)
        return VolumeSet(volumes, None, None, str(path), used)
    if head[:4] not in _ZIP:
        raise DataError(f"{path}: not an .npy or .npz file")
    volumes, labels, num_classes, used = _read_npz(path, x, y, layout, limit)
    names = x if y is None else f"{x}, {y}"
    return VolumeSet(volumes, labels, num_classes, f"{path} ({names})", used)


def _nibabel() -> Any:
    try:
        import nibabel  # optional: the [nifti] extra
    except ImportError:
        raise DataError("reading NIfTI needs nibabel: pip install 'torchstn[nifti]'") from None
    return nibabel


@dataclass(frozen=True)
class NiftiHeader:
    """What a NIfTI file's header declares (see :func:`read_nifti_header`).

    Attributes:
        path: the file.
        size: ``(D, H, W)`` of its volume, as :func:`read_nifti` returns it.
        dtype: the dtype its voxels are stored in (before the slope and intercept).
        integers: whether the voxels read are those stored integers (no slope or intercept):
            the ``integers`` of :func:`scale_intensity`.
    """

    path: Path
    size: tuple[int, int, int]
    dtype: str
    integers: bool


def _nifti_image(path: Path, limit: int) -> tuple[Any, tuple[int, ...]]:
    """The nibabel image of ``path`` (its header read, not its voxels) and its shape, after the
    checks of :func:`read_nifti` that need no voxel."""
    _check_file(path, "a .nii or .nii.gz file")
    gzipped = path.name.lower().endswith(".gz")
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise DataError(f"{path}: expected a NIfTI file named .nii or .nii.gz")
    nib = _nibabel()
    try:
        image = nib.load(path)  # the header only: voxels are read by get_fdata
    except _unreadable(nib) as err:
        raise DataError(f"{path}: not a readable NIfTI file ({first_line(err)})") from None
    if not isinstance(image, nib.Nifti1Image):  # NIfTI-2 images are Nifti1Image too
        raise DataError(f"{path}: not a NIfTI file (nibabel reads a {type(image).__name__})")
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise DataError(
            f"{path}: expected a 3-D volume, got a {len(shape)}-D image of shape {shape}"
        )
    if min(shape) < 1:
        raise DataError(f"{path}: declares an empty volume of shape {shape}")
    proxy = image.dataobj
    dtype = np.dtype(proxy.dtype)
    if dtype.kind not in "iuf":
        raise DataError(f"{path} holds {dtype} voxels; expected real numbers")
    offset, size = int(proxy.offset), path.stat().st_size
    declared = math.prod(shape) * dtype.itemsize
    if gzipped and offset + declared > size * MAX_RATIO:
        raise DataError(
            f"{path} declares shape {shape} of {dtype} ({declared} bytes), more than "
            f"{MAX_RATIO} times its {size} compressed bytes (corrupted or forged)"
        )
    if not gzipped and offset + declared > size:
        raise DataError(
            f"{path} declares shape {shape} of {dtype} ({declared} bytes), the file holds "
            f"{max(size - offset, 0)} after its header (corrupted, truncated or forged)"
        )
    _check_count(shape, str(path), limit)
    return image, shape


def _unreadable(nib: Any) -> tuple[type[BaseException], ...]:
    """What nibabel raises for a file it cannot read."""
    return (
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        OSError,
        EOFError,
        ValueError,
        zlib.error,
    )


def read_nifti_header(path: str | os.PathLike[str]) -> NiftiHeader:
    """What the header of a NIfTI file declares, checked as :func:`read_nifti` checks it, without
    reading its voxels (a gzipped file is decompressed only as far as its header).

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        A :class:`NiftiHeader`.

    Raises:
        DataError: as :func:`read_nifti`, save for what only the voxels show (a gzipped file
            truncated in its data, NaN or infinite values).
        ConfigError: ``TORCHSTN_MAX_VOLUME_VOXELS`` is not a positive whole number.
    """
    path = Path(path)
    image, shape = _nifti_image(path, max_volume_voxels())
    proxy = image.dataobj
    dtype = np.dtype(proxy.dtype)
    plain = float(proxy.slope) == 1 and float(proxy.inter) == 0
    return NiftiHeader(
        path, (shape[2], shape[1], shape[0]), dtype.name, dtype.kind in "iu" and plain
    )


def read_nifti(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read the volume of a NIfTI-1 or NIfTI-2 file (``.nii``, or gzipped ``.nii.gz``).

    Convention: voxel ``a[i, j, k]`` of the file is ``v[0, k, j, i]`` of the result: the file's
    x axis (``i``) runs along W, y (``j``) along H and z (``k``) along D. The affine is ignored.

    Args:
        path: the file; its header must declare a 3-D image (trailing axes of length 1 allowed,
            as in ``(X, Y, Z, 1)``) of real numbers.

    Returns:
        The volume ``(1, D, H, W)``, float32, contiguous: the stored values times the header's
        slope plus its intercept (when set), finite, not normalised.

    Raises:
        DataError: nibabel is missing (one line naming the ``nifti`` extra), or the file is
            missing, a folder, not NIfTI, not a 3-D volume, declares more voxels than it holds
            or than :func:`max_volume_voxels`, is corrupted or truncated, or holds NaN or
            infinite values; one line naming the file.
        ConfigError: ``TORCHSTN_MAX_VOLUME_VOXELS`` is not a positive whole number.
    """
    path = Path(path)
    image, shape = _nifti_image(path, max_volume_voxels())
    try:
        a = image.get_fdata(dtype=np.float32)  # (X, Y, Z, 1...), slope and intercept applied
    except _unreadable(_nibabel()) as err:
        raise DataError(f"{path}: corrupted or truncated ({first_line(err)})") from None
    finite = np.isfinite(a)
    if not finite.all():
        i = tuple(int(v) for v in np.argwhere(~finite)[0][:3])
        raise DataError(
            f"{path} holds {a.size - int(finite.sum())} NaN or infinite voxels, the first at "
            f"(i, j, k) = {i}"
        )
    a = a.reshape(shape[:3]).transpose(2, 1, 0)  # (X, Y, Z) -> (D, H, W) = (Z, Y, X)
    return torch.from_numpy(np.ascontiguousarray(a))[None]


def scale_intensity(
    voxels: np.ndarray | torch.Tensor, at: str | os.PathLike[str], integers: bool
) -> tuple[torch.Tensor, str, tuple[float, float]]:
    """A volume's voxels as float32 in ``[0, 1]`` (see the module docstring): the rule of
    ``torchstn predict`` and of NIfTI training folders.

    Args:
        voxels: ``(C, D, H, W)`` (any shape is taken), any real dtype; not changed.
        at: the volume's name, for messages.
        integers: whether the voxels are stored integers (then divided by 255 when within
            0..255; otherwise floats within ``[0, 1]`` are taken as they are).

    Returns:
        The voxels ``(C, D, H, W)`` float32 in ``[0, 1]`` (a copy), the rule applied (one of
        :data:`INTENSITY_RULES`) and ``(min, max)`` of the voxels before.

    Raises:
        DataError: NaN or infinite voxels; one line naming ``at`` and the first.

    Example:
        >>> v, rule, span = scale_intensity(torch.tensor([[-100.0, 0.0, 300.0]]), "ct", False)
        >>> v.tolist(), rule, span
        ([[0.0, 0.25, 1.0]], 'min-max', (-100.0, 300.0))
        >>> scale_intensity(np.array([0, 51, 255], np.uint8), "x", True)[1]
        'divided by 255'
    """
    if isinstance(voxels, torch.Tensor):
        v = voxels.to(torch.float32, copy=True)
    else:
        v = torch.from_numpy(np.array(voxels, dtype=np.float32))  # a copy, off the file
    bad = ~torch.isfinite(v)
    if bad.any():
        first = np.unravel_index(int(bad.view(-1).to(torch.uint8).argmax()), tuple(v.shape))
        where = ", ".join(str(int(i)) for i in first)
        raise DataError(
            f"{at} holds {int(bad.sum())} NaN or infinite voxels, the first at "
            f"(c, z, y, x) = ({where})"
        )
    lo, hi = float(v.min()), float(v.max())
    if integers and lo >= 0 and hi <= 255:
        return v.div_(255), "divided by 255", (lo, hi)
    if not integers and lo >= 0 and hi <= 1:
        return v, "as is", (lo, hi)
    scale = 1 / (hi - lo) if hi > lo else 0.0  # a constant volume: zeros
    return v.mul_(scale).sub_(lo * scale).clamp_(0, 1), "min-max", (lo, hi)


def read_nifti_volumes(
    paths: Sequence[str | os.PathLike[str]],
    where: str,
    *,
    size: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """NIfTI files of one size read as volumes in ``[0, 1]`` (:func:`scale_intensity`, each
    volume on its own): a NIfTI training folder's data.

    Every header is read and checked first, then the voxels of all files together against
    :func:`max_volume_voxels`, and only then are the files read, one at a time.

    Args:
        paths: ``.nii`` / ``.nii.gz`` files, at least one.
        where: what they are, for messages (a folder).
        size: the ``(D, H, W)`` every volume must have (a validation folder: the training
            data's); ``None``: the first file's.

    Returns:
        The volumes ``(N, 1, D, H, W)``, float32 in ``[0, 1]``, in the order of ``paths``.

    Raises:
        DataError: no file, a file :func:`read_nifti` refuses, two files of different sizes
            (naming both and their sizes), a file not of ``size``, or more voxels in all than
            the limit; one line.
        ConfigError: ``TORCHSTN_MAX_VOLUME_VOXELS`` is not a positive whole number.
    """
    limit = max_volume_voxels()
    headers = [read_nifti_header(p) for p in paths]
    if not headers:
        raise DataError(f"{where}: no NIfTI files ({', '.join(NIFTI_SUFFIXES)})")
    first = headers[0]
    if size is not None and first.size != tuple(size):
        raise DataError(
            f"{where}: volumes of size {first.size} (D, H, W) ({first.path}); expected "
            f"{tuple(size)}"
        )
    for h in headers[1:]:
        if h.size != first.size:
            raise DataError(
                f"{where}: volumes of two sizes (D, H, W), {first.path} {first.size} and "
                f"{h.path} {h.size}; the volumes of a folder need one size"
            )
    total = len(headers) * math.prod(first.size)
    if total > limit:
        raise DataError(
            f"{where}: {len(headers)} volumes of {first.size}, {total} voxels; at most {limit} "
            f"in all (set {VOXELS_ENV} to change the limit)"
        )
    out = torch.empty((len(headers), 1, *first.size), dtype=torch.float32)
    for i, h in enumerate(headers):
        v = read_nifti(h.path)  # (1, D, H, W)
        if tuple(v.shape[1:]) != h.size:
            raise DataError(f"{h.path}: changed while read (size {tuple(v.shape[1:])})")
        out[i] = scale_intensity(v, h.path, h.integers)[0]
    return out
