"""Hostile ``.npz`` and IDX files: every size they declare is checked against the bytes they
hold before anything is allocated, and labels against the class limit before any cast; each
refusal is one line naming the file and the array."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from torchstn.data.arrays import MAX_CLASSES, MAX_RATIO, read_arrays
from torchstn.data.idx import read_idx
from torchstn.data.npz import load_npz
from torchstn.errors import DataError


def npy(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """``array`` as ``.npy`` bytes, its header declaring ``shape`` instead (same header length)."""
    f = io.BytesIO()
    np.lib.format.write_array(f, array, allow_pickle=False)
    data = f.getvalue()
    if shape is None:
        return data
    end = data.index(b"\n")
    old = data[10 : end + 1].decode("latin1")
    new = old.replace(f"'shape': {array.shape}", f"'shape': {shape}")
    new = new[: new.index("}") + 1].ljust(len(old) - 1) + "\n"
    assert len(new) == len(old)
    return data[:10] + new.encode("latin1") + data[end + 1 :]


def archive(path: Path, members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in members.items():
            z.writestr(f"{name}.npy", data)
    return path


def one_line(err: pytest.ExceptionInfo[DataError], *parts: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text


X = np.zeros((4, 3, 3), np.uint8)


class TestDeclaredShapes:
    @pytest.mark.parametrize("reader", [read_arrays, load_npz])
    def test_a_header_declaring_1e11_elements_is_refused_unread(
        self, tmp_path: Path, reader: object
    ) -> None:
        y = np.arange(4, dtype=np.int64)
        path = archive(tmp_path / "big.npz", {"x": npy(X), "y": npy(y, (10**11,))})
        with pytest.raises(DataError) as err:
            reader(path)  # type: ignore[operator]
        one_line(err, str(path), "'y'", "(100000000000,)", "800000000000 bytes", "holds 32")

    def test_a_header_declaring_fewer_bytes_is_refused(self, tmp_path: Path) -> None:
        path = archive(tmp_path / "small.npz", {"x": npy(X, (2, 3, 3)), "y": npy(np.zeros(4))})
        with pytest.raises(DataError) as err:
            read_arrays(path)
        one_line(err, "'x'", "(2, 3, 3)", "18 bytes", "holds 36")

    def test_an_entry_declaring_more_than_deflate_can_hold_is_refused(self, tmp_path: Path) -> None:
        path = archive(
            tmp_path / "d.npz",
            {"x": npy(X), "y": npy(np.zeros(4, np.int64))},
            zipfile.ZIP_DEFLATED,
        )
        raw = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("y.npy")
        declared = info.compress_size * (MAX_RATIO + 1)
        # the entry's uncompressed size, in its local header and the central directory
        for at in (info.header_offset + 22, raw.rindex(b"PK\x01\x02y.npy"[:4]) + 24):
            assert struct.unpack_from("<I", raw, at)[0] == info.file_size
            struct.pack_into("<I", raw, at, declared)
        path.write_bytes(bytes(raw))
        with pytest.raises(DataError) as err:
            read_arrays(path)
        one_line(err, str(path), "'y'", f"declares {declared} bytes", f"{MAX_RATIO} times")

    def test_well_formed_compressed_files_still_read(self, tmp_path: Path) -> None:
        x = np.zeros((50, 8, 8), np.uint8)  # zeros: deflated about 100 times
        np.savez_compressed(tmp_path / "z.npz", x=x, y=np.arange(50) % 3)
        s = read_arrays(tmp_path / "z.npz")
        assert s.x.shape == (50, 1, 8, 8) and s.y.tolist()[:4] == [0, 1, 2, 0]


class TestLabels:
    @pytest.mark.parametrize(
        ("y", "shown"),
        [
            (np.array([0, 1, 2**40, 3]), "label 1099511627776 at index 2"),
            (np.array([0, 1, 2, 1e19]), "label 1e+19 at index 3"),
            (np.array([0, 2**63 + 5, 1, 1], np.uint64), "label 9223372036854775813 at index 1"),
            (np.array([0, 1, 2, MAX_CLASSES]), f"label {MAX_CLASSES} at index 3"),
        ],
        ids=["2**40", "1e19", "uint64", "limit"],
    )
    def test_too_large_before_any_cast(self, tmp_path: Path, y: np.ndarray, shown: str) -> None:
        np.savez(tmp_path / "d.npz", x=X, y=y)
        with pytest.raises(DataError) as err:
            read_arrays(tmp_path / "d.npz")
        one_line(err, "d.npz", "'y'", shown, f"below {MAX_CLASSES}")
        assert "negative" not in str(err.value)

    def test_negative_floats_named_as_stored(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "d.npz", x=X, y=np.array([0, 1, -1e19, 2]))
        with pytest.raises(DataError) as err:
            read_arrays(tmp_path / "d.npz")
        one_line(err, "negative label -1e+19 at index 2")

    def test_the_largest_class_index_reads(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "d.npz", x=X, y=np.array([0, 1, 2, MAX_CLASSES - 1.0]))
        assert read_arrays(tmp_path / "d.npz").y.tolist() == [0, 1, 2, MAX_CLASSES - 1]

    def test_one_hot_wider_than_the_limit(self, tmp_path: Path) -> None:
        y = np.zeros((4, MAX_CLASSES + 1), np.uint8)
        y[:, 0] = 1
        np.savez_compressed(tmp_path / "d.npz", x=X, y=y)
        with pytest.raises(DataError) as err:
            read_arrays(tmp_path / "d.npz")
        one_line(err, f"{MAX_CLASSES + 1} classes", f"at most {MAX_CLASSES}")

    def test_load_npz_labels(self, tmp_path: Path) -> None:
        np.savez(tmp_path / "s.npz", x=X, y=np.array([0, 1, 2**40, 1]))
        with pytest.raises(DataError) as err:
            load_npz(tmp_path / "s.npz")
        one_line(err, "s.npz", "'y'", "1099511627776", f"below {MAX_CLASSES}")


class TestIdxBombs:
    def test_a_gzip_stream_is_unpacked_no_further_than_its_header(self, tmp_path: Path) -> None:
        # a header of 3 labels, then 64 MiB of zeros packed into about 64 KiB
        header = struct.pack(">BBBBi", 0, 0, 8, 1, 3)
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        body = c.compress(header + bytes(3))
        for _ in range(64):
            body += c.compress(bytes(1 << 20))
        (tmp_path / "bomb.gz").write_bytes(body + c.flush())
        assert (tmp_path / "bomb.gz").stat().st_size < 1 << 17
        tracemalloc.start()
        try:
            with pytest.raises(DataError) as err:
                read_idx(tmp_path / "bomb.gz")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        one_line(err, "bomb.gz", "unexpected bytes after the data")
        assert peak < 4 << 20  # not the 64 MiB

    def test_gzipped_files_still_read(self, tmp_path: Path) -> None:
        data = struct.pack(">BBBBi", 0, 0, 8, 1, 3) + bytes([7, 2, 1])
        (tmp_path / "l.gz").write_bytes(gzip.compress(data))
        assert read_idx(tmp_path / "l.gz").tolist() == [7, 2, 1]
        (tmp_path / "two.gz").write_bytes(gzip.compress(data[:6]) + gzip.compress(data[6:]))
        assert read_idx(tmp_path / "two.gz").tolist() == [7, 2, 1]

    def test_negative_and_overflowing_sizes(self, tmp_path: Path) -> None:
        (tmp_path / "neg").write_bytes(struct.pack(">BBBBi", 0, 0, 8, 1, -3))
        with pytest.raises(DataError, match="negative size"):
            read_idx(tmp_path / "neg")
        big = struct.pack(">BBBB3i", 0, 0, 8, 3, 2**31 - 1, 2**31 - 1, 2**31 - 1)
        (tmp_path / "big").write_bytes(big + bytes(4))
        with pytest.raises(DataError) as err:
            read_idx(tmp_path / "big")
        one_line(err, "truncated IDX file", "found 4")
