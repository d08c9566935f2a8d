"""Scoring any model file torchstn writes on its run's data: a checkpoint or a file of
``torchstn export`` loaded as a classifier (:func:`load_for_eval`), and the run's data made again
(:func:`load_run_data`). What ``torchstn eval``, ``visualize`` and ``report`` load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import DataError
from .export import load_exported, read_metadata
from .inference import ModelInfo, inference_device, load_with_info, model_info
from .train.checkpoint import CHECKPOINT, identify
from .train.config import config_from_dict
from .train.objective import get_objective

__all__ = ["load_for_eval", "load_run_data"]


class _ExportedLogits(nn.Module):
    """An export file as a classifier: ``x -> logits`` (its other outputs dropped), on ``x``'s
    device."""

    def __init__(self, run: Any, index: int) -> None:
        super().__init__()
        self.run = run
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.index].to(x.device)


def load_for_eval(
    path: str | Path, weights: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo, str]:
    """``(model, info, kind)`` of a checkpoint or of a file of ``torchstn export`` (TorchScript,
    exported program, ONNX; told apart by content), for ``torchstn eval``.

    An export is scored as it runs (its own runtime; ONNX on onnxruntime's CPU), with the run's
    config from its metadata; its ``info.epoch`` is 0 (an export does not record it) and
    ``weights`` does not apply (the file holds the weights it was exported with). Only the
    classification objective can score an export (co-localisation needs the checkpoint).

    Raises:
        DataError: missing, damaged or foreign file, an export without torchstn's metadata, of
            the transformer part, or of a co-localisation run.
        InvalidInputError: an unknown device, or one this machine does not have.
    """
    dev = inference_device(device)
    path = Path(path)
    file = path / "checkpoint.pt" if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"checkpoint not found: {file}")
    kind, description = identify(file)
    if kind == CHECKPOINT:
        model, info = load_with_info(file, weights, dev)
        return model, info, kind
    if kind not in ("torchscript", "exported-program", "onnx"):
        raise DataError(
            f"{file}: {description}; eval takes a checkpoint (or its run folder), or a "
            "TorchScript, exported-program or ONNX file of torchstn export"
        )
    meta = read_metadata(file, kind)
    if not meta or meta.get("config") is None:
        raise DataError(f"{file}: no torchstn run metadata (config); eval needs the run's config")
    if meta.get("part") != "model":
        raise DataError(f"{file}: exports the {meta.get('part')} part; eval needs --part model")
    try:
        state = {
            "config": meta["config"],
            "data_info": {
                "in_shape": meta["in_shape"],
                "num_classes": meta["num_classes"],
                "class_names": meta.get("class_names"),
                "preprocess": meta.get("preprocess"),
                **({"name": meta["data"]} if meta.get("data") is not None else {}),
            },
        }
        info = dataclasses.replace(
            model_info(file, state, "last"), weights=str(meta.get("weights"))
        )
        index = list(meta["outputs"]).index("logits")
        objective = config_from_dict(meta["config"]).objective.name
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{file}: incomplete torchstn metadata ({err})") from None
    if objective != "classification":
        raise DataError(f"{file}: a {objective} run; eval scores its checkpoint, not an export")
    run = load_exported(file, kind, "cpu" if kind == "onnx" else dev)
    return _ExportedLogits(run, index).eval(), info, kind


def load_run_data(info: ModelInfo) -> Any:
    """The data of the run a checkpoint's :class:`ModelInfo` describes, generated or read again
    with the run's preprocessing (a :class:`~torchstn.train.DataModule`, or the co-localisation
    data), checked against the model's input shape: what ``torchstn eval`` and ``visualize``
    evaluate and draw.

    Raises:
        DataError: the data is missing or no longer fits the model.
    """
    data = get_objective(info.config).build_data(preprocess=info.preprocess.to_dict())
    if tuple(data.in_shape) != info.in_shape:
        raise DataError(
            f"{info.path}: the model takes {info.in_shape} images, its data now gives "
            f"{tuple(data.in_shape)}"
        )
    return data
