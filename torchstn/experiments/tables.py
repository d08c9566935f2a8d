"""The paper's tables: which models run on which data, how a run is planned and recorded, and the
paper's numbers beside ours.

A table is a :class:`Table` registered by name (:func:`register_table`): its columns (data sets,
as config folders under ``torchstn/configs``), its models and the paper's numbers. It plans its
runs (:meth:`Table.plan`: one config per column, model and seed), names their folders and budgets,
and turns a finished run's ``result.json`` into its entry of ``results/<table>.json``
(:meth:`Table.entry`). :mod:`torchstn.experiments.runner` runs any table's plan; a table that
plans or scores differently (co-localisation, :mod:`torchstn.experiments.colocalization`) is a
subclass in a file of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._checks import check_choice
from ..errors import ConfigError
from ..train import Trainer, apply_overrides, load_config
from ..train.config import default_config_dir

__all__ = [
    "PAPER_BUDGET",
    "PAPER_PROTOCOL",
    "Options",
    "PlannedRun",
    "Table",
    "budget_name",
    "get_table",
    "paper_values",
    "register_table",
    "table_names",
    "thin_curve",
]


@dataclass(frozen=True)
class Options:
    """What ``torchstn reproduce`` was asked for (see its ``--help``)."""

    columns: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    models: tuple[str, ...] = ()  #: empty: the table's own
    digits: tuple[int, ...] = tuple(range(10))  #: co-localisation
    budget_minutes: float | None = None  #: for the whole table, split evenly between its runs
    epochs: int | None = None
    overrides: tuple[str, ...] = ()  #: ``--set KEY=VALUE``
    variant: str | None = None
    config_dir: Path | None = None  #: default: the packaged configs
    runs_dir: Path = Path("runs/reproduce")
    device: str = "auto"
    force: bool = False
    #: continue runs cut short from their checkpoints instead of starting them afresh
    resume: bool = False
    #: ``budget`` (the configs' epochs or ``budget_minutes``) or ``paper`` (:data:`PAPER_PROTOCOL`)
    protocol: str = "budget"


@dataclass(frozen=True)
class PlannedRun:
    """One run of a table's plan: a config file and what the table sets in it."""

    column: str
    seed: int
    config: Path
    #: the table's own coordinate of the run besides column and seed: the model, or the digit
    item: Any


#: The paper's training of its MNIST experiments (section 4): plain SGD on batches of 256 for
#: 150,000 iterations, the rate 0.01 divided by 10 every 50,000, no weight decay, no dropout, three
#: seeds. Unstated, and chosen here: momentum 0.9 (our configs' value), the localisation nets at the
#: base rate (the paper names a tenth only for SVHN), the data as each config makes it.
PAPER_PROTOCOL: dict[str, Any] = {
    "iterations": 150_000,
    "batch_size": 256,
    "lr": 0.01,
    "step_iterations": 50_000,
    "gamma": 0.1,
    "momentum": 0.9,
    "seeds": (0, 1, 2),
}
#: the budget of a paper-protocol run, as its results entry names it and as its folder does
PAPER_BUDGET = ("paper protocol", "paper")


def paper_values(values: dict[str, Any]) -> dict[str, Any]:
    """A run's config values with the paper's optimiser and schedule (:data:`PAPER_PROTOCOL`).
    The trainer counts epochs of ``data.train_size`` images, so the 150,000 iterations become
    ``ceil(150,000 x 256 / train_size)`` epochs (768 of 50,000) and the step every 50,000
    iterations every ``round(50,000 x 256 / train_size)`` epochs (256).

    Example:
        >>> v = paper_values({"data": {"train_size": 50000}, "optim": {"name": "adam"}})
        >>> v["run"]["epochs"], v["optim"]["step_epochs"], v["optim"]["name"], v["optim"]["lr"]
        (768, 256, 'sgd', 0.01)
    """
    p = PAPER_PROTOCOL
    train_size = int((values.get("data") or {}).get("train_size") or 0)
    if train_size <= 0:
        raise ConfigError("--protocol paper: the config must set data.train_size")
    images = p["iterations"] * p["batch_size"]
    optim = values.setdefault("optim", {})
    optim.update(
        {
            "name": "sgd",
            "lr": p["lr"],
            "momentum": p["momentum"],
            "weight_decay": 0.0,
            "loc_lr_scale": 1.0,
            "batch_size": p["batch_size"],
            "schedule": "step",
            "step_epochs": max(1, round(p["step_iterations"] * p["batch_size"] / train_size)),
            "gamma": p["gamma"],
        }
    )
    run = values.setdefault("run", {})
    run["epochs"] = -(-images // train_size)
    run.pop("minutes", None)
    return values


#: the most points of a learning curve that a results entry keeps
CURVE_POINTS = 48


def thin_curve(curve: list[list[float]], points: int = CURVE_POINTS) -> list[list[float]]:
    """At most about ``points`` of a learning curve (``[images seen, validation error]`` pairs in
    order), spread evenly on a log axis of images seen: the first and the last point, and the
    first point past each of ``points`` log-spaced steps (a run of hundreds of short epochs keeps
    its start, where the curve moves, as finely as its end).

    Example:
        >>> len(thin_curve([[n, 1.0] for n in range(1000, 1_001_000, 1000)], 10))
        11
    """
    if len(curve) <= points:
        return [list(p) for p in curve]
    first, last = max(curve[0][0], 1), max(curve[-1][0], 1)
    ratio = (last / first) ** (1 / points)
    kept, next_at = [], 0.0
    for point in curve:
        if point[0] >= next_at or point is curve[-1]:
            kept.append(list(point))
            next_at = max(point[0], 1) * ratio
    return kept


def budget_name(epochs: int, minutes: float | None, with_epochs: bool) -> tuple[str, str]:
    """A run's budget as its results entry names it (``10 min``, ``30 epochs``, ``8 epochs,
    5 min``) and as its folder does (``10min``, ``30ep``, ``8ep-5min``). The epochs are named
    without a time budget, and beside one when ``with_epochs`` (a table whose epochs stay a
    real limit under a time budget).

    Example:
        >>> budget_name(30, None, False), budget_name(1000, 10.0, False), budget_name(8, 5.0, True)
        (('30 epochs', '30ep'), ('10 min', '10min'), ('8 epochs, 5 min', '8ep-5min'))
    """
    parts = []
    if minutes is None or with_epochs:
        parts.append(f"{epochs} epochs")
    if minutes is not None:
        parts.append(f"{minutes:g} min")
    name = ", ".join(parts)
    return name, name.replace(" epochs", "ep").replace(" min", "min").replace(", ", "-")


@dataclass(frozen=True)
class Table:
    """A classification table: every model of :attr:`models` on every column, test error (%).

    Attributes:
        name: the table's name (``torchstn reproduce NAME``, ``results/NAME.json``).
        title: its heading in RESULTS.md.
        columns: column label -> config folder (relative to ``torchstn/configs``); a run's config
            is ``FOLDER/MODEL.yaml``.
        models: the rows.
        paper: the paper's test error (%) per (model, column), where it has one.
        metric: what the numbers are.
        notes: what RESULTS.md says under the table.
    """

    name: str
    title: str
    columns: dict[str, str]
    models: tuple[str, ...]
    paper: dict[tuple[str, str], Any] = field(default_factory=dict)
    metric: str = "test error (%)"
    notes: str = ""
    #: with a time budget the epochs are raised to at least this, so that the time decides
    EPOCHS_UNDER_TIME_BUDGET = 1000
    #: whether the configs' epochs stay a limit under a time budget (and so name the budget)
    EPOCHS_LIMIT_TIME = False

    # ------------------------------------------------------------------ planning
    def check(self, options: Options) -> None:
        """Refuse options the table does not take: the paper's protocol where the paper has no
        numbers for the table, or with a budget of its own."""
        if options.protocol == "paper":
            if not self.paper or type(self) is not Table:
                raise ConfigError(
                    f"--protocol paper: the paper trained no {self.name} table this way; it "
                    "applies to table1, cluttered and addition"
                )
            if options.budget_minutes is not None or options.epochs:
                raise ConfigError(
                    "--protocol paper sets the budget (150,000 iterations of 256): leave out "
                    "--budget-minutes and --epochs"
                )

    def plan(self, options: Options) -> list[PlannedRun]:
        """Every run of ``options``: column by column, model by model, seed by seed.

        Raises:
            ConfigError: a config the table needs is missing.
        """
        plan = []
        config_dir = options.config_dir or default_config_dir()
        for column in options.columns:
            for model in options.models or self.models:
                path = config_dir / self.columns[column] / f"{model}.yaml"
                if not path.is_file():
                    raise ConfigError(f"missing config {path} for {model} on {column}")
                plan += [PlannedRun(column, seed, path, model) for seed in options.seeds]
        return plan

    def values(self, run: PlannedRun, options: Options, minutes: float | None) -> dict[str, Any]:
        """The config values of ``run``: its file, ``--set``, its seed and device and budget
        (``--epochs``, else, under a time budget and unless :attr:`EPOCHS_LIMIT_TIME`, the
        epochs raised so that the time decides)."""
        values = load_config(run.config)
        if options.protocol == "paper":  # the protocol first: --set may still change it
            values = paper_values(values)
        values = apply_overrides(values, list(options.overrides))
        values["seed"], values["device"] = run.seed, options.device
        budget = values.setdefault("run", {})
        if minutes is not None:
            budget["minutes"] = minutes
        if options.epochs:
            budget["epochs"] = options.epochs
        elif minutes is not None and not self.EPOCHS_LIMIT_TIME:
            budget["epochs"] = max(int(budget.get("epochs", 10)), self.EPOCHS_UNDER_TIME_BUDGET)
        return values

    def budget(
        self, epochs: int, minutes: float | None, protocol: str = "budget"
    ) -> tuple[str, str]:
        """The run's budget name and folder slug (:func:`budget_name`; :data:`PAPER_BUDGET`
        under the paper's protocol)."""
        if protocol == "paper":
            return PAPER_BUDGET
        return budget_name(epochs, minutes, with_epochs=self.EPOCHS_LIMIT_TIME)

    def execute(
        self, run: PlannedRun, cfg: Any, run_dir: Path, resume: bool = False
    ) -> dict[str, Any]:
        """Make the run in ``run_dir`` and return its ``result.json``: train it, or with
        ``resume`` continue it from its checkpoint (a table whose rows are not all trained
        overrides this)."""
        return Trainer(cfg, run_dir, resume=resume, progress=False).fit()

    def run_dir(self, run: PlannedRun, options: Options, slug: str) -> Path:
        """``RUNS/TABLE/COLUMN/MODEL-seedS-BUDGET[-VARIANT]``."""
        name = f"{run.item}-seed{run.seed}-{slug}" + (
            f"-{options.variant}" if options.variant else ""
        )
        return options.runs_dir / self.name / run.column / name

    # ------------------------------------------------------------------ recording
    def entry(
        self,
        run: PlannedRun,
        cfg: Any,
        result: dict[str, Any],
        options: Options,
        where: dict[str, Any],
    ) -> dict[str, Any]:
        """A finished run's entry of ``results/TABLE.json``: its numbers and ``where`` (the
        runner's: ``budget``, ``config``, ``run_dir``, ``git_commit``, ``config_sha256``,
        ``world_size``), in the order the records keep."""
        variant = (
            {"variant": options.variant, "overrides": list(options.overrides)}
            if options.variant
            else {}
        )
        numbers = ("test_error", "val_error", "epochs", "best_epoch", "train_seconds", "params")
        curve = thin_curve(result.get("curve") or [])
        return {
            "column": run.column,
            "model": run.item,
            "seed": run.seed,
            "budget": where["budget"],
            "schedule": cfg.optim.schedule,
            "world_size": where["world_size"],
            **variant,
            **{k: where[k] for k in ("config", "run_dir", "git_commit", "config_sha256")},
            **{k: result[k] for k in numbers},
            "device": result.get("device"),
            **({"images_seen": result["images_seen"], "curve": curve} if curve else {}),
        }

    def key(self, entry: dict[str, Any]) -> tuple[Any, ...]:
        """What makes two entries the same run (a rerun replaces the entry)."""
        return (
            entry["column"],
            entry["model"],
            entry["seed"],
            entry["budget"],
            entry.get("variant"),
        )

    # ------------------------------------------------------------------ what the runner says
    def header(self, runs: int, minutes: float | None) -> str:
        return f"torchstn reproduce {self.name}: {runs} runs" + (
            f", {minutes:.1f} min each" if minutes else ""
        )

    def label(self, run: PlannedRun) -> str:
        return f"{run.item} on {run.column} seed {run.seed}"

    def announce(self, run: PlannedRun, run_dir: Path) -> str | None:
        """The line before a run trains (None: nothing)."""
        return f"{self.label(run)} -> {run_dir}"

    def finished(self, position: str, run: PlannedRun, entry: dict[str, Any], run_dir: Path) -> str:
        """The line after a run."""
        return self.summary(entry)

    def picture(self, run_dir: Path) -> str | None:
        """Draw what a newly trained run shows, if the table has a picture; the reason when it
        could not."""
        return None

    def summary(self, entry: dict[str, Any]) -> str:
        """The line printed when a run is done."""
        return (
            f"    test error {entry['test_error']:.2f}% (val {entry['val_error']:.2f}%), "
            f"{entry['epochs']} epochs, {entry['train_seconds'] / 60:.1f} min, "
            f"{entry['params']:,} params"
        )


def _grid(
    models: tuple[str, ...], columns: tuple[str, ...], rows: list[list[float]]
) -> dict[tuple[str, str], float]:
    return {(m, c): v for m, row in zip(models, rows) for c, v in zip(columns, row)}


_TABLES: dict[str, Table] = {}


def register_table(table: Table) -> Table:
    """Register ``table`` under its name (a name is registered once).

    Raises:
        ConfigError: the name is taken by another table.
    """
    taken = _TABLES.get(table.name)
    if taken is not None and taken is not table:
        raise ConfigError(f"table {table.name!r} is registered already")
    _TABLES[table.name] = table
    return table


def table_names() -> tuple[str, ...]:
    """The registered tables, in the order they were registered."""
    return tuple(_TABLES)


def get_table(name: str) -> Table:
    """The table called ``name``.

    Raises:
        UnknownNameError: no such table (the message lists them).
    """
    return _TABLES[check_choice(name, "table", _TABLES)]


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

TABLE1 = register_table(
    Table(
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
    )
)
CLUTTERED = register_table(
    Table(
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
        notes=(
            "pool_cnn is our pooling-heavy baseline; the paper has no such row. Recipe change "
            "(issue 26, commit 29e1128): the FCN normalises its inputs (`data.normalize: true` "
            "in its config): unnormalised, the mostly empty 60x60 images slowed its first layer "
            "(chosen on training and validation data only, in short runs with fewer training "
            "images). The same change made the ST-FCN unstable at this budget (one seed "
            "collapsed to chance, the other trailed the unnormalised run: validation error), so "
            "it was withdrawn there (commit 3c3948f) and the ST-FCN keeps its recipe, as do the "
            "CNN rows: the FCN / ST-FCN pair differs in this one setting, in the FCN's favour. "
            "The FCN's learning curve is still falling when its budget ends."
        ),
    )
)
ADDITION = register_table(
    Table(
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
        notes=(
            "The paper's single ST-FCN row does not name its transform; we run it with affine. "
            "Recipe change (issue 26, commit 29e1128): the CNN normalises its two input channels "
            "(`data.normalize: true` in its config). Unnormalised, it stayed on the class prior "
            "(predicting the commonest sums) for its whole budget with SGD at two rates and was "
            "slow to leave it with Adam; normalised, it leaves the prior within the first "
            "epochs (chosen on training and validation data only, in short runs with fewer "
            "training images). A hidden fully connected layer (`model.options.hidden`) and "
            "smaller batches did not help there. The other rows keep their recipe: normalising the "
            "2xST-FCN projective did worse at this budget (the variant below). The CNN's "
            "learning curve is still falling when its budget ends, after under 1% of the "
            "paper's training images: it is short of images, no longer stuck."
        ),
    )
)
VOLUMES = register_table(
    Table(
        "volumes",
        "Volumes: RTS3D, MNIST digits lifted into 32^3 volumes",
        {"RTS3D": "volumes"},
        ("cnn3d", "st_cnn3d_affine"),
        notes=(
            "The paper has no 3-D experiment: no numbers to compare with. Each digit is a slab "
            "in a 32^3 volume, turned up to 45 degrees about a random axis, scaled by 0.7-1.2, "
            "shifted and cluttered (`torchstn.data.tasks.RTS3D`). Both models classify the "
            "volume at half resolution (16^3) and train for the same number of images, so the "
            "comparison is at an equal data budget; their training times differ and are listed."
        ),
    )
)
