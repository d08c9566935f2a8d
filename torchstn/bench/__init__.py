"""The benchmark suite behind ``torchstn bench``: torchstn against PyTorch, kornia and a
hand-written transformer, measured in one process, with the tables of ``BENCHMARKS.md``.

Groups (``--only`` takes their names):

- ``sampler``: grid generation plus sampling of every transform family against PyTorch's
  ``affine_grid`` + ``grid_sample`` and kornia's warps, forward and forward+backward.
- ``volumes``: the same for the 3-D matrix families on volumes (affine3d, projective3d) against
  PyTorch's 5-D ``affine_grid`` + ``grid_sample``, kornia's 3-D warps and MONAI's
  ``AffineTransform``.
- ``fields``: dense displacement fields: ``fields.warp`` and ``fields.integrate`` against
  MONAI's ``Warp`` and ``DVF2DDF`` on 256^2 images and 128^3 volumes, with memory.
- ``module``: :class:`torchstn.SpatialTransformer` against the same localisation net followed by
  hand-written ``affine_grid`` + ``grid_sample`` (the PyTorch tutorial's way).
- ``training``: images per second of CNN and ST-CNN training steps on the paper's inputs, the
  share of a step in localisation, grid, sampler and classifier, and peak memory.
- ``seeds``: several models trained at once on one device: in turn, as processes, or stacked
  with ``torch.func`` (``vmap``).
- ``inference``: latency at batch 1 and 256, eager, TorchScript and ONNX Runtime.
- ``data``: task generation rates and what an epoch's generation costs a training run.
- ``scaling``: time against batch size and image size (sampler and training step).
- ``options``: ``channels_last``, ``torch.compile``, bfloat16 autocast and the thread count.
- ``bandwidth``: the sampler's effective memory bandwidth beside a plain copy.

Each group is a module with ``TITLE``, ``DESCRIPTION``, ``COLUMNS`` and ``run(settings)``
returning ``{"rows": [...], ...}``; :func:`run_suite` adds the environment and the time taken.
kornia and MONAI are optional (the ``bench`` extra): without them their rows are recorded as
skipped.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from .._atomic import atomic_write_text
from ..errors import InvalidInputError
from .timing import Settings, environment

__all__ = [
    "GROUPS",
    "SCHEMA",
    "Settings",
    "group_module",
    "read_results",
    "run_suite",
    "write_results",
]

#: group name -> module (under torchstn.bench), in the order of BENCHMARKS.md.
GROUPS = {
    "sampler": "sampler",
    "volumes": "volumes",
    "fields": "fields",
    "module": "module",
    "training": "training",
    "seeds": "seeds",
    "inference": "inference",
    "data": "datagen",
    "scaling": "scaling",
    "options": "options",
    "bandwidth": "bandwidth",
}
#: version of the JSON layout.
SCHEMA = 1


def group_module(name: str) -> ModuleType:
    """The module of group ``name``."""
    if name not in GROUPS:
        raise InvalidInputError(
            f"unknown benchmark group {name!r}; choose from {', '.join(GROUPS)}"
        )
    return importlib.import_module(f"{__name__}.{GROUPS[name]}")


def run_suite(
    names: Sequence[str],
    settings: Settings,
    log: Callable[[str], None] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run the groups ``names`` (in the suite's order) and return the results document."""
    modules = {name: group_module(name) for name in names}
    groups: dict[str, Any] = {}
    for name in GROUPS:
        if name not in modules:
            continue
        if log:
            log(f"{name}: {modules[name].TITLE}")
        start = time.perf_counter()
        result = modules[name].run(settings)
        groups[name] = {
            **result,
            "env": environment(settings.device),
            "quick": settings.quick,
            "seconds": round(time.perf_counter() - start, 2),
            "command": command,
        }
        if log:
            log(f"{name}: {len(result['rows'])} rows in {groups[name]['seconds']:.1f} s")
    return {"schema": SCHEMA, "device": settings.device, "groups": groups}


def read_results(path: str | Path) -> dict[str, Any]:
    """Read a results document written by :func:`write_results`."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such benchmark results file") from None
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{path}: not a benchmark results file ({err})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or "groups" not in doc:
        raise InvalidInputError(f"{path}: not a benchmark results file of schema {SCHEMA}")
    return doc


def write_results(path: str | Path, doc: dict[str, Any], merge: bool = True) -> dict[str, Any]:
    """Write ``doc`` to ``path`` atomically; with ``merge``, groups of an existing file that
    ``doc`` did not run are kept. Returns what was written."""
    path = Path(path)
    if merge and path.exists():
        old = read_results(path)
        doc = {**doc, "groups": {**old["groups"], **doc["groups"]}}
        doc["groups"] = {k: doc["groups"][k] for k in GROUPS if k in doc["groups"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")
    return doc
