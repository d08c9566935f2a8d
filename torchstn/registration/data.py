"""The data of a registration run: pairs of a moving and a fixed image (with their label maps),
packed into the batches the trainer feeds the objective.

A batch's ``x`` is one tensor ``(B, 2C + 2, *spatial)`` float32: the moving image, the fixed
image, the moving label map and the fixed label map along the channels (:func:`pack`,
:func:`unpack`; label maps as float values ``0..K-1``, zeros where the data have none), so the
trainer's loop, its memory-format step and torchrun's slicing treat a pair as one sample. ``y``
is the pair's class (MNIST's digit; 0 elsewhere).

Sources (``data``):

* ``task: mnist_pairs`` and ``task: mni152``: generated (:mod:`torchstn.registration.tasks`),
  their options in ``data.options``; ``train_size``, ``val_size`` and ``test_size`` count pairs;
  ``fresh`` draws new training pairs (new deformations) every epoch.
* ``path``: the user's NIfTI volumes, a folder (see :func:`read_pair_folder`) with
  ``moving/`` and either ``atlas.nii[.gz]`` (atlas mode), ``fixed/`` (given pairs, matched by
  file name; pairwise mode) or neither (pairwise mode: random pairs of ``moving/`` scans, drawn
  afresh every epoch); optional label maps in ``moving_labels/``, ``fixed_labels/`` or
  ``atlas_labels.nii[.gz]`` (same file names). ``val_path`` and ``test_path`` are folders of the
  same kind; without ``val_path`` a seeded ``val_fraction`` of the moving scans is held out (and
  is the test set, when there is no ``test_path``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from ..data.loader import Batch
from ..data.seeding import epoch_seed, generator
from ..data.volumes import NIFTI_SUFFIXES, read_nifti, read_nifti_header, read_nifti_volumes
from ..errors import ConfigError, DataError, InvalidInputError
from ..preprocess import Preprocess
from ..train.config import dataclass_from_dict
from .config import Mni152Options, MnistPairsOptions
from .tasks import Pairs, mni152_pairs, mnist_pairs

if TYPE_CHECKING:
    from ..train.config import Config
    from .config import RegistrationOptions

__all__ = ["TASKS", "PairSplit", "RegistrationData", "pack", "read_pair_folder", "unpack"]

#: ``data.task`` values of a registration run (``null`` with ``data.path``: the user's folder).
TASKS = ("mnist_pairs", "mni152")
#: the most label values a user's label map may hold (0..255: stored as uint8).
MAX_LABELS = 256


def pack(
    moving: torch.Tensor,
    fixed: torch.Tensor,
    moving_labels: torch.Tensor | None = None,
    fixed_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """One pair tensor ``(B, 2C + 2, *spatial)`` float32 of images ``(B, C, *spatial)`` (uint8
    ``0..255`` or float in ``[0, 1]``) and label maps ``(B, 1, *spatial)`` (``None``: zeros).

    Example:
        >>> m, f = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
        >>> lab = torch.randint(0, 3, (2, 1, 4, 4), dtype=torch.uint8)
        >>> parts = unpack(pack(m, f, lab, lab), channels=1)
        >>> torch.equal(parts[0], m), torch.equal(parts[3], lab.long())
        (True, True)
    """

    def image(t: torch.Tensor) -> torch.Tensor:
        return t.float().div(255.0) if t.dtype == torch.uint8 else t.float()

    zeros = moving.new_zeros((moving.shape[0], 1, *moving.shape[2:]), dtype=torch.float32)
    ml = zeros if moving_labels is None else moving_labels.float()
    fl = zeros if fixed_labels is None else fixed_labels.float()
    return torch.cat((image(moving), image(fixed), ml, fl), dim=1)


def unpack(
    x: torch.Tensor, channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The moving and fixed images ``(B, C, *spatial)`` and their label maps ``(B, 1, *spatial)``
    int64 of a pair tensor (:func:`pack`) of ``C = channels``.

    Raises:
        InvalidInputError: ``x`` does not have ``2 * channels + 2`` channels.
    """
    if x.dim() < 4 or x.shape[1] != 2 * channels + 2:
        raise InvalidInputError(
            f"x: expected a pair tensor (B, {2 * channels + 2}, *spatial), got {tuple(x.shape)}"
        )
    moving, fixed, ml, fl = x.split((channels, channels, 1, 1), dim=1)
    return (
        moving.contiguous(),
        fixed.contiguous(),
        ml.round().long().contiguous(),
        fl.round().long().contiguous(),
    )


class PairSplit:
    """A split of registration pairs held in memory (the trainer's split interface: ``len``,
    ``batches``, ``head``).

    Args:
        pairs: the pairs (:class:`~torchstn.registration.tasks.Pairs`).
        where: where they came from, for messages.
    """

    def __init__(self, pairs: Pairs, where: str = "") -> None:
        self.pairs = pairs
        self.y = pairs.y
        self.where = where

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def has_labels(self) -> bool:
        return self.pairs.moving_labels is not None and self.pairs.fixed_labels is not None

    def select(
        self, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The pairs ``index`` as they are stored: moving, fixed, moving and fixed labels."""
        p = self.pairs
        j = p.fixed_index[index]
        ml = None if p.moving_labels is None else p.moving_labels[index]
        fl = None if p.fixed_labels is None else p.fixed_labels[j]
        return p.moving[index], p.fixed[j], ml, fl

    def batches(self, index_batches: Iterable[Sequence[int]]) -> Iterator[Batch]:
        for idx in index_batches:
            i = torch.as_tensor(idx, dtype=torch.int64)
            yield Batch(pack(*self.select(i)), self.y[i])

    def head(self, num: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``num`` pairs (:func:`pack`) and their classes."""
        i = torch.arange(min(num, len(self)))
        return pack(*self.select(i)), self.y[i]


# --------------------------------------------------------------------------- users' folders
def _scans(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(NIFTI_SUFFIXES)
    )


def _one_file(root: Path, stem: str) -> Path | None:
    found = [root / f"{stem}{s}" for s in NIFTI_SUFFIXES if (root / f"{stem}{s}").is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: both {found[0].name} and {found[1].name}; keep one")
    return found[0] if found else None


def _read_labels(paths: Sequence[Path], size: tuple[int, ...]) -> torch.Tensor:
    """Integer label maps ``(N, 1, D, H, W)`` uint8, each of ``size``."""
    out = torch.empty((len(paths), 1, *size), dtype=torch.uint8)
    for i, path in enumerate(paths):
        header = read_nifti_header(path)
        if header.size != size:
            raise DataError(f"{path}: label map of size {header.size} (D, H, W), its scan's {size}")
        v = read_nifti(path)  # (1, D, H, W) float32, finite
        if not bool((v == v.round()).all()) or float(v.min()) < 0 or float(v.max()) >= MAX_LABELS:
            raise DataError(
                f"{path}: expected integer labels in 0..{MAX_LABELS - 1}, got values in "
                f"{float(v.min()):g}..{float(v.max()):g}"
            )
        out[i] = v.to(torch.uint8)
    return out


def _matching(folder: Path, names: Sequence[str], what: str) -> list[Path]:
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: no {what} named {missing[0]} ({len(missing)} missing)")
    return paths


def read_pair_folder(path: str | Path, mode: str) -> Pairs:
    """The user's registration pairs in the folder ``path`` (see the module docstring): scans
    brought to ``[0, 1]`` one by one (:func:`~torchstn.data.volumes.scale_intensity`), uint8 label
    maps where given.

    Atlas mode needs ``atlas.nii[.gz]``; pairwise mode takes ``fixed/`` (pair ``i`` is
    ``moving/NAME`` with ``fixed/NAME``) or, without it, pairs ``moving/`` scans with each
    other (``fixed_index`` is then ``-1``: drawn by the split).

    Raises:
        DataError: a missing folder or file, an unreadable or hostile NIfTI file (the checks of
            :func:`~torchstn.data.volumes.read_nifti`), scans of two sizes, label maps that are
            not integers ``0..255``; one line naming the file.
        ConfigError: the folder's layout does not fit ``mode``.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder with moving/ (and fixed/ or atlas.nii.gz)")
    moving_dir = root / "moving"
    if not moving_dir.is_dir():
        raise DataError(f"{root}: no moving/ folder (the moving scans, .nii or .nii.gz)")
    moving_paths = _scans(moving_dir)
    names = [p.name for p in moving_paths]
    atlas = _one_file(root, "atlas")
    fixed_dir = root / "fixed"
    if mode == "atlas" and atlas is None:
        raise ConfigError(
            f"objective.options.mode: atlas mode needs {root}/atlas.nii.gz (pairwise mode pairs "
            "moving/ with fixed/, or moving/ scans with each other)"
        )
    if mode == "pairwise" and atlas is not None:
        raise ConfigError(
            f"objective.options.mode: {root} has an atlas; set mode: atlas, or remove it"
        )
    moving = read_nifti_volumes(moving_paths, str(moving_dir))
    size = cast("tuple[int, int, int]", tuple(int(s) for s in moving.shape[2:]))
    n = moving.shape[0]
    labels_dir = root / "moving_labels"
    moving_labels = (
        _read_labels(_matching(labels_dir, names, "label map"), size)
        if labels_dir.is_dir()
        else None
    )
    fixed_labels: torch.Tensor | None = None
    if atlas is not None:
        fixed = read_nifti_volumes([atlas], str(root), size=size)
        index = torch.zeros(n, dtype=torch.int64)
        atlas_labels = _one_file(root, "atlas_labels")
        if atlas_labels is not None:
            fixed_labels = _read_labels([atlas_labels], size)
    elif fixed_dir.is_dir():
        fixed_paths = _matching(fixed_dir, names, "fixed scan")
        fixed = read_nifti_volumes(fixed_paths, str(fixed_dir), size=size)
        index = torch.arange(n)
        if (root / "fixed_labels").is_dir():
            fixed_labels = _read_labels(_matching(root / "fixed_labels", names, "label map"), size)
    else:
        if n < 2:
            raise DataError(f"{moving_dir}: pairwise mode needs at least two moving scans")
        fixed, fixed_labels = moving, moving_labels
        index = torch.full((n,), -1, dtype=torch.int64)
    if (moving_labels is None) != (fixed_labels is None):
        raise DataError(
            f"{root}: label maps for one side only; give moving_labels/ and "
            f"{'atlas_labels.nii.gz' if atlas is not None else 'fixed_labels/'} both, or neither"
        )
    k = (
        0
        if moving_labels is None or fixed_labels is None
        else 1 + max(int(moving_labels.max()), int(fixed_labels.max()))
    )
    return Pairs(
        moving,
        fixed,
        index,
        moving_labels,
        fixed_labels,
        torch.zeros(n, dtype=torch.int64),
        max(k, 2) if k else 0,
    )


def _subset(pairs: Pairs, index: torch.Tensor) -> Pairs:
    """The pairs ``index`` (fixed images kept whole: they are shared)."""
    p = pairs
    if int(p.fixed_index.min()) < 0:  # moving scans paired with each other: keep both sides
        return Pairs(
            p.moving[index],
            p.moving[index],
            p.fixed_index[index],
            None if p.moving_labels is None else p.moving_labels[index],
            None if p.moving_labels is None else p.moving_labels[index],
            p.y[index],
            p.num_labels,
        )
    return Pairs(
        p.moving[index],
        p.fixed,
        p.fixed_index[index],
        None if p.moving_labels is None else p.moving_labels[index],
        p.fixed_labels,
        p.y[index],
        p.num_labels,
    )


def _draw_partners(pairs: Pairs, seed: int, where: str) -> Pairs:
    """Pairs whose unset partners (``fixed_index`` -1: scans paired with each other) are drawn:
    each scan's partner uniform among the others, from ``seed``."""
    if int(pairs.fixed_index.min()) >= 0:
        return pairs
    n = len(pairs)
    if n < 2:
        raise DataError(
            f"{where}: {n} scan; pairwise mode pairs the scans of a split with each other and "
            "needs two (raise data.val_fraction, or give data.val_path)"
        )
    gen = generator(seed, "registration-partners")
    shift = 1 + torch.randint(0, n - 1, (n,), generator=gen)
    partner = (torch.arange(n) + shift) % n
    return Pairs(
        pairs.moving,
        pairs.moving,
        partner,
        pairs.moving_labels,
        pairs.moving_labels,
        pairs.y,
        pairs.num_labels,
    )


class RegistrationData:
    """Train, validation and test pairs of a registration run (the interface of
    :class:`~torchstn.train.DataModule` that the trainer, ``eval`` and the pictures use).

    ``in_shape`` is ``(C, *spatial)`` of one image (what the registration models take);
    ``num_classes`` the label values of the label maps (background included; 1 without them),
    recorded for the model's registry call, which does not use it; ``label_classes`` the same,
    0 without label maps.

    Args:
        cfg: the run's config.
        options: its ``objective.options``.
    """

    class_names: list[str] | None = None
    skipped_at_load = 0

    def __init__(self, cfg: Config, options: RegistrationOptions) -> None:
        d = cfg.data
        self.cfg, self.mode, self.seed = cfg, options.mode, int(cfg.seed)
        self.test_is_val = False
        self._task_options: MnistPairsOptions | Mni152Options | None = None
        self._fixed_train: PairSplit | None = None
        self._last: tuple[int, PairSplit] | None = None
        self.fingerprints: dict[str, str] = {}
        if d.task is not None:
            if d.task == "mnist_pairs":
                self._task_options = dataclass_from_dict(
                    MnistPairsOptions, d.options, "data.options"
                ).validate()
            else:
                self._task_options = dataclass_from_dict(
                    Mni152Options, d.options, "data.options"
                ).validate()
            self.name = str(d.task)
            self._val = self._generate("val", d.val_size, d.eval_seed)
            self._test = self._generate("test", d.test_size, d.eval_seed)
        else:
            self._setup_user()
        sample = self._val.pairs
        self.in_shape = tuple(int(v) for v in sample.moving.shape[1:])
        # at least 1: checkpoints record a positive output count (the models ignore it);
        # label_classes is 0 for data without label maps
        self.num_classes = max(1, int(sample.num_labels))
        self.label_classes = int(sample.num_labels)
        self.preprocess = Preprocess(self.in_shape[1:], self.in_shape[0])

    def _generate(self, split: str, num: int, seed: int) -> PairSplit:
        o = self._task_options
        if isinstance(o, MnistPairsOptions):
            pairs = mnist_pairs(split, num, seed, o, self.mode)
        elif isinstance(o, Mni152Options):
            pairs = mni152_pairs(split, num, seed, o, self.mode)
        else:  # pragma: no cover - users' folders are read once, not generated
            raise ConfigError(f"data.task: {self.name!r} is not a generated registration task")
        return PairSplit(pairs, f"{self.name} {split}")

    def _setup_user(self) -> None:
        d = self.cfg.data
        path = Path(str(d.path))
        self.name = path.name
        full = read_pair_folder(path, self.mode)
        if d.val_path is not None:
            self._fixed_train = PairSplit(full, str(path))
            val = read_pair_folder(d.val_path, self.mode)
        else:
            n = len(full)
            held = max(1, round(n * d.val_fraction))
            if held >= n:
                raise DataError(f"{path}: {n} moving scans, too few to hold out validation pairs")
            order = torch.randperm(n, generator=generator(d.eval_seed, "registration-val"))
            val = _subset(full, order[:held])
            self._fixed_train = PairSplit(_subset(full, order[held:]), str(path))
        self._val = PairSplit(
            _draw_partners(val, d.eval_seed, f"{path} validation"), f"{path} validation"
        )
        if d.test_path is not None:
            test = read_pair_folder(d.test_path, self.mode)
            self._test = PairSplit(
                _draw_partners(test, d.eval_seed + 1, str(d.test_path)), str(d.test_path)
            )
        else:
            self._test, self.test_is_val = self._val, True
        for split in (self._fixed_train, self._val, self._test):
            if tuple(split.pairs.moving.shape[1:]) != tuple(
                self._fixed_train.pairs.moving.shape[1:]
            ):
                raise DataError(
                    f"{split.where}: scans of size {tuple(split.pairs.moving.shape[2:])}, the "
                    f"training scans' {tuple(self._fixed_train.pairs.moving.shape[2:])}"
                )

    def train(self, epoch: int) -> PairSplit:
        """The training pairs of ``epoch`` (new pairs and deformations every epoch with
        ``data.fresh``; users' scans paired with each other: new partners every epoch)."""
        d = self.cfg.data
        seed = epoch_seed(self.seed, epoch if d.fresh else 0)
        if self._last is not None and self._last[0] == seed:
            return self._last[1]
        if self._fixed_train is not None:
            split = PairSplit(
                _draw_partners(self._fixed_train.pairs, seed, self._fixed_train.where),
                self._fixed_train.where,
            )
        else:
            self._last = None  # free the last epoch's pairs before making this one's
            split = self._generate("train", d.train_size, seed)
        self._last = (seed, split)
        return split

    def eval_split(self, split: str) -> PairSplit:
        """``val`` or ``test`` pairs (fixed: ``data.eval_seed``), or the first epoch's ``train``."""
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
            "class_names": None,
            "name": self.name,
            "preprocess": self.preprocess.to_dict(),
        }
