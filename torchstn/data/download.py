"""Downloading a file with checksum verification (standard library only).

The file is streamed to a temporary file in the destination folder, its md5 compared with the
expected one, and only then moved into place with :func:`os.replace`: an interrupted or corrupted
download never leaves a file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ..errors import DataError

__all__ = ["download", "md5sum"]

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike[str]) -> str:
    """The hex md5 digest of a file.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = f.write_bytes(b"abc")
        >>> md5sum(f)
        '900150983cd24fb0d6963f7d28e17f72'
    """
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _urlopen(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` for reading (the one place that touches the network; tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "torchstn"})
    return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, _urlopen(url, timeout) as response:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise DataError(f"md5 {digest.hexdigest()} instead of {md5}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download(
    urls: Sequence[str], dest: str | os.PathLike[str], md5: str, timeout: float = 60.0
) -> Path:
    """Download a file from the first of ``urls`` that serves it with the expected md5.

    Args:
        urls: mirrors, tried in order.
        dest: the final path; its folder is created if needed.
        md5: the expected hex md5 digest of the downloaded bytes.
        timeout: seconds to wait for each connection.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: no mirror served the file with the right checksum; the message gives each
            mirror's failure.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create folder {dest.parent} ({err.strerror or err})") from None
    failures = []
    for url in urls:
        try:
            _fetch(url, dest, md5, timeout)
            return dest
        except (OSError, DataError, ValueError) as err:  # URLError and HTTPError are OSErrors
            failures.append(f"{url}: {err}")
    raise DataError(f"could not download {dest.name}: " + "; ".join(failures))
