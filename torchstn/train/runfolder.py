"""A run folder: its files, its lock, its records.

A run owns its folder while it trains: :class:`RunFolderLock` holds an exclusive lock on
``RUN_DIR/.lock``, so a second run into the same folder stops in one line instead of mixing its
files with the first one's. Records are JSON lines, written whole or not at all.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from .._atomic import remove_stale_temps, write_error
from ..errors import DataError

__all__ = [
    "RUN_FILES",
    "RunFolderLock",
    "append_record",
    "file_identity",
    "finite",
    "json_line",
    "remove_stale_files",
]

#: the files a run writes into its folder (whose stale temporary files a new run deletes).
RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl", "result.json")


class RunFolderLock:
    """An exclusive lock on a run folder, for the life of a run (``RUN_DIR/.lock``).

    ``fcntl.flock`` on POSIX (``msvcrt.locking`` on Windows): the operating system releases it
    when the process ends, however it ends (``kill -9`` included), so a stale lock never blocks a
    later run. The lock file holds the owner's process id for the message of the run it stops;
    it stays in the folder. Creating the folder and the lock file is the run's first write, so an
    unwritable or full folder fails here, in one line, before any work.

    Args:
        run_dir: the run folder (created).

    Raises:
        DataError: the folder cannot be created or written, or another live process holds it.
    """

    NAME = ".lock"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / self.NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fh: Any = open(path, "a+")  # held for the run's life
        except OSError as err:
            raise _folder_error(self.run_dir, err) from None
        try:
            taken = _try_lock(self._fh)
            if not taken:
                raise _in_use(self.run_dir)
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(f"{os.getpid()}\n")
            self._fh.flush()
        except OSError as err:
            self._fh.close()
            raise write_error(path, err) from None
        except BaseException:
            self._fh.close()
            raise

    @classmethod
    def check(cls, run_dir: str | Path) -> None:
        """Raise the "in use" :class:`DataError` now if another live process holds ``run_dir``
        (writes nothing: for failing fast, before a run reads its data; :meth:`Trainer.fit`
        takes the lock itself)."""
        path = Path(run_dir) / cls.NAME
        try:
            fh = open(path, "rb")
        except OSError:
            return  # no lock file (no run there yet), or none we may read: fit() will tell
        with fh:
            if not _try_lock(fh):
                raise _in_use(Path(run_dir))

    def release(self) -> None:
        """Give the folder back (closing the file releases the lock)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self._fh = None


def _try_lock(fh: Any) -> bool:
    """Take an exclusive, non-blocking lock on ``fh``; False when another process holds it."""
    if sys.platform == "win32":
        import msvcrt  # Windows only: imported where the platform is known

        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        import fcntl  # POSIX only: at the top, it would make torchstn unimportable on Windows
    except ImportError:  # pragma: no cover - a platform with neither
        print("torchstn: cannot lock the run folder on this platform", file=sys.stderr)
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        # a file system without locks (some network mounts): run unlocked, and say so
        print(
            f"torchstn: cannot lock the run folder ({err.strerror or err}); make sure no other "
            "run writes into it",
            file=sys.stderr,
        )
    return True


def _in_use(run_dir: Path) -> DataError:
    """The one line for a run folder whose lock another live process holds (its pid, if the lock
    file names one)."""
    try:
        text = (run_dir / RunFolderLock.NAME).read_text().strip()
    except OSError:
        text = ""
    owner = f"pid {text}" if text.isdigit() else "pid unknown"
    return DataError(f"run folder {run_dir} is in use by another process ({owner})")


def _folder_error(run_dir: Path, err: OSError) -> DataError:
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return DataError(f"run folder {run_dir}: a file is in the way (not a folder)")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return write_error(run_dir / RunFolderLock.NAME, err)
    return DataError(f"run folder {run_dir}: cannot write there ({err.strerror or err})")


def file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``, or None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def remove_stale_files(run_dir: Path) -> None:
    """Delete the temporary files of :data:`RUN_FILES` that a killed run left in ``run_dir``
    (``kill -9`` while a checkpoint was written), and say so on stderr."""
    removed = remove_stale_temps(run_dir, RUN_FILES)
    if removed:
        size = sum(_size(p) for p in removed)
        print(
            f"torchstn: deleted {len(removed)} temporary file(s) ({size / 1e6:.1f} MB) that a "
            f"stopped run left in {run_dir}",
            file=sys.stderr,
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def finite(value: Any) -> Any:
    """``value`` with NaN and Inf floats as None, so that it is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(finite(record), allow_nan=False)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to the JSON-lines file ``path``: a whole line or nothing (a line a full
    disk cut is taken back).

    Raises:
        OSError: the line could not be written (the file is as it was).
    """
    line = (json_line(record) + "\n").encode()
    with open(path, "ab") as fh:
        end = fh.tell()
        try:
            fh.write(line)
            fh.flush()
        except OSError:
            fh.truncate(end)
            raise
