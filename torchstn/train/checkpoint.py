"""Checkpoints: written atomically, read with ``weights_only=True``, errors in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write, atomic_write_text
from ..errors import DataError

__all__ = ["FORMAT", "atomic_write_text", "load_checkpoint", "save_checkpoint"]

FORMAT = "torchstn-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) atomically."""
    atomic_write(path, lambda fh: torch.save({"format": FORMAT, **state}, fh))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU).

    Raises:
        DataError: missing, truncated, corrupted or foreign file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not a torchstn checkpoint")
    return state
