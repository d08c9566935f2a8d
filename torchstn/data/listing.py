"""Which image files make a data set: class folders and CSV manifests, as :class:`ImageEntry` lists.

* a class folder, as torchvision's ``ImageFolder``: ``root/CLASS/.../IMAGE``, each non-hidden
  sub-folder of ``root`` a class (labels: indices of the sorted names), its images found
  recursively and sorted by relative path (:func:`scan_class_folder`);
* a CSV manifest with a header row, columns ``path,label`` and optionally ``x0,y0,x1,y1``
  (:func:`read_csv_manifest`).

:class:`torchstn.data.files.ImageFiles` reads the entries (this module's names are also
importable from :mod:`torchstn.data.files`).

Convention: a box is ``(x0, y0, x1, y1)`` in pixel edges, ``(0, 0, W, H)`` being a whole
``H x W`` image (as :func:`torchstn.data.sample.full_boxes`), in the file's pixels after its EXIF
rotation.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("dog/b.png", "dog/a.png", "cat/x/c.jpg", "cat/.hidden.png"):
    ...     (root / name).parent.mkdir(parents=True, exist_ok=True)
    ...     (root / name).touch()
    >>> entries, classes = scan_class_folder(root)
    >>> classes, [(e.path.relative_to(root).as_posix(), e.label) for e in entries]
    (['cat', 'dog'], [('cat/x/c.jpg', 0), ('dog/a.png', 1), ('dog/b.png', 1)])
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..images import IMAGE_SUFFIXES

__all__ = ["ImageEntry", "read_csv_manifest", "scan_class_folder"]

_BOX = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class ImageEntry:
    """One image file: its path, class index and optional box (file pixels, see the module)."""

    path: Path
    label: int
    box: tuple[float, float, float, float] | None = None


def scan_class_folder(
    root: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[ImageEntry], list[str]]:
    """The images of ``root/CLASS/.../IMAGE`` (see the module docstring), and the class names.

    Files ending in :data:`torchstn.images.IMAGE_SUFFIXES` (any case) are images; hidden files
    and folders (``.name``) are skipped; symbolic links are followed.

    Args:
        root: the folder.
        class_names: the classes to label with (validation and test folders use the training
            classes): every sub-folder must be one of them, some may be missing. ``None``: the
            sorted sub-folder names (one without images stays a class, so labels do not shift).

    Returns:
        The entries (class by class, files sorted by their path in the class folder) and the
        class names.

    Raises:
        DataError: ``root`` is not a folder, has no image, or has a class not in ``class_names``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = folders if class_names is None else [str(c) for c in class_names]
    index = {name: i for i, name in enumerate(classes)}
    entries: list[ImageEntry] = []
    for name in folders:
        if name not in index:
            raise DataError(
                f"{root / name}: class {name!r} is not among the training classes "
                f"({', '.join(classes)})"
            )
        found = []
        for top, dirs, files in os.walk(root / name, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [
                Path(top, f)
                for f in files
                if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
            ]
        found.sort(key=lambda p: p.relative_to(root / name).parts)
        entries += [ImageEntry(p, index[name]) for p in found]
    if not entries:
        raise DataError(
            f"{root}: no images found (expected {root}/CLASS/IMAGE with one of "
            f"{', '.join(IMAGE_SUFFIXES)})"
        )
    return entries, classes


def read_csv_manifest(
    path: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[ImageEntry], list[str] | None]:
    """The images listed by a CSV manifest, and its class names.

    The file is UTF-8 (a byte-order mark is allowed) with a header row naming the columns
    ``path`` and ``label``, optionally all four of ``x0,y0,x1,y1`` (a box in the file's pixels;
    a row may leave all four empty for the whole image); other columns are ignored. Column names
    and values are stripped of surrounding spaces; blank lines are skipped. Paths are relative to
    the manifest's folder (or absolute) and every file must exist.

    Labels are class indices when every label is a non-negative integer (even if class names
    look like numbers), else class names, labelled by their index in ``class_names`` or, without
    it, in the sorted list of the manifest's names. A mix of indices and names without
    ``class_names`` is an error.

    Args:
        path: the manifest.
        class_names: the classes to label with (validation and test data use the training
            classes); an index must be below their number, a name one of them.

    Returns:
        The entries in file order, and the class names: ``class_names``, the manifest's names,
        or ``None`` for indices without ``class_names``.

    Raises:
        DataError: one line naming the manifest and the line: missing file or header column,
            wrong number of fields, empty path, a file not found, a bad label or box, no rows.
    """
    manifest = Path(path)
    where = Path(os.path.abspath(manifest)).parent
    rows: list[tuple[int, Path, str, tuple[float, float, float, float] | None]] = []
    try:
        with open(manifest, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            if not header:
                raise DataError(f"{manifest}: empty file (expected a header row path,label)")
            for col in ("path", "label"):
                if col not in header:
                    raise DataError(f"{manifest} line 1: no {col!r} column in the header {header}")
            boxed = [c for c in _BOX if c in header]
            if boxed and len(boxed) < 4:
                missing = [c for c in _BOX if c not in header]
                raise DataError(f"{manifest} line 1: box columns without {', '.join(missing)}")
            cols = [header.index(c) for c in ("path", "label", *boxed)]
            for row in reader:
                line = reader.line_num
                if not any(field.strip() for field in row):
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{manifest} line {line}: {len(row)} fields, the header has {len(header)}"
                    )
                file, label, *box = (row[c].strip() for c in cols)
                box_ = _box(manifest, line, box)
                rows.append((line, _file(manifest, line, where, file), label, box_))
    except FileNotFoundError:
        raise DataError(f"{manifest}: no such file") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{manifest}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise DataError(f"{manifest} line {reader.line_num}: {err}") from None
    if not rows:
        raise DataError(f"{manifest}: no rows after the header")
    labels, names = _labels(manifest, rows, class_names)
    entries = [ImageEntry(p, lab, box) for (_, p, _, box), lab in zip(rows, labels)]
    return entries, names


def _file(manifest: Path, line: int, where: Path, file: str) -> Path:
    if not file:
        raise DataError(f"{manifest} line {line}: empty path")
    p = where / file  # an absolute `file` replaces `where`
    if not os.path.isfile(p):
        raise DataError(f"{manifest} line {line}: {file!r} not found (looked at {p})")
    return p


def _box(manifest: Path, line: int, fields: list[str]) -> tuple[float, float, float, float] | None:
    if not any(fields):
        return None
    where = f"{manifest} line {line}: box x0,y0,x1,y1 = {','.join(fields)}"
    try:
        x0, y0, x1, y1 = (float(v) for v in fields)
    except ValueError:
        raise DataError(f"{where} is not four numbers") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise DataError(f"{where} is not finite")
    if min(x0, y0) < 0 or x1 <= x0 or y1 <= y0:
        raise DataError(f"{where} needs 0 <= x0 < x1 and 0 <= y0 < y1")
    return x0, y0, x1, y1


def _labels(
    manifest: Path, rows: Sequence[tuple[int, Path, str, object]], class_names: Sequence[str] | None
) -> tuple[list[int], list[str] | None]:
    """Class indices of the rows, and the class names (see :func:`read_csv_manifest`)."""
    raw = [(line, label) for line, _, label, _ in rows]
    for line, label in raw:
        if not label:
            raise DataError(f"{manifest} line {line}: empty label")
    is_index = [label.isascii() and label.isdigit() for _, label in raw]
    names = None if class_names is None else [str(c) for c in class_names]
    if all(is_index):
        labels = [int(label) for _, label in raw]
        if names is not None:
            for (line, _), value in zip(raw, labels):
                if value >= len(names):
                    raise DataError(
                        f"{manifest} line {line}: label {value} is not below the "
                        f"{len(names)} classes"
                    )
        return labels, names
    if names is None:
        if any(is_index):
            (a, x), (b, y) = (raw[is_index.index(k)] for k in (True, False))
            raise DataError(
                f"{manifest} line {a}: label {x!r} is a class index but line {b}'s {y!r} a "
                "class name; use either indices or names"
            )
        names = sorted({label for _, label in raw})
    index = {name: i for i, name in enumerate(names)}
    for line, label in raw:
        if label not in index:
            raise DataError(
                f"{manifest} line {line}: unknown class {label!r} (classes: {', '.join(names)})"
            )
    return [index[label] for _, label in raw], names
