"""Users' volumes: ``.npy`` / ``.npz`` arrays and NIfTI files, their shapes, dtypes, layouts and
labels, and a one-line refusal, before anything is allocated, of every file that lies."""

from __future__ import annotations

import gzip
import mmap
import struct
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchstn.data.volumes import (
    MAX_VOLUME_VOXELS,
    VOXELS_ENV,
    VolumeSet,
    max_volume_voxels,
    read_nifti,
    read_volumes,
)
from torchstn.errors import ConfigError, DataError

SHAPES = "(N, D, H, W), (N, C, D, H, W) or (N, D, H, W, C)"


def voxels(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def npz(tmp_path: Path, name: str = "scans.npz", **arrays: Any) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def npy(tmp_path: Path, array: np.ndarray, name: str = "scans.npy") -> Path:
    path = tmp_path / name
    np.save(path, array)
    return path


def npy_header(shape: tuple[int, ...], descr: str = "|u1", fortran: bool = False) -> bytes:
    """An ``.npy`` version 1.0 header written by hand, declaring ``shape`` of ``descr``."""
    text = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def refused(read: Callable[[Path], object], path: Path, *parts: str) -> str:
    """The message of the :class:`DataError` ``read(path)`` raises: one line holding ``parts``."""
    with pytest.raises(DataError) as err:
        read(path)
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text
    return text


class TestShapes:
    def test_four_dims_is_one_channel(self, tmp_path: Path) -> None:
        x = voxels(3, 4, 5, 6)
        s = read_volumes(npz(tmp_path, x=x, y=np.arange(3)))
        assert isinstance(s, VolumeSet)
        assert s.x.shape == (3, 1, 4, 5, 6) and s.x.dtype == torch.uint8 and s.x.is_contiguous()
        assert torch.equal(s.x[:, 0], torch.from_numpy(x))
        assert s.layout == "channels_first" and s.y is not None and s.y.tolist() == [0, 1, 2]

    def test_channels_first(self, tmp_path: Path) -> None:
        x = voxels(2, 3, 4, 5, 6)
        s = read_volumes(npz(tmp_path, x=x, y=np.arange(2)))
        assert s.layout == "channels_first" and torch.equal(s.x, torch.from_numpy(x))

    @pytest.mark.parametrize("channels", [1, 2, 3, 4])
    def test_channels_last_found_by_auto(self, tmp_path: Path, channels: int) -> None:
        x = voxels(2, 7, 5, 6, channels)  # (N, D, H, W, C)
        s = read_volumes(npz(tmp_path, x=x, y=np.arange(2)))
        assert s.layout == "channels_last" and s.x.shape == (2, channels, 7, 5, 6)
        assert s.x.is_contiguous()
        for c in range(channels):
            assert torch.equal(s.x[:, c], torch.from_numpy(x[..., c]))

    def test_explicit_layouts_override_auto(self, tmp_path: Path) -> None:
        x = voxels(2, 7, 5, 6, 3)  # auto: channels-last
        path = npz(tmp_path, x=x, y=np.arange(2))
        first = read_volumes(path, layout="channels_first")
        assert first.layout == "channels_first" and torch.equal(first.x, torch.from_numpy(x))
        y = voxels(2, 3, 4, 5, 6)  # auto: channels-first
        last = read_volumes(npz(tmp_path, "b.npz", x=y, y=np.arange(2)), layout="channels_last")
        assert last.layout == "channels_last" and last.x.shape == (2, 6, 3, 4, 5)
        assert torch.equal(last.x, torch.from_numpy(y).permute(0, 4, 1, 2, 3))

    def test_other_names_and_no_labels(self, tmp_path: Path) -> None:
        path = npz(tmp_path, scans=voxels(2, 3, 3, 3), classes=np.arange(2))
        s = read_volumes(path, x="scans", y="classes")
        assert s.where == f"{path} (scans, classes)" and s.y is not None
        s = read_volumes(path, x="scans", y=None)
        assert s.y is None and s.num_classes is None and s.where == f"{path} (scans)"

    @pytest.mark.parametrize(
        "shape", [(5, 28, 28), (5, 2, 3, 4, 5, 6), (5,)], ids=["3d", "6d", "1d"]
    )
    def test_wrong_number_of_dims(self, tmp_path: Path, shape: tuple[int, ...]) -> None:
        x = np.zeros(shape, np.uint8)
        path = npz(tmp_path, x=x, y=np.arange(5))
        text = refused(read_volumes, path)
        assert text == f"{path}: array 'x': expected volumes {SHAPES}, got shape {shape}"
        path = npy(tmp_path, x)
        text = refused(read_volumes, path)
        assert text == f"{path}: expected volumes {SHAPES}, got shape {shape}"

    def test_no_volumes_or_empty_volumes(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=np.zeros((0, 2, 2, 2), np.uint8), y=np.zeros(0, int))
        refused(read_volumes, path, "'x' holds no volumes, shape (0, 2, 2, 2)")
        path = npy(tmp_path, np.zeros((2, 3, 0, 2), np.uint8))
        refused(read_volumes, path, "holds empty volumes, shape (2, 3, 0, 2)")

    def test_unknown_layout(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="layout: expected one of auto, "):
            read_volumes(tmp_path / "any.npz", layout="NDHWC")


class TestDtypes:
    @pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f8"])
    def test_floats_in_unit_range_become_float32(self, tmp_path: Path, dtype: Any) -> None:
        x = np.random.default_rng(1).random((2, 3, 4, 5)).astype(dtype)
        for path in (npz(tmp_path, x=x, y=np.arange(2)), npy(tmp_path, x)):
            s = read_volumes(path)
            assert s.x.dtype == torch.float32
            assert torch.equal(s.x[:, 0], torch.from_numpy(x.astype(np.float32)))

    @pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint16])
    def test_integers_in_byte_range_become_uint8(self, tmp_path: Path, dtype: Any) -> None:
        x = voxels(2, 3, 4, 5).astype(dtype)
        s = read_volumes(npy(tmp_path, x))
        assert s.x.dtype == torch.uint8 and torch.equal(
            s.x[:, 0].long(), torch.from_numpy(x).long()
        )

    def test_integers_out_of_byte_range(self, tmp_path: Path) -> None:
        x = voxels(2, 3, 4, 5).astype(np.int16)
        x[1, 2, 3, 4] = 300
        path = npz(tmp_path, x=x, y=np.arange(2))
        refused(read_volumes, path, f"{path}: array 'x' (int16)", "[0, 300]")

    @pytest.mark.parametrize(
        ("value", "found"), [(np.nan, "holds NaN"), (1.5, "[0.0, 1.5]"), (-0.5, "[-0.5, 0.0]")]
    )
    def test_floats_must_be_finite_in_unit_range(
        self, tmp_path: Path, value: float, found: str
    ) -> None:
        x = np.zeros((2, 3, 4, 5))
        x[1, 1, 1, 1] = value
        for path in (npz(tmp_path, x=x, y=np.arange(2)), npy(tmp_path, x)):
            refused(read_volumes, path, str(path), found, "must be finite and lie in [0, 1]")

    def test_bool_and_objects_refused(self, tmp_path: Path) -> None:
        path = npy(tmp_path, np.ones((2, 2, 2, 2), bool))
        refused(read_volumes, path, str(path), "has dtype bool")
        path = tmp_path / "objects.npy"
        np.save(path, np.empty((2, 2, 2, 2), object), allow_pickle=True)
        refused(read_volumes, path, "holds Python objects (dtype object)")


class TestLabels:
    def test_one_hot(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=voxels(3, 2, 2, 2), y=np.eye(4)[[3, 0, 2]])
        s = read_volumes(path)
        assert s.y is not None and s.y.tolist() == [3, 0, 2] and s.num_classes == 4

    def test_column_and_integral_floats(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=voxels(3, 2, 2, 2), y=np.array([[2.0], [0.0], [1.0]]))
        s = read_volumes(path)
        assert s.y is not None and s.y.dtype == torch.int64 and s.y.tolist() == [2, 0, 1]

    def test_bad_labels_use_the_arrays_rules(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=voxels(3, 2, 2, 2), y=np.array([0, -1, 2]))
        refused(read_volumes, path, "'y' holds negative label -1 at index 1")

    def test_lengths_differ(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=voxels(5, 2, 2, 2), y=np.arange(4))
        text = refused(read_volumes, path)
        assert text == f"{path}: arrays 'x' and 'y' differ in length: 5 volumes, 4 labels"

    def test_scalar_labels(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=voxels(5, 2, 2, 2), y=np.array(3))
        refused(read_volumes, path, "'y' is a scalar; expected one label per volume")

    def test_missing_array_lists_those_found(self, tmp_path: Path) -> None:
        path = npz(tmp_path, x=voxels(2, 2, 2, 2), labels=np.arange(2))
        text = refused(read_volumes, path)
        assert text == f"{path}: no array 'y' (found: x, labels)"


class TestNpy:
    def test_no_labels(self, tmp_path: Path) -> None:
        x = voxels(2, 3, 4, 5, 6)
        s = read_volumes(npy(tmp_path, x), x="ignored", y="ignored")
        assert s.y is None and s.num_classes is None and s.where == str(tmp_path / "scans.npy")
        assert torch.equal(s.x, torch.from_numpy(x))

    def test_channels_last_and_fortran_order(self, tmp_path: Path) -> None:
        x = voxels(2, 7, 5, 6, 3)
        s = read_volumes(npy(tmp_path, np.asfortranarray(x)))
        assert s.layout == "channels_last" and s.x.is_contiguous()
        assert torch.equal(s.x, torch.from_numpy(x).permute(0, 4, 1, 2, 3))

    def test_the_content_not_the_name_says_npy_or_npz(self, tmp_path: Path) -> None:
        x = voxels(2, 2, 3, 4)
        path = npy(tmp_path, x).rename(tmp_path / "scans.npz")
        assert torch.equal(read_volumes(path).x[:, 0], torch.from_numpy(x))
        path = npz(tmp_path, x=x, y=np.arange(2)).rename(tmp_path / "scans.data")
        assert read_volumes(path).y is not None

    @pytest.mark.parametrize("dtype", [np.uint8, np.float32])
    def test_the_result_is_in_memory_not_mapped(self, tmp_path: Path, dtype: Any) -> None:
        x = np.full((2, 3, 4, 5), 1, dtype)
        path = npy(tmp_path, x)
        s = read_volumes(path)
        data = path.read_bytes()
        with path.open("r+b") as f:  # the file changes after the read: the tensor does not
            f.seek(len(data) - x.nbytes)
            f.write(bytes(x.nbytes))
        assert torch.equal(s.x[:, 0], torch.from_numpy(x))

    def test_read_without_a_mapping_where_mmap_fails(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_mmap(*args: Any, **kwargs: Any) -> None:
            raise OSError("mmap not supported")

        x = voxels(2, 3, 4, 5)
        path = npy(tmp_path, np.asfortranarray(x))
        monkeypatch.setattr(mmap, "mmap", no_mmap)  # as np.memmap calls it
        assert torch.equal(read_volumes(path).x[:, 0], torch.from_numpy(x))

    def test_a_hand_written_header_reads(self, tmp_path: Path) -> None:
        path = tmp_path / "hand.npy"
        path.write_bytes(npy_header((2, 2, 2, 2)) + bytes(range(16)))
        assert read_volumes(path).x.flatten().tolist() == list(range(16))

    def test_a_huge_shape_in_a_tiny_file_is_refused_unread(self, tmp_path: Path) -> None:
        path = tmp_path / "forged.npy"
        path.write_bytes(npy_header((10**6, 1000, 1000, 1000)) + bytes(8))
        text = refused(read_volumes, path)
        assert text == (
            f"{path} declares shape (1000000, 1000, 1000, 1000) of uint8 (1000000000000000 "
            "bytes), the file holds 8 after its header (corrupted, truncated or forged)"
        )

    def test_truncated_or_padded(self, tmp_path: Path) -> None:
        path = npy(tmp_path, np.zeros((2, 3, 4, 5), np.float32))
        data = path.read_bytes()
        path.write_bytes(data[:-7])
        refused(read_volumes, path, "(480 bytes), the file holds 473 after its header")
        path.write_bytes(data + b"more")
        refused(read_volumes, path, "(480 bytes), the file holds 484 after its header")

    def test_a_broken_header(self, tmp_path: Path) -> None:
        path = tmp_path / "broken.npy"
        path.write_bytes(b"\x93NUMPY\x01\x00\x40\x00{'descr': garbage")
        refused(read_volumes, path, f"{path}: not a readable .npy file")


class TestFiles:
    def test_missing_file(self, tmp_path: Path) -> None:
        text = refused(read_volumes, tmp_path / "nothere.npz")
        assert text == f"{tmp_path / 'nothere.npz'}: file not found"

    def test_a_folder(self, tmp_path: Path) -> None:
        (tmp_path / "scans.npz").mkdir()
        text = refused(read_volumes, tmp_path / "scans.npz")
        assert text == f"{tmp_path / 'scans.npz'}: a folder, expected a .npy or .npz file"

    def test_neither_npy_nor_npz(self, tmp_path: Path) -> None:
        path = tmp_path / "scans.npz"
        path.write_text("x,y\n1,2\n")
        assert refused(read_volumes, path) == f"{path}: not an .npy or .npz file"

    def test_a_forged_npz_entry_is_refused_unread(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "forged.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", npy_header((10**5, 100, 100, 100)) + bytes(64))
            z.writestr("y.npy", npy_header((10**5,)) + bytes(10**5))
        refused(read_volumes, path, "'x' declares shape (100000, 100, 100, 100)")
        monkeypatch.setenv(VOXELS_ENV, str(10**12))  # past the voxel limit: the bytes check
        refused(read_volumes, path, "'x' declares shape", "entry holds 64")


class TestVoxelLimit:
    def test_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(VOXELS_ENV, raising=False)
        assert max_volume_voxels() == MAX_VOLUME_VOXELS

    def test_the_limit_moves_with_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        x = voxels(2, 10, 10, 5)  # 1000 voxels
        paths = (npy(tmp_path, x), npz(tmp_path, x=x, y=np.arange(2)))
        monkeypatch.setenv(VOXELS_ENV, "1_000")
        for path in paths:
            assert read_volumes(path).x.numel() == 1000
        monkeypatch.setenv(VOXELS_ENV, "999")
        for path in paths:
            refused(
                read_volumes,
                path,
                "declares shape (2, 10, 10, 5), 1000 values; at most 999 per file",
                VOXELS_ENV,
            )

    def test_labels_declaring_more_than_the_volumes_are_refused_unread(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "labels.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", npy_header((2, 1, 1, 1)) + bytes(2))
            z.writestr("y.npy", npy_header((10**12,)) + bytes(64))
        text = refused(read_volumes, path)
        assert text.endswith("differ in length: 2 volumes, 1000000000000 labels")

    @pytest.mark.parametrize("raw", ["many", "0", "-5"])
    def test_a_bad_value(self, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
        monkeypatch.setenv(VOXELS_ENV, raw)
        with pytest.raises(ConfigError, match=f"{VOXELS_ENV}='{raw}': expected a positive"):
            max_volume_voxels()


@pytest.fixture
def nib() -> Any:
    return pytest.importorskip("nibabel")


def nifti(
    nib: Any, path: Path, a: np.ndarray, slope: float | None = None, inter: float = 0.0
) -> Path:
    """``a`` saved as a NIfTI-1 image (gzipped for ``.nii.gz``), its header scaling set."""
    image = nib.Nifti1Image(a, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, path)
    return path


def declaring(path: Path, dims: tuple[int, ...]) -> bytes:
    """The bytes of the uncompressed NIfTI-1 file ``path``, its header declaring ``dims``."""
    data = bytearray(path.read_bytes())
    data[40:56] = struct.pack("<8h", len(dims), *dims, *[1] * (7 - len(dims)))
    return bytes(data)


def positions(*shape: int) -> np.ndarray:
    """``a[i, j, k] = 100 i + 10 j + k``: each voxel's value says where it is."""
    i, j, k = np.indices(shape)
    return (100 * i + 10 * j + k).astype(np.int16)


class TestNiftiAxes:
    @pytest.mark.parametrize("name", ["v.nii", "v.nii.gz", "V.NII.GZ"])
    def test_file_x_is_w_y_is_h_z_is_d(self, tmp_path: Path, nib: Any, name: str) -> None:
        a = positions(2, 3, 4)  # (X, Y, Z)
        v = read_nifti(nifti(nib, tmp_path / name, a))
        assert v.shape == (1, 4, 3, 2) and v.dtype == torch.float32 and v.is_contiguous()
        assert v[0, 3, 2, 1] == 123 and v[0, 0, 0, 1] == 100 and v[0, 0, 1, 0] == 10
        for i, j, k in np.ndindex(*a.shape):
            assert v[0, k, j, i] == a[i, j, k]

    def test_trailing_axes_of_one_are_dropped(self, tmp_path: Path, nib: Any) -> None:
        a = positions(2, 3, 4)
        v = read_nifti(nifti(nib, tmp_path / "v.nii.gz", a[..., None]))
        assert torch.equal(v[0], torch.from_numpy(a.transpose(2, 1, 0).astype(np.float32)))


class TestNiftiValues:
    def test_slope_and_intercept_applied(self, tmp_path: Path, nib: Any) -> None:
        a = positions(2, 3, 4)
        path = nifti(nib, tmp_path / "scaled.nii", a, slope=0.5, inter=-10.0)
        assert nib.load(path).dataobj.get_unscaled()[1, 2, 3] == 123  # stored unscaled
        v = read_nifti(path)
        assert v.dtype == torch.float32 and v[0, 3, 2, 1] == 0.5 * 123 - 10
        assert torch.equal(v[0], torch.from_numpy(a.transpose(2, 1, 0) * 0.5 - 10).float())

    @pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32, np.float64])
    def test_values_kept_not_normalised(self, tmp_path: Path, nib: Any, dtype: Any) -> None:
        a = (np.arange(24).reshape(2, 3, 4) * 7).astype(dtype)
        v = read_nifti(nifti(nib, tmp_path / "v.nii.gz", a))
        assert v.max() == 161 and torch.equal(v[0], torch.from_numpy(a.T.astype(np.float32)))

    def test_nan_refused_naming_the_voxel(self, tmp_path: Path, nib: Any) -> None:
        a = np.zeros((2, 3, 4), np.float32)
        a[1, 2, 3] = a[1, 0, 0] = np.nan
        path = nifti(nib, tmp_path / "nan.nii", a)
        text = refused(read_nifti, path)
        assert text == f"{path} holds 2 NaN or infinite voxels, the first at (i, j, k) = (1, 0, 0)"

    def test_complex_refused(self, tmp_path: Path, nib: Any) -> None:
        path = nifti(nib, tmp_path / "c.nii", np.zeros((2, 3, 4), np.complex64))
        refused(read_nifti, path, "holds complex64 voxels; expected real numbers")


class TestNiftiShapes:
    @pytest.mark.parametrize(
        "shape", [(4, 4, 3, 2), (4, 4, 3, 1, 2), (5, 6)], ids=["4d", "5d", "2d"]
    )
    def test_not_a_volume(self, tmp_path: Path, nib: Any, shape: tuple[int, ...]) -> None:
        path = nifti(nib, tmp_path / "brain.nii.gz", np.zeros(shape, np.float32))
        text = refused(read_nifti, path)
        assert text == (
            f"{path}: expected a 3-D volume, got a {len(shape)}-D image of shape {shape}"
        )

    def test_a_negative_size(self, tmp_path: Path, nib: Any) -> None:
        path = nifti(nib, tmp_path / "v.nii", positions(2, 3, 4))
        path.write_bytes(declaring(path, (-5, 3, 4)))
        refused(read_nifti, path, "declares an empty volume of shape (-5, 3, 4)")


class TestNiftiDeclaredSize:
    def test_more_voxels_than_the_file_holds(self, tmp_path: Path, nib: Any) -> None:
        path = nifti(nib, tmp_path / "v.nii", positions(2, 3, 4))
        path.write_bytes(declaring(path, (1000, 1000, 1000)))
        text = refused(read_nifti, path)
        assert text == (
            f"{path} declares shape (1000, 1000, 1000) of int16 (2000000000 bytes), the file "
            "holds 48 after its header (corrupted, truncated or forged)"
        )

    def test_more_than_a_gzipped_file_can_hold(self, tmp_path: Path, nib: Any) -> None:
        plain = nifti(nib, tmp_path / "v.nii", positions(2, 3, 4))
        path = tmp_path / "v.nii.gz"
        path.write_bytes(gzip.compress(declaring(plain, (1000, 1000, 1000))))
        size = path.stat().st_size
        refused(read_nifti, path, "(2000000000 bytes), more than 1100 times its", f" {size} ")

    def test_a_truncated_file(self, tmp_path: Path, nib: Any) -> None:
        path = nifti(nib, tmp_path / "v.nii", positions(2, 3, 4))
        path.write_bytes(path.read_bytes()[:-10])
        refused(read_nifti, path, "(48 bytes), the file holds 38 after its header")
        noise = np.random.default_rng(0).random((20, 20, 20))
        path = nifti(nib, tmp_path / "v.nii.gz", noise)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        refused(read_nifti, path, f"{path}: corrupted or truncated (")

    def test_the_voxel_limit(
        self, tmp_path: Path, nib: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = nifti(nib, tmp_path / "v.nii.gz", positions(2, 3, 4))
        monkeypatch.setenv(VOXELS_ENV, "24")
        assert read_nifti(path).numel() == 24
        monkeypatch.setenv(VOXELS_ENV, "23")
        refused(read_nifti, path, "declares shape (2, 3, 4), 24 values; at most 23 per file")


class TestNiftiFiles:
    def test_missing_folder_or_other_name(self, tmp_path: Path) -> None:
        assert refused(read_nifti, tmp_path / "no.nii") == f"{tmp_path / 'no.nii'}: file not found"
        (tmp_path / "d.nii.gz").mkdir()
        text = refused(read_nifti, tmp_path / "d.nii.gz")
        assert text == f"{tmp_path / 'd.nii.gz'}: a folder, expected a .nii or .nii.gz file"
        (tmp_path / "v.img").write_bytes(b"")
        refused(read_nifti, tmp_path / "v.img", "expected a NIfTI file named .nii or .nii.gz")

    @pytest.mark.parametrize("name", ["junk.nii", "junk.nii.gz"])
    def test_not_nifti(self, tmp_path: Path, nib: Any, name: str) -> None:
        (tmp_path / name).write_bytes(b"hello, not a header")
        refused(read_nifti, tmp_path / name, f"{tmp_path / name}: not a readable NIfTI file (")

    def test_without_nibabel_one_line_names_the_extra(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel raises ImportError
        (tmp_path / "v.nii").write_bytes(b"any")
        text = refused(read_nifti, tmp_path / "v.nii")
        assert text == "reading NIfTI needs nibabel: pip install 'torchstn[nifti]'"
