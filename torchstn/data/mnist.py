"""MNIST, offline and verified: locating, checking and decoding the four original IDX files.

Lookup order for the folder that holds the files of a split (gzipped ``NAME.gz`` or raw ``NAME``):

1. the ``root`` argument, if given;
2. the folder named by the environment variable ``TORCHSTN_MNIST``, if set;
3. the repository's ``data/mnist`` folder (present in a source checkout; the files are vendored);
4. the user cache ``$XDG_CACHE_HOME/torchstn/mnist`` (``~/.cache/torchstn/mnist`` by default).

Where none of them has both files of the split, they are downloaded from the public mirrors
into ``root`` (or ``TORCHSTN_MNIST``, or the user cache): each file is bounded by its known size,
checked against its md5 and sha256, and written atomically (:func:`torchstn.data.download.download`;
:func:`download_mnist` fetches all four ahead, for a machine that will have no network). Where
that fails too, a one-line :class:`~torchstn.errors.DataError` names the folders searched, says
whether there was no network, and where to copy the files. Every file is checked
against the md5 of the original release before it is decoded (``verify=False`` skips this, for
look-alike data sets such as Fashion-MNIST that use the same file names). Decoded arrays are
cached in memory for the life of the process.

Splits: ``"train"`` is the 60,000-image training file, ``"test"`` the 10,000-image test file.
(The task generators hold out the last 10,000 training images for validation; see
:mod:`torchstn.data.tasks`.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .._checks import check_choice
from ..errors import DataError
from . import download as _download
from .download import md5sum
from .idx import read_idx

__all__ = [
    "ENV_VAR",
    "FILES",
    "MIRRORS",
    "download_mnist",
    "find_mnist",
    "load_mnist",
    "search_dirs",
]

#: environment variable naming a folder that holds the MNIST files.
ENV_VAR = "TORCHSTN_MNIST"

#: public mirrors of the original release (those common libraries use), tried in order.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: seconds to wait for a mirror to connect or send (a firewall that drops packets silently costs
#: this much per mirror before the one-line "no network" error).
TIMEOUT = 15.0

#: split -> (images file, labels file), without the ``.gz`` suffix.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: file (without ``.gz``) -> (md5 of the ``.gz``, md5 of the decompressed file).
MD5 = {
    "train-images-idx3-ubyte": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    "train-labels-idx1-ubyte": (
        "d53e105ee54ea40749a09fcbcd1e9432",
        "a25bea736e30d166cdddb491f175f624",
    ),
    "t10k-images-idx3-ubyte": (
        "9fb629c4189551a2d022fa330f9573f3",
        "2646ac647ad5339dbf082846283269ea",
    ),
    "t10k-labels-idx1-ubyte": (
        "ec29112dd5afa0611ce80d1b7f02629c",
        "27ae3e4e09519cfbb04c329615203637",
    ),
}

#: file (without ``.gz``) -> (bytes, sha256) of the ``.gz``: a download stops at that size.
GZ = {
    "train-images-idx3-ubyte": (
        9912422,
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train-labels-idx1-ubyte": (
        28881,
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "t10k-images-idx3-ubyte": (
        1648877,
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "t10k-labels-idx1-ubyte": (
        4542,
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}

#: the repository's vendored copy (exists in a source checkout only).
REPO_DIR = Path(__file__).resolve().parents[2] / "data" / "mnist"

_FileKey = tuple[str, int, int]
_DECODED: dict[tuple[_FileKey, _FileKey], tuple[torch.Tensor, torch.Tensor]] = {}
_VERIFIED: set[_FileKey] = set()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torchstn" / "mnist"


def search_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for the MNIST files, in lookup order (see the module docstring).

    Example:
        >>> search_dirs("/data/mnist")[0]
        PosixPath('/data/mnist')
    """
    dirs = []
    if root is not None:
        dirs.append(Path(root).expanduser())
    env = os.environ.get(ENV_VAR)
    if env:
        dirs.append(Path(env).expanduser())
    dirs.extend((REPO_DIR, _cache_dir()))
    return list(dict.fromkeys(dirs))


def _existing(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _download_dir(root: str | os.PathLike[str] | None) -> Path:
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else _cache_dir()


def _fetch(name: str, target: Path) -> Path:
    """Download ``name.gz`` into ``target`` from the first mirror that serves the right bytes."""
    size, sha256 = GZ[name]
    urls = [m + f"{name}.gz" for m in MIRRORS]
    return _download.download(
        urls, target / f"{name}.gz", MD5[name][0], timeout=TIMEOUT, sha256=sha256, size=size
    )


def _not_found(split: str, dirs: list[Path], target: Path, why: str) -> DataError:
    """The one-line error of :func:`find_mnist`: where it looked, why it could not download, and
    what to do."""
    shown = [d for d in dirs if d != REPO_DIR or d.is_dir()]  # no checkout folder when installed
    where = ", ".join(str(d) for d in shown)
    wanted = " and ".join(f"{n}.gz" for n in FILES[split])
    return DataError(
        f"MNIST {split} files not found in {where}; {why}: copy the four MNIST .gz files (this "
        f"needs {wanted}) into {target} or pass --root FOLDER (or set {ENV_VAR}=FOLDER)"
    )


def find_mnist(
    split: str = "train", root: str | os.PathLike[str] | None = None, download: bool = True
) -> tuple[Path, Path]:
    """Locate (downloading if needed) the images and labels files of a split.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a folder to look in first (and to download into).
        download: allow downloading when no folder has the files.

    Returns:
        ``(images_path, labels_path)`` (not yet verified; :func:`load_mnist` verifies).

    Raises:
        DataError: the files are nowhere and could not be downloaded; one line naming the folders
            searched, why there was no download (no network, or each mirror's failure) and where
            to copy the files.
    """
    check_choice(split, "split", FILES)
    names = FILES[split]
    dirs = search_dirs(root)
    for folder in dirs:
        found = [_existing(folder, n) for n in names]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    target = _download_dir(root)
    if not download:
        raise _not_found(split, dirs, target, "downloading is disabled (download=False)")
    try:
        paths = [_existing(target, name) or _fetch(name, target) for name in names]
    except _download.DownloadError as err:
        why = "no network to download them" if err.unreachable else f"{err}"
        raise _not_found(split, dirs, target, why) from None
    return paths[0], paths[1]


def download_mnist(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Download the four MNIST files into ``root`` (default: ``TORCHSTN_MNIST``, else the user
    cache) where they are missing or fail their checksum; the files there that pass are kept.

    For a machine that will have no network: download here, then copy the folder there (or
    point ``TORCHSTN_MNIST`` at it).

    Returns:
        The four ``.gz`` paths, train images and labels, then test.

    Raises:
        DataError: a file could not be downloaded (the message says why, one line).
    """
    target = _download_dir(root)
    paths = []
    for name in (*FILES["train"], *FILES["test"]):
        path = target / f"{name}.gz"
        if not (path.is_file() and md5sum(path) == MD5[name][0]):
            try:
                _fetch(name, target)
            except _download.DownloadError as err:
                why = "no network" if err.unreachable else str(err)
                raise DataError(
                    f"MNIST: could not download {name}.gz into {target}: {why}"
                ) from None
        paths.append(path)
    return paths


def _key(path: Path) -> _FileKey:
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _verify(path: Path) -> None:
    key = _key(path)
    if key in _VERIFIED:
        return
    name = path.name.removesuffix(".gz")
    if name not in MD5:
        raise DataError(f"{path}: not an MNIST file name (expected one of {', '.join(MD5)})")
    expected = MD5[name][0 if path.name.endswith(".gz") else 1]
    actual = md5sum(path)
    if actual != expected:
        raise DataError(
            f"{path}: md5 checksum mismatch (expected {expected}, got {actual}); the file is "
            f"corrupted or truncated: delete it and fetch it again from {MIRRORS[0]}{name}.gz"
        )
    _VERIFIED.add(key)


def load_mnist(
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load an MNIST split, verified against the original release's checksums.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        root: a folder to look in first; see the module docstring for the lookup order.
        download: allow downloading from the canonical mirrors when no folder has the files.
        verify: check each file's md5 (turn off only for look-alike data sets).

    Returns:
        ``images`` uint8 ``(N, 28, 28)`` and ``labels`` int64 ``(N,)`` (fresh copies: modify freely).

    Raises:
        DataError: a file is missing, truncated, corrupted or fails its checksum (the message names
            it).
        UnknownNameError: ``split`` is not ``"train"`` or ``"test"``.

    Example:
        >>> images, labels = load_mnist("test")
        >>> images.shape, images.dtype, labels[:5].tolist()
        (torch.Size([10000, 28, 28]), torch.uint8, [7, 2, 1, 0, 4])
    """
    images, labels = _load_cached(split, root, download=download, verify=verify)
    return images.clone(), labels.clone()


def _load_cached(
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_mnist` without the defensive copy (callers must not modify the result)."""
    images_path, labels_path = find_mnist(split, root, download)
    key = (_key(images_path), _key(labels_path))
    if verify:
        _verify(images_path)
        _verify(labels_path)
    cached = _DECODED.get(key)
    if cached is not None:
        return cached
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
            f"{images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels for the {images.shape[0]} images of "
            f"{images_path.name}"
        )
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    result = (torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
    _DECODED[key] = result
    return result
