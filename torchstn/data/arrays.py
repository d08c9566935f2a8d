"""Users' own ``.npz`` files, read in the shapes and under the names they come in.

Rules of :func:`read_arrays`:

- Arrays are looked up by name (``x`` for the images, ``y`` for the labels); they must have the
  same number of samples ``N >= 1``.
- Images: ``(N, H, W)`` (one channel), ``(N, C, H, W)``, ``(N, H, W, C)``, or flat ``(N, D)``
  with ``image_shape`` ``[C, H, W]`` (or ``[H, W]``, meaning ``C = 1``) whose product is ``D``.
  Flat rows are in ``(C, H, W)`` order, or ``(H, W, C)`` order with ``layout="channels_last"``.
- Layout ``"auto"``: a 4-D array is channels-last when its last axis has 1, 3 or 4 entries and
  axis 1 has more than 4; otherwise it is channels-first. ``"channels_first"`` or
  ``"channels_last"`` overrides the rule. Flat and 3-D arrays read under ``"auto"`` count as
  channels-first.
- Pixel values: uint8 stays uint8 (0..255); other integer dtypes are cast to uint8 when all
  values lie in 0..255; float16/32/64 become float32 and must be finite and within ``[0, 1]``.
- Labels: integers ``(N,)`` or ``(N, 1)``, floats only if integral (``3.0``), or one-hot
  ``(N, K)`` with ``K >= 2`` (ints, bools or floats; one 1 per row, zeros elsewhere). All >= 0
  and below :data:`MAX_CLASSES` (one-hot: ``K <= MAX_CLASSES``), checked in the stored dtype.
- Nothing is allocated from a size an archive declares: :func:`check_member` checks each array's
  entry before NumPy reads it (see there).

Anything else raises :class:`~torchstn.errors.DataError` naming the file and the array.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError

__all__ = [
    "LAYOUTS",
    "MAX_CLASSES",
    "MAX_RATIO",
    "ArraySet",
    "check_labels",
    "check_member",
    "read_arrays",
]

#: the accepted values of ``layout``.
LAYOUTS = ("auto", "channels_first", "channels_last")
#: class indices must be below this (a label's value sizes the model's output layer).
MAX_CLASSES = 100_000
#: the most bytes an archive entry may hold per compressed byte (deflate's limit is about 1032:1;
#: an entry declaring more is refused before it is read).
MAX_RATIO = 1100
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # a compression method zipfile lacks
    RuntimeError,  # an encrypted entry
)


@dataclass
class ArraySet:
    """One split read from an ``.npz`` file.

    Attributes:
        x: images ``(N, C, H, W)``, contiguous; uint8 (0..255) if stored as integers, else
            float32 in ``[0, 1]``.
        y: labels ``(N,)``, int64, ``>= 0``.
        num_classes: ``K`` when the labels were one-hot ``(N, K)``, else ``None``.
        where: the file and array names, for messages: ``"data.npz (x, y)"``.
        layout: the layout used, ``"channels_first"`` or ``"channels_last"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int | None
    where: str
    layout: str


def _image_shape(image_shape: Sequence[int] | None) -> list[int] | None:
    if image_shape is None:
        return None
    try:
        dims = [int(d) for d in image_shape if not isinstance(d, bool) and d == int(d)]
        ok = len(dims) == len(image_shape) and len(dims) in (2, 3) and min(dims) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"image_shape: expected [C, H, W] or [H, W] of positive ints, got {image_shape!r}"
        )
    return dims


def _open(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open("rb") as f:
            head = f.read(6)
        if head[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            hint = "; it holds one .npy array, save x and y with np.savez" * (head == b"\x93NUMPY")
            raise DataError(f"{path}: not an .npz (zip) archive{hint}")
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None


def check_member(data: Any, path: Path, key: str) -> None:
    """Refuse array ``key`` of the open ``np.load`` archive ``data`` (read from ``path``) when
    reading it would allocate more than the file holds.

    Its archive entry must hold at most its compressed size times :data:`MAX_RATIO`, the
    compressed size at most the file's, and its ``.npy`` header must declare exactly the bytes
    the entry holds after the header. An entry that is not ``.npy`` (NumPy reads it as bytes, now
    bounded) or holds Python objects (NumPy refuses it unread) is left to NumPy.

    Raises:
        DataError: one line naming the file and the array, what it declares and what it holds.
        zipfile.BadZipFile, OSError, ValueError...: the entry cannot be read (the caller's
            "corrupted or truncated" message).
    """
    archive = data.zip
    name = key if key in archive.namelist() else f"{key}.npy"  # as NpzFile looks it up
    info = archive.getinfo(name)
    where = f"{path}: array {key!r}"
    if info.compress_size > path.stat().st_size:
        raise DataError(
            f"{where} declares {info.compress_size} compressed bytes, the file has "
            f"{path.stat().st_size} (corrupted or truncated)"
        )
    if info.file_size > max(info.compress_size, 1) * MAX_RATIO:
        raise DataError(
            f"{where} declares {info.file_size} bytes in {info.compress_size} compressed bytes, "
            f"more than {MAX_RATIO} times as many (corrupted or forged)"
        )
    fmt = np.lib.format
    with archive.open(name) as f:
        magic = f.read(len(fmt.MAGIC_PREFIX) + 2)
        if magic[: len(fmt.MAGIC_PREFIX)] != fmt.MAGIC_PREFIX:
            return
        if magic[-2:] == b"\x01\x00":
            shape, _, dtype = fmt.read_array_header_1_0(f)  # headers: 10,000 bytes at most
        elif magic[-2:] in (b"\x02\x00", b"\x03\x00"):  # 3.0: 2.0 with UTF-8 field names
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            return  # NumPy refuses the version
        offset = f.tell()
    if dtype.hasobject:
        return
    declared = math.prod(shape) * dtype.itemsize
    if offset + declared != info.file_size:
        raise DataError(
            f"{where} declares shape {shape} of {dtype} ({declared} bytes), its archive entry "
            f"holds {max(info.file_size - offset, 0)} (corrupted, truncated or forged)"
        )


def _load(data: Any, path: Path, name: str) -> np.ndarray:
    if name not in data.files:
        raise DataError(f"{path}: no array {name!r} (found: {', '.join(data.files) or 'none'})")
    try:
        check_member(data, path, name)
        value = data[name]
    except _READ_ERRORS as err:
        if "allow_pickle" in str(err):
            why = "holds Python objects (dtype object), not loaded for safety; store numbers"
        else:
            why = f"is corrupted or truncated ({err})"
        raise DataError(f"{path}: array {name!r} {why}") from None
    if not isinstance(value, np.ndarray):
        raise DataError(f"{path}: entry {name!r} is not a NumPy array")
    return value


def _auto(a: np.ndarray, layout: str) -> str:
    if layout == "auto":
        last = a.ndim == 4 and a.shape[3] in (1, 3, 4) and a.shape[1] > 4
        return "channels_last" if last else "channels_first"
    return layout


def _nchw(a: np.ndarray, at: str, dims: list[int] | None, layout: str) -> np.ndarray:
    """A view ``(N, C, H, W)`` of ``a`` (a copy only where NumPy cannot reshape in place)."""
    want = None if dims is None else (1, *dims) if len(dims) == 2 else tuple(dims)
    last = layout == "channels_last"
    if a.ndim == 2:
        d = a.shape[1]
        if want is None:
            raise DataError(
                f"{at} holds flat images of {d} values (N, D); set data.image_shape to "
                f"[C, H, W] or [H, W]"
            )
        c, h, w = want
        if c * h * w != d:
            raise DataError(
                f"{at} holds flat images of {d} values; image_shape {dims} has {c * h * w}"
            )
        return a.reshape(-1, h, w, c).transpose(0, 3, 1, 2) if last else a.reshape(-1, c, h, w)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        a = a.transpose(0, 3, 1, 2) if last else a
    else:
        raise DataError(
            f"{at} must have shape (N, H, W), (N, C, H, W), (N, H, W, C) or flat (N, D), "
            f"got {a.shape}"
        )
    if want is not None and a.shape[1:] != want:
        raise DataError(
            f"{at} holds images of (C, H, W) = {a.shape[1:]} read as {layout}; "
            f"image_shape {dims} expects {want}"
        )
    if 0 in a.shape:
        raise DataError(f"{at} holds empty images, shape {a.shape}")
    return a


def _pixels(a: np.ndarray, at: str) -> torch.Tensor:
    """uint8 or float32 ``(N, C, H, W)``, contiguous: at most one copy of ``a``."""
    if a.dtype.kind == "f":
        lo, hi = a.min(), a.max()
        if not (lo >= 0 and hi <= 1):  # also true for NaN
            found = "NaN" if np.isnan(lo) or np.isnan(hi) else f"values in [{lo}, {hi}]"
            raise DataError(
                f"{at} ({a.dtype}) holds {found}; floating-point images must be finite and lie "
                f"in [0, 1] (store uint8 0..255, or scale the images)"
            )
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if a.dtype.kind in "iu":
        if a.dtype != np.uint8 and (a.min() < 0 or a.max() > 255):
            raise DataError(
                f"{at} ({a.dtype}) holds values in [{a.min()}, {a.max()}]; store uint8 (0..255) "
                f"or floats in [0, 1]"
            )
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))
    raise DataError(f"{at} has dtype {a.dtype}; store uint8 (0..255) or floats in [0, 1]")


def _number(value: Any) -> str:
    """A label for messages: integers exactly, integral floats without their ``.0`` (``-3``,
    ``1e+19``)."""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e16 else f"{v:g}"


def _labels(a: np.ndarray, at: str) -> tuple[torch.Tensor, int | None]:
    one_hot = a.ndim == 2 and a.shape[1] >= 2
    if a.dtype.kind not in "biuf" or (a.dtype.kind == "b" and not one_hot):
        raise DataError(f"{at} has dtype {a.dtype}; labels must be integers")
    if one_hot:
        ok = ((a == 0) | (a == 1)).all(axis=1) & ((a == 1).sum(axis=1) == 1)
        if not ok.all():
            i = int(np.argmin(ok))
            row = f" {a[i].tolist()}" if a.shape[1] <= 10 else ""
            raise DataError(
                f"{at} of shape {a.shape} must hold one-hot rows (a single 1, zeros elsewhere); "
                f"row {i}{row} is not"
            )
        if a.shape[1] > MAX_CLASSES:
            raise DataError(
                f"{at} of shape {a.shape} holds one-hot rows of {a.shape[1]} classes; at most "
                f"{MAX_CLASSES} (torchstn.data.arrays.MAX_CLASSES)"
            )
        return torch.from_numpy(a.argmax(axis=1).astype(np.int64)), a.shape[1]
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise DataError(f"{at} must have shape (N,), (N, 1) or one-hot (N, K), got {a.shape}")
    if a.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
        if bad.size:
            raise DataError(f"{at} holds non-integer label {a[bad[0]]} at index {bad[0]}")
    if a.size and a.min() < 0:  # checked in the stored dtype: a cast could wrap around
        i = int(np.argmax(a < 0))
        raise DataError(
            f"{at} holds negative label {_number(a[i])} at index {i}; labels must be >= 0"
        )
    if a.size and a.max() >= MAX_CLASSES:
        i = int(np.argmax(a >= MAX_CLASSES))
        raise DataError(
            f"{at} holds label {_number(a[i])} at index {i}; class indices must be below "
            f"{MAX_CLASSES} (torchstn.data.arrays.MAX_CLASSES)"
        )
    y = a.astype(np.int64)
    return torch.from_numpy(y), None


def read_arrays(
    path: str | os.PathLike[str],
    x: str = "x",
    y: str = "y",
    *,
    image_shape: Sequence[int] | None = None,
    layout: str = "auto",
) -> ArraySet:
    """Read images ``x`` and labels ``y`` from the ``.npz`` file ``path``.

    Images may be ``(N, H, W)``, ``(N, C, H, W)``, ``(N, H, W, C)`` or flat ``(N, D)``; they come
    back as ``(N, C, H, W)``, uint8 if stored as integers in 0..255, else float32 in ``[0, 1]``.

    Convention: with ``layout="auto"`` a 4-D array is channels-last when its last axis has 1, 3
    or 4 entries and axis 1 has more than 4; otherwise channels-first. ``"channels_first"`` and
    ``"channels_last"`` override the rule; for flat images, ``"channels_last"`` means each row
    is ``H * W * C`` values in ``(H, W, C)`` order, else ``(C, H, W)`` order.

    Args:
        path: the ``.npz`` file (read with ``allow_pickle=False``).
        x: name of the images array.
        y: name of the labels array: integers ``(N,)`` or ``(N, 1)`` (floats only if integral),
            or one-hot ``(N, K)``, ``K >= 2``; all ``>= 0``.
        image_shape: ``[C, H, W]`` or ``[H, W]`` (``C = 1``); needed for flat images, checked
            against the others.
        layout: one of :data:`LAYOUTS`.

    Returns:
        An :class:`ArraySet`; ``num_classes`` is ``K`` for one-hot labels, else ``None``.

    Raises:
        ConfigError: ``layout`` or ``image_shape`` is not valid.
        DataError: the file is missing or unreadable, an array is missing, corrupted, of the
            wrong shape, dtype or range, or ``x`` and ``y`` differ in length or are empty; the
            message names the file and the array.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "their.npz"
        >>> images = np.zeros((5, 28, 28, 3), np.uint8)  # (N, H, W, C)
        >>> np.savez(f, train_images=images, train_labels=np.eye(10)[[0, 1, 2, 3, 9]])
        >>> s = read_arrays(f, "train_images", "train_labels")
        >>> s.x.shape, s.x.dtype, s.layout, s.y.tolist(), s.num_classes
        (torch.Size([5, 3, 28, 28]), torch.uint8, 'channels_last', [0, 1, 2, 3, 9], 10)
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    dims = _image_shape(image_shape)
    path = Path(path)
    with _open(path) as data:
        xa, ya = _load(data, path, x), _load(data, path, y)
    for name, a in ((x, xa), (y, ya)):
        if a.ndim == 0:
            raise DataError(f"{path}: array {name!r} is a scalar; expected one entry per sample")
    if len(xa) != len(ya):
        raise DataError(
            f"{path}: arrays {x!r} and {y!r} differ in length: {len(xa)} images, {len(ya)} labels"
        )
    if len(xa) == 0:
        raise DataError(f"{path}: arrays {x!r} and {y!r} hold no samples")
    used, at = _auto(xa, layout), f"{path}: array {x!r}"
    images = _pixels(_nchw(xa, at, dims, used), at)
    labels, num_classes = _labels(ya, f"{path}: array {y!r}")
    return ArraySet(images, labels, num_classes, f"{path} ({x}, {y})", used)


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """Raise :class:`DataError` if a label of ``y`` ``(N,)`` lies outside ``0..num_classes-1``.

    The message names ``where`` and the first offending label and index.

    Example:
        >>> check_labels(torch.tensor([0, 12]), 10, "val.npz (x, y)")
        Traceback (most recent call last):
        ...
        torchstn.errors.DataError: val.npz (x, y): label 12 at index 1 is out of range for 10 classes
    """
    flat = y.reshape(-1)
    bad = torch.nonzero((flat < 0) | (flat >= num_classes))
    if len(bad):
        i = int(bad[0, 0])
        raise DataError(
            f"{where}: label {int(flat[i])} at index {i} is out of range for {num_classes} classes"
        )
