"""Training configuration: dataclasses, loaded from YAML, overridden by flags, saved with the run.

Unknown keys fail loudly; values are checked when the config is built, not when first used.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = [
    "MEMORY_FORMATS",
    "PRECISIONS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "config_names",
    "config_to_dict",
    "dataclass_from_dict",
    "default_config_dir",
    "find_config",
    "load_config",
]


#: values of ``run.memory_format``.
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
#: values of ``run.precision``.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass
class DataConfig:
    """What to train on: a generated task or the user's own data."""

    task: str | None = "cluttered"  #: a task of ``torchstn.data.task_names()``; None for user data
    options: dict[str, Any] = field(default_factory=dict)  #: options of the task generator
    train_size: int = 50_000  #: training samples per epoch (fresh distortions each epoch)
    val_size: int = 10_000
    test_size: int = 10_000
    fresh: bool = True  #: regenerate the training distortions every epoch
    #: generated tasks with fresh distortions: make the next epoch's training data in a
    #: background thread while this epoch trains (the same data: one seed per epoch; two epochs
    #: held in memory); null (auto): on where training runs on a GPU, off on the CPU, where
    #: generation and training compete for the same cores (``torchstn bench --only data``)
    prefetch: bool | None = None
    eval_seed: int = 2015  #: seed of the fixed validation and test sets (shared by all runs)
    #: user data: an ``.npz`` file, a class-folder tree (``root/CLASS/IMAGE``) or a CSV manifest
    path: str | None = None
    val_path: str | None = None  #: user data: optional validation file/folder/manifest
    test_path: str | None = None  #: user data: optional separate test file/folder/manifest
    val_fraction: float = 0.1  #: user data without validation data: fraction of ``path`` held out
    #: ``.npz``: names of the training arrays (default ``{x: x, y: y}``)
    arrays: dict[str, str] | None = None
    val_arrays: dict[str, str] | None = None  #: ``.npz``: validation arrays in the same file
    test_arrays: dict[str, str] | None = None  #: ``.npz``: test arrays in the same file
    image_shape: list[int] | None = None  #: ``.npz``: ``[C, H, W]`` of images stored flat
    #: ``.npz``: ``auto``, ``channels_first`` or ``channels_last`` (see torchstn.data.arrays)
    layout: str = "auto"
    #: ``.npz``/``.npy``: true reads volumes ``(N, D, H, W)``, ``(N, C, D, H, W)`` or
    #: ``(N, D, H, W, C)`` (torchstn.data.volumes), false images; null (auto) decides from
    #: ``path`` (``val_path``/``test_path`` follow it): an ``.npy`` file and a 5-D array are
    #: volumes, other arrays images, except that a 4-D array read as images of more than 4
    #: channels is refused as ambiguous (say which it is here). A class folder: true reads its
    #: NIfTI files (``CLASS/*.nii``, ``*.nii.gz``), false its images, null whichever it holds
    #: (refused if both). See docs/data.md
    volumes: bool | None = None
    num_classes: int | None = None  #: user data: number of classes (default: from the labels)
    #: image files: model input ``[H, W]`` (default: the size of the first image)
    image_size: list[int] | None = None
    fit: str = "pad"  #: image files of another size: ``pad`` (keep aspect) or ``stretch``
    channels: int | None = None  #: image files: 1 (grey) or 3 (RGB); default from the first image
    #: normalise inputs by ``mean``/``std``; without them, computed from the training split
    normalize: bool = False
    mean: list[float] | None = None  #: per-channel mean (with ``normalize``)
    std: list[float] | None = None  #: per-channel standard deviation (with ``normalize``)
    #: image files: decode worker processes of the DataLoader (0: in the training process)
    num_workers: int = 2
    #: image files: decode once and keep the images in memory (uint8); None: when under 1 GiB
    #: in a single process (under torchrun each process then streams its own shard)
    cache: bool | None = None
    skip_bad: bool = False  #: skip (and count) unreadable images instead of stopping the run
    #: user data: what ``torchstn train`` recorded of ``path``, ``val_path`` and ``test_path``
    #: (see :func:`torchstn.train.datamodule.fingerprint`); reading the data again (resume,
    #: eval, visualize, report) refuses data whose fingerprint differs
    fingerprints: dict[str, str] | None = None


@dataclass
class ModelConfig:
    name: str = "st_cnn_affine"  #: a name of ``torchstn.models.model_names()``
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: str = "sgd"  #: ``sgd`` or ``adam``
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    loc_lr_scale: float = 1.0  #: learning-rate factor of the localisation nets
    batch_size: int = 256
    schedule: str = "step"  #: ``step``, ``cosine`` or ``constant``
    step_epochs: int = 10  #: ``step``: multiply the rate by ``gamma`` every this many epochs
    gamma: float = 0.1
    grad_clip: float | None = None  #: clip the global gradient norm


@dataclass
class RunConfig:
    epochs: int = 10
    #: budget in minutes of training: steps, validation and making each epoch's data
    minutes: float | None = None
    eval_batch_size: int = 1000
    num_threads: int | None = None  #: torch CPU threads (None: PyTorch's default)
    #: also save the checkpoint every this many steps inside an epoch (None: at epoch ends only);
    #: bounds the work a killed or restarted run redoes
    checkpoint_every: int | None = None
    #: ``fp32``, ``bf16`` (autocast to bfloat16, CPU and CUDA) or ``fp16`` (autocast to float16
    #: with a gradient scaler; meant for CUDA, slow on the CPU)
    precision: str = "fp32"
    #: PyTorch's deterministic algorithms (see the README for what CUDA cannot make deterministic)
    deterministic: bool = False
    #: layout of images and convolution weights in training: ``channels_last``, ``contiguous``
    #: (NCHW) or ``auto``: channels_last on the CPU for models with convolutions (measured faster
    #: there, see BENCHMARKS.md), contiguous otherwise
    memory_format: str = "auto"


@dataclass
class ObjectiveConfig:
    """What the run optimises and how it is scored (see :mod:`torchstn.train.objective`)."""

    #: ``classification`` (cross-entropy; validation error rate) or ``colocalization`` (triplet
    #: hinge loss; validation: 100 - % of images localised, see :mod:`torchstn.colocalization`)
    name: str = "classification"
    #: the objective's own settings (classification has none; co-localisation:
    #: :class:`torchstn.colocalization.ColocalizationOptions`); unknown keys fail
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    seed: int = 0
    device: str = "auto"  #: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    def validate(self) -> Config:
        """Check ranges and names of everything but the task/model (checked when built)."""
        d, o, r = self.data, self.optim, self.run
        _check_types(self, "")
        _positive("data.train_size", d.train_size)
        _positive("data.val_size", d.val_size)
        _positive("data.test_size", d.test_size)
        if d.task is None and d.path is None:
            raise ConfigError("data: give either 'task' (a generated task) or 'path' (your data)")
        _check_user_data(d)
        if not 0 < d.val_fraction < 1:
            raise ConfigError(
                f"data.val_fraction: expected a value in (0, 1), got {d.val_fraction!r}"
            )
        _positive("optim.lr", o.lr)
        _positive("optim.batch_size", o.batch_size)
        _positive("optim.loc_lr_scale", o.loc_lr_scale)
        _positive("optim.step_epochs", o.step_epochs)
        if o.name not in ("sgd", "adam"):
            raise ConfigError(f"optim.name: expected 'sgd' or 'adam', got {o.name!r}")
        if o.schedule not in ("step", "cosine", "constant"):
            raise ConfigError(
                f"optim.schedule: expected step, cosine or constant, got {o.schedule!r}"
            )
        _positive("run.epochs", r.epochs)
        _positive("run.eval_batch_size", r.eval_batch_size)
        if r.minutes is not None:
            _positive("run.minutes", r.minutes)
        if r.checkpoint_every is not None:
            if isinstance(r.checkpoint_every, bool) or not isinstance(r.checkpoint_every, int):
                raise ConfigError(
                    f"run.checkpoint_every: expected a positive integer (steps), got "
                    f"{r.checkpoint_every!r}"
                )
            _positive("run.checkpoint_every", r.checkpoint_every)
        if r.precision not in PRECISIONS:
            raise ConfigError(
                f"run.precision: expected {', '.join(PRECISIONS)}, got {r.precision!r}"
            )
        if r.memory_format not in MEMORY_FORMATS:
            raise ConfigError(
                f"run.memory_format: expected {', '.join(MEMORY_FORMATS)}, got {r.memory_format!r}"
            )
        if not isinstance(r.deterministic, bool):
            raise ConfigError(f"run.deterministic: expected true or false, got {r.deterministic!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {self.device!r}")
        # the objective checks its own options when it is built (torchstn.train.get_objective)
        if not isinstance(self.objective.name, str) or not self.objective.name:
            raise ConfigError(f"objective.name: expected a name, got {self.objective.name!r}")
        if not isinstance(self.objective.options, dict):
            raise ConfigError(
                f"objective.options: expected a mapping, got "
                f"{type(self.objective.options).__name__}"
            )
        return self


def _check_types(section: Any, where: str) -> None:
    """Every number finite (NaN and Inf would reach the run, and config.json would not be JSON),
    every ``int`` field an integer and every ``float`` field a number (booleans are neither)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        path = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(value):
            _check_types(value, path)
            continue
        _check_finite(value, path)
        kind = str(f.type).removesuffix(" | None")
        if value is None or kind not in ("int", "float"):
            continue
        number = (int, float) if kind == "float" else int
        if isinstance(value, bool) or not isinstance(value, number):
            want = "an integer" if kind == "int" else "a number"
            raise ConfigError(f"{path}: expected {want}, got {value!r}")


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")


def _check_user_data(d: DataConfig) -> None:
    """The user-data keys (shapes and choices; files are checked when read)."""
    if d.fingerprints is not None and (
        not isinstance(d.fingerprints, dict)
        or not set(d.fingerprints) <= {"path", "val_path", "test_path"}
        or not all(isinstance(v, str) for v in d.fingerprints.values())
    ):
        raise ConfigError(
            "data.fingerprints: expected a mapping of path, val_path or test_path to the "
            f"fingerprint torchstn train recorded, got {d.fingerprints!r}"
        )
    for key in ("arrays", "val_arrays", "test_arrays"):
        names = getattr(d, key)
        if names is None:
            continue
        if not isinstance(names, dict) or not set(names) <= {"x", "y"}:
            raise ConfigError(
                f"data.{key}: expected a mapping with keys x and y (array names), got {names!r}"
            )
        if not all(isinstance(v, str) and v for v in names.values()):
            raise ConfigError(f"data.{key}: array names must be non-empty strings, got {names!r}")
    if d.val_arrays is not None and d.val_path is not None:
        raise ConfigError("data: give val_arrays or val_path, not both")
    if d.test_arrays is not None and d.test_path is not None:
        raise ConfigError("data: give test_arrays or test_path, not both")
    for key in ("image_shape", "image_size"):
        value = getattr(d, key)
        want = (2, 3) if key == "image_shape" else (1, 2)
        if value is not None and (
            not isinstance(value, list)
            or len(value) not in want
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise ConfigError(
                f"data.{key}: expected a list of {' or '.join(map(str, want))} positive "
                f"integers, got {value!r}"
            )
    if d.layout not in ("auto", "channels_first", "channels_last"):
        raise ConfigError(
            f"data.layout: expected auto, channels_first or channels_last, got {d.layout!r}"
        )
    if d.fit not in ("pad", "stretch"):
        raise ConfigError(f"data.fit: expected pad or stretch, got {d.fit!r}")
    if d.channels is not None and d.channels not in (1, 3):
        raise ConfigError(f"data.channels: expected 1 (grey) or 3 (RGB), got {d.channels!r}")
    if d.num_classes is not None:
        _positive("data.num_classes", d.num_classes)
    if isinstance(d.num_workers, bool) or not isinstance(d.num_workers, int) or d.num_workers < 0:
        raise ConfigError(
            f"data.num_workers: expected a non-negative integer, got {d.num_workers!r}"
        )
    for key in ("normalize", "skip_bad"):
        if not isinstance(getattr(d, key), bool):
            raise ConfigError(f"data.{key}: expected true or false, got {getattr(d, key)!r}")
    if d.cache is not None and not isinstance(d.cache, bool):
        raise ConfigError(f"data.cache: expected true, false or null (auto), got {d.cache!r}")
    if d.prefetch is not None and not isinstance(d.prefetch, bool):
        raise ConfigError(f"data.prefetch: expected true, false or null (auto), got {d.prefetch!r}")
    if d.volumes is not None and not isinstance(d.volumes, bool):
        raise ConfigError(f"data.volumes: expected true, false or null (auto), got {d.volumes!r}")
    if (d.mean is None) != (d.std is None):
        raise ConfigError("data.mean, data.std: give both or neither")
    if d.mean is not None and not d.normalize:
        raise ConfigError("data.mean/std are used only with data.normalize: true")
    for key in ("mean", "std"):
        value = getattr(d, key)
        if value is not None and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"data.{key}: expected a list of numbers, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name}: expected a positive number, got {value!r}")


#: the nested sections of :class:`Config`, by the annotation string of their field.
_SECTIONS = {
    c.__name__: c for c in (DataConfig, ModelConfig, OptimConfig, RunConfig, ObjectiveConfig)
}


def dataclass_from_dict(cls: Any, values: Any, where: str) -> Any:
    """``cls(**values)`` for a dataclass ``cls``: unknown keys raise :class:`ConfigError` naming
    ``where`` and the valid keys, numeric strings (YAML's ``1e-3``) become the field's number."""
    return _build(cls, values, where)


def _build(cls: Any, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in values.items():
        sub = fields[name].type
        nested = _SECTIONS.get(str(sub))
        path = f"{where}.{name}" if where else name
        kwargs[name] = _build(nested, value, path) if nested else _coerce(value, str(sub), path)
    return cls(**kwargs)


def _coerce(value: Any, annotation: str, where: str) -> Any:
    """YAML reads ``1e-3`` as a string: turn numeric strings into the field's number type."""
    if not isinstance(value, str) or value.strip() == "":
        return value
    kind = "float" if "float" in annotation else "int" if annotation.startswith("int") else None
    if kind is None:
        return value
    try:
        return float(value) if kind == "float" else int(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts (unknown keys raise ConfigError)."""
    cfg = _build(Config, values, "")
    return cfg.validate()


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dicts (JSON-serialisable)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_config(path: str | Path | None) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into nested dicts; ``None`` gives the defaults ``{}``.

    ``path`` is a file, or the name of a packaged config (``demo``, ``table1/rts/cnn``,
    ``configs/demo.yaml``: see :func:`find_config`)."""
    if path is None:
        return {}
    path = find_config(path)
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except Exception as err:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
            f"{str(err).splitlines()[0]}"
        ) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML scalars/lists) to nested dicts."""
    out = json.loads(json.dumps(values))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except Exception:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


#: the packaged configs (``torchstn/configs``): the demo and the paper's experiments.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_SUFFIXES = (".yaml", ".yml", ".json")


def default_config_dir() -> Path:
    """The folder of the packaged experiment configs (``torchstn/configs``), in a source
    checkout and in an installed package alike.

    Example:
        >>> (default_config_dir() / "demo.yaml").is_file()
        True
    """
    return CONFIG_DIR


def config_names() -> list[str]:
    """The packaged configs by name: their paths under :func:`default_config_dir`, without
    ``.yaml`` (``demo``, ``table1/rts/st_cnn_affine``, ...), sorted.

    Example:
        >>> "table1/rts/st_cnn_affine" in config_names()
        True
    """
    root = default_config_dir()
    return sorted(
        p.relative_to(root).with_suffix("").as_posix()
        for p in root.rglob("*")
        if p.suffix in _SUFFIXES and p.is_file()
    )


def find_config(name: str | os.PathLike[str]) -> Path:
    """The config file that ``name`` means: a file that exists as given, else a packaged config.

    A packaged config is named by its path under ``torchstn/configs`` with or without the
    ``.yaml`` suffix and with or without a leading ``configs/`` (the paths that RESULTS.md and
    ``results/*.json`` record): ``demo``, ``table1/rts/st_cnn_affine``,
    ``configs/table1/rts/st_cnn_affine.yaml`` all work, from any folder.

    Raises:
        ConfigError: neither a file nor a packaged config (one line, with the closest names).

    Example:
        >>> find_config("table1/rts/st_cnn_affine").relative_to(default_config_dir()).as_posix()
        'table1/rts/st_cnn_affine.yaml'
    """
    given = Path(name).expanduser()
    if given.is_file():
        return given
    root = default_config_dir()
    key = Path(name).as_posix()
    for prefix in ("configs/", "torchstn/configs/"):
        key = key.removeprefix(prefix)
    if not Path(key).is_absolute() and ".." not in Path(key).parts:
        stem = key[: -len(Path(key).suffix)] if Path(key).suffix in _SUFFIXES else key
        for candidate in (root / key, *(root / f"{stem}{s}" for s in _SUFFIXES)):
            if candidate.is_file():
                return candidate
    names = config_names()
    close = difflib.get_close_matches(key.removesuffix(".yaml"), names, n=3, cutoff=0.5)
    examples = [n for n in ("demo", "table1/rts/st_cnn_affine", "cluttered/cnn") if n in names]
    hint = f"did you mean {', '.join(close)}?" if close else f"e.g. {', '.join(examples)}"
    raise ConfigError(
        f"config file not found: {name} (neither a file nor one of the {len(names)} packaged "
        f"configs; {hint})"
    )
