"""Which image files make a data set: class folders and CSV manifests, as :class:`ImageEntry` lists.

* a class folder, as torchvision's ``ImageFolder``: ``root/CLASS/.../IMAGE``, each non-hidden
  sub-folder of ``root`` a class (labels: indices of the sorted names), its images found
  recursively and sorted by relative path (:func:`scan_class_folder`; its ``suffixes`` list
  other files the same way, NIfTI volumes for one);
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
from .arrays import MAX_CLASSES

__all__ = ["ImageEntry", "read_csv_manifest", "scan_class_folder"]

_BOX = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class ImageEntry:
    """One image file (or other listed file): its path, class index and optional box (file
    pixels, see the module)."""

    path: Path
    label: int
    box: tuple[float, float, float, float] | None = None


def scan_class_folder(
    root: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    *,
    suffixes: tuple[str, ...] = IMAGE_SUFFIXES,
) -> tuple[list[ImageEntry], list[str]]:
    """The images of ``root/CLASS/.../IMAGE`` (see the module docstring), and the class names.

    Files ending in ``suffixes`` (any case; by default :data:`torchstn.images.IMAGE_SUFFIXES`)
    are listed; hidden files and folders (``.name``) are skipped. With other suffixes the
    messages say "files" where they say "images".

    Symbolic links are followed, but no folder is walked and no file listed twice, so that a
    link can neither loop nor make an image count twice:

    * a link to a folder outside ``root`` (``cat/more -> /disk/cats``) is walked as part of the
      class; a link to a folder already walked (a loop such as ``cat/up -> ..``), to a folder in
      ``root`` outside the class (another class's images), or to ``root`` or a folder holding it
      (which would reach the other classes, or a validation folder beside ``root``) is skipped;
    * a file met twice in one class (through links or hard links) is listed once; the same file
      in two classes is an error (its label would be ambiguous);
    * a class folder that is ``root``, a folder holding it or another class's folder (through a
      link) is an error.

    Args:
        root: the folder.
        class_names: the classes to label with (validation and test folders use the training
            classes): every sub-folder must be one of them, some may be missing. ``None``: the
            sorted sub-folder names (one without images stays a class, so labels do not shift);
            the folder then defines the classes of a training run and must hold images of at
            least two.
        suffixes: the endings of the files to list (``(".nii", ".nii.gz")`` lists NIfTI
            volumes).

    Returns:
        The entries (class by class, files sorted by their path in the class folder) and the
        class names.

    Raises:
        DataError: ``root`` is not a folder, has no image, has a class not in ``class_names``,
            has images of fewer than two classes (``class_names=None``), or a class folder or
            file that stands for another (see above).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = folders if class_names is None else [str(c) for c in class_names]
    index = {name: i for i, name in enumerate(classes)}
    for name in folders:
        if name not in index:
            raise DataError(
                f"{root / name}: class {name!r} is not among the training classes "
                f"({', '.join(classes)})"
            )
    suffixes = tuple(s.lower() for s in suffixes)
    noun = "image" if suffixes == IMAGE_SUFFIXES else "file"
    walk = _Walk(root, folders, suffixes, noun)
    entries: list[ImageEntry] = []
    for name in folders:
        found = walk.images(name)
        found.sort(key=lambda p: p.relative_to(root / name).parts)
        entries += [ImageEntry(p, index[name]) for p in found]
    if not entries:
        raise DataError(
            f"{root}: no {noun}s found (expected {root}/CLASS/{noun.upper()} with one of "
            f"{', '.join(suffixes)})"
        )
    if class_names is None:
        filled = [classes[i] for i in sorted({e.label for e in entries})]
        if len(filled) < 2:
            raise DataError(
                f"{root}: {noun}s of {len(filled)} class ({filled[0]}); a classifier needs at "
                f"least 2 ({root}/CLASS/{noun.upper()}, one folder per class)"
            )
    return entries, classes


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _within(path: str, folder: str) -> bool:
    """Whether the real path ``path`` is the real folder ``folder`` or lies in it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Walk:
    """The files ending in ``suffixes`` of the class folders of ``root`` (``noun`` in messages),
    following links without loops (see :func:`scan_class_folder`): a shared record of the folders
    walked and files listed."""

    def __init__(
        self, root: Path, folders: Sequence[str], suffixes: tuple[str, ...], noun: str
    ) -> None:
        self.root = root
        self.suffixes = suffixes
        self.noun = noun
        self.real_root = os.path.realpath(root)
        #: folders walked or reserved (the root, the class folders): identity -> class or ""
        self.folders: dict[tuple[int, int], str] = {_identity(os.stat(root)): ""}
        #: files listed: identity -> (class, path)
        self.files: dict[tuple[int, int], tuple[str, Path]] = {}
        for name in folders:
            path = root / name
            key = _identity(os.stat(path))
            if key in self.folders or self._holds_root(path):
                other = self.folders.get(key)
                what = (
                    f"the class folder {root / other}"
                    if other
                    else f"{root} or a folder holding it"
                )
                raise DataError(
                    f"{path}: class folder {name!r} is {what} (a link); each class needs a folder "
                    "of its own"
                )
            self.folders[key] = name

    def _holds_root(self, path: Path) -> bool:
        """Whether the real folder of ``path`` is ``root`` or holds it."""
        return _within(self.real_root, os.path.realpath(path))

    def images(self, name: str) -> list[Path]:
        """The listed files of class ``name`` (unsorted), each file once."""
        found: list[Path] = []
        own = os.path.realpath(self.root / name)
        pending = [self.root / name]
        while pending:
            top = pending.pop()
            try:
                items = sorted(os.scandir(top), key=lambda e: e.name)
            except OSError:  # an unreadable folder is skipped, as os.walk does
                continue
            folders = []
            for item in items:
                if item.name.startswith("."):
                    continue
                path = Path(top, item.name)
                try:
                    is_dir = item.is_dir()  # follows links
                except OSError:
                    is_dir = False
                if is_dir:
                    if self._enter(item, path, own):
                        folders.append(path)
                elif item.name.lower().endswith(self.suffixes) and self._new_file(item, name, path):
                    found.append(path)
            pending += reversed(folders)  # walked in name order
        return found

    def _enter(self, item: os.DirEntry[str], path: Path, own: str) -> bool:
        """Whether to walk the folder ``path`` of the class whose real folder is ``own`` (then
        recorded as walked): not a folder walked before, and not a link to a folder holding the
        root or lying in the root outside the class."""
        try:
            key = _identity(item.stat())
        except OSError:
            return False
        if key in self.folders:
            return False
        if item.is_symlink():
            real = os.path.realpath(path)
            if _within(self.real_root, real) or (
                _within(real, self.real_root) and not _within(real, own)
            ):
                return False
        self.folders[key] = str(path)
        return True

    def _new_file(self, item: os.DirEntry[str], name: str, path: Path) -> bool:
        """Whether ``path`` of class ``name`` is a file not listed yet (a dangling link is
        listed: reading it reports it)."""
        try:
            key = _identity(item.stat())
        except OSError:
            return True
        seen = self.files.get(key)
        if seen is None:
            self.files[key] = (name, path)
            return True
        if seen[0] != name:
            raise DataError(
                f"{path}: the same file as {seen[1]}, in classes {seen[0]!r} and {name!r}; "
                f"{'an image' if self.noun == 'image' else 'a file'} needs one class"
            )
        return False


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
    look like numbers), below :data:`torchstn.data.arrays.MAX_CLASSES`, else class names,
    labelled by their index in ``class_names`` or, without it, in the sorted list of the
    manifest's names (then at least two). A mix of indices and names without ``class_names`` is
    an error.

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
        for (line, _), value in zip(raw, labels):
            if value >= MAX_CLASSES:
                raise DataError(
                    f"{manifest} line {line}: label {value} is not a class index below "
                    f"{MAX_CLASSES} (torchstn.data.arrays.MAX_CLASSES)"
                )
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
        if len(names) < 2:
            raise DataError(
                f"{manifest}: every row is labelled {names[0]!r}; a classifier needs at least 2 "
                "classes"
            )
    index = {name: i for i, name in enumerate(names)}
    for line, label in raw:
        if label not in index:
            raise DataError(
                f"{manifest} line {line}: unknown class {label!r} (classes: {', '.join(names)})"
            )
    return [index[label] for _, label in raw], names
