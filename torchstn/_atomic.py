"""Writing files atomically: write to a temporary file in the same folder, then ``os.replace``.

The one helper every command that writes files uses (data exports, checkpoints, results, figures).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import DataError

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temps",
    "write_error",
]

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


def remove_stale_temps(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` for the files ``names``
    when its process was killed (``kill -9``, a power cut) between creating and replacing them.

    Only files of :func:`atomic_path`'s own pattern, ``.NAME.XXXXXXXX.tmp`` for a NAME of
    ``names``, are touched. The caller must own ``folder`` (no other live process may be writing
    those files: a run folder's lock). Returns the files deleted.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".checkpoint.pt.k2x_9a1b.tmp").write_bytes(b"half")
        >>> _ = (folder / ".notes.txt.k2x_9a1b.tmp").write_bytes(b"not ours to delete")
        >>> [p.name for p in remove_stale_temps(folder, ["checkpoint.pt"])]
        ['.checkpoint.pt.k2x_9a1b.tmp']
    """
    folder = Path(folder)
    pattern = re.compile(
        r"\.(?:" + "|".join(re.escape(n) for n in names) + r")\.[A-Za-z0-9_]+\.tmp"
    )
    removed: list[Path] = []
    try:
        candidates = [p for p in folder.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return removed
    for p in candidates:
        try:
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
        except OSError:
            pass  # gone meanwhile, or not ours to delete after all: leave it
    return removed
