"""The one checking helper: validates user tensors and settings with specific messages."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .errors import ConfigError, InvalidInputError, NonFiniteError, UnknownNameError

__all__ = [
    "check_choice",
    "check_finite",
    "check_positive",
    "check_same_device",
    "check_size",
    "check_spatial_size",
    "check_tensor",
    "finite_checks_enabled",
    "is_scripting_or_tracing",
    "set_finite_checks",
]

#: process-wide switch of :func:`check_finite`; see :class:`set_finite_checks`.
_finite_checks = True


def is_scripting_or_tracing() -> bool:
    """True while TorchScript traces, ``torch.compile`` captures or a ``torch.func`` transform
    (``vmap``, ``grad``) runs: data-dependent checks are skipped, and the library's own autograd
    Functions give way to standard operators."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    if torch._C._are_functorch_transforms_active():
        return True
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and compiler.is_compiling())


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    last_dim: int | None = None,
    floating: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a tensor of the expected rank, last dimension and dtype kind.

    Returns ``x`` so that the call can be inlined. Raises :class:`InvalidInputError` otherwise.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise InvalidInputError(
                f"{name}: expected {want} dims, received {x.dim()}-dim tensor of shape {tuple(x.shape)}"
            )
    if last_dim is not None and (x.dim() == 0 or x.shape[-1] != last_dim):
        raise InvalidInputError(
            f"{name}: expected last dimension {last_dim}, got shape {tuple(x.shape)}"
        )
    if floating and not x.is_floating_point():
        raise InvalidInputError(
            f"{name}: expected a floating-point tensor, got dtype {x.dtype} "
            f"(convert with .float(), e.g. images scaled to [0, 1])"
        )
    return x


class set_finite_checks:  # lowercase: used like a function, as torch.set_grad_enabled
    """Turn the NaN/Inf check of transform params on or off, process-wide (all threads).

    Every :meth:`~torchstn.transforms.Transform.grid` and ``map_points`` call, so every
    :class:`~torchstn.SpatialTransformer` forward (once), checks that the params are finite and
    raises :class:`~torchstn.errors.NonFiniteError` otherwise. The check reads one value back
    from the device, which stalls an asynchronous GPU pipeline; a training loop that already
    checks its loss every step can switch it off. It is always skipped while tracing, exporting
    or compiling.

    Like :class:`torch.set_grad_enabled`, a call sets the switch at once, and used as a context
    manager it restores the previous setting on exit.

    Args:
        enabled: ``True`` (the default state) to check, ``False`` to skip the check.

    Example:
        >>> import torch, torchstn
        >>> from torchstn.transforms import Affine
        >>> bad = torch.tensor([[1.0, 0.0, float("nan"), 0.0, 1.0, 0.0]])
        >>> with torchstn.set_finite_checks(False):  # scoped
        ...     Affine().grid(bad, (2, 2)).isnan().any().item()
        True
        >>> Affine().grid(bad, (2, 2))
        Traceback (most recent call last):
        ...
        torchstn.errors.NonFiniteError: params: contains 1 NaN or Inf value(s)
        >>> _ = torchstn.set_finite_checks(False)  # until switched back on
        >>> _ = torchstn.set_finite_checks(True)
    """

    def __init__(self, enabled: bool) -> None:
        global _finite_checks
        if not isinstance(enabled, bool):
            raise InvalidInputError(f"enabled: expected True or False, got {enabled!r}")
        self.previous = _finite_checks
        _finite_checks = enabled

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        global _finite_checks
        _finite_checks = self.previous


def finite_checks_enabled() -> bool:
    """Whether :func:`check_finite` currently checks (see :class:`set_finite_checks`)."""
    return _finite_checks


def check_finite(x: torch.Tensor, name: str) -> None:
    """Raise :class:`NonFiniteError` if ``x`` holds NaN or Inf.

    Skipped when switched off (:class:`set_finite_checks`), under tracing/compiling, where it
    would sync, and for ``meta`` tensors, which hold no values.
    """
    if not _finite_checks or is_scripting_or_tracing() or x.device.type == "meta":
        return
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(f"{name}: contains {bad} NaN or Inf value(s)")


def check_same_device(*named: tuple[str, torch.Tensor]) -> None:
    """Raise if the tensors do not all live on one device."""
    devices = {t.device for _, t in named}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in named)
        raise InvalidInputError(f"tensors must be on the same device, got {where}")


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number, ``> 0`` (or ``>= 0`` with ``allow_zero``).

    Booleans, strings, NaN and Inf are refused. Returns ``value`` as a float.
    """
    number = (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    )
    if (
        number is None
        or not math.isfinite(number)
        or number < 0
        or (number == 0 and not allow_zero)
    ):
        want = "a finite number >= 0" if allow_zero else "a finite positive number"
        raise InvalidInputError(f"{name}: expected {want}, got {value!r}")
    return number


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices``; the error lists the valid names."""
    options = sorted(choices)
    if not isinstance(value, str) or value not in options:
        raise UnknownNameError(f"unknown {name} {value!r}; valid choices: {', '.join(options)}")
    return value


def check_spatial_size(size: Any, name: str, dims: int) -> tuple[int, ...]:
    """A spatial size of ``dims`` (2 or 3) axes: ``(H, W)`` (see :func:`check_size`) or
    ``(D, H, W)``; one int stands for every axis. Booleans, strings and fractions are refused.

    Example:
        >>> check_spatial_size(4, "size", 3), check_spatial_size((2, 3, 4.0), "size", 3)
        ((4, 4, 4), (2, 3, 4))
    """
    if dims == 2:
        return check_size(size, name)
    want = "(D, H, W)" if dims == 3 else f"{dims} sizes"
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size,) * dims
    try:
        if isinstance(size, (str, bytes)) or any(isinstance(s, (bool, str, bytes)) for s in size):
            raise TypeError
        values = tuple(int(s) for s in size)
        ok = len(values) == dims and all(float(s) == int(s) for s in size)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"{name}: expected an int or {want}, got {size!r}") from None
    if len(values) != dims:
        raise InvalidInputError(f"{name}: expected {want}, got {size!r}")
    if not ok or min(values) < 1:
        raise InvalidInputError(f"{name}: expected positive integer sizes, got {size!r}")
    return values


def check_size(size: Any, name: str) -> tuple[int, int]:
    """Normalise a spatial size given as ``int`` or ``(H, W)`` to a tuple of two positive ints.

    Booleans are refused (``True`` is not a size), as are strings and fractional numbers.

    Example:
        >>> check_size(4, "out_size"), check_size((2.0, 3), "out_size")
        ((4, 4), (2, 3))
        >>> check_size((True, True), "out_size")
        Traceback (most recent call last):
        ...
        torchstn.errors.InvalidInputError: out_size: expected an int or (H, W), got (True, True)
    """
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    try:
        if isinstance(size, (str, bytes)) or any(isinstance(s, (bool, str, bytes)) for s in size):
            raise TypeError
        h, w = (int(s) for s in size)
        ok = all(float(s) == int(s) for s in size)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(f"{name}: expected an int or (H, W), got {size!r}") from None
    if not ok or h < 1 or w < 1:
        raise InvalidInputError(f"{name}: expected positive integer sizes, got {size!r}")
    return h, w


def env_limit(variable: str, default: int, unit: str) -> int:
    """A size limit the environment may change: ``variable``'s value if set (underscores
    allowed, ``1_000_000``), else ``default``.

    Raises:
        ConfigError: the variable is set to anything but a positive whole number of ``unit``.
    """
    raw = os.environ.get(variable, "").strip()
    if not raw:
        return int(default)
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{variable}={raw!r}: expected a positive whole number of {unit}")
    return value
