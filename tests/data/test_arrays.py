"""Users' own ``.npz`` files: names, shapes, layouts, dtypes, labels and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchstn.data import ArraySet, check_labels, read_arrays
from torchstn.errors import ConfigError, DataError


def write(tmp_path: Path, name: str = "their.npz", **arrays: Any) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def pixels(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def labels(n: int) -> np.ndarray:
    return np.arange(n) % 10


class TestNames:
    def test_other_names(self, tmp_path: Path) -> None:
        x = pixels(4, 1, 6, 5)
        path = write(tmp_path, train_images=x, train_labels=labels(4))
        s = read_arrays(path, "train_images", "train_labels")
        assert isinstance(s, ArraySet)
        assert torch.equal(s.x, torch.from_numpy(x)) and s.y.tolist() == [0, 1, 2, 3]
        assert s.where == f"{path} (train_images, train_labels)"
        assert s.num_classes is None and s.layout == "channels_first"

    def test_missing_name_lists_found_arrays(self, tmp_path: Path) -> None:
        path = write(tmp_path, images=pixels(2, 4, 4), labels=labels(2))
        with pytest.raises(DataError) as err:
            read_arrays(path, "train_images", "labels")
        assert str(err.value) == f"{path}: no array 'train_images' (found: images, labels)"

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match=r"nothere\.npz: file not found"):
            read_arrays(tmp_path / "nothere.npz")


class TestImageShapes:
    def test_three_dims_is_one_channel(self, tmp_path: Path) -> None:
        x = pixels(3, 7, 5)
        s = read_arrays(write(tmp_path, x=x, y=labels(3)))
        assert s.x.shape == (3, 1, 7, 5) and s.x.dtype == torch.uint8
        assert torch.equal(s.x[:, 0], torch.from_numpy(x)) and s.x.is_contiguous()

    def test_channels_first_uint8_exact(self, tmp_path: Path) -> None:
        x = pixels(4, 3, 8, 6)
        s = read_arrays(write(tmp_path, x=x, y=labels(4)))
        assert s.layout == "channels_first" and s.x.dtype == torch.uint8
        assert np.array_equal(s.x.numpy(), x)

    @pytest.mark.parametrize("c", [1, 3, 4])
    def test_channels_last_uint8_exact(self, tmp_path: Path, c: int) -> None:
        x = pixels(4, 9, 7, c)
        s = read_arrays(write(tmp_path, x=x, y=labels(4)))
        assert s.layout == "channels_last" and s.x.shape == (4, c, 9, 7)
        assert s.x.is_contiguous() and np.array_equal(s.x.numpy(), x.transpose(0, 3, 1, 2))

    def test_explicit_layout_overrides_auto(self, tmp_path: Path) -> None:
        x = pixels(2, 3, 8, 3)  # auto: axis 1 has 3 <= 4 entries -> channels-first
        path = write(tmp_path, x=x, y=labels(2))
        auto = read_arrays(path)
        assert auto.layout == "channels_first" and np.array_equal(auto.x.numpy(), x)
        last = read_arrays(path, layout="channels_last")
        assert last.layout == "channels_last" and last.x.shape == (2, 3, 3, 8)
        assert np.array_equal(last.x.numpy(), x.transpose(0, 3, 1, 2))
        x = pixels(2, 8, 8, 3)  # auto says channels-last; forced channels-first
        first = read_arrays(write(tmp_path, x=x, y=labels(2)), layout="channels_first")
        assert first.layout == "channels_first" and np.array_equal(first.x.numpy(), x)

    def test_unknown_layout(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(2, 4, 4), y=labels(2))
        with pytest.raises(ConfigError, match="auto, channels_first, channels_last, got 'nhwc'"):
            read_arrays(path, layout="nhwc")

    @pytest.mark.parametrize("shape", [[1, 5, 4], [5, 4]])
    def test_flat(self, tmp_path: Path, shape: list[int]) -> None:
        x = pixels(3, 5, 4)
        s = read_arrays(write(tmp_path, x=x.reshape(3, 20), y=labels(3)), image_shape=shape)
        assert s.x.shape == (3, 1, 5, 4) and np.array_equal(s.x.numpy()[:, 0], x)

    def test_flat_channels_last(self, tmp_path: Path) -> None:
        x = pixels(3, 5, 4, 3)  # rows in (H, W, C) order
        path = write(tmp_path, x=x.reshape(3, -1), y=labels(3))
        s = read_arrays(path, image_shape=[3, 5, 4], layout="channels_last")
        assert s.layout == "channels_last" and s.x.is_contiguous()
        assert np.array_equal(s.x.numpy(), x.transpose(0, 3, 1, 2))
        first = read_arrays(path, image_shape=[3, 5, 4])  # rows taken in (C, H, W) order
        assert np.array_equal(first.x.numpy(), x.reshape(3, 3, 5, 4))

    def test_flat_size_mismatch(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(2, 1600), y=labels(2))
        with pytest.raises(DataError) as err:
            read_arrays(path, image_shape=[1, 40, 41])
        assert str(err.value) == (
            f"{path}: array 'x' holds flat images of 1600 values; image_shape [1, 40, 41] has 1640"
        )

    def test_flat_without_image_shape(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(2, 16), y=labels(2))
        with pytest.raises(
            DataError, match=r"their\.npz: array 'x' holds flat .*data\.image_shape"
        ):
            read_arrays(path)

    def test_image_shape_mismatch(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(2, 3, 8, 8), y=labels(2))
        assert read_arrays(path, image_shape=[3, 8, 8]).x.shape == (2, 3, 8, 8)
        with pytest.raises(DataError) as err:
            read_arrays(path, image_shape=[1, 8, 8])
        assert "their.npz: array 'x'" in str(err.value)
        assert "(3, 8, 8)" in str(err.value) and "[1, 8, 8]" in str(err.value)

    @pytest.mark.parametrize("bad", [[1, 2, 3, 4], [0, 4], "28x28", [1.5, 4], [True, 4], 28])
    def test_bad_image_shape(self, tmp_path: Path, bad: Any) -> None:
        path = write(tmp_path, x=pixels(2, 16), y=labels(2))
        with pytest.raises(ConfigError, match="image_shape"):
            read_arrays(path, image_shape=bad)

    @pytest.mark.parametrize("shape", [(4,), (4, 2, 3, 3, 3)])
    def test_other_ranks(self, tmp_path: Path, shape: tuple[int, ...]) -> None:
        path = write(tmp_path, x=np.zeros(shape, np.uint8), y=labels(4))
        with pytest.raises(DataError, match=r"array 'x' must have shape \(N, H, W\)"):
            read_arrays(path)


class TestPixelValues:
    def test_float_kept_as_float32(self, tmp_path: Path) -> None:
        x = np.random.default_rng(0).random((3, 1, 4, 4))  # float64 in [0, 1)
        x[0, 0, 0] = [0.0, 1.0, 0.5, 0.25]
        s = read_arrays(write(tmp_path, x=x, y=labels(3)))
        assert s.x.dtype == torch.float32
        assert torch.equal(s.x, torch.from_numpy(x.astype(np.float32)))

    @pytest.mark.parametrize("value", [1.5, -0.1, np.nan, np.inf])
    def test_float_out_of_range(self, tmp_path: Path, value: float) -> None:
        x = np.zeros((2, 4, 4), np.float32)
        x[1, 2, 3] = value
        with pytest.raises(DataError, match=r"array 'x' \(float32\) holds .*\[0, 1\].*uint8"):
            read_arrays(write(tmp_path, x=x, y=labels(2)))

    def test_float_range_reported(self, tmp_path: Path) -> None:
        x = np.full((2, 4, 4), 200.0)
        with pytest.raises(DataError, match=r"values in \[200\.0, 200\.0\]"):
            read_arrays(write(tmp_path, x=x, y=labels(2)))

    def test_int64_in_byte_range_cast(self, tmp_path: Path) -> None:
        x = pixels(3, 5, 5).astype(np.int64)
        x[0, 0, :2] = [0, 255]
        s = read_arrays(write(tmp_path, x=x, y=labels(3)))
        assert s.x.dtype == torch.uint8 and np.array_equal(s.x.numpy()[:, 0], x)

    def test_uint16_above_255(self, tmp_path: Path) -> None:
        x = np.zeros((2, 4, 4), np.uint16)
        x[0, 0, 0] = 4095
        with pytest.raises(DataError) as err:
            read_arrays(write(tmp_path, x=x, y=labels(2)))
        assert "array 'x' (uint16) holds values in [0, 4095]" in str(err.value)
        assert "store uint8 (0..255) or floats in [0, 1]" in str(err.value)

    def test_bool_images(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="array 'x' has dtype bool"):
            read_arrays(write(tmp_path, x=np.zeros((2, 4, 4), bool), y=labels(2)))


class TestLabels:
    @pytest.mark.parametrize(
        "y", [np.array([3, 0, 7]), np.array([[3], [0], [7]]), np.array([3.0, 0.0, 7.0])]
    )
    def test_integer_labels(self, tmp_path: Path, y: np.ndarray) -> None:
        s = read_arrays(write(tmp_path, x=pixels(3, 4, 4), y=y))
        assert s.y.dtype == torch.int64 and s.y.tolist() == [3, 0, 7] and s.num_classes is None

    def test_non_integral_float(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(3, 4, 4), y=np.array([1.0, 2.5, 3.0]))
        with pytest.raises(DataError, match=r"array 'y' holds non-integer label 2\.5 at index 1"):
            read_arrays(path)

    @pytest.mark.parametrize("dtype", [np.uint8, np.float32, bool])
    def test_one_hot(self, tmp_path: Path, dtype: Any) -> None:
        y = np.eye(4, dtype=dtype)[[2, 0, 3]]
        s = read_arrays(write(tmp_path, x=pixels(3, 4, 4), y=y))
        assert s.y.tolist() == [2, 0, 3] and s.num_classes == 4

    @pytest.mark.parametrize("row", [[0, 0, 0], [1, 1, 0], [0.5, 0.5, 0], [0, 2, 0]])
    def test_bad_one_hot(self, tmp_path: Path, row: list[float]) -> None:
        y = np.array([[1, 0, 0], [0, 1, 0], row, [0, 0, 1]])
        with pytest.raises(
            DataError, match=r"array 'y' of shape \(4, 3\) must hold one-hot.*row 2"
        ):
            read_arrays(write(tmp_path, x=pixels(4, 4, 4), y=y))

    def test_negative(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(4, 4, 4), y=np.array([0, 1, -1, -2]))
        with pytest.raises(
            DataError, match=r"their\.npz: array 'y' holds negative label -1 at index 2"
        ):
            read_arrays(path)

    @pytest.mark.parametrize(
        "y", [np.zeros((3, 2, 2), int), np.array(["a", "b", "c"]), np.ones((3, 1), bool)]
    )
    def test_bad_shape_or_dtype(self, tmp_path: Path, y: np.ndarray) -> None:
        with pytest.raises(
            DataError, match=r"array 'y' (must have shape \(N,\), \(N, 1\)|has dtype)"
        ):
            read_arrays(write(tmp_path, x=pixels(3, 4, 4), y=y))

    def test_check_labels(self) -> None:
        check_labels(torch.tensor([0, 9, 3]), 10, "val.npz (x, y)")
        y = torch.zeros(50, dtype=torch.int64)
        y[40], y[45] = 12, 11
        with pytest.raises(DataError) as err:
            check_labels(y, 10, "val.npz (x, y)")
        assert (
            str(err.value) == "val.npz (x, y): label 12 at index 40 is out of range for 10 classes"
        )
        with pytest.raises(DataError, match="label -1 at index 1"):
            check_labels(torch.tensor([0, -1]), 10, "w")


class TestFileErrors:
    def test_length_mismatch(self, tmp_path: Path) -> None:
        path = write(tmp_path, images=pixels(5, 4, 4), labels=labels(4))
        with pytest.raises(DataError) as err:
            read_arrays(path, "images", "labels")
        assert str(err.value) == (
            f"{path}: arrays 'images' and 'labels' differ in length: 5 images, 4 labels"
        )

    def test_empty(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=np.zeros((0, 4, 4), np.uint8), y=np.zeros(0, int))
        with pytest.raises(DataError, match="arrays 'x' and 'y' hold no samples"):
            read_arrays(path)

    def test_garbage_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "their.npz"
        path.write_bytes(b"this is not a zip archive at all")
        with pytest.raises(DataError) as err:
            read_arrays(path)
        assert str(err.value).startswith(f"{path}: not an .npz") and "\n" not in str(err.value)

    def test_npy_instead_of_npz(self, tmp_path: Path) -> None:
        path = tmp_path / "their.npz"
        with path.open("wb") as f:
            np.save(f, pixels(2, 4, 4))
        with pytest.raises(DataError, match=r"one \.npy array, save x and y with np\.savez"):
            read_arrays(path)

    def test_truncated_array(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(64, 32, 32), y=labels(64))
        data = path.read_bytes()
        start = data.index(b"\x93NUMPY") + 200  # inside x's pixels
        path.write_bytes(data[:start] + b"\xff" * 1000 + data[start + 1000 :])  # CRC now wrong
        with pytest.raises(DataError) as err:
            read_arrays(path)
        assert str(err.value).startswith(f"{path}: array 'x' is corrupted or truncated")

    def test_object_array(self, tmp_path: Path) -> None:
        path = write(tmp_path, x=pixels(2, 4, 4), y=np.array([1, "a"], dtype=object))
        with pytest.raises(DataError) as err:
            read_arrays(path)
        assert str(err.value).startswith(f"{path}: array 'y' holds Python objects")
        assert "pickle" not in str(err.value)
