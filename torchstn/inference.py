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
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import check_choice
from ._version import __version__
from .errors import DataError, InvalidInputError, TorchSTNError
from .models import create_model
from .module import SpatialTransformer
from .preprocess import Preprocess, with_preprocess
from .train.checkpoint import load_checkpoint, save_checkpoint
from .train.config import Config, ModelConfig, config_from_dict, config_to_dict

__all__ = [
    "MAX_INPUT_VALUES",
    "WEIGHTS",
    "ModelInfo",
    "build_on_meta",
    "build_untrained",
    "first_transformer",
    "inference_device",
    "load",
    "load_info",
    "load_with_info",
    "model_info",
    "save_trained",
]

#: which weights of a checkpoint to load: the best on validation (as in ``result.json``) or the
#: last ones. ``"best"`` falls back to the last weights when no validation has been recorded.
WEIGHTS = ("best", "last")
#: the most values (``C * H * W``) a checkpoint's input shape may declare: 64 Mi, 256 MiB per
#: float image (3 x 4096 x 4096 is 48 Mi). A model's input size comes from an untrusted file, and
#: every image ``predict`` and ``eval`` feed it is allocated at that size.
MAX_INPUT_VALUES = 1 << 26
#: the most memory a model's constants (non-persistent buffers, not in the file) may take.
_MAX_CONSTANT_BYTES = 256 << 20


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
    in_shape: tuple[int, ...]
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
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(
            path=str(self.path),
            in_shape=list(self.in_shape),
            class_names=None if self.class_names is None else list(self.class_names),
            config=config_to_dict(self.config),
            preprocess=self.preprocess.to_dict(),
        )
        return out


def model_info(path: Path, state: Mapping[str, Any], weights: str) -> ModelInfo:
    try:
        cfg = config_from_dict(state["config"])
        data_info = state["data_info"]
        in_shape = tuple(int(v) for v in data_info["in_shape"])
        if len(in_shape) not in (3, 4):
            raise ValueError(f"in_shape {list(in_shape)}: expected (C, H, W) or (C, D, H, W)")
        num_classes = int(data_info["num_classes"])
        names = data_info.get("class_names")
        epoch = int(state.get("epoch", 0))
        best = state.get("best") or {}
        saved = data_info.get("preprocess")
        preprocess = (
            Preprocess(in_shape[1:], in_shape[0])
            if saved is None
            else Preprocess.from_dict(dict(saved))
        )
    except KeyError as err:
        raise DataError(f"{path}: not a torchstn training checkpoint (no {err})") from None
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed checkpoint metadata ({err})") from None
    _check_shapes(path, in_shape, num_classes, names, preprocess)
    use_best = weights == "best" and best.get("model") is not None
    val_error = best.get("val_error")
    return ModelInfo(
        path=path,
        model_name=cfg.model.name,
        in_shape=in_shape,
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


def _check_shapes(
    path: Path,
    in_shape: tuple[int, ...],
    num_classes: int,
    names: Any,
    preprocess: Preprocess,
) -> None:
    """The declared sizes, before anything is allocated at them: positive, an input of at most
    :data:`MAX_INPUT_VALUES` values, as many class names as classes, and a preprocessing of the
    same size and channels."""
    shape = "x".join(str(v) for v in in_shape)
    if min(in_shape) < 1 or math.prod(in_shape) > MAX_INPUT_VALUES:
        raise DataError(
            f"{path}: malformed checkpoint metadata (in_shape {shape}: expected positive "
            f"sizes of at most {MAX_INPUT_VALUES} values in all)"
        )
    if num_classes < 1:
        raise DataError(f"{path}: malformed checkpoint metadata (num_classes {num_classes})")
    if names is not None and (isinstance(names, (str, bytes)) or len(names) != num_classes):
        raise DataError(
            f"{path}: malformed checkpoint metadata (class_names: expected {num_classes} names)"
        )
    if tuple(preprocess.size) != in_shape[1:] or preprocess.channels != in_shape[0]:
        size = "x".join(str(v) for v in preprocess.size)
        raise DataError(
            f"{path}: malformed checkpoint metadata (preprocess is {preprocess.channels}x"
            f"{size}, in_shape {shape})"
        )


def _read(path: str | Path, weights: str) -> tuple[dict[str, Any], ModelInfo]:
    check_choice(weights, "weights", WEIGHTS)
    path = Path(path)
    state = load_checkpoint(path)
    return state, model_info(path / "checkpoint.pt" if path.is_dir() else path, state, weights)


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
    with torch.random.fork_rng(devices=[]):
        model = create_model(model_name, in_shape, num_classes, **dict(options or {}))
    return model.eval()


def inference_device(device: str | torch.device) -> torch.device:
    """The device to run a loaded model on: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or
    ``"auto"`` (CUDA when available, else the CPU), checked to exist on this machine.

    Raises:
        InvalidInputError: an unknown device (``"tpu"``), or one this machine does not have.

    Example:
        >>> inference_device("cpu")
        device(type='cpu')
        >>> inference_device("tpu")
        Traceback (most recent call last):
        ...
        torchstn.errors.InvalidInputError: device: expected cpu, cuda, cuda:N, mps or auto, got 'tpu'
    """
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    expected = f"device: expected cpu, cuda, cuda:N, mps or auto, got {text!r}"
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise InvalidInputError(expected) from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device: {text!r} requested but CUDA is not available here")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InvalidInputError(f"device: {text!r} requested; this machine has {count} GPU(s)")
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(f"device: {text!r} requested but MPS is not available here")
        return dev
    raise InvalidInputError(expected)


class _MetaConstants(torch.overrides.TorchFunctionMode):
    """Inside ``torch.device("meta")``: an op mixing meta tensors with real ones (constants that
    code builds on the CPU on purpose, such as cached coordinate axes) runs on meta copies of the
    real ones, which stay as they were."""

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        tensors = [t for t in _leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(t.is_meta for t in tensors) and not all(t.is_meta for t in tensors):
            args, kwargs = _to_meta(args), _to_meta(kwargs)
        return func(*args, **kwargs)


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    else:
        yield value


def _to_meta(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.is_meta else value.to("meta")
    if isinstance(value, (list, tuple)):
        items = [_to_meta(v) for v in value]
        return type(value)(items) if isinstance(value, list) or type(value) is tuple else value
    if isinstance(value, dict):
        return {k: _to_meta(v) for k, v in value.items()}
    return value


def _fit_problems(expected: Mapping[str, torch.Size], sd: Mapping[str, Any]) -> str | None:
    """What keeps ``sd`` from loading into a model whose state dict has the ``expected`` shapes:
    a few missing and unexpected keys, or the first shape that differs; ``None`` if it fits."""

    def few(keys: list[str]) -> str:
        more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
        return ", ".join(keys[:3]) + more

    not_tensors = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        return f"{not_tensors[0]} is a {type(sd[not_tensors[0]]).__name__}, not a tensor"
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s): {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    if parts:
        return "; ".join(parts)
    for key, shape in expected.items():
        got = tuple(sd[key].shape)
        if got != tuple(shape):
            return f"{key} is {list(got)} in the file, {list(shape)} in the model"
    return None


def build_on_meta(
    model_name: str,
    in_shape: Sequence[int],
    num_classes: int,
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """:func:`build_untrained` on the ``meta`` device: the model's structure and the shapes of
    its tensors, no memory for them, whatever sizes ``in_shape`` and ``options`` declare."""
    with torch.device("meta"), _MetaConstants():
        return build_untrained(model_name, in_shape, num_classes, options)


def build_checked(
    model_name: str,
    in_shape: Sequence[int],
    num_classes: int,
    options: Mapping[str, Any] | None,
    state_dict: Mapping[str, Any],
    source: str | Path = "weights",
) -> nn.Module:
    """:func:`build_untrained` with ``state_dict`` loaded, after the model has been built on the
    ``meta`` device (no memory) and its state-dict shapes compared with ``state_dict``'s, so that
    sizes declared by a file (its input shape, its options) are only allocated once the file's
    own weights have shown them.

    Raises:
        DataError: the model cannot be built from these settings, its weights do not fit
            (naming a few missing or unexpected keys, or the first shape that differs), or its
            constants would take more than 256 MiB.
    """
    what = f"a {model_name} for {tuple(in_shape)}"
    try:
        meta = build_on_meta(model_name, in_shape, num_classes, options)
    except TorchSTNError as err:
        raise DataError(f"{source}: cannot build {what} ({err})") from None
    except Exception as err:
        raise DataError(f"{source}: cannot build {what} ({type(err).__name__}: {err})") from None
    expected = {k: v.shape for k, v in meta.state_dict().items()}
    problem = _fit_problems(expected, state_dict)
    if problem is not None:
        raise DataError(f"{source}: the weights do not fit {what} ({problem})")
    constants = sum(
        b.numel() * b.element_size() for k, b in meta.named_buffers() if k not in expected
    )
    if constants > _MAX_CONSTANT_BYTES:
        raise DataError(f"{source}: {what} would need {constants >> 20} MiB of constants")
    del meta
    model = build_untrained(model_name, in_shape, num_classes, options)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:  # dtypes the shapes did not show
        text = " ".join(str(err).split())
        raise DataError(f"{source}: the weights do not fit {what} ({text[:200]})") from None
    return model


def load_with_info(
    path: str | Path, weights: str = "best", device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo]:
    """:func:`load` and :func:`load_info` with a single read of the checkpoint."""
    dev = inference_device(device)
    state, info = _read(path, weights)
    sd = state["best"]["model"] if info.weights == "best" else state.get("model")
    if not isinstance(sd, Mapping):
        raise DataError(f"{info.path}: the checkpoint holds no {info.weights} weights")
    model = build_checked(
        info.model_name,
        info.in_shape,
        info.num_classes,
        info.config.model.options,
        sd,
        info.path,
    )
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
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``"auto"``.

    Raises:
        DataError: missing, truncated, corrupt (its CRC-32s are checked) or foreign file,
            metadata that declares impossible sizes, or weights that do not fit.
        UnknownNameError: ``weights`` is neither ``"best"`` nor ``"last"``.
        InvalidInputError: an unknown device, or one this machine does not have.

    Example:
        >>> import torchstn
        >>> torchstn.load("no/such/checkpoint.pt")
        Traceback (most recent call last):
        ...
        torchstn.errors.DataError: checkpoint not found: no/such/checkpoint.pt
    """
    return load_with_info(path, weights, device)[0]


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
