"""Writing files atomically: write to a temporary file in the same folder, then ``os.replace``.

The one helper every command that writes files uses (data exports, checkpoints, results, figures).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import DataError

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "write_error"]

#: errno values of a full disk or an exhausted quota.
_NO_SPACE = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def write_error(path: str | os.PathLike[str], err: OSError) -> DataError:
    """The one-line :class:`DataError` for an ``OSError`` met while writing ``path``: a full disk
    (or quota) names the folder that has no space left, anything else the file and the reason.

    Example:
        >>> import errno
        >>> str(write_error("out/m.pt", OSError(errno.ENOSPC, "No space left on device")))
        'out: no space left on the device (writing m.pt)'
    """
    path = Path(path)
    if err.errno in _NO_SPACE:
        return DataError(f"{path.parent}: no space left on the device (writing {path.name})")
    return DataError(f"{path}: cannot write ({err.strerror or err})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it is
    deleted, so ``path`` is never left half-written.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as tmp:
        ...     _ = tmp.write_text("done")
        >>> out.read_text()
        'done'
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(path, err) from None
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in _NO_SPACE:  # a full disk is the user's to fix: one line, no traceback
            raise write_error(path, err) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fh)`` on a binary file that becomes ``path`` once written and synced to disk."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically: for writers that are serialised in memory first
    (PyTorch's zip writers abort the process, or raise an unrelated error, when a write to a
    file fails; from memory the write is ours, and a full disk is a :class:`DataError`)."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "b.txt"
        >>> atomic_write_text(out, "ok")
        >>> out.read_text()
        'ok'
    """
    atomic_write(path, lambda fh: fh.write(text.encode()))
