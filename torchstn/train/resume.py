"""What a resumed run continues with: the run's own settings, with only its budget and how it
uses this machine changed (:func:`resumed_config`), and user data recorded as absolute paths."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .config import Config, config_from_dict, config_to_dict

__all__ = ["RESUMABLE", "absolute_data_paths", "resumed_config"]

#: settings a resumed run takes from the command line: its budget and how it runs on this
#: machine. Any other setting given must equal the run's (:func:`resumed_config`).
RESUMABLE = (
    "run.epochs",
    "run.minutes",
    "run.checkpoint_every",
    "run.num_threads",
    "data.num_workers",
    "device",
)
#: the sections of a config (the other top-level keys are settings).
_SECTIONS = ("data", "model", "optim", "run", "objective")
#: user-data paths of ``data``: recorded absolute, compared absolute.
_DATA_PATHS = ("path", "val_path", "test_path")


def absolute_data_paths(cfg: Config) -> None:
    """User data's paths made absolute (against the current folder, as they were read)."""
    for key in _DATA_PATHS:
        value = getattr(cfg.data, key)
        if isinstance(value, str) and value:
            setattr(cfg.data, key, os.path.abspath(value))


def resumed_config(
    saved: dict[str, Any],
    cfg: Config,
    settings: dict[str, Any] | None,
    run_dir: str | Path = "the run",
) -> Config:
    """The config a resumed run continues with: the run's own (``saved``, from its checkpoint).

    ``settings`` are the settings given for the resumed run (nested dicts; ``None``: the budget
    of ``cfg``, ``run.epochs`` and ``run.minutes``). Those of :data:`RESUMABLE` (the budget and
    how the run uses this machine) are applied; any other that differs from the run's is refused,
    rather than silently ignored: a run that changed its learning rate or model half-way would
    no longer be the run its folder describes. The device is always ``cfg.device``. Data paths
    compare as absolute paths (relative ones against the current folder).

    Raises:
        ConfigError: naming every setting that differs from the run's.
    """
    base = config_to_dict(config_from_dict(saved))
    if settings is None:
        settings = {"run": {"epochs": cfg.run.epochs, "minutes": cfg.run.minutes}}
    merged = json.loads(json.dumps(base))
    for key, value in settings.items():
        if key in _SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    merged["device"] = cfg.device
    new = config_from_dict(merged)
    new_values = config_to_dict(new)

    def leaves(values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in _SECTIONS and isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def norm(key: str, value: Any) -> Any:
        if key.startswith("data.") and key[5:] in _DATA_PATHS and isinstance(value, str):
            return os.path.abspath(value)
        return value

    old, now = leaves(base), leaves(new_values)
    changed = [k for k in now if norm(k, now[k]) != norm(k, old.get(k))]
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:

        def short(value: Any) -> str:
            text = json.dumps(value)
            return text if len(text) <= 40 else text[:37] + "..."

        def differences(key: str) -> list[str]:
            a, b = old.get(key), now[key]
            if isinstance(a, dict) and isinstance(b, dict):  # options: the keys that differ
                subs = sorted(k for k in {*a, *b} if a.get(k, ...) != b.get(k, ...))
                return [
                    f"{key}.{k} {short(a.get(k))} (given {short(b.get(k))})"
                    if k in a and k in b
                    else f"{key}.{k} {'unset' if k in b else short(a[k])} "
                    f"(given {short(b[k]) if k in b else 'nothing'})"
                    for k in subs
                ]
            return [f"{key} {short(a)} (given {short(b)})"]

        what = ", ".join(d for k in refused for d in differences(k))
        raise ConfigError(
            f"--resume: {run_dir} was trained with {what}; a resumed run keeps its settings "
            f"(only {', '.join(RESUMABLE)} may change): train into a new --out to change them"
        )
    return new
