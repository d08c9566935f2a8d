"""Loading a trained model from its checkpoint, without generating or reading any data.

A checkpoint written by ``torchstn train`` holds the run's config, the weights (the last ones and
the best ones on validation) and ``data_info``: the input shape, the number of classes and their
names. That is all it takes to rebuild the network, so loading is quick whatever the task.

Example:
    >>> import tempfile, torchstn
    >>> from torchstn.inference import load_with_info, save_trained
    >>> from torchstn.models import create_model
    >>> net = create_model("st_fcn_affine", (1, 28, 28), 10, hidden=[16], loc_hidden=[8])
    >>> path = tempfile.mkdtemp() + "/checkpoint.pt"
    >>> options = {"hidden": [16], "loc_hidden": [8]}
    >>> save_trained(path, net, "st_fcn_affine", (1, 28, 28), 10, options=options)
    >>> model = torchstn.load(path)  # eval mode, takes (B, 1, 28, 28) floats in [0, 1]
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> _, info = load_with_info(path)
    >>> info.model_name, info.in_shape, info.num_classes, info.weights
    ('st_fcn_affine', (1, 28, 28), 10, 'last')
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._checks import check_choice
from .errors import DataError, TorchSTNError
from .module import SpatialTransformer
from .preprocess import Preprocess, with_preprocess

if TYPE_CHECKING:
    from .train.config import Config

__all__ = [
    "WEIGHTS",
    "ModelInfo",
    "build_untrained",
    "first_transformer",
    "load",
    "load_info",
    "load_run_data",
    "load_with_info",
    "save_trained",
]

#: which weights of a checkpoint to load: the best on validation (as in ``result.json``) or the
#: last ones. ``"best"`` falls back to the last weights when no validation has been recorded.
WEIGHTS = ("best", "last")


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint says about its model (everything but the weights).

    Attributes:
        path: the checkpoint file.
        model_name: the registry name (``torchstn.models.model_names()``).
        in_shape: ``(C, H, W)`` of the inputs, floats in ``[0, 1]``.
        num_classes: number of outputs.
        class_names: the class names of user data (class folders), else ``None`` (class ``i`` is
            then named by its index).
        data_name: the task or data file the model was trained on.
        config: the run's resolved config (:class:`torchstn.train.Config`).
        weights: ``"best"`` or ``"last"``: the weights that were (or would be) loaded; ``"last"``
            when ``"best"`` was asked for but the run recorded no validation.
        weights_epoch: the epoch after which those weights were saved.
        epoch: epochs the run had trained when the checkpoint was written.
        val_error: the validation error (%) of the best weights, if recorded.
        torchstn_version: the version that wrote the checkpoint.
        preprocess: how the run prepared its inputs (size, fit, channels, normalisation); a
            checkpoint from before it was recorded gets ``fit="pad"`` and no normalisation.
    """

    path: Path
    model_name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None
    data_name: str
    config: Config
    weights: str
    weights_epoch: int
    epoch: int
    val_error: float | None
    torchstn_version: str | None
    preprocess: Preprocess

    def class_name(self, index: int) -> str | None:
        """The name of class ``index``, or ``None`` without class names."""
        if self.class_names is None or not 0 <= index < len(self.class_names):
            return None
        return self.class_names[index]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata (the config as a dict)."""
        from .train.config import config_to_dict

        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(
            path=str(self.path),
            in_shape=list(self.in_shape),
            class_names=None if self.class_names is None else list(self.class_names),
            config=config_to_dict(self.config),
            preprocess=self.preprocess.to_dict(),
        )
        return out


def _info(path: Path, state: Mapping[str, Any], weights: str) -> ModelInfo:
    from .train.config import config_from_dict

    try:
        cfg = config_from_dict(state["config"])
        data_info = state["data_info"]
        c, h, w = (int(v) for v in data_info["in_shape"])
        num_classes = int(data_info["num_classes"])
        names = data_info.get("class_names")
        epoch = int(state.get("epoch", 0))
        best = state.get("best") or {}
        saved = data_info.get("preprocess")
        preprocess = Preprocess((h, w), c) if saved is None else Preprocess.from_dict(dict(saved))
    except KeyError as err:
        raise DataError(f"{path}: not a torchstn training checkpoint (no {err})") from None
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed checkpoint metadata ({err})") from None
    use_best = weights == "best" and best.get("model") is not None
    val_error = best.get("val_error")
    return ModelInfo(
        path=path,
        model_name=cfg.model.name,
        in_shape=(c, h, w),
        num_classes=num_classes,
        class_names=None if names is None else tuple(str(n) for n in names),
        data_name=str(data_info.get("name", cfg.data.task or cfg.data.path)),
        config=cfg,
        weights="best" if use_best else "last",
        weights_epoch=int(best["epoch"]) if use_best and best.get("epoch") is not None else epoch,
        epoch=epoch,
        val_error=None if val_error is None else float(val_error),
        torchstn_version=state.get("torchstn_version"),
        preprocess=preprocess,
    )


def _read(path: str | Path, weights: str) -> tuple[dict[str, Any], ModelInfo]:
    from .train.checkpoint import load_checkpoint

    check_choice(weights, "weights", WEIGHTS)
    path = Path(path)
    state = load_checkpoint(path)
    return state, _info(path / "checkpoint.pt" if path.is_dir() else path, state, weights)


def load_info(path: str | Path, weights: str = "best") -> ModelInfo:
    """The metadata of a checkpoint (no network is built).

    Args:
        path: ``checkpoint.pt`` or its run folder.
        weights: ``"best"`` or ``"last"`` (see :data:`WEIGHTS`).

    Raises:
        DataError: missing, truncated, corrupt or foreign file.
    """
    return _read(path, weights)[1]


def build_untrained(
    model_name: str,
    in_shape: Sequence[int],
    num_classes: int,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """``create_model(model_name, in_shape, num_classes, **options)`` in eval mode, leaving the
    global random state as it was (the initialisation draws from a forked one)."""
    from .models import create_model

    with torch.random.fork_rng(devices=[]):
        model = create_model(model_name, in_shape, num_classes, **dict(options or {}))
    return model.eval()


def load_with_info(
    path: str | Path, weights: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo]:
    """:func:`load` and :func:`load_info` with a single read of the checkpoint."""
    from .train.trainer import resolve_device

    state, info = _read(path, weights)
    dev = resolve_device(str(device))
    model = build_untrained(
        info.model_name, info.in_shape, info.num_classes, info.config.model.options
    )
    sd = state["best"]["model"] if info.weights == "best" else state.get("model")
    if not isinstance(sd, Mapping):
        raise DataError(f"{info.path}: the checkpoint holds no {info.weights} weights")
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise DataError(
            f"{info.path}: the weights do not fit a {info.model_name} for {info.in_shape} ({first})"
        ) from None
    return with_preprocess(model, info.preprocess).to(dev).eval(), info


def load(path: str | Path, weights: str = "best", device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a checkpoint, in eval mode; no data is generated or read.

    The model takes ``(B, C, H, W)`` floats in ``[0, 1]`` (``C, H, W`` as in
    :attr:`ModelInfo.in_shape`) and returns ``(B, num_classes)`` logits. A run trained with
    ``data.normalize`` gives a :class:`torchstn.preprocess.Preprocessed` model, which applies
    the run's normalisation itself (so it still takes ``[0, 1]`` images).

    Args:
        path: ``checkpoint.pt`` or its run folder.
        weights: ``"best"`` (best on validation, as in ``result.json``; the last ones when the run
            recorded no validation) or ``"last"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Raises:
        DataError: missing, truncated, corrupt or foreign file, or weights that do not fit.
        UnknownNameError: ``weights`` is neither ``"best"`` nor ``"last"``.

    Example:
        >>> import torchstn
        >>> torchstn.load("no/such/checkpoint.pt")
        Traceback (most recent call last):
        ...
        torchstn.errors.DataError: checkpoint not found: no/such/checkpoint.pt
    """
    return load_with_info(path, weights, device)[0]


def load_run_data(info: ModelInfo) -> Any:
    """The data of the run a checkpoint's :class:`ModelInfo` describes, generated or read again
    with the run's preprocessing (a :class:`~torchstn.train.DataModule`, or the co-localisation
    data), checked against the model's input shape: what ``torchstn eval`` and ``visualize``
    evaluate and draw.

    Raises:
        DataError: the data is missing or no longer fits the model.
    """
    from .train.objective import get_objective

    data = get_objective(info.config).build_data(preprocess=info.preprocess.to_dict())
    if tuple(data.in_shape) != info.in_shape:
        raise DataError(
            f"{info.path}: the model takes {info.in_shape} images, its data now gives "
            f"{tuple(data.in_shape)}"
        )
    return data


def first_transformer(model: nn.Module) -> SpatialTransformer | None:
    """The first :class:`SpatialTransformer` of ``model`` (in ``model.modules()`` order), or
    ``None`` when it has none."""
    if isinstance(model, SpatialTransformer):
        return model
    return next((m for m in model.modules() if isinstance(m, SpatialTransformer)), None)


def save_trained(
    path: str | Path,
    model: nn.Module,
    model_name: str,
    in_shape: Sequence[int],
    num_classes: int,
    *,
    options: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    data_name: str = "custom",
) -> None:
    """Save ``model`` as a checkpoint that :func:`load`, ``torchstn export`` and
    ``torchstn predict`` read (no optimizer state, no history).

    For models trained outside ``torchstn train``: ``model`` must be
    ``create_model(model_name, in_shape, num_classes, **options)`` with its weights. The saved
    config is the default one with this model, so ``torchstn eval`` has no data of its own to
    evaluate such a checkpoint on.
    """
    from . import __version__
    from .train.checkpoint import save_checkpoint
    from .train.config import Config, ModelConfig, config_to_dict

    if not isinstance(model, nn.Module):
        raise TorchSTNError(f"model: expected an nn.Module, got {type(model).__name__}")
    cfg = Config(model=ModelConfig(name=model_name, options=dict(options or {})))
    state = {
        "config": config_to_dict(cfg),
        "model": model.state_dict(),
        "epoch": 0,
        "best": {"val_error": None, "epoch": None, "model": None},
        "data_info": {
            "in_shape": [int(v) for v in in_shape],
            "num_classes": int(num_classes),
            "class_names": None if class_names is None else [str(n) for n in class_names],
            "name": data_name,
        },
        "torchstn_version": __version__,
    }
    save_checkpoint(path, state)
