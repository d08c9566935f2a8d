"""The paper's experiments: which models run on which data, and the paper's numbers beside them.

Each table maps columns (datasets) to config folders under ``configs/`` and lists its models; a
run's config is ``configs/<folder>/<model>.yaml``. ``torchstn reproduce`` trains them and keeps the
outcome in ``results/<table>.json``; :func:`render_results` turns every such file into
``RESULTS.md``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._checks import check_choice

__all__ = [
    "COLOCALIZATION",
    "TABLES",
    "Table",
    "default_config_dir",
    "get_table",
    "render_results",
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
    metric="% of images localised (IoU > 0.5), mean over the digits 0-9",
    notes=(
        "Paper: T 100%, TC 75-93%. The transformer learns only from the random-crop term of the "
        "triplet loss (the positive distance is computed on detached crops), the localiser is a "
        "soft-argmax score map starting from a centred window, and the crop scale is bounded to "
        "[0.3, 0.36]; see configs/colocalization/ and torchstn/colocalization/."
    ),
)
PAPER_COLOCALIZATION = {"T": "100", "TC": "75-93"}


def table_names() -> tuple[str, ...]:
    return (*TABLES, COLOCALIZATION.name)


def get_table(name: str) -> Table:
    if name == COLOCALIZATION.name:
        return COLOCALIZATION
    return TABLES[check_choice(name, "table", table_names())]


def default_config_dir() -> Path:
    """``configs/`` of the source tree when run from a checkout, else ``./configs``."""
    here = Path(__file__).resolve().parents[1] / "configs"
    return here if here.is_dir() else Path("configs")


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _budget_order(budget: str) -> tuple[int, float]:
    """Time budgets first, longest first; then epoch budgets, longest first."""
    number, _, unit = budget.partition(" ")
    try:
        value = float(number)
    except ValueError:
        return (2, 0.0)
    return (0 if unit == "min" else 1, -value)


def _render_table(table: Table, record: dict[str, Any]) -> str:
    runs = record.get("runs", [])
    budgets = sorted({r.get("budget", "?") for r in runs}, key=_budget_order)
    lines = [f"## {table.title}", ""]
    for budget in budgets:
        lines += _render_budget(table, record, [r for r in runs if r.get("budget", "?") == budget])
    if table.notes:
        lines += [table.notes, ""]
    return "\n".join(lines)


def _render_budget(table: Table, record: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    budget = runs[0].get("budget", "?")
    lines = [f"### Budget: {budget} of training per run", ""]
    default = record.get("command", f"torchstn reproduce {table.name}")
    commands = sorted({r.get("command") or default for r in runs})
    hardware = sorted({r.get("hardware") or record.get("hardware", "?") for r in runs})
    wall = sum(r.get("wall_seconds", r["train_seconds"]) for r in runs)
    lines.append("Commands: " + "; ".join(f"`{c}`" for c in commands) + "  ")
    lines.append(
        f"Hardware: {'; '.join(hardware)}; versions: "
        + ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
        + f"; run time {wall / 60:.1f} min summed over runs; "
        f"seeds {sorted({r['seed'] for r in runs})}; written {record.get('date', '?')}."
    )
    lines.append("")
    cols = [c for c in table.columns if any(r["column"] == c for r in runs)]
    header = "| model | params | " + " | ".join(f"{c} ours | {c} paper" for c in cols) + " |"
    lines += [header, "|" + "---|" * (2 + 2 * len(cols))]
    for model in table.models:
        mine = [r for r in runs if r["model"] == model]
        if not mine:
            continue
        params = sorted({r["params"] for r in mine})
        cells = []
        for c in cols:
            errs = [r["test_error"] for r in mine if r["column"] == c]
            paper = table.paper.get((model, c))
            cells += [_fmt(errs), "–" if paper is None else f"{paper:.1f}"]
        lines.append(
            f"| {model} | {', '.join(f'{p:,}' for p in params)} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    lines.append(
        "Training per run (epochs completed / minutes of training / learning-rate schedule / best "
        "epoch on validation):"
    )
    lines.append("")
    for r in runs:
        lines.append(
            f"- {r['model']} on {r['column']} (seed {r['seed']}): {r['epochs']} epochs, "
            f"{r['train_seconds'] / 60:.1f} min, {r.get('schedule', '?')} schedule, "
            f"best epoch {r.get('best_epoch')}, "
            f"val {r['val_error']:.2f}%, test {r['test_error']:.2f}%"
        )
    return [*lines, ""]


def _render_colocalization(record: dict[str, Any]) -> str:
    table = COLOCALIZATION
    runs = record.get("runs", [])
    lines = [f"## {table.title}", ""]
    commands = sorted({r.get("command", "torchstn reproduce colocalization") for r in runs})
    hardware = sorted({r.get("hardware", "?") for r in runs})
    wall = sum(r.get("wall_seconds", r["train_seconds"]) for r in runs)
    lines.append("Commands: " + "; ".join(f"`{c}`" for c in commands) + "  ")
    lines.append(
        f"Hardware: {'; '.join(hardware)}; versions: "
        + ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
        + f"; run time {wall / 60:.1f} min summed over runs; "
        f"seeds {sorted({r['seed'] for r in runs})}; written {record.get('date', '?')}."
    )
    lines += ["", f"Metric: {table.metric}.", ""]
    digits = sorted({r["digit"] for r in runs})
    lines.append(
        "| column | budget | ours | paper | mean IoU | val | at start | "
        + " | ".join(str(d) for d in digits)
        + " |"
    )
    lines.append("|" + "---|" * (7 + len(digits)))
    for column in table.columns:
        budgets = sorted({r.get("budget", "?") for r in runs if r["column"] == column})
        for budget in budgets:
            mine = [r for r in runs if r["column"] == column and r.get("budget", "?") == budget]
            per_digit = []
            for d in digits:
                vals = [r["localised"] for r in mine if r["digit"] == d]
                per_digit.append(_fmt(vals) if vals else "–")
            lines.append(
                f"| {column} | {budget} | {statistics.mean(r['localised'] for r in mine):.1f} | "
                f"{PAPER_COLOCALIZATION[column]} | "
                f"{statistics.mean(r['mean_iou'] for r in mine):.2f} | "
                f"{statistics.mean(r['val_localised'] for r in mine):.1f} | "
                f"{statistics.mean(r['start_localised'] for r in mine):.1f} | "
                + " | ".join(per_digit)
                + " |"
            )
    total = sum(r["train_seconds"] for r in runs)
    lines += [
        "",
        f"Training: {len(runs)} runs, {total / 60:.1f} min in all. {table.notes}",
        "",
    ]
    return "\n".join(lines)


def render_results(results_dir: str | Path) -> str:
    """RESULTS.md text from every ``results/<table>.json``."""
    results_dir = Path(results_dir)
    parts = [
        "# Results",
        "",
        "Our measured test errors (%) beside the paper's (Jaderberg et al., 2015). Every number "
        "here was written by `torchstn reproduce TABLE` from the run files in `results/`; rerun "
        "the command shown under each table to regenerate it. Model selection uses the validation "
        "split; the test split is evaluated once, on the best-on-validation weights. Our runs train "
        "for minutes on a CPU, the paper's for 150k iterations on a GPU: compare with that in mind. "
        "A budget counts training steps and validation; generating each epoch's fresh distortions "
        "is not counted (each run's `wall_seconds` in `results/` includes it).",
        "",
    ]
    found = False
    for name, table in TABLES.items():
        path = results_dir / f"{name}.json"
        if path.is_file():
            found = True
            parts.append(_render_table(table, json.loads(path.read_text())))
    coloc = results_dir / f"{COLOCALIZATION.name}.json"
    if coloc.is_file():
        found = True
        parts.append(_render_colocalization(json.loads(coloc.read_text())))
    if not found:
        parts.append("No results yet: run `torchstn reproduce TABLE`.\n")
    return "\n".join(parts)
