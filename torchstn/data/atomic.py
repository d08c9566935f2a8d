"""Atomic writes for the data commands (the shared helper of :mod:`torchstn._atomic`)."""

from __future__ import annotations

from .._atomic import atomic_path

__all__ = ["atomic_path"]
