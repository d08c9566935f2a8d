"""The paper's experiments: which models run on which data, and the paper's numbers beside them.

Each table maps columns (datasets) to config folders under ``configs/`` and lists its models; a
run's config is ``configs/<folder>/<model>.yaml``. ``torchstn reproduce`` trains them and keeps the
outcome in ``results/<table>.json``; :func:`torchstn.results.render_results` turns every such
file into ``RESULTS.md``.

The configs ship inside the package (``torchstn/configs/``; a source checkout also has a
``configs`` link to it at its top), so that they work after ``pip install torchstn`` too:
:func:`find_config` turns ``demo``, ``table1/rts/st_cnn_affine`` or
``configs/table1/rts/st_cnn_affine.yaml`` into the packaged file wherever the command runs.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ._checks import check_choice
from .errors import ConfigError

__all__ = [
    "COLOCALIZATION",
    "TABLES",
    "Table",
    "config_names",
    "default_config_dir",
    "find_config",
    "get_table",
    "table_names",
]


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: dict[str, str]  #: column label -> config folder (relative to configs/)
    models: tuple[str, ...]
    #: paper's test error (%) per (model, column); None where the paper has no number
    paper: dict[tuple[str, str], float] = field(default_factory=dict)
    metric: str = "test error (%)"
    notes: str = ""


def _grid(
    models: tuple[str, ...], columns: tuple[str, ...], rows: list[list[float]]
) -> dict[tuple[str, str], float]:
    return {(m, c): v for m, row in zip(models, rows) for c, v in zip(columns, row)}


_T1_MODELS = (
    "fcn",
    "cnn",
    "st_fcn_affine",
    "st_fcn_projective",
    "st_fcn_tps",
    "st_cnn_affine",
    "st_cnn_projective",
    "st_cnn_tps",
)
_T1_COLS = ("R", "RTS", "P", "E")

TABLES: dict[str, Table] = {
    "table1": Table(
        "table1",
        "Table 1: distorted MNIST",
        {"R": "table1/r", "RTS": "table1/rts", "P": "table1/p", "E": "table1/e"},
        _T1_MODELS,
        _grid(
            _T1_MODELS,
            _T1_COLS,
            [
                [2.1, 5.2, 3.1, 3.2],
                [1.2, 0.8, 1.5, 1.4],
                [1.2, 0.8, 1.5, 2.7],
                [1.3, 0.9, 1.4, 2.6],
                [1.1, 0.8, 1.4, 2.4],
                [0.7, 0.5, 0.8, 1.2],
                [0.8, 0.6, 0.8, 1.3],
                [0.7, 0.5, 0.8, 1.1],
            ],
        ),
        notes=(
            "Every sub-table compares its models at an equal wall-clock budget, not an equal "
            "number of epochs: a model that is slower per epoch (the plain CNN, which convolves "
            "the full-size input) sees fewer epochs. Runs with `run.num_threads=1` ran two at a "
            "time, one per core."
        ),
    ),
    "cluttered": Table(
        "cluttered",
        "Translated and cluttered MNIST, 60x60 (TC)",
        {"TC": "cluttered"},
        ("fcn", "cnn", "pool_cnn", "st_fcn_affine", "st_cnn_affine"),
        {
            ("fcn", "TC"): 13.2,
            ("cnn", "TC"): 3.5,
            ("st_fcn_affine", "TC"): 2.0,
            ("st_cnn_affine", "TC"): 1.7,
        },
        notes="pool_cnn is our pooling-heavy baseline; the paper has no such row.",
    ),
    "addition": Table(
        "addition",
        "MNIST addition (two 42x42 channels, 19 classes)",
        {"ADD": "addition"},
        ("fcn", "cnn", "st_fcn_affine", "st2_fcn_affine", "st2_fcn_projective", "st2_fcn_tps"),
        {
            ("fcn", "ADD"): 47.7,
            ("cnn", "ADD"): 14.7,
            ("st_fcn_affine", "ADD"): 18.5,
            ("st2_fcn_affine", "ADD"): 9.0,
            ("st2_fcn_projective", "ADD"): 5.9,
            ("st2_fcn_tps", "ADD"): 5.8,
        },
        notes="The paper's single ST-FCN row does not name its transform; we run it with affine.",
    ),
}


#: co-localisation is scored, not classified: % of images localised (IoU > 0.5), per column.
COLOCALIZATION = Table(
    "colocalization",
    "Co-localisation (28x28 digit in 84x84; TC: 16 distractors)",
    {"T": "colocalization/t.yaml", "TC": "colocalization/tc.yaml"},
    ("st_attention_encoder",),
    {},
    metric=(
        "% of the images co-localised that the crop localises (IoU > 0.5 with the digit's box), "
        "mean over the digits 0-9 and the seeds; with several seeds, ± the standard deviation "
        "over seeds of each seed's mean over the digits"
    ),
    notes=(
        "Paper: T 100%, TC 75-93%. Each run co-localises 100 test-split images of one digit: it "
        "trains on them without their boxes (the triplet hinge loss, margin 1) and is scored on "
        "them (`ours`, `mean IoU`, and the digit columns). After every epoch it localises 100 "
        "other images of the digit, from the last 10,000 MNIST training images, with their boxes "
        "(`val`: the kept weights' score), and keeps the best epoch's weights; `at start` is the "
        "untrained model (a centred window). The transformer learns from the random-crop term of "
        "the loss only (the positive distance is computed on detached crops); the localiser is a "
        "soft-argmax score map; the crop scale is bounded to [0.3, 0.36].\n\n"
        "Three seeds per digit. On T a run localises nearly every image or almost none: of the "
        "30 runs, 2 failed (seed 0's digits 5 and 6: 11% and 13%) and the other 28 localised "
        "99.4% on average. A failed T run never trains: from the first epoch its training loss "
        "sits at the margin (1.000), the encoder embedding every crop at nearly one point, so "
        "both distances vanish and no gradient moves the windows. On TC the outcomes spread "
        "more: 20 of the 30 runs localised 92% or more (97.6% on average), 6 between 51% and 84% "
        "(digits 0, 1, 6 and 8), and 4 failed (seed 0's digit 0: 4%; seed 1's digits 1 and 3: "
        "45% and 10%; seed 2's digit 9: 9%). The TC loss usually falls below half the margin "
        "within 2-4 epochs; of the 5 runs where it fell after 8 epochs or never, 4 are the "
        "failures. Seed 0's digit 0 never got below 0.75; the runs at 10% and 9% ended at a loss "
        "of 0.02-0.03 with windows that do not hold the digit (validation at most 15%): a window "
        "that finds the same thing in the clutter every time satisfies the triplet loss as "
        "well.\n\n"
        "Which runs fail depends on the seed and even on floating-point rounding. Seed 0 run with "
        "the code of 2026-11-27 00:25 (same settings, a record without provenance) gave T 91.0% "
        "and TC 87.8%: on T only digit 6 failed (the rerun: digits 5 and 6), on TC digit 1 (6%; "
        "the rerun: 51%, and digit 0 failed instead). Bisected on T's digit 4, the code changed "
        "its result at two commits, both the same maths with different rounding: mean IoU 0.83 "
        "before, 0.75 after the separable affine grid (1b9ed57), 0.65 after channels-last "
        "convolutions (7ebc2a2). Hence three seeds and the spread. Run time: one thread per run, "
        "two runs at a time.\n\n"
        "Earlier numbers, before this protocol (the same model and loss on the co-localisation "
        "package's own trainer, its settings tuned while scoring these very test images): T "
        "90.8%, TC 64.9% (mean IoU 0.65 / 0.54; 400 / 800 steps at a constant rate; 2026-11-26). "
        "Since then the bounded scale starts a tenth of its range inside the upper bound (0.354, "
        "not 0.36), and a batch pairs its images two by two rather than each with the next."
    ),
)
PAPER_COLOCALIZATION = {"T": "100", "TC": "75-93"}


def table_names() -> tuple[str, ...]:
    return (*TABLES, COLOCALIZATION.name)


def get_table(name: str) -> Table:
    if name == COLOCALIZATION.name:
        return COLOCALIZATION
    return TABLES[check_choice(name, "table", table_names())]


#: the packaged experiment configs (``torchstn/configs``).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_SUFFIXES = (".yaml", ".yml", ".json")


def default_config_dir() -> Path:
    """The folder of the packaged experiment configs (``torchstn/configs``), in a source
    checkout and in an installed package alike.

    Example:
        >>> (default_config_dir() / "demo.yaml").is_file()
        True
    """
    return CONFIG_DIR


def config_names() -> list[str]:
    """The packaged configs by name: their paths under :func:`default_config_dir`, without
    ``.yaml`` (``demo``, ``table1/rts/st_cnn_affine``, ...), sorted.

    Example:
        >>> "table1/rts/st_cnn_affine" in config_names()
        True
    """
    root = default_config_dir()
    return sorted(
        p.relative_to(root).with_suffix("").as_posix()
        for p in root.rglob("*")
        if p.suffix in _SUFFIXES and p.is_file()
    )


def find_config(name: str | os.PathLike[str]) -> Path:
    """The config file that ``name`` means: a file that exists as given, else a packaged config.

    A packaged config is named by its path under ``torchstn/configs`` with or without the
    ``.yaml`` suffix and with or without a leading ``configs/`` (the paths that RESULTS.md and
    ``results/*.json`` record): ``demo``, ``table1/rts/st_cnn_affine``,
    ``configs/table1/rts/st_cnn_affine.yaml`` all work, from any folder.

    Raises:
        ConfigError: neither a file nor a packaged config (one line, with the closest names).

    Example:
        >>> find_config("table1/rts/st_cnn_affine").relative_to(default_config_dir()).as_posix()
        'table1/rts/st_cnn_affine.yaml'
    """
    given = Path(name).expanduser()
    if given.is_file():
        return given
    root = default_config_dir()
    key = Path(name).as_posix()
    for prefix in ("configs/", "torchstn/configs/"):
        key = key.removeprefix(prefix)
    if not Path(key).is_absolute() and ".." not in Path(key).parts:
        stem = key[: -len(Path(key).suffix)] if Path(key).suffix in _SUFFIXES else key
        for candidate in (root / key, *(root / f"{stem}{s}" for s in _SUFFIXES)):
            if candidate.is_file():
                return candidate
    names = config_names()
    close = difflib.get_close_matches(key.removesuffix(".yaml"), names, n=3, cutoff=0.5)
    examples = [n for n in ("demo", "table1/rts/st_cnn_affine", "cluttered/cnn") if n in names]
    hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(examples)}"
    raise ConfigError(
        f"config file not found: {name} (neither a file nor one of the {len(names)} packaged "
        f"configs; {hint})"
    )
