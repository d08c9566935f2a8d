"""The pieces of a self-contained HTML page shared by the run reports (classification,
:mod:`torchstn.viz.report`, and registration, :mod:`torchstn.viz.registration`): the style
sheet, tables, figures, how long a run trained, the hardware line and a JSON file read."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from ..errors import DataError

__all__: list[str] = []  # private helpers of the report pages

_CSS = """
:root { color-scheme: light dark; --fg: #1d1f21; --bg: #fdfdfc; --muted: #5f6368;
  --card: #ffffff; --line: #d9dadc; --accent: #1d63b8; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8e6; --bg: #151618; --muted: #a5a8ad; --card: #202226; --line: #3a3d42;
    --accent: #7fb3f0; }
}
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); max-width: 1100px; margin: 2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem;
  border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
.sub, figcaption, .note { color: var(--muted); font-size: .92rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; background: #fff;
  border: 1px solid var(--line); border-radius: 6px; padding: 6px; box-sizing: border-box; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .95rem; }
td, th { border: 1px solid var(--line); padding: .25rem .7rem; text-align: left; }
th { background: var(--card); }
.big { font-size: 1.15rem; } .big b { color: var(--accent); }
.warn { color: #b3261e; font-weight: 600; }
pre { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: .8rem; overflow-x: auto; font-size: .82rem; line-height: 1.35; }
"""


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    return f"<table>{body}</table>"


def _figure(uri: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _partial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the epoch the time budget cut short (the last one, when there is one)."""
    return rows[-1] if rows and rows[-1].get("partial") else None


def _epochs(
    info: Any, rows: list[dict[str, Any]], result: dict[str, Any] | None
) -> tuple[str, str]:
    """How long the run trained (``6 epochs and 312 steps of epoch 7, cut short by the time
    budget``) and which weights the report reads (``best weights: epoch 7, the partial one``)."""
    done = int(info.epoch)
    cut = _partial(rows)
    steps = cut.get("steps") if cut else (result or {}).get("steps_in_partial_epoch")
    trained = _plural(done, "epoch")
    if cut is not None or (isinstance(steps, int) and steps > 0 and result is not None):
        where = f" of epoch {done + 1}, cut short by the time budget"
        trained += f" and {_plural(int(steps), 'step')}{where}" if steps else where
    kept = int(info.weights_epoch)
    if info.weights == "best":
        weights = f"best weights on validation: epoch {kept}"
        if kept > done:  # only a cut-short epoch lies past the completed ones
            weights += ", the partial one"
    else:
        weights = "last weights" + (f", after epoch {kept}" if kept else "")
        if cut is not None or (isinstance(steps, int) and steps > 0):
            weights = "last weights: from the partial epoch"
    return trained, weights


#: keys of result.json shown in the report's Result table, with their format.
_FORMATS = {
    "test_error": "{:.2f}%",
    "val_error": "{:.2f}%",
    "test_loss": "{:.4f}",
    "train_seconds": "{:.1f} s",
}


def _number(key: str, value: Any) -> Any:
    """A result value as a reader wants it (``80.67%``, not ``80.66666666666667``)."""
    fmt = _FORMATS.get(key)
    if fmt is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return fmt.format(value)


def _hardware(text: str) -> str:
    """result.json's hardware line with singular counts (``1 thread``, not ``1 threads``)."""
    return re.sub(r"\b1 (core|thread|GPU)s\b", r"1 \1", str(text))


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"{path}: not JSON") from None
    return value if isinstance(value, dict) else None
