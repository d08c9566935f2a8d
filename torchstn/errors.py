"""The one exception family of torchstn.

Every error the library raises on purpose derives from :class:`TorchSTNError`. Errors caused by a
value the caller passed (a wrong shape, an unknown name, a NaN parameter) also derive from
:class:`ValueError`, so ``except ValueError`` keeps working for code that does not know torchstn.
"""

from __future__ import annotations

import re

__all__ = [
    "ConfigError",
    "DataError",
    "InvalidInputError",
    "NonFiniteError",
    "TorchSTNError",
    "UnknownNameError",
    "first_line",
]


class TorchSTNError(Exception):
    """Base class of every error raised by torchstn."""


class InvalidInputError(TorchSTNError, ValueError):
    """A tensor or setting passed by the caller has the wrong shape, dtype, device or value."""


class NonFiniteError(InvalidInputError):
    """A tensor that must be finite holds NaN or Inf (for example transform parameters)."""


class UnknownNameError(InvalidInputError):
    """A registry lookup (transform, model, task, kernel...) named something that does not exist.

    The message lists the valid names.
    """


class ConfigError(InvalidInputError):
    """A configuration file or option is malformed, has unknown keys or out-of-range values."""


class DataError(TorchSTNError):
    """A data file is missing, truncated, corrupted or fails its checksum."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(err: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message for a one-line error: terminal colours removed,
    at most ``limit`` characters, the exception's type named when the message is empty or only
    a number (an errno).

    Example:
        >>> first_line(OSError("disk full\\ndetails"))
        'disk full'
        >>> first_line(KeyError())
        'KeyError'
    """
    text = _ANSI.sub("", str(err)).strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line or line.isdigit():
        return type(err).__name__ + (f" {line}" if line else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
