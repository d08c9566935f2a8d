"""The data a training run sees: a generated task or the user's own files, split three ways."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from .config import DataConfig

__all__ = ["DataModule", "Split"]


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64


class DataModule:
    """Train / validation / test data for one config.

    Generated tasks give fresh training distortions every epoch (``train(epoch)``) and fixed
    validation and test sets drawn with ``eval_seed`` (the same for every run, so runs compare).
    User data (``path``) is split into train and validation with a seeded permutation; the test
    set is ``test_path`` if given, else the validation set (and the run says so).
    """

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = int(seed)
        self.test_is_val = False
        self.class_names: list[str] | None = None
        self._fixed_train: Split | None = None
        if cfg.task is not None and cfg.path is not None:
            raise ConfigError("data: give either 'task' or 'path', not both")
        if cfg.task is not None:
            from .. import data

            self.task = data.get_task(cfg.task, **cfg.options)
            self.in_shape = tuple(int(v) for v in self.task.in_shape)
            self.num_classes = int(self.task.num_classes)
            self.name = cfg.task
            self._val = self._generate("val", cfg.val_size, cfg.eval_seed)
            self._test = self._generate("test", cfg.test_size, cfg.eval_seed)
        else:
            if cfg.options:
                raise ConfigError("data.options: only generated tasks take options")
            full = self._load_user(cfg.path)
            n = full.y.shape[0]
            if n < 2:
                raise DataError(f"{cfg.path}: need at least 2 samples, found {n}")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.eval_seed))
            n_val = max(1, round(n * cfg.val_fraction))
            vi, ti = perm[:n_val], perm[n_val:]
            self._fixed_train = Split(full.x[ti], full.y[ti])
            self._val = Split(full.x[vi], full.y[vi])
            if cfg.test_path is not None:
                self._test = self._load_user(cfg.test_path)
            else:
                self._test, self.test_is_val = self._val, True
            self.in_shape = tuple(int(v) for v in full.x.shape[1:])
            labels = torch.cat((full.y, self._test.y))
            self.num_classes = max(int(labels.max()) + 1, len(self.class_names or []))
            self.name = Path(str(cfg.path)).name
            if tuple(self._test.x.shape[1:]) != self.in_shape:
                raise DataError(
                    f"{cfg.test_path}: images of shape {tuple(self._test.x.shape[1:])}, "
                    f"training data has {self.in_shape}"
                )

    def _generate(self, split: str, num: int, seed: int) -> Split:
        s = self.task.generate(split=split, num=num, seed=seed)
        return Split(s.x, s.y)

    def _load_user(self, path: str | None) -> Split:
        from .. import data

        p = Path(str(path))
        if not p.exists():
            raise DataError(f"data file or folder not found: {p}")
        if p.is_dir():
            size = (
                None
                if self.cfg.image_size is None
                else (int(self.cfg.image_size[0]), int(self.cfg.image_size[-1]))
            )
            sample, names = data.load_image_folder(p, size=size)
            if self.class_names is None:
                self.class_names = list(names)
            elif list(names) != self.class_names:
                raise DataError(f"{p}: class folders {names} differ from the training data's")
        else:
            sample = data.load_npz(p)
        return Split(sample.x, sample.y)

    def train(self, epoch: int) -> Split:
        """Training data of ``epoch`` (fresh distortions each epoch for generated tasks)."""
        if self._fixed_train is not None:
            return self._fixed_train
        from .. import data

        seed = data.epoch_seed(self.seed, epoch if self.cfg.fresh else 0)
        return self._generate("train", self.cfg.train_size, seed)

    def eval_split(self, split: str) -> Split:
        if split == "val":
            return self._val
        if split == "test":
            return self._test
        if split == "train":
            return self.train(0)
        raise ConfigError(f"split: expected train, val or test, got {split!r}")
