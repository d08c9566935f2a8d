"""``RESULTS.md`` from the records of ``torchstn reproduce``: one section per registered table
(:mod:`torchstn.experiments.tables`), one sub-table per budget, our numbers beside the paper's.
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path
from typing import Any

from ..data.tasks.projective import Projective
from .colocalization import PAPER, ColocalizationTable
from .curves import PAPER_IMAGES, figure_name
from .registration import RegistrationTable
from .tables import PAPER_BUDGET, PAPER_PROTOCOL, Table, get_table, table_names

__all__ = ["calibrated_corner_sigma", "plain_counterpart", "render_results"]


#: the mark of a cell measured with one seed only.
SINGLE_SEED = "¹"
#: the mark of a cell trained on a GPU.
GPU = " ᴳ"


def _on_gpu(entry: dict[str, Any]) -> bool:
    return str(entry.get("device") or "").startswith("cuda")


def _fmt(values: list[float]) -> str:
    """A table cell: one seed marked ``¹``; several: mean ± standard deviation (n seeds)."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}{SINGLE_SEED}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def plain_counterpart(model: str) -> str | None:
    """The model without a transformer that an ST model is compared with at equal budget:
    ``cnn`` for the ST-CNNs, ``fcn`` for the ST-FCNs (one or two transformers), ``cnn3d`` for
    the volume ST-CNNs; None for the models without a transformer.

    Example:
        >>> [plain_counterpart(m) for m in ("st_cnn_tps", "st2_fcn_affine", "st_cnn3d_affine")]
        ['cnn', 'fcn', 'cnn3d']
    """
    if model.startswith("st_cnn3d_"):
        return "cnn3d"
    if model.startswith("st_cnn_"):
        return "cnn"
    if model.startswith(("st_fcn_", "st2_fcn_")):
        return "fcn"
    return None


def _summary(table: Table, runs: list[dict[str, Any]]) -> list[str]:
    """For every (column, ST model) with its plain counterpart run at the same budget: the two
    errors, the difference and whether the transformer helped (with the spread where several
    seeds exist: the standard error of the difference of the means)."""
    rows = []
    for column in table.columns:
        for model in table.models:
            plain = plain_counterpart(model)
            st = [r["test_error"] for r in runs if (r["model"], r["column"]) == (model, column)]
            base = [r["test_error"] for r in runs if (r["model"], r["column"]) == (plain, column)]
            if plain is None or not st or not base:
                continue
            diff = statistics.mean(st) - statistics.mean(base)
            se = None
            if len(st) > 1 and len(base) > 1:
                se = (
                    statistics.variance(st) / len(st) + statistics.variance(base) / len(base)
                ) ** 0.5
            verdict = "yes" if diff < 0 else "no"
            if se is not None and abs(diff) < 2 * se:
                verdict += " (within 2 standard errors)"
            spread = "" if se is None else f" ± {se:.2f}"
            rows.append(
                f"| {column} | {model} | {plain} | {_fmt(st)} | {_fmt(base)} | "
                f"{diff:+.2f}{spread} | {verdict} |"
            )
    if not rows:
        return []
    return [
        "Does the transformer help at this budget? (ST model against its plain counterpart, test "
        "error in %; difference = ST minus plain, negative: the transformer helps)",
        "",
        "| column | ST model | plain | ST error | plain error | difference | ST better |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _budget_order(budget: str) -> tuple[int, float]:
    """The paper's protocol first; then time budgets, longest first; then epoch budgets,
    longest first."""
    if budget == PAPER_BUDGET[0]:
        return (-1, 0.0)
    number, _, unit = budget.partition(" ")
    try:
        value = float(number)
    except ValueError:
        return (2, 0.0)
    return (0 if unit == "min" else 1, -value)


def _render_table(table: Table, record: dict[str, Any], figures: str) -> str:
    runs = [r for r in record.get("runs", []) if not r.get("variant")]
    budgets = sorted({r["budget"] for r in runs}, key=_budget_order)
    lines = [f"## {table.title}", ""]
    for budget in budgets:
        mine = [r for r in runs if r["budget"] == budget]
        lines += _render_budget(table, record, mine)
        lines += _render_curves(table, mine, figures)
    lines += _render_variants(record.get("runs", []))
    if table.notes:
        lines += [table.notes, ""]
    return "\n".join(lines)


def _images(n: float) -> str:
    """A count of images, short: ``38.4M``, ``600k``."""
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k"


def _render_curves(table: Table, runs: list[dict[str, Any]], figures: str) -> list[str]:
    """The learning-curve figures of one budget's runs (those that kept a curve), with how far
    each model got towards the paper's 38.4M training images."""
    kept = [r for r in runs if r.get("curve")]
    if not kept:
        return []
    budget = kept[0]["budget"]
    lines = [
        "Learning curves: validation error against training images seen (log axes), one line "
        f"per run; the rings are the paper's test errors at the {_images(PAPER_IMAGES)} images of "
        "its protocol (150,000 iterations of 256). Training images seen, mean over seeds: "
        + "; ".join(
            f"{m} {_images(statistics.mean(r['images_seen'] for r in kept if r['model'] == m))}"
            for m in table.models
            if any(r["model"] == m for r in kept)
        )
        + "."
        + (
            f" Runs recorded before curves were kept ({len(runs) - len(kept)}) have none."
            if len(kept) < len(runs)
            else ""
        ),
        "",
    ]
    for column in table.columns:
        if any(r["column"] == column for r in kept):
            name = figure_name(table.name, column, budget)
            lines.append(f"![{column}, {budget}: learning curves]({figures}{name})")
    return [*lines, ""]


def _render_variants(runs: list[dict[str, Any]]) -> list[str]:
    """The runs of ``reproduce --variant``: each beside the table's own cell at its budget
    (the baseline: the same column, model and budget without the variant's overrides)."""
    variants = [r for r in runs if r.get("variant")]
    if not variants:
        return []
    lines = [
        "### Variants: attempts with changed settings",
        "",
        "Each variant trains a model of this table with some settings changed (its `--set`, "
        "which also lists any it shares with the table's runs), at a budget the table has; the "
        "baseline is the table's own cell (test error in %; "
        "difference = variant minus the baseline's mean, negative: the variant does better).",
        "",
        "| variant | column | model | budget | its --set | seeds | ours | baseline | "
        "difference | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in variants:
        key = (r["variant"], r["column"], r["model"], r["budget"])
        groups.setdefault(key, []).append(r)
    for (variant, column, model, budget), mine in sorted(groups.items(), key=str):
        base = [
            r["test_error"]
            for r in runs
            if not r.get("variant")
            and (r["column"], r["model"], r["budget"]) == (column, model, budget)
        ]
        errs = [r["test_error"] for r in mine]
        changed = sorted({o for r in mine for o in r.get("overrides", [])})
        diff = f"{statistics.mean(errs) - statistics.mean(base):+.2f}" if base else "–"
        lines.append(
            f"| {variant} | {column} | {model} | {budget} | "
            + ", ".join(f"`{o}`" for o in changed)
            + f" | {sorted(r['seed'] for r in mine)} | {_fmt(errs)} | {_fmt(base)} | {diff} | "
            + ", ".join(str(r["epochs"]) for r in sorted(mine, key=lambda r: r["seed"]))
            + " |"
        )
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in _commands(variants)), ""]
    return lines


def _commands(runs: list[dict[str, Any]]) -> list[str]:
    """The commands that made ``runs``, each once: the ``--jobs`` command that started a run
    (``launched_by``: it regenerates all its runs), else the run's own command."""
    return sorted({r.get("launched_by") or r["command"] for r in runs})


def _how_made(record: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """The lines under a table that say how its runs were made: the commands, the hardware and
    versions, the run time summed over runs, the seeds and the record's date."""
    hardware = sorted({r["hardware"] for r in runs})
    wall = sum(r["wall_seconds"] for r in runs)
    return [
        "Commands: " + "; ".join(f"`{c}`" for c in _commands(runs)) + "  ",
        f"Hardware: {'; '.join(hardware)}; versions: "
        + ", ".join(f"{k} {v}" for k, v in record.get("versions", {}).items())
        + f"; run time {wall / 60:.1f} min summed over runs; "
        f"seeds {sorted({r['seed'] for r in runs})}; written {record.get('date', '?')}.",
    ]


def _render_budget(table: Table, record: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    budget = runs[0]["budget"]
    if budget == PAPER_BUDGET[0]:
        p = PAPER_PROTOCOL
        lines = [
            "### The paper's protocol: 150,000 iterations of 256 per run",
            "",
            f"`torchstn reproduce TABLE --protocol paper`: plain SGD with momentum "
            f"{p['momentum']} (the paper does not state it), batch {p['batch_size']}, rate "
            f"{p['lr']} divided by 10 every {p['step_iterations']:,} iterations, "
            f"{p['iterations']:,} iterations, no weight decay, the localisation nets at the base "
            "rate; the best epoch on validation is tested.",
            "",
        ]
    else:
        lines = [f"### Budget: {budget} of training per run", ""]
    lines += _how_made(record, runs)
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
            gpu = any(_on_gpu(r) for r in mine if r["column"] == c)
            cells += [_fmt(errs) + (GPU if gpu else ""), "–" if paper is None else f"{paper:.1f}"]
        lines.append(
            f"| {model} | {', '.join(f'{p:,}' for p in params)} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    lines.append(
        f"{SINGLE_SEED} one seed; cells with several seeds show mean ± standard deviation over n "
        "seeds."
        + (
            f" {GPU.strip()} trained on a GPU (its device is named in the runs below)."
            if any(_on_gpu(r) for r in runs)
            else ""
        )
    )
    lines.append("")
    lines += _summary(table, runs)
    lines.append(
        "Training per run (epochs completed / minutes of training / learning-rate schedule / best "
        "epoch on validation):"
        + (
            " a best epoch one past the epochs completed is the last, partial epoch, cut short by "
            "the time budget and validated like the others."
            if any((r.get("best_epoch") or 0) > r["epochs"] for r in runs)
            else ""
        )
    )
    lines.append("")
    order = {m: i for i, m in enumerate(table.models)}
    columns = {c: i for i, c in enumerate(table.columns)}
    for r in sorted(
        runs, key=lambda r: (columns.get(r["column"], 99), order.get(r["model"], 99), r["seed"])
    ):
        lines.append(
            f"- {r['model']} on {r['column']} (seed {r['seed']}): {r['epochs']} epochs, "
            f"{r['train_seconds'] / 60:.1f} min, {r['schedule']} schedule, "
            f"best epoch {r.get('best_epoch')}, "
            f"val {r['val_error']:.2f}%, test {r['test_error']:.2f}%"
            + (f", on {r['hardware']}" if _on_gpu(r) else "")
        )
    return [*lines, ""]


def _render_colocalization(table: Table, record: dict[str, Any]) -> str:
    runs = record.get("runs", [])
    lines = [f"## {table.title}", ""]
    lines += _how_made(record, runs)
    lines += ["", f"Metric: {table.metric}.", ""]
    digits = sorted({r["digit"] for r in runs})
    lines.append(
        "| column | budget | ours | paper | mean IoU | val | at start | "
        + " | ".join(str(d) for d in digits)
        + " |"
    )
    lines.append("|" + "---|" * (7 + len(digits)))
    for column in table.columns:
        budgets = sorted({r["budget"] for r in runs if r["column"] == column})
        for budget in budgets:
            mine = [r for r in runs if r["column"] == column and r["budget"] == budget]
            per_digit = []
            for d in digits:
                vals = [r["localised"] for r in mine if r["digit"] == d]
                per_digit.append(_fmt(vals) if vals else "–")
            lines.append(
                f"| {column} | {budget} | {_coloc_mean(mine, len(digits))} | "
                f"{PAPER[column]} | "
                f"{statistics.mean(r['mean_iou'] for r in mine):.2f} | "
                f"{statistics.mean(r['val_localised'] for r in mine):.1f} | "
                f"{statistics.mean(r['start_localised'] for r in mine):.1f} | "
                + " | ".join(per_digit)
                + " |"
            )
    total = sum(r["train_seconds"] for r in runs)
    notes = "\n\n".join(n for n in (table.notes, record.get("notes")) if n)
    lines += ["", f"Training: {len(runs)} runs, {total / 60:.1f} min in all.", "", notes, ""]
    return "\n".join(lines)


def _coloc_mean(runs: list[dict[str, Any]], digits: int) -> str:
    """The column's % localised: the mean over its runs; with several seeds that ran every
    digit, also the spread over seeds of each seed's mean over the digits (``± sd (n=3)``)."""
    mean = statistics.mean(r["localised"] for r in runs)
    per_seed: dict[int, list[float]] = {}
    for r in runs:
        per_seed.setdefault(r["seed"], []).append(r["localised"])
    complete = [statistics.mean(v) for v in per_seed.values() if len(v) == digits]
    if len(complete) < 2:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {statistics.stdev(complete):.1f} (n={len(complete)})"


def _render_selection(table: Table, record: dict[str, Any]) -> str:
    """How the co-localisation settings were chosen, from ``results/colocalization_selection.json``:
    every candidate's mean % localised on training images, the chosen one per column in bold."""
    columns = table.columns
    chosen = record.get("chosen", {})
    lines = [
        f"The settings were chosen on MNIST training images only "
        f"(`results/colocalization_selection.json`, {record.get('date', '?')}): "
        f"{record.get('protocol', '')} Mean % localised on the training images (mean IoU):",
        "",
        "| setting | changed settings | " + " | ".join(columns) + " |",
        "|" + "---|" * (2 + len(columns)),
    ]
    for name, setting in record.get("settings", {}).items():
        cells = []
        for column in columns:
            score = setting.get(column)
            cell = "–" if score is None else f"{score['localised']:.1f} ({score['mean_iou']:.3f})"
            cells.append(f"**{cell}**" if chosen.get(column) == name else cell)
        overrides = ", ".join(f"`{o}`" for o in setting.get("overrides", [])) or "–"
        lines.append(
            f"| {name}: {setting['description']} | {overrides} | " + " | ".join(cells) + " |"
        )
    return "\n".join([*lines, ""])


def calibrated_corner_sigma(record: dict[str, Any]) -> tuple[float, float] | None:
    """The P corner noise that puts the FCN's P error where the paper's is, from a
    ``benchmarks/p_corner_sigma.py`` record: the paper's P error scaled by our FCN's mean R and E
    error over the paper's, then the noise interpolated linearly between the two swept values
    around it. Returns ``(target error, sigma)``, or None when the sweep does not bracket it."""
    paper = get_table("table1").paper
    runs = record.get("runs", [])
    refs = {r["column"]: r["test_error"] for r in runs if r["corner_sigma"] is None}
    if not {"R", "E"} <= refs.keys():
        return None
    scale = (refs["R"] + refs["E"]) / (paper[("fcn", "R")] + paper[("fcn", "E")])
    target = paper[("fcn", "P")] * scale
    sweep = sorted((r["corner_sigma"], r["test_error"]) for r in runs if r["column"] == "P")
    for (s0, e0), (s1, e1) in itertools.pairwise(sweep):
        if e0 <= target <= e1 and e1 > e0:
            return target, s0 + (s1 - s0) * (target - e0) / (e1 - e0)
    return None


def _render_corner_sigma(record: dict[str, Any]) -> str:
    paper = get_table("table1").paper
    runs = record.get("runs", [])
    hardware = sorted({r.get("hardware") or "?" for r in runs})
    lines = [
        "## The P column's corner noise",
        "",
        f"Command: `{record['command']}`  ",
        f"Hardware: {'; '.join(hardware)}; {record['epochs']} epochs per run, seed "
        f"{sorted({r['seed'] for r in runs})}, no time budget.",
        "",
        "The paper's P data move the four corners of the digit's frame by Gaussian noise whose "
        "size we could not confirm. The Table 1 FCN, trained identically on R, E and on P at "
        "several noise levels (`ink lost`: the share of the digit's ink the warp maps outside "
        "the 28 x 28 frame, over 3,000 test digits):",
        "",
        "| data | corner sigma (px) | FCN test error % | paper | ink lost % | digits losing > 10% |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["column"] == "P", r["corner_sigma"] or 0.0)):
        sigma = r["corner_sigma"]
        lines.append(
            f"| {r['column']} | {'–' if sigma is None else f'{sigma:g}'} | "
            f"{_fmt([r['test_error']])} | {paper[('fcn', r['column'])]:.1f} | "
            + (
                "– | – |"
                if sigma is None
                else f"{r['ink_lost_mean']:.2f} | {r['over_10pct']:.1f} |"
            )
        )
    chosen = Projective.defaults["corner_sigma"]
    found = calibrated_corner_sigma(record)
    lines.append("")
    if found is None:
        lines.append(
            f"The sweep does not bracket the paper's P error; the task uses {chosen:g} px."
        )
    else:
        target, sigma = found
        lines.append(
            f"Our FCN's mean error over R and E is {target / paper[('fcn', 'P')]:.3f} times the "
            f"paper's, so the paper's P ({paper[('fcn', 'P')]:.1f}%) corresponds to "
            f"{target:.2f}% here, reached at {sigma:.2f} px by linear interpolation. The P task "
            f"uses {chosen:g} px (configs/table1/p/ say so explicitly)"
            + "".join(f"; {note}" for note in [record.get("note")] if note)
            + "."
        )
    lines.append("")
    return "\n".join(lines)


def _cell(values: list[float], digits: int = 1) -> str:
    """Mean (± standard deviation over seeds, n) of a cell; ``–`` when empty."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}¹"
    return (
        f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f} "
        f"(n={len(values)})"
    )


def _render_registration(table: Table, record: dict[str, Any]) -> str:
    """The registration table of RESULTS.md: per column, one row per model with Dice before
    and after, the folded share, the Jacobian's spread, the time per pair and the training."""
    runs = record.get("runs", [])
    lines = [f"## {table.title}", ""]
    lines += _how_made(record, runs)
    lines += ["", table.notes, ""]
    for column in table.columns:
        mine = [r for r in runs if r["column"] == column]
        if not mine:
            continue
        lines += [
            f"### {column}",
            "",
            "| model | Dice before (%) | Dice after (%) | loss before | loss after | folded (%) | "
            "Jacobian std | ms/pair | params | training |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model in table.models:
            rows = [r for r in mine if r["model"] == model]
            if not rows:
                continue
            budgets = "/".join(sorted({r["budget"] for r in rows}))
            epochs = "/".join(map(str, sorted({r["epochs"] for r in rows})))
            if model == "classical":
                how = ", ".join(f"{k} {v}" for k, v in rows[0].get("classical", {}).items())
                train = f"none; per pair: {how}"
            else:
                train = budgets if "epoch" in budgets else f"{budgets}, {epochs} epochs"
            lines.append(
                f"| {model} | {_cell([r['dice_before'] for r in rows])} | "
                f"{_cell([r['dice'] for r in rows])} | "
                f"{_cell([r['similarity_before'] for r in rows], 4)} | "
                f"{_cell([r['similarity'] for r in rows], 4)} | {_cell([r['folded'] for r in rows], 3)} | "
                f"{_cell([r['jacobian_std'] for r in rows], 3)} | "
                f"{_cell([r['ms_per_pair'] for r in rows])} | {rows[0]['params']:,} | {train} |"
            )
        lines += ["", "¹ one seed; otherwise mean ± standard deviation over n seeds.", ""]
    return "\n".join(lines)


def render_results(results_dir: str | Path) -> str:
    """RESULTS.md text from every ``results/<table>.json``. Its figures (learning curves,
    :func:`torchstn.experiments.curves.write_figures`) are linked as ``RESULTS/curves/NAME.svg``
    where RESULTS is the folder's name: RESULTS.md is meant to sit beside the results folder."""
    results_dir = Path(results_dir)
    figures = f"{results_dir.name}/curves/" if results_dir.name else "curves/"
    parts = [
        "# Results",
        "",
        "Our measured test errors (%) beside the paper's (Jaderberg et al., 2015). Every number "
        "here was written by `torchstn reproduce TABLE` from the run files in `results/`; rerun "
        "the command shown under each table to regenerate it. Model selection uses the validation "
        "split; the test split is evaluated once, on the best-on-validation weights. Our runs train "
        "for minutes on a CPU, the paper's for 150k iterations on a GPU: compare with that in mind. "
        "A time budget counts training steps, validation and the generation of each epoch's "
        "fresh distortions.",
        "",
    ]
    found = False
    for name in table_names():
        table = get_table(name)
        path = results_dir / f"{name}.json"
        if path.is_file():
            found = True
            record = json.loads(path.read_text())
            if isinstance(table, ColocalizationTable):
                parts.append(_render_colocalization(table, record))
            elif isinstance(table, RegistrationTable):
                parts.append(_render_registration(table, record))
            else:
                parts.append(_render_table(table, record, figures))
        corner = results_dir / "p_corner_sigma.json"
        if name == "table1" and corner.is_file():
            parts.append(_render_corner_sigma(json.loads(corner.read_text())))
        selection = results_dir / f"{name}_selection.json"
        if isinstance(table, ColocalizationTable) and path.is_file() and selection.is_file():
            parts.append(_render_selection(table, json.loads(selection.read_text())))
    if not found:
        parts.append("No results yet: run `torchstn reproduce TABLE`.\n")
    return "\n".join(parts)
