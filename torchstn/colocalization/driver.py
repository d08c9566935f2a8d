"""The co-localisation table: T and TC, one run per (column, digit, seed), results on disk.

Each run writes ``<runs_dir>/colocalization/<column>/digit<d>-seed<s>/result.json`` (atomically)
and ``boxes.png`` (the first images with the crop box in red and the true box in green).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .._checks import check_choice
from ..errors import ConfigError, InvalidInputError
from ..models import count_params
from ..train.checkpoint import atomic_write_text
from ..train.trainer import resolve_device
from .boxes import box_iou
from .config import ColocalizationConfig, load_colocalization_config
from .evaluate import evaluate_localization, predict_boxes
from .plot import save_boxes_png
from .trainer import build_colocalization_model, train_colocalization

__all__ = ["COLUMNS", "PAPER", "run_colocalization", "run_colocalization_table"]

#: column -> config file under ``<config_dir>/colocalization/``.
COLUMNS = {"T": "t.yaml", "TC": "tc.yaml"}
#: the paper's share of digits localised (IoU > 0.5), in percent.
PAPER = {"T": "100", "TC": "75-93"}


def run_colocalization(
    cfg: ColocalizationConfig,
    digit: int,
    seed: int,
    out_dir: str | Path,
    *,
    column: str = "",
    device: str = "cpu",
    max_seconds: float | None = None,
    picture: bool = True,
) -> dict[str, Any]:
    """Train and score one run, write ``result.json`` (and ``boxes.png``) to ``out_dir``.

    Returns:
        The result: ``column``, ``digit``, ``seed``, ``localised`` (% of the class's images with
        IoU > ``cfg.iou_threshold``), ``mean_iou``, ``train_seconds``, ``params`` (trainable
        parameter count), ``steps``, plus ``start_localised`` and ``start_mean_iou`` (the untrained
        model's), ``final_loss`` and ``device``.
    """
    dev = resolve_device(device)
    outcome = train_colocalization(cfg, digit, seed, device=dev, max_seconds=max_seconds)
    x, boxes = outcome.images.x, outcome.images.boxes
    start_model = build_colocalization_model(cfg, tuple(x.shape[1:]), seed)
    start = evaluate_localization(start_model, x, boxes, cfg.iou_threshold)
    scores = evaluate_localization(outcome.model, x, boxes, cfg.iou_threshold)
    result: dict[str, Any] = {
        "column": column,
        "digit": int(digit),
        "seed": int(seed),
        "localised": scores["localised"],
        "mean_iou": scores["mean_iou"],
        "train_seconds": round(outcome.train_seconds, 3),
        "params": count_params(outcome.model),
        "steps": outcome.steps,
        "start_localised": start["localised"],
        "start_mean_iou": start["mean_iou"],
        "final_loss": None if math.isnan(outcome.final_loss) else outcome.final_loss,
        "device": str(dev),
    }
    out = Path(out_dir)
    record = {
        **result,
        "paper_localised": PAPER.get(column),
        "config": cfg.to_dict(),
        "version": __version__,
    }
    atomic_write_text(out / "result.json", json.dumps(record, indent=2) + "\n")
    if picture:
        pred = predict_boxes(outcome.model, x[:8])
        iou = box_iou(pred, boxes[:8])
        titles = [f"IoU {v:.2f}" for v in iou.tolist()]
        save_boxes_png(out / "boxes.png", x[:8], pred, boxes[:8], titles=titles)
    return result


def _config_path(config_dir: Path, column: str) -> Path:
    check_choice(column, "column", COLUMNS)
    path = config_dir / "colocalization" / COLUMNS[column]
    if not path.is_file():
        raise ConfigError(f"column {column}: config file not found: {path}")
    return path


def run_colocalization_table(
    columns: Sequence[str] = ("T", "TC"),
    classes: Iterable[int] = range(10),
    seeds: Iterable[int] = (0,),
    budget_minutes: float | None = None,
    runs_dir: str | Path = Path("runs"),
    device: str = "auto",
    config_dir: str | Path | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the co-localisation experiment for every (column, class, seed).

    Column ``T`` trains with ``<config_dir>/colocalization/t.yaml`` (no clutter), ``TC`` with
    ``tc.yaml`` (clutter).

    Args:
        columns: ``"T"`` and/or ``"TC"``.
        classes: digit classes, 0 to 9.
        seeds: training seeds.
        budget_minutes: total training time, split evenly across the runs: each run trains until
            its share or its configured steps, whichever comes first. None: the configured steps.
        runs_dir: results go to ``<runs_dir>/colocalization/<column>/digit<d>-seed<s>/``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        config_dir: the ``configs/`` folder (default: the source tree's, else ``./configs``).
        log: called with one line per finished run.

    Returns:
        One dict per run, in order (see :func:`run_colocalization` for the keys).
    """
    if config_dir is None:
        from ..experiments import default_config_dir

        config_dir = default_config_dir()
    config_dir = Path(config_dir)
    columns, classes, seeds = list(columns), list(classes), list(seeds)
    configs = {
        column: load_colocalization_config(_config_path(config_dir, column)) for column in columns
    }
    for digit in classes:
        if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
            raise InvalidInputError(f"classes: expected ints in 0..9, got {digit!r}")
    runs = len(columns) * len(classes) * len(seeds)
    share = None
    if budget_minutes is not None:
        if (
            isinstance(budget_minutes, bool)
            or not budget_minutes > 0
            or not math.isfinite(budget_minutes)
        ):
            raise InvalidInputError(
                f"budget_minutes: expected a positive number, got {budget_minutes!r}"
            )
        share = 60.0 * budget_minutes / max(runs, 1)
    results = []
    for column in columns:
        for digit in classes:
            for seed in seeds:
                out = Path(runs_dir) / "colocalization" / column / f"digit{digit}-seed{seed}"
                result = run_colocalization(
                    configs[column],
                    digit,
                    seed,
                    out,
                    column=column,
                    device=device,
                    max_seconds=share,
                )
                results.append(result)
                if log is not None:
                    log(
                        f"{column} digit {digit} seed {seed}: {result['localised']:.0f}% localised, "
                        f"mean IoU {result['mean_iou']:.2f} ({result['steps']} steps, "
                        f"{result['train_seconds']:.1f} s)"
                    )
    return results
