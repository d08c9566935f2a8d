"""The IDX reader: round trips, and clear errors for truncated, corrupted and missing files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from datahelpers import write_idx
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from torchstn.data import read_idx
from torchstn.errors import DataError


class TestReadIdx:
    @given(
        array=arrays(np.uint8, st.tuples(st.integers(0, 4), st.integers(1, 5), st.integers(1, 5))),
        gz=st.booleans(),
    )
    def test_round_trip(
        self, tmp_path_factory: pytest.TempPathFactory, array: np.ndarray, gz: bool
    ) -> None:
        path = write_idx(tmp_path_factory.mktemp("idx") / "a-idx3-ubyte", array, gz=gz)
        out = read_idx(path)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, array)

    def test_labels_raw_and_gz_agree(self, tmp_path: Path) -> None:
        labels = np.array([7, 2, 1, 0], np.uint8)
        raw = read_idx(write_idx(tmp_path / "l", labels))
        gz = read_idx(write_idx(tmp_path / "l.gz", labels, gz=True))
        np.testing.assert_array_equal(raw, gz)
        assert raw.shape == (4,)

    def test_big_endian_types_are_converted(self, tmp_path: Path) -> None:
        values = np.array([[1, -2], [300000, 4]], dtype=">i4")
        path = tmp_path / "ints"
        path.write_bytes(struct.pack(">BBBBii", 0, 0, 0x0C, 2, 2, 2) + values.tobytes())
        out = read_idx(path)
        assert out.dtype == np.int32 and out.dtype.isnative
        np.testing.assert_array_equal(out, values)

    def test_truncated_data(self, tmp_path: Path) -> None:
        path = write_idx(tmp_path / "imgs", np.zeros((3, 28, 28), np.uint8))
        path.write_bytes(path.read_bytes()[:-10])
        with pytest.raises(DataError, match=r"imgs: truncated IDX file.*\(3, 28, 28\)"):
            read_idx(path)

    def test_truncated_gzip(self, tmp_path: Path) -> None:
        path = write_idx(tmp_path / "imgs.gz", np.ones((3, 28, 28), np.uint8), gz=True)
        path.write_bytes(path.read_bytes()[:20])
        with pytest.raises(DataError, match=r"imgs.gz: corrupted or truncated gzip"):
            read_idx(path)

    def test_corrupted_gzip(self, tmp_path: Path) -> None:
        data = bytearray(gzip.compress(bytes(range(256)) * 10))
        data[20:30] = b"\xff" * 10
        path = tmp_path / "bad.gz"
        path.write_bytes(bytes(data))
        with pytest.raises(DataError, match=r"bad\.gz"):
            read_idx(path)

    def test_extra_bytes(self, tmp_path: Path) -> None:
        path = write_idx(tmp_path / "labels", np.zeros(4, np.uint8))
        path.write_bytes(path.read_bytes() + b"junk")
        with pytest.raises(DataError, match="4 unexpected bytes"):
            read_idx(path)

    @pytest.mark.parametrize(
        "content", [b"", b"\x01\x02\x08\x01", b"PK\x03\x04 not idx", b"\x00\x00\x08"]
    )
    def test_not_idx(self, tmp_path: Path, content: bytes) -> None:
        path = tmp_path / "junk"
        path.write_bytes(content)
        with pytest.raises(DataError, match="junk: not an IDX file"):
            read_idx(path)

    def test_unknown_type_and_short_header(self, tmp_path: Path) -> None:
        path = tmp_path / "typ"
        path.write_bytes(b"\x00\x00\x42\x01" + b"\x00" * 8)
        with pytest.raises(DataError, match="unknown IDX data type 0x42"):
            read_idx(path)
        path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
        with pytest.raises(DataError, match="truncated IDX header"):
            read_idx(path)

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match=r"nothing-here\.gz: file not found"):
            read_idx(tmp_path / "nothing-here.gz")
