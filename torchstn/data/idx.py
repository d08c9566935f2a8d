"""Reading IDX files, the format of the MNIST release (gzipped or raw).

Format: a 4-byte magic ``0x00 0x00 TYPE NDIM``, then ``NDIM`` big-endian int32 sizes, then the
data, row-major, big-endian. MNIST uses ``TYPE = 0x08`` (uint8): images ``(N, 28, 28)`` (magic
2051) and labels ``(N,)`` (magic 2049). A gzipped file is unpacked no further than the size its
header declares (plus one byte, to tell that it holds more): memory follows the data, not the
compression ratio.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["read_idx"]

#: IDX type byte -> NumPy dtype (big-endian where it matters).
_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER = 4 + 4 * 255


def _read_bytes(path: Path) -> bytes:
    """The file's IDX bytes: a gzip stream is decompressed no further than its header's
    declared size plus one byte (enough to tell that it holds more), so that a small file
    cannot unpack into gigabytes."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        head = _gunzip(raw, _MAX_HEADER)
        limit = _size(path, head)
        return _gunzip(raw, limit + 1 if limit is not None else len(head))
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: corrupted or truncated gzip stream ({err})") from None


def _gunzip(raw: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of the gzip members in ``raw`` (raises on a stream cut short)."""
    out = bytearray()
    while raw and len(out) < limit:
        d = zlib.decompressobj(wbits=31)
        out += d.decompress(raw, limit - len(out))
        if len(out) >= limit:
            break
        out += d.flush()
        if not d.eof:
            raise EOFError("compressed stream ended before the end-of-stream marker")
        raw = d.unused_data.lstrip(b"\0")  # the next member, if any (gzip pads with zeros)
    return bytes(out[:limit])


def _size(path: Path, data: bytes) -> int | None:
    """The total size (header and data) the IDX header at the start of ``data`` declares, or
    ``None`` when ``data`` holds no whole header (the caller reports it)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        return None
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        return None
    shape = struct.unpack(f">{ndim}i", data[4:header])
    if any(s < 0 for s in shape):
        raise DataError(f"{path}: corrupted IDX header: negative size in shape {shape}")
    return header + math.prod(shape) * _DTYPES[data[2]].itemsize


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw, detected from its first bytes).

    Args:
        path: the file.

    Returns:
        The array, in native byte order, with the shape the header declares (``(N, 28, 28)``
        uint8 for MNIST images, ``(N,)`` uint8 for labels).

    Raises:
        DataError: the file is missing, unreadable, not IDX, or holds fewer or more bytes than its
            header declares; the message names the file.

    Example:
        >>> import struct, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = f.write_bytes(struct.pack(">BBBBi", 0, 0, 8, 1, 3) + bytes([7, 2, 1]))
        >>> read_idx(f)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype = _DTYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">i4", count=ndim, offset=4))
    if any(s < 0 for s in shape):
        raise DataError(f"{path}: corrupted IDX header: negative size in shape {shape}")
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found < expected:
        raise DataError(
            f"{path}: truncated IDX file: header declares shape {shape} ({expected} data bytes), "
            f"found {found}"
        )
    if found > expected:
        raise DataError(
            f"{path}: corrupted IDX file: {found - expected} unexpected bytes after the data of "
            f"shape {shape}"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)
