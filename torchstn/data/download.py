"""Downloading a file with checksum verification (standard library only).

The file is streamed to a temporary file beside its destination (:func:`torchstn._atomic.atomic_path`)
and never grows past its expected size: a ``Content-Length`` above it is refused before the body
is read, and a body that runs past it is cut off. Its md5 (and sha256, where given) are compared
with the expected ones, and only then is it moved into place with :func:`os.replace`: an
interrupted, oversized or corrupted download never leaves a file under the final name, nor a
temporary file behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .._atomic import atomic_path
from ..errors import DataError

__all__ = ["DownloadError", "download", "hash_file", "md5sum"]

_CHUNK = 1 << 16


class DownloadError(DataError):
    """No mirror served the file with the right size and checksums.

    Attributes:
        unreachable: every mirror failed to connect (no network, DNS failure, refused or timed
            out), as opposed to a mirror that answered with an error or with wrong bytes.
    """

    def __init__(self, message: str, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable


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
    hash_file(digest, path)
    return digest.hexdigest()


def hash_file(digest: Any, path: str | os.PathLike[str]) -> None:
    """Feed the bytes of ``path`` to ``digest`` (a :mod:`hashlib` object), a mebibyte at a time:
    memory stays flat whatever the file's size.

    Raises:
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)


def _urlopen(url: str, timeout: float) -> IO[bytes]:
    """Open ``url`` for reading (the one place that touches the network; tests replace it)."""
    request = urllib.request.Request(url, headers={"User-Agent": "torchstn"})
    return urllib.request.urlopen(request, timeout=timeout)  # type: ignore[no-any-return]


class _Failure(Exception):
    """One mirror's failure, as a short phrase; ``unreachable`` when it could not connect."""

    def __init__(self, phrase: str, unreachable: bool = False) -> None:
        super().__init__(phrase)
        self.unreachable = unreachable


def _declared_length(response: IO[bytes]) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _fetch(
    url: str, dest: Path, md5: str, sha256: str | None, size: int | None, timeout: float
) -> None:
    try:
        response = _urlopen(url, timeout)
    except urllib.error.HTTPError as err:  # an answer: reachable, but no file
        raise _Failure(f"HTTP {err.code}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        unreachable = isinstance(reason, OSError) and not isinstance(reason, FileNotFoundError)
        raise _Failure(str(getattr(reason, "strerror", None) or reason), unreachable) from None
    except OSError as err:  # refused, reset, timed out, no route, name not resolved
        raise _Failure(str(err) or type(err).__name__, True) from None
    except ValueError as err:  # not a URL urllib can open
        raise _Failure(str(err)) from None
    with response, atomic_path(dest) as tmp:
        declared = _declared_length(response)
        if size is not None and declared is not None and declared > size:
            raise _Failure(f"declares {declared} bytes, more than the expected {size}")
        md5_digest, sha_digest, received = hashlib.md5(), hashlib.sha256(), 0
        with open(tmp, "wb") as out:  # an error writing it (a full disk) is not the mirror's
            while True:
                limit = _CHUNK if size is None else min(_CHUNK, size + 1 - received)
                try:
                    chunk = response.read(limit)
                except (OSError, ValueError) as err:  # the connection dropped or timed out
                    raise _Failure(f"interrupted after {received} bytes ({err})") from None
                if not chunk:
                    break
                received += len(chunk)
                if size is not None and received > size:
                    raise _Failure(f"sends more than the expected {size} bytes")
                md5_digest.update(chunk)
                sha_digest.update(chunk)
                out.write(chunk)
        if size is not None and received != size:
            raise _Failure(f"{received} bytes instead of {size}")
        if md5_digest.hexdigest() != md5:
            raise _Failure(f"md5 {md5_digest.hexdigest()} instead of {md5}")
        if sha256 is not None and sha_digest.hexdigest() != sha256:
            raise _Failure(f"sha256 {sha_digest.hexdigest()} instead of {sha256}")


def _where(url: str) -> str:
    """A mirror's short name in messages: its host, or the folder of a ``file:`` URL."""
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or os.path.dirname(parts.path) or url


def download(
    urls: Sequence[str],
    dest: str | os.PathLike[str],
    md5: str,
    timeout: float = 60.0,
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> Path:
    """Download a file from the first of ``urls`` that serves it with the expected checksums.

    Args:
        urls: mirrors, tried in order (``http(s)://`` or ``file://``).
        dest: the final path; its folder is created if needed.
        md5: the expected hex md5 digest of the downloaded bytes.
        timeout: seconds to wait for each connection (and each read).
        sha256: the expected hex sha256 digest, checked as well where given.
        size: the expected number of bytes: a mirror that declares or sends more is cut off
            (memory and disk never follow what a server says), one that sends fewer refused.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: no mirror served the file with the right size and checksums; the message
            gives each mirror's failure in a few words, ``unreachable`` says whether no mirror
            could even be reached.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create folder {dest.parent} ({err.strerror or err})") from None
    failures: list[str] = []
    unreachable = bool(urls)
    for url in urls:
        try:
            _fetch(url, dest, md5, sha256, size, timeout)
            return dest
        except _Failure as err:
            failures.append(f"{_where(url)}: {err}")
            unreachable = unreachable and err.unreachable
        except OSError as err:  # writing the file, not reading the mirror
            raise DataError(f"{dest}: cannot write ({err.strerror or err})") from None
    raise DownloadError(
        f"could not download {dest.name} ({'; '.join(failures) or 'no mirror'})", unreachable
    )
