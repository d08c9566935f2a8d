"""Where a run's numbers came from: the code (its git commit), the config (a hash) and the
machine, as ``result.json`` records them.

Kept apart from the loop: asking git and the CPU is not training, and a reader of
:mod:`torchstn.train.trainer` should not have to read past it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from .. import native
from .._version import __version__
from ..hardware import describe

__all__ = ["config_hash", "loaded_commit", "provenance", "source_commit"]

#: the checkout the package lives in, when it lives in one (two levels above this file's folder)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def config_hash(values: dict[str, Any]) -> str:
    """SHA-256 of a resolved config (its JSON with sorted keys): two runs with the same hash
    were configured identically."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_LOADED_COMMIT: list[str | None] = []  # loaded_commit's answer, once asked


def loaded_commit() -> str | None:
    """The commit of the code this process runs: :func:`source_commit` at the first call (the
    process's first Trainer, soon after it imported torchstn), the same answer at every later
    call. A ``torchstn reproduce`` trains run after run in one process with the code it imported
    at its start, so asking git again for each run would name commits made in the meantime."""
    if not _LOADED_COMMIT:
        _LOADED_COMMIT.append(source_commit())
    return _LOADED_COMMIT[0]


def source_commit() -> str | None:
    """The git commit of the torchstn source that runs (``-dirty`` appended when tracked files
    under ``torchstn/`` or ``configs/`` differ from it), or None outside the git checkout the
    package lives in."""
    root = _PACKAGE_ROOT
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        lines = head.stdout.split()
        # only the checkout the package itself lives in (not a repository around a venv)
        if head.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return None
        dirty = subprocess.run(
            # the code and the configs: results files written by runs do not make it dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "torchstn", "configs"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("-dirty" if dirty.stdout.strip() else "")


def provenance(config: dict[str, Any], device: torch.device, commit: str | None) -> dict[str, Any]:
    """The ``result.json`` fields that say where a run's numbers came from: ``hardware`` (the
    GPU's name, or the CPU's with cores, threads, kernel path and instruction sets), ``versions``,
    ``git_commit`` (``commit``, as :func:`loaded_commit` gave it when the run started) and
    ``config_sha256`` of the resolved ``config``."""
    return {
        "hardware": describe(device),
        "versions": {
            "torchstn": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "git_commit": commit,
        "config_sha256": config_hash(config),
        "sampling_path": sampling_path(),
    }


def sampling_path() -> dict[str, Any]:
    """Which sampling path the run's warps took: ``fused_cpu`` (whether the fused CPU kernel of
    :mod:`torchstn.native` was available, and ``detail``: where it came from or why not),
    ``enabled`` (:class:`torchstn.native.use_fused`) and ``warps`` (how many warps took each
    path since the run started)."""
    status = native.status()
    warps = native.path_counts()
    detail = status["cpu_detail"]
    if not any(warps.values()) and not status["cpu"]:
        # nothing warped (a model without a transformer): the kernels were never needed
        detail = "not needed: the run made no warps"
    return {
        "fused_cpu": status["cpu"],
        "detail": detail,
        "enabled": status["enabled"],
        "warps": warps,
    }
