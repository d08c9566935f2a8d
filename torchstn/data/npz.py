"""Samples as ``.npz`` files: arrays ``x``, ``y``, ``boxes``, ``param_<name>`` and a JSON
``manifest``.

Files are written atomically (see :mod:`torchstn._atomic`) and reproducibly: the archive
entries carry a fixed timestamp, so the same sample and manifest give the same bytes.

Reading (here and in :mod:`torchstn.data.arrays`) never allocates what an archive merely
declares: before NumPy reads an array, :func:`torchstn.data.arrays.check_member` compares the
shape its ``.npy`` header declares with the bytes its archive entry holds, and those with the
compressed bytes in the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_path
from ..errors import DataError
from .arrays import _READ_ERRORS, MAX_CLASSES, check_member
from .sample import Sample, full_boxes

__all__ = ["PARAM_PREFIX", "load_npz", "read_manifest", "save_npz"]

#: prefix of the archive entries holding ``Sample.params``.
PARAM_PREFIX = "param_"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(
    sample: Sample,
    path: str | os.PathLike[str],
    manifest: dict[str, Any] | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Write a :class:`Sample` (and an optional JSON-serialisable ``manifest``) to ``path``.

    Args:
        sample: the data.
        path: the ``.npz`` file, replaced atomically.
        manifest: stored as the JSON string ``manifest`` (see :func:`read_manifest`).
        compress: deflate the arrays (smaller, slower).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "s.npz"
        >>> s = Sample(torch.zeros(2, 1, 3, 3), torch.tensor([0, 1]), full_boxes(2, 3, 3))
        >>> load_npz(save_npz(s, f, {"task": "demo"})).y.tolist(), read_manifest(f)
        ([0, 1], {'task': 'demo'})
    """
    arrays: dict[str, np.ndarray] = {
        "x": sample.x.cpu().numpy(),
        "y": sample.y.cpu().numpy(),
        "boxes": sample.boxes.cpu().numpy(),
    }
    for name, value in sample.params.items():
        arrays[PARAM_PREFIX + name] = value.cpu().numpy()
    if manifest is not None:
        arrays["manifest"] = np.array(json.dumps(manifest, sort_keys=True))
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=method) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
    return Path(path)


def _open(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None


def _array(data: Any, path: Path, key: str) -> np.ndarray:
    try:
        check_member(data, path, key)
        return np.asarray(data[key])
    except _READ_ERRORS as err:
        raise DataError(f"{path}: array {key!r} is corrupted or truncated ({err})") from None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest stored by :func:`save_npz` (``None`` if the file has none)."""
    path = Path(path)
    with _open(path) as data:
        if "manifest" not in data.files:
            return None
        try:
            return dict(json.loads(str(_array(data, path, "manifest"))))
        except (ValueError, TypeError) as err:
            raise DataError(f"{path}: manifest is not a JSON object ({err})") from None


def _images(x: np.ndarray, path: Path) -> torch.Tensor:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(f"{path}: 'x' must have shape (N, C, H, W) or (N, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32) / 255.0)
    if x.dtype.kind != "f":
        raise DataError(
            f"{path}: 'x' must be uint8 (0..255) or floating point in [0, 1], got {x.dtype}"
        )
    t = torch.from_numpy(x.astype(np.float32))
    if t.numel() and not (bool(torch.isfinite(t).all()) and t.min() >= 0 and t.max() <= 1):
        raise DataError(
            f"{path}: floating-point 'x' must lie in [0, 1], found values in "
            f"[{float(t.min())}, {float(t.max())}] (store uint8 0..255, or scale the images)"
        )
    return t


def load_npz(path: str | os.PathLike[str]) -> Sample:
    """Read a :class:`Sample` from an ``.npz`` file holding at least ``x`` and ``y``.

    ``x`` may be ``(N, C, H, W)`` or ``(N, H, W)``, uint8 (0..255, scaled to ``[0, 1]``) or
    floating point in ``[0, 1]``; ``y`` integer ``(N,)``; ``boxes`` ``(N, 4)`` is optional
    (default: the whole image); arrays ``param_<name>`` become ``params[name]``.

    Raises:
        DataError: the file is missing, unreadable, lacks ``x`` or ``y``, or holds arrays of the
            wrong shape or dtype; the message names the file and the array.
    """
    path = Path(path)
    with _open(path) as data:
        missing = [k for k in ("x", "y") if k not in data.files]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(data.files) or 'none'})"
            )
        x = _images(_array(data, path, "x"), path)
        n, _, h, w = x.shape
        y = _array(data, path, "y")
        if y.shape != (n,) or y.dtype.kind not in "iu":
            raise DataError(f"{path}: 'y' must be integer of shape ({n},), got {y.dtype} {y.shape}")
        if n and y.min() < 0:
            raise DataError(f"{path}: 'y' holds negative labels")
        if n and y.max() >= MAX_CLASSES:
            raise DataError(
                f"{path}: 'y' holds label {y.max()}; class indices must be below {MAX_CLASSES} "
                "(torchstn.data.arrays.MAX_CLASSES)"
            )
        if "boxes" in data.files:
            boxes = _array(data, path, "boxes")
            if boxes.shape != (n, 4) or boxes.dtype.kind not in "iuf":
                raise DataError(f"{path}: 'boxes' must have shape ({n}, 4), got {boxes.shape}")
            box_t = torch.from_numpy(boxes.astype(np.float32))
        else:
            box_t = full_boxes(n, h, w)
        params = {}
        for key in data.files:
            if key.startswith(PARAM_PREFIX):
                value = _array(data, path, key)
                if value.ndim == 0 or value.shape[0] != n:
                    raise DataError(
                        f"{path}: {key!r} must have leading dimension {n}, got {value.shape}"
                    )
                params[key[len(PARAM_PREFIX) :]] = torch.from_numpy(value.copy())
    return Sample(x, torch.from_numpy(y.astype(np.int64)), box_t, params)
