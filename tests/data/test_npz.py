"""``.npz`` files: round trips, reproducible bytes, atomic writes, clear errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from torchstn.data import Sample, load_npz, save_npz
from torchstn.data import npz as npz_module
from torchstn.data.npz import read_manifest
from torchstn.data.sample import full_boxes
from torchstn.errors import DataError


def make(n: int = 4) -> Sample:
    g = torch.Generator().manual_seed(0)
    return Sample(
        torch.rand(n, 2, 5, 6, generator=g),
        torch.arange(n),
        torch.rand(n, 4, generator=g),
        {"angle": torch.rand(n, generator=g), "digit_boxes": torch.rand(n, 2, 4, generator=g)},
    )


class TestSave:
    def test_round_trip(self, tmp_path: Path) -> None:
        s = make()
        out = load_npz(save_npz(s, tmp_path / "s.npz", {"task": "demo", "seed": 1}))
        assert (
            torch.equal(out.x, s.x) and torch.equal(out.y, s.y) and torch.equal(out.boxes, s.boxes)
        )
        assert out.params.keys() == s.params.keys()
        assert all(torch.equal(out.params[k], v) for k, v in s.params.items())
        assert read_manifest(tmp_path / "s.npz") == {"task": "demo", "seed": 1}
        with np.load(tmp_path / "s.npz") as raw:
            assert sorted(raw.files) == [
                "boxes",
                "manifest",
                "param_angle",
                "param_digit_boxes",
                "x",
                "y",
            ]

    def test_reproducible_bytes(self, tmp_path: Path) -> None:
        for compress in (False, True):
            a = save_npz(make(), tmp_path / "a.npz", {"k": 1}, compress=compress).read_bytes()
            b = save_npz(make(), tmp_path / "b.npz", {"k": 1}, compress=compress).read_bytes()
            assert a == b

    def test_failure_leaves_nothing(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = []

        def explode(f, array, allow_pickle):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 2:
                raise OSError("disk full")
            np.lib.format.write_array(f, array, allow_pickle=allow_pickle)

        monkeypatch.setattr(npz_module.np.lib.format, "write_array", explode)
        with pytest.raises(OSError, match="disk full"):
            save_npz(make(), tmp_path / "s.npz")
        assert list(tmp_path.iterdir()) == []

    def test_failure_keeps_the_old_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = save_npz(make(2), tmp_path / "s.npz")
        before = path.read_bytes()

        def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise KeyboardInterrupt

        monkeypatch.setattr(npz_module.np.lib.format, "write_array", explode)
        with pytest.raises(KeyboardInterrupt):
            save_npz(make(), path)
        assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


class TestLoad:
    def write(self, path: Path, **arrays: np.ndarray) -> Path:
        np.savez(path, **arrays)
        return path

    def test_uint8_hw_images(self, tmp_path: Path) -> None:
        x = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
        s = load_npz(self.write(tmp_path / "u.npz", x=x, y=np.array([0, 1, 2], np.uint8)))
        assert s.x.shape == (3, 1, 4, 5) and s.x.dtype == torch.float32
        torch.testing.assert_close(s.x[:, 0], torch.from_numpy(x).float() / 255)
        assert s.y.dtype == torch.int64 and s.boxes.tolist()[0] == [0, 0, 5, 4] and s.params == {}

    def test_float64_images_are_converted(self, tmp_path: Path) -> None:
        s = load_npz(
            self.write(tmp_path / "f.npz", x=np.full((2, 3, 4, 4), 0.5), y=np.array([1, 0]))
        )
        assert s.x.dtype == torch.float32 and s.x.shape == (2, 3, 4, 4)

    @pytest.mark.parametrize(
        ("arrays", "message"),
        [
            ({"x": np.zeros((2, 4, 4))}, r"missing array\(s\) y \(found: x\)"),
            ({"y": np.zeros(2, int)}, r"missing array\(s\) x \(found: y\)"),
            (
                {"x": np.zeros((2, 4)), "y": np.zeros(2, int)},
                r"'x' must have shape \(N, C, H, W\) or \(N, H, W\)",
            ),
            ({"x": np.full((2, 4, 4), 2.0), "y": np.zeros(2, int)}, r"must lie in \[0, 1\]"),
            ({"x": np.full((2, 4, 4), np.nan), "y": np.zeros(2, int)}, r"must lie in \[0, 1\]"),
            ({"x": np.zeros((2, 4, 4), np.int32), "y": np.zeros(2, int)}, "must be uint8"),
            (
                {"x": np.zeros((2, 4, 4)), "y": np.zeros(3, int)},
                r"'y' must be integer of shape \(2,\)",
            ),
            ({"x": np.zeros((2, 4, 4)), "y": np.zeros(2)}, r"'y' must be integer"),
            ({"x": np.zeros((2, 4, 4)), "y": np.array([0, -1])}, "negative labels"),
            (
                {"x": np.zeros((2, 4, 4)), "y": np.zeros(2, int), "boxes": np.zeros((2, 3))},
                r"'boxes' must have shape \(2, 4\)",
            ),
            (
                {"x": np.zeros((2, 4, 4)), "y": np.zeros(2, int), "param_a": np.zeros(3)},
                "'param_a' must have leading dimension 2",
            ),
        ],
    )
    def test_bad_contents(self, tmp_path: Path, arrays: dict, message: str) -> None:
        path = self.write(tmp_path / "bad.npz", **arrays)
        with pytest.raises(DataError, match=message) as info:
            load_npz(path)
        assert "bad.npz" in str(info.value)

    def test_missing_truncated_and_not_npz(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match=r"nope\.npz: file not found"):
            load_npz(tmp_path / "nope.npz")
        path = save_npz(make(), tmp_path / "t.npz")
        path.write_bytes(path.read_bytes()[:300])
        with pytest.raises(DataError, match=r"t\.npz: "):
            load_npz(path)
        (tmp_path / "text.npz").write_text("hello")
        with pytest.raises(DataError, match=r"text\.npz: not a readable \.npz file"):
            load_npz(tmp_path / "text.npz")

    def test_corrupted_member(self, tmp_path: Path) -> None:
        path = save_npz(make(), tmp_path / "c.npz")
        data = bytearray(path.read_bytes())
        start = data.find(b"\x93NUMPY", data.find(b"x.npy"))
        data[start : start + 6] = b"XXXXXX"  # break the header of the x array
        path.write_bytes(bytes(data))
        with pytest.raises(DataError, match="array 'x' is corrupted or truncated"):
            load_npz(path)

    def test_manifest(self, tmp_path: Path) -> None:
        assert (
            read_manifest(self.write(tmp_path / "m.npz", x=np.zeros((1, 2, 2)), y=np.zeros(1, int)))
            is None
        )
        with zipfile.ZipFile(tmp_path / "j.npz", "w") as z, z.open("manifest.npy", "w") as f:
            np.lib.format.write_array(f, np.array("[1, 2"))
        with pytest.raises(DataError, match="manifest is not a JSON object"):
            read_manifest(tmp_path / "j.npz")

    def test_full_image_boxes(self) -> None:
        assert full_boxes(2, 3, 5).tolist() == [[0, 0, 5, 3], [0, 0, 5, 3]]
