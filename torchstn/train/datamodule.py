"""The data a training run sees: a generated task or the user's own files, split three ways.

User data (``data.path``) comes in four kinds, told apart by the path:

* an ``.npz`` file: arrays named by ``data.arrays`` (default ``x``, ``y``), optionally with
  validation and test arrays in the same file (``val_arrays``, ``test_arrays``); read by
  :func:`torchstn.data.arrays.read_arrays` and held in memory (uint8 stays uint8);
* a folder of class folders (``root/CLASS/IMAGE``) or a ``.csv`` manifest (``path,label`` and
  optionally a box ``x0,y0,x1,y1``): image files decoded on the fly by DataLoader workers
  (:class:`torchstn.data.loader.FileSplit`), or decoded once and cached in memory when they fit
  (``data.cache``);
* volumes in an ``.npz`` file (with their labels, under the names of ``data.arrays``) or an
  ``.npy`` file (volumes only, so not trainable: refused in one line): read by
  :func:`torchstn.data.volumes.read_volumes` as ``(N, C, D, H, W)`` and held in memory. Which
  ``.npz`` holds volumes: ``data.volumes`` (see :func:`holds_volumes`);
* volumes in a folder of class folders of NIfTI files (``root/CLASS/SCAN.nii`` or ``.nii.gz``),
  listed as image folders are (:func:`~torchstn.data.listing.scan_class_folder`), all of one
  size, read whole by :func:`torchstn.data.volumes.read_nifti_volumes` as ``(N, 1, D, H, W)``
  float32, each brought to ``[0, 1]`` by the rule of ``torchstn predict``
  (:func:`~torchstn.data.volumes.scale_intensity`). ``data.volumes: true`` reads a folder so,
  ``false`` as image files, ``null`` (auto) as its files are: NIfTI or images, not both. Its
  validation and test data are such folders too (or held out of it), and a NIfTI file that
  cannot be read stops the run before training, whatever ``data.skip_bad`` says: every file is
  read at the start, so nothing is lost by stopping, and a scan left out would silently change
  the data set.

Generated volumes (a task whose ``in_shape`` is ``(C, D, H, W)``) are held as uint8, rounded to
steps of 1/255 (their digits are 8-bit): a 32^3 volume takes 32 KiB instead of 128 KiB.

Validation data: ``val_arrays`` or ``val_path`` if given, else a seeded ``val_fraction`` of the
training data (the same for every run: seeded by ``eval_seed``). Test data: ``test_arrays`` or
``test_path`` if given, else the validation data (and the run says so).

Every user-data source gets a :func:`fingerprint` (``DataModule.fingerprints``), which
``torchstn train`` records in the run's config (``data.fingerprints``, beside the absolute
paths). Reading a run's data again (resume, eval, visualize, report) refuses data whose
fingerprint differs: another file of the same name, or the file changed since.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from .. import data
from ..data.arrays import check_labels, read_arrays
from ..data.download import hash_file
from ..data.files import ImageEntry, ImageFiles, read_csv_manifest, scan_class_folder
from ..data.loader import FileSplit, TensorSplit
from ..data.volumes import NIFTI_SUFFIXES, read_nifti_volumes, read_volumes
from ..errors import ConfigError, DataError
from ..images import IMAGE_SUFFIXES, channels_of_mode, probe_image
from ..preprocess import Preprocess
from .config import DataConfig
from .distributed import launched_world_size

__all__ = ["CACHE_LIMIT_BYTES", "DataModule", "Prefetch", "Split", "holds_volumes"]

_T = TypeVar("_T")

#: ``data.cache: null`` caches image files in memory when all splits take at most this many bytes.
CACHE_LIMIT_BYTES = 1 << 30
#: images read to compute the normalisation statistics (a seeded subset of the training split).
_STATS_IMAGES = 10_000
#: image files taking at most this many bytes in all are fingerprinted by their contents, larger
#: sets by each file's name, size and modification time (see :func:`fingerprint`).
FINGERPRINT_CONTENT_LIMIT = 256 << 20
#: keys that only user data (``data.path``) takes.
_USER_KEYS = (
    "fingerprints",
    "val_path",
    "test_path",
    "arrays",
    "val_arrays",
    "test_arrays",
    "image_shape",
    "num_classes",
    "image_size",
    "channels",
    "volumes",
)
#: volumes converted to uint8 at a time (bounds the float copy of the conversion).
_UINT8_CHUNK = 1024

Split = TensorSplit | FileSplit


def fingerprint(path: Path, images: Sequence[Any] | None = None, method: str | None = None) -> str:
    """What a run records of a user-data source, to recognise it when the run's data is read again.

    * a file (``.npz``, or the ``.csv`` manifest of ``images``): the SHA-256 of its bytes;
    * image files (``images``: the :class:`~torchstn.data.files.ImageEntry` list of a class
      folder or manifest, in order): each file's path relative to the folder (the manifest's
      folder), label and box, and its bytes when the images take at most
      :data:`FINGERPRINT_CONTENT_LIMIT` in all (``content``), else its size and modification time
      (``stat``: cheap for any number of images; a copy that does not keep the times then reads
      as changed).

    Returns ``"content:HEX"`` or ``"stat:HEX"``. ``method`` forces one (a recorded fingerprint
    is compared with one made the same way, whatever the set's size now).

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
        >>> _ = f.write_bytes(b"abc")
        >>> fingerprint(f)
        'content:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    """
    h = hashlib.sha256()
    if path.is_file():
        _hash_file(h, path)
    if images is None:
        return f"content:{h.hexdigest()}"
    root = path if path.is_dir() else path.parent
    if method is None:
        total = 0
        for e in images:
            try:
                total += os.stat(e.path).st_size
            except OSError:
                pass
        method = "content" if total <= FINGERPRINT_CONTENT_LIMIT else "stat"
    for e in images:
        name = os.path.relpath(os.path.abspath(e.path), os.path.abspath(root))
        h.update(f"{name}\0{e.label}\0{e.box}\0".encode())
        try:
            st = os.stat(e.path)
            if method == "stat":
                h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
            else:
                h.update(f"{st.st_size}\0".encode())
                _hash_file(h, Path(e.path))
        except OSError:
            h.update(b"missing\0")
    return f"{method}:{h.hexdigest()}"


def _hash_file(h: Any, path: Path) -> None:
    try:
        hash_file(h, path)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def _kind(path: Path, key: str) -> str:
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise DataError(f"data.{key}: {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy", ".csv"):
        return suffix[1:]
    raise DataError(
        f"data.{key}: {path}: expected an .npz or .npy file, a folder of class folders or a .csv "
        "manifest"
    )


def _declared_shape(path: Path, name: str) -> tuple[int, ...] | None:
    """The shape the ``.npy`` header of array ``name`` of the ``.npz`` at ``path`` declares (the
    header only is read); ``None`` when there is none to read (no such array, not an archive,
    unreadable: the reader then says so in its own words)."""
    fmt = np.lib.format
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            member = name if name in names else f"{name}.npy"  # np.load's lookup
            if member not in names:
                return None
            with archive.open(member) as f:
                major, _ = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
                return tuple(int(v) for v in read(f)[0])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError):
        return None
    except RuntimeError:  # an encrypted entry: read_volumes says so
        return None


def _is_npy(path: Path) -> bool:
    """Whether ``path`` starts as an ``.npy`` file does (read_volumes' test; its name aside)."""
    try:
        with path.open("rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False  # read_volumes says why


def holds_volumes(path: Path, kind: str, x: str, setting: bool | None, layout: str) -> bool:
    """Whether the data file ``path`` (``kind`` ``"npz"`` or ``"npy"``) is read as volumes.

    The rule of ``data.volumes`` (``setting``): an ``.npy`` file always holds volumes (images
    come in an ``.npz``); otherwise ``true`` or ``false`` decides, and ``null`` (auto) reads the
    declared shape of array ``x``: 5-D is volumes, 2- and 3-D are images, and 4-D is images
    unless the image rules of :mod:`torchstn.data.arrays` (with ``layout``) would read it as
    more than 4 channels, ``(N, C, H, W)`` with ``C > 4``: that could as well be volumes
    ``(N, D, H, W)`` and is refused.

    Raises:
        ConfigError: ``data.volumes: false`` for an ``.npy`` file.
        DataError: an ambiguous 4-D array under auto; one line naming the file, array and shape.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
        >>> np.savez(f, x=np.zeros((2, 8, 8, 8), np.uint8), y=np.zeros(2, int))
        >>> holds_volumes(f, "npz", "x", True, "auto"), holds_volumes(f, "npz", "x", False, "auto")
        (True, False)
        >>> holds_volumes(f, "npz", "x", None, "auto")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchstn.errors.DataError: ...d.npz: array 'x' of shape (2, 8, 8, 8) reads as 8-channel images (N, C, H, W) or as volumes (N, D, H, W); set data.volumes: false (images) or true (volumes)
    """
    if kind == "npy":
        if setting is False:
            raise ConfigError(
                f"data.volumes: false, but {path} is an .npy file: volumes are read from .npy "
                "files, images from .npz archives only"
            )
        return True
    if setting is not None:
        return bool(setting)
    shape = _declared_shape(path, x)
    if shape is None or len(shape) != 4:
        return shape is not None and len(shape) == 5
    channels_last = layout == "channels_last" or (
        layout == "auto" and shape[3] in (1, 3, 4) and shape[1] > 4
    )
    if not channels_last and shape[1] > 4:
        raise DataError(
            f"{path}: array {x!r} of shape {shape} reads as {shape[1]}-channel images "
            "(N, C, H, W) or as volumes (N, D, H, W); set data.volumes: false (images) or true "
            "(volumes)"
        )
    return False


class DataModule:
    """Train / validation / test data for one config.

    Generated tasks give fresh training distortions every epoch (``train(epoch)``) and fixed
    validation and test sets drawn with ``eval_seed`` (the same for every run, so runs compare).

    Args:
        cfg: the data section of the config.
        seed: the run's seed (training distortions of generated tasks).
        preprocess: a run's saved :meth:`Preprocess.to_dict` (resuming, evaluating a checkpoint):
            its normalisation is reused instead of computed again.
        pin_memory: page-lock streamed batches (training on CUDA).
    """

    def __init__(
        self,
        cfg: DataConfig,
        seed: int,
        *,
        preprocess: dict[str, Any] | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.cfg = cfg
        self.seed = int(seed)
        self.test_is_val = False
        #: generated tasks: the test set's ground truth, ``{"boxes": ..., "params": ...}`` of
        #: :class:`torchstn.data.Sample` (the run report compares it with what was learned)
        self.test_truth: dict[str, Any] | None = None
        self.class_names: list[str] | None = None
        self.skipped_at_load = 0  #: unreadable images left out while caching (``skip_bad``)
        #: user data: read as volumes ``(N, C, D, H, W)`` (see :func:`holds_volumes`)
        self.volumes = False
        #: user data: volumes read from a folder of NIfTI class folders
        self.nifti = False
        #: user data: the :func:`fingerprint` of ``path``, ``val_path``, ``test_path`` (as given)
        self.fingerprints: dict[str, str] = {}
        self._pin = pin_memory
        self._fixed_train: Split | None = None
        #: generated tasks: the last training split made, with its seed (the statistics and
        #: epoch 0 share one; it is dropped before the next one is made)
        self._last_train: tuple[int, TensorSplit] | None = None
        #: the next epoch's training split, made in a background thread (:meth:`prefetch`)
        self._next_train: Prefetch[TensorSplit] | None = None
        #: seconds :meth:`train` spent making or waiting for generated training data
        self.wait_seconds = 0.0
        if cfg.task is not None and cfg.path is not None:
            raise ConfigError("data: give either 'task' or 'path', not both")
        if cfg.task is not None:
            self._setup_task()
        else:
            self._setup_user()
        self.preprocess = self._preprocess(preprocess)

    # ------------------------------------------------------------------ generated tasks
    def _setup_task(self) -> None:
        cfg = self.cfg
        used = [k for k in _USER_KEYS if getattr(cfg, k) is not None]
        if used:
            raise ConfigError(f"data.{used[0]}: only user data (data.path) takes it")
        self.task = data.get_task(str(cfg.task), **cfg.options)
        self.in_shape = tuple(int(v) for v in self.task.in_shape)
        self.num_classes = int(self.task.num_classes)
        self.name = str(cfg.task)
        self._val: Split
        self._test: Split
        self._val = self._generate("val", cfg.val_size, cfg.eval_seed)
        test = self.task.generate(split="test", num=cfg.test_size, seed=cfg.eval_seed)
        self._test = TensorSplit(_held(test.x), test.y)
        self.test_truth = {"boxes": test.boxes, "params": dict(test.params or {})}

    def _generate(self, split: str, num: int, seed: int) -> TensorSplit:
        s = self.task.generate(split=split, num=num, seed=seed)
        return TensorSplit(_held(s.x), s.y)

    # ------------------------------------------------------------------ user data
    def _setup_user(self) -> None:
        cfg = self.cfg
        if cfg.options:
            raise ConfigError("data.options: only generated tasks take options")
        path = Path(str(cfg.path))
        kind = _kind(path, "path")
        self.name = path.name
        train: Split
        one_hot: int | None = None
        if kind in ("npz", "npy"):
            self._fingerprint("path", path)
            x_name = (cfg.arrays or {}).get("x", "x")
            self.volumes = holds_volumes(path, kind, x_name, cfg.volumes, cfg.layout)
            if self.volumes and cfg.image_shape is not None:
                raise ConfigError(
                    "data.image_shape: only images stored flat take it; volumes are read in "
                    "their stored shape"
                )
            train, one_hot = self._arrays(path, cfg.arrays, "arrays")
            self.in_shape = tuple(int(v) for v in train.x.shape[1:])
            for key in ("image_size", "channels"):
                if getattr(cfg, key) is not None:
                    raise ConfigError(
                        f"data.{key}: only image files take it (arrays are as stored)"
                    )
        elif kind == "folder" and cfg.volumes is not False:
            train = self._class_folder(path)
        else:
            if cfg.volumes:
                raise ConfigError(
                    f"data.volumes: true, but data.path {path} is a manifest of image files; "
                    "volumes come in .npz or .npy files or class folders of NIfTI files"
                )
            train = self._image_files(path, kind, "path")
        val: Split | None = self._second(cfg.val_arrays, cfg.val_path, "val")
        if val is None:
            train, val = self._hold_out(train)
        test: Split | None = self._second(cfg.test_arrays, cfg.test_path, "test")
        if test is None:
            test, self.test_is_val = val, True
        self.num_classes = int(cfg.num_classes or one_hot or 0) or max(
            int(train.y.max()) + 1, len(self.class_names or [])
        )
        for split in (train, val, test):
            check_labels(split.y, self.num_classes, split.where)
        self._fixed_train, self._val, self._test = self._cache([train, val, test])

    def _arrays(
        self, path: Path, names: dict[str, str] | None, key: str
    ) -> tuple[TensorSplit, int | None]:
        names = names or {}
        x, y = names.get("x", "x"), names.get("y", "y")
        if self.volumes:
            if _is_npy(path):  # refused before its volumes are read
                raise DataError(
                    f"{path}: an .npy file holds volumes without labels; training needs them: "
                    "np.savez(FILE, x=volumes, y=labels)"
                )
            v = read_volumes(path, x=x, y=y, layout=self.cfg.layout)
            if v.y is None:  # not reached: an .npz read with a label name has them or raises
                raise DataError(f"{v.where}: no labels")
            xs, ys, num_classes, where, what = v.x, v.y, v.num_classes, v.where, "volumes"
        else:
            s = read_arrays(path, x, y, image_shape=self.cfg.image_shape, layout=self.cfg.layout)
            xs, ys, num_classes, where, what = s.x, s.y, s.num_classes, s.where, "images"
        if hasattr(self, "in_shape") and tuple(xs.shape[1:]) != self.in_shape:
            raise DataError(
                f"{where}: {what} of shape {tuple(xs.shape[1:])}, training data has {self.in_shape}"
            )
        return TensorSplit(xs, ys, where), num_classes

    def _class_folder(self, path: Path) -> Split:
        """The training folder ``path`` under ``data.volumes`` true (NIfTI files) or null (its
        files say: NIfTI volumes or image files, not both)."""
        suffixes = NIFTI_SUFFIXES if self.cfg.volumes else IMAGE_SUFFIXES + NIFTI_SUFFIXES
        entries, names = scan_class_folder(path, suffixes=suffixes)
        volumes = [e for e in entries if e.path.name.lower().endswith(NIFTI_SUFFIXES)]
        if 0 < len(volumes) < len(entries):
            image = next(e for e in entries if not e.path.name.lower().endswith(NIFTI_SUFFIXES))
            raise DataError(
                f"{path} holds NIfTI volumes ({volumes[0].path}) and image files ({image.path}); "
                "set data.volumes: true (volumes) or false (images)"
            )
        if not volumes:
            return self._image_files(path, "folder", "path", (entries, names))
        return self._nifti_folder(path, "path", (entries, names))

    def _nifti_folder(
        self,
        path: Path,
        key: str,
        listed: tuple[list[ImageEntry], list[str]] | None = None,
    ) -> TensorSplit:
        """The volumes of a folder of NIfTI class folders (``listed``: its scan, when done)."""
        cfg = self.cfg
        for name in ("arrays", "image_shape", "image_size", "channels"):
            if getattr(cfg, name) is not None:
                raise ConfigError(
                    f"data.{name}: not for NIfTI volumes, read in their stored size and one channel"
                )
        if listed is None:
            listed = scan_class_folder(path, self.class_names, suffixes=NIFTI_SUFFIXES)
        entries, names = listed
        if self.class_names is None:
            self.class_names = list(names)
        self._fingerprint(key, path, entries)
        size = None
        if hasattr(self, "in_shape"):  # validation or test: the training data's (D, H, W)
            size = (self.in_shape[1], self.in_shape[2], self.in_shape[3])
        x = read_nifti_volumes([e.path for e in entries], f"data.{key} {path}", size=size)
        self.volumes = self.nifti = True
        self.in_shape = tuple(int(v) for v in x.shape[1:])
        y = torch.tensor([e.label for e in entries], dtype=torch.int64)
        return TensorSplit(x, y, str(path))

    def _image_files(
        self,
        path: Path,
        kind: str,
        key: str,
        listed: tuple[list[ImageEntry], list[str]] | None = None,
    ) -> FileSplit:
        names: list[str] | None
        if listed is not None:
            entries, names = listed
        elif kind == "folder":
            entries, names = scan_class_folder(path, self.class_names)
        else:
            entries, names = read_csv_manifest(path, self.class_names)
        if self.class_names is None and names is not None:
            self.class_names = list(names)
        self._fingerprint(key, path, entries)
        if not hasattr(self, "in_shape"):
            mode, size = probe_image(entries[0].path)
            cfg = self.cfg
            if cfg.image_size is not None:
                size = (int(cfg.image_size[0]), int(cfg.image_size[-1]))
            channels = cfg.channels or channels_of_mode(mode)
            self.in_shape = (int(channels), int(size[0]), int(size[1]))
        c, h, w = self.in_shape
        if c not in (1, 3):
            raise DataError(
                f"data.{key} {path}: image files give 1 or 3 channels; the training data has {c}"
            )
        dataset = ImageFiles(entries, c, (h, w), self.cfg.fit)
        return FileSplit(dataset, self.cfg.num_workers, self._pin, str(path))

    def _second(self, arrays: dict[str, str] | None, path: str | None, role: str) -> Split | None:
        """Validation or test data given in the config, or None."""
        if arrays is not None:
            p = Path(str(self.cfg.path))
            if _kind(p, "path") != "npz":
                raise ConfigError(f"data.{role}_arrays: only an .npz data.path has arrays")
            return self._arrays(p, arrays, f"{role}_arrays")[0]
        if path is None:
            return None
        p = Path(str(path))
        kind = _kind(p, f"{role}_path")
        if self.nifti:
            if kind != "folder":
                raise DataError(
                    f"data.{role}_path: {p} is not a folder; the training data are NIfTI "
                    "volumes, read by their own intensity rule: give a folder of NIfTI class "
                    "folders"
                )
            return self._nifti_folder(p, f"{role}_path")
        if kind == "npy" and not self.volumes:
            raise DataError(
                f"data.{role}_path: {p} is an .npy file, which holds volumes; the training "
                "data are images"
            )
        if kind in ("npz", "npy"):
            self._fingerprint(f"{role}_path", p)
            return self._arrays(p, self.cfg.arrays, f"{role}_path")[0]
        if self.volumes:
            raise DataError(
                f"data.{role}_path: {p} holds image files; the training data are volumes "
                "(give an .npz of volumes)"
            )
        return self._image_files(p, kind, f"{role}_path")

    def _fingerprint(self, key: str, path: Path, images: Sequence[Any] | None = None) -> None:
        """Fingerprint the source of ``data.KEY``; refuse it when the run recorded another."""
        recorded = (self.cfg.fingerprints or {}).get(key)
        method = recorded.split(":", 1)[0] if recorded else None
        value = fingerprint(path, images, method if method in ("content", "stat") else None)
        if recorded is not None and value != recorded:
            raise DataError(
                f"data.{key}: {path} is not the data the run was trained on (its fingerprint "
                "differs: changed or replaced since)"
            )
        self.fingerprints[key] = value

    def _hold_out(self, full: Split) -> tuple[Split, Split]:
        """A seeded ``val_fraction`` of ``full`` as validation data (seeded by ``eval_seed``)."""
        n = len(full)
        if n < 2:
            raise DataError(f"{self.cfg.path}: need at least 2 samples, found {n}")
        gen = torch.Generator().manual_seed(self.cfg.eval_seed)
        perm = torch.randperm(n, generator=gen)
        n_val = max(1, round(n * self.cfg.val_fraction))
        vi, ti = perm[:n_val], perm[n_val:]
        where = full.where
        if isinstance(full, TensorSplit):
            return (
                TensorSplit(full.x[ti], full.y[ti], where),
                TensorSplit(full.x[vi], full.y[vi], where),
            )
        ds = full.dataset
        parts = []
        for idx in (ti, vi):
            sub = type(ds)([ds.entries[i] for i in idx.tolist()], ds.channels, ds.size, ds.fit)
            parts.append(FileSplit(sub, full.num_workers, full.pin_memory, where))
        return parts[0], parts[1]

    def _cache(self, splits: list[Split]) -> list[Split]:
        """``splits`` with their image files decoded into memory when ``data.cache`` says so
        (``null``: when they take at most :data:`CACHE_LIMIT_BYTES` as uint8, and only in a
        single process: under torchrun a cache would make every process decode every image,
        where streaming has each read only its shard)."""
        files = {id(s): s for s in splits if isinstance(s, FileSplit)}
        cache = self.cfg.cache
        if cache is None:
            small = sum(s.nbytes() for s in files.values()) <= CACHE_LIMIT_BYTES
            cache = small and launched_world_size() == 1
        if not files or not cache:
            return splits
        done: dict[int, Split] = {}
        for key, split in files.items():
            done[key], skipped = split.cache(self.cfg.skip_bad)
            self.skipped_at_load += skipped
        return [done.get(id(s), s) for s in splits]

    # ------------------------------------------------------------------ preprocessing
    def _preprocess(self, saved: dict[str, Any] | None) -> Preprocess:
        c, *size = self.in_shape  # (H, W), or (D, H, W) for volumes
        cfg = self.cfg
        if saved is not None:
            pre = Preprocess.from_dict(saved)
            if (pre.channels, *pre.size) != tuple(self.in_shape):
                raise DataError(
                    f"the run's preprocessing is for {(pre.channels, *pre.size)} inputs, its data "
                    f"now gives {tuple(self.in_shape)}"
                )
            return pre
        mean: tuple[float, ...] | None = None
        std: tuple[float, ...] | None = None
        if cfg.normalize:
            if cfg.mean is not None and cfg.std is not None:
                mean, std = tuple(cfg.mean), tuple(cfg.std)
            else:
                mean, std = self._statistics()
        return Preprocess(tuple(size), c, cfg.fit, mean, std)

    def _statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of (a seeded subset of at most 10,000) training images (or
        volumes)."""
        split = self.train(0)
        n = len(split)
        gen = torch.Generator().manual_seed(self.cfg.eval_seed)
        idx = torch.randperm(n, generator=gen)[:_STATS_IMAGES].sort().values.tolist()
        sums = torch.zeros(2, self.in_shape[0], dtype=torch.float64)
        count = 0
        for b in split.batches([idx[i : i + 500] for i in range(0, len(idx), 500)]):
            if b.bad and not self.cfg.skip_bad:
                raise DataError(b.bad[0])
            x = b.inputs(torch.device("cpu")).double()
            dims = (0, *range(2, x.dim()))  # all but the channels
            sums[0] += x.sum(dims)
            sums[1] += (x * x).sum(dims)
            count += x.numel() // x.shape[1]
        mean = sums[0] / count
        std = (sums[1] / count - mean**2).clamp_min(0).sqrt()
        if bool((std < 1e-6).any()):
            raise DataError(
                f"data.normalize: a channel of the training images is constant (std {std.tolist()}); "
                "give data.mean and data.std"
            )
        return tuple(mean.tolist()), tuple(std.tolist())

    # ------------------------------------------------------------------ splits
    def train(self, epoch: int) -> Split:
        """Training data of ``epoch`` (fresh distortions each epoch for generated tasks)."""
        if self._fixed_train is not None:
            return self._fixed_train
        seed = self._train_seed(epoch)
        if self._last_train is not None and self._last_train[0] == seed:
            return self._last_train[1]
        self._last_train = None  # free the last epoch's data before making this one's
        start = time.perf_counter()
        ahead, self._next_train = self._next_train, None
        if ahead is not None and ahead.seed == seed:
            split = ahead.result()  # its error, if generating failed, is raised here
        else:
            split = self._generate("train", self.cfg.train_size, seed)
        self.wait_seconds += time.perf_counter() - start
        self._last_train = (seed, split)
        return split

    def _train_seed(self, epoch: int) -> int:
        return data.epoch_seed(self.seed, epoch if self.cfg.fresh else 0)

    def prefetch(self, epoch: int) -> bool:
        """Start making the training split of ``epoch`` in a background thread, for
        :meth:`train` to take when that epoch starts (generated tasks with fresh distortions; a
        no-op otherwise, returning False). The split is the one :meth:`train` would make: the
        same seed, the same task, so a run trains on the same data with or without it."""
        if self._fixed_train is not None or not self.cfg.fresh:
            return False
        seed = self._train_seed(epoch)
        if self._next_train is not None and self._next_train.seed == seed:
            return True
        self._next_train = Prefetch(
            seed, lambda: self._generate("train", self.cfg.train_size, seed)
        )
        return True

    def eval_split(self, split: str) -> Split:
        if split == "val":
            return self._val
        if split == "test":
            return self._test
        if split == "train":
            return self.train(0)
        raise ConfigError(f"split: expected train, val or test, got {split!r}")

    def info(self) -> dict[str, Any]:
        """What a checkpoint records about the data (``data_info``)."""
        return {
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "name": self.name,
            "preprocess": self.preprocess.to_dict(),
        }


class Prefetch(Generic[_T]):
    """One value (a split) made in a daemon thread: a run that stops does not wait for it to
    finish; :meth:`result` waits for it and raises what making it raised."""

    def __init__(self, seed: int, make: Callable[[], _T]) -> None:
        self.seed = seed
        self._make = make
        self._split: _T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="torchstn-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._split = self._make()
        except BaseException as e:  # handed to the training thread by result()
            self._error = e

    def result(self) -> _T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._split is not None
        return self._split


def _held(x: torch.Tensor) -> torch.Tensor:
    """Generated ``x`` as a split holds it: images as they are (float32), volumes ``(N, C, D, H,
    W)`` as uint8 rounded to steps of 1/255 (4x less memory; converted in chunks)."""
    if x.dim() != 5:
        return x
    out = torch.empty(x.shape, dtype=torch.uint8)
    for i in range(0, x.shape[0], _UINT8_CHUNK):
        out[i : i + _UINT8_CHUNK] = x[i : i + _UINT8_CHUNK].mul(255.0).round_()
    return out
