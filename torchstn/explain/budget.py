"""What ``torchstn explain`` trains: the distortion levels, the two models and their budgets.

Budgets are counted in images and epochs, not minutes, so the same seed gives the same numbers on
every run (a time budget would depend on the machine's speed and load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FULL", "MODELS", "QUICK", "Budget", "Level", "run_values"]

#: MNIST digit side in pixels.
_DIGIT = 28


@dataclass(frozen=True)
class Level:
    """A distortion level of the cluttered task: the digit at a random position in a square
    canvas of ``canvas`` pixels, with ``distractors`` 6 x 6 patches cut from other digits."""

    canvas: int
    distractors: int

    @property
    def max_shift(self) -> int:
        """Largest offset of the digit's centre from the canvas centre, in pixels."""
        return (self.canvas - _DIGIT) // 2

    def label(self) -> str:
        return (
            f"{self.canvas} x {self.canvas}, shift up to {self.max_shift} px, "
            f"{self.distractors} patches"
        )

    def short(self) -> str:
        return f"{self.canvas} px\n±{self.max_shift} px\n{self.distractors} patches"


#: the two models of the comparison: (display name, registered name, options besides the CNN's).
#: The ST-CNN is the same CNN behind an affine spatial transformer (output the size of its input,
#: no pooling after it), so the transformer is the only difference.
MODELS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("CNN", "cnn", {}),
    ("ST-CNN", "st_cnn_affine", {"pool": 1}),
)


@dataclass(frozen=True)
class Budget:
    """The training budget of sections 5 and 6.

    Both models train on the same images at each level; harder levels get more of them
    (``train_sizes``), so that each level is learnt about as far as the others.

    Attributes:
        name: ``"full"`` or ``"quick"``.
        levels: the distortion levels, easiest first; the last one is the paper's 60 x 60
            cluttered MNIST, where section 6 follows the ST-CNN through training.
        train_sizes: fresh training images per epoch, one per level; ``epochs``: epochs per run.
        val_size, test_size: the fixed validation and test images of each level.
        track: test images whose learned boxes section 6 measures after every epoch.
        channels, kernels: the CNN's two convolutions (filters, kernel sizes).
    """

    name: str
    levels: tuple[Level, ...]
    train_sizes: tuple[int, ...]
    epochs: int
    val_size: int
    test_size: int
    track: int
    batch_size: int = 128
    lr: float = 0.01
    channels: tuple[int, int] = (16, 32)
    kernels: tuple[int, int] = (5, 5)

    def __post_init__(self) -> None:
        if len(self.train_sizes) != len(self.levels):
            raise ValueError("Budget: one train size per level")

    def train_size(self, level: Level) -> int:
        """Training images per epoch at ``level``."""
        return self.train_sizes[self.levels.index(level)]

    def images(self, level: Level) -> int:
        """Training images seen by each run at ``level``."""
        return self.train_size(level) * self.epochs

    @property
    def total_images(self) -> int:
        """Training images of all the runs together."""
        return sum(self.images(level) for level in self.levels) * len(MODELS)


_LEVELS = (Level(28, 0), Level(36, 2), Level(48, 4), Level(60, 6))
#: the guide's budget: about 10-15 minutes on a 2-core CPU (the 60 x 60 level takes two thirds).
FULL = Budget(
    "full",
    _LEVELS,
    train_sizes=(5000, 10_000, 15_000, 25_000),
    epochs=8,
    val_size=2000,
    test_size=2000,
    track=500,
)
#: seconds: for tests and a first look (the numbers mean little).
QUICK = Budget(
    "quick",
    _LEVELS,
    train_sizes=(256, 256, 384, 384),
    epochs=2,
    val_size=128,
    test_size=256,
    track=64,
)


def run_values(
    budget: Budget, level: Level, model: str, seed: int, threads: int | None = None
) -> dict[str, Any]:
    """The config (nested dicts, as ``torchstn train`` reads them) of one run."""
    options: dict[str, Any] = {"channels": list(budget.channels), "kernels": list(budget.kernels)}
    options.update(next(extra for _, name, extra in MODELS if name == model))
    values: dict[str, Any] = {
        "seed": seed,
        "device": "cpu",
        "data": {
            "task": "cluttered",
            "options": {"canvas_size": level.canvas, "num_distractors": level.distractors},
            "train_size": budget.train_size(level),
            "val_size": budget.val_size,
            "test_size": budget.test_size,
        },
        "model": {"name": model, "options": options},
        "optim": {
            "name": "sgd",
            "lr": budget.lr,
            "momentum": 0.9,
            "batch_size": budget.batch_size,
            "schedule": "cosine",
        },
        "run": {"epochs": budget.epochs, "eval_batch_size": 500},
    }
    if threads is not None:
        values["run"]["num_threads"] = threads
    return values
