"""MNIST: the vendored files, checksums, lookup order, the (faked) download and its failures."""

from __future__ import annotations

import gzip
import os
import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from datahelpers import write_idx

from torchstn.data import download as download_module
from torchstn.data import load_mnist, mnist
from torchstn.errors import DataError, UnknownNameError

#: label counts 0..9 of the original release (data/mnist/README.md).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
#: the repository's vendored files (captured before any fixture hides the folder).
VENDORED = mnist.REPO_DIR


def link_real(folder: Path, split: str) -> Path:
    """Symlink the vendored files of ``split`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in mnist.FILES[split]:
        (folder / f"{name}.gz").symlink_to(VENDORED / f"{name}.gz")
    return folder


def fake_mirror(monkeypatch: pytest.MonkeyPatch, served: dict[str, bytes], log: list[str]) -> None:
    """Serve ``served[url]`` (or fail with OSError) instead of the network."""

    def urlopen(url: str, timeout: float) -> BytesIO:
        log.append(url)
        if url not in served:
            raise OSError("connection refused")
        return BytesIO(served[url])

    monkeypatch.setattr(download_module, "_urlopen", urlopen)


class TestVendored:
    def test_test_split(self) -> None:
        images, labels = load_mnist("test")
        assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (10000,) and labels.dtype == torch.int64
        assert torch.bincount(labels).tolist() == TEST_COUNTS
        assert labels[:5].tolist() == [7, 2, 1, 0, 4]

    def test_train_split(self) -> None:
        images, labels = load_mnist("train")
        assert images.shape == (60000, 28, 28)
        assert torch.bincount(labels).tolist() == TRAIN_COUNTS
        assert int(images.max()) == 255 and int(images.min()) == 0

    def test_returns_copies(self) -> None:
        images, labels = load_mnist("test")
        images.zero_()
        labels.fill_(3)
        again, again_labels = load_mnist("test")
        assert int(again.max()) == 255 and again_labels[0] == 7

    def test_raw_files_verify_against_decompressed_md5(self, tmp_path: Path) -> None:
        for name in mnist.FILES["test"]:
            raw = gzip.decompress((VENDORED / f"{name}.gz").read_bytes())
            (tmp_path / name).write_bytes(raw)
        images, labels = load_mnist("test", root=tmp_path)
        reference = load_mnist("test")
        assert torch.equal(images, reference[0]) and torch.equal(labels, reference[1])

    def test_unknown_split(self) -> None:
        with pytest.raises(UnknownNameError, match="valid choices: test, train"):
            load_mnist("validation")


class TestLookupOrder:
    def test_root_first(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        root = link_real(tmp_path / "root", "test")
        monkeypatch.setenv(mnist.ENV_VAR, str(link_real(tmp_path / "env", "test")))
        images_path, _ = mnist.find_mnist("test", root=root)
        assert images_path.parent == root

    def test_env_before_repo(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        env = link_real(tmp_path / "env", "test")
        monkeypatch.setenv(mnist.ENV_VAR, str(env))
        assert mnist.find_mnist("test")[0].parent == env
        assert mnist.search_dirs()[:2] == [env, mnist.REPO_DIR]

    def test_root_without_files_falls_through(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv(mnist.ENV_VAR, raising=False)
        assert mnist.find_mnist("test", root=tmp_path)[0].parent == mnist.REPO_DIR

    def test_repo_before_cache(
        self, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        link_real(isolated_lookup, "test")
        assert mnist.find_mnist("test")[0].parent == isolated_lookup
        repo = link_real(isolated_lookup.parent / "repo", "test")
        monkeypatch.setattr(mnist, "REPO_DIR", repo)
        assert mnist.find_mnist("test")[0].parent == repo

    def test_order_of_search_dirs(
        self, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(mnist.ENV_VAR, "/env/mnist")
        dirs = mnist.search_dirs("/explicit")
        assert dirs == [Path("/explicit"), Path("/env/mnist"), mnist.REPO_DIR, isolated_lookup]

    def test_both_files_needed(self, isolated_lookup: Path) -> None:
        link_real(isolated_lookup, "test")
        (isolated_lookup / "t10k-labels-idx1-ubyte.gz").unlink()
        with pytest.raises(
            DataError, match=r"t10k-images-idx3-ubyte\.gz and t10k-labels-idx1-ubyte\.gz"
        ):
            mnist.find_mnist("test", download=False)


class TestDownload:
    def served_files(self, split: str, mirror: str) -> dict[str, bytes]:
        return {
            f"{mirror}{name}.gz": (VENDORED / f"{name}.gz").read_bytes()
            for name in mnist.FILES[split]
        }

    def test_download_into_cache(
        self, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        log: list[str] = []
        fake_mirror(monkeypatch, self.served_files("test", mnist.MIRRORS[0]), log)
        images, labels = load_mnist("test")
        assert images.shape == (10000, 28, 28) and torch.bincount(labels).tolist() == TEST_COUNTS
        assert sorted(p.name for p in isolated_lookup.iterdir()) == [
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
        assert log == [mnist.MIRRORS[0] + f"{n}.gz" for n in mnist.FILES["test"]]

    def test_download_into_root(
        self, isolated_lookup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fake_mirror(monkeypatch, self.served_files("test", mnist.MIRRORS[0]), [])
        root = tmp_path / "explicit"
        load_mnist("test", root=root)
        assert (root / "t10k-labels-idx1-ubyte.gz").is_file()
        assert not isolated_lookup.exists()

    def test_bad_mirror_then_good_one(
        self, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        served = self.served_files("test", mnist.MIRRORS[1])
        for url, data in self.served_files("test", mnist.MIRRORS[0]).items():
            served[url] = data[: len(data) // 2]  # truncated by the first mirror
        log: list[str] = []
        fake_mirror(monkeypatch, served, log)
        load_mnist("test")
        assert [u.startswith(mnist.MIRRORS[0]) for u in log] == [True, False, True, False]
        assert not [p for p in isolated_lookup.iterdir() if p.name.startswith(".")]

    def test_all_mirrors_fail(self, isolated_lookup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        served = {url: b"garbage" for url in self.served_files("train", mnist.MIRRORS[0])}
        fake_mirror(monkeypatch, served, [])
        with pytest.raises(DataError) as info:
            load_mnist("train")
        message = str(info.value)
        assert "\n" not in message and "no network" not in message  # a mirror answered
        assert "needs train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz" in message
        assert f"into {isolated_lookup} or pass --root FOLDER" in message
        assert mnist.ENV_VAR in message and "root=" not in message
        assert "bytes instead of" in message and "connection refused" in message
        assert list(isolated_lookup.iterdir()) == []  # nothing half-written

    def test_download_disabled(self, isolated_lookup: Path) -> None:
        with pytest.raises(DataError, match="downloading is disabled"):
            load_mnist("test", download=False)


class TestCorruption:
    def copy_test_files(self, folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        for name in mnist.FILES["test"]:
            shutil.copy(VENDORED / f"{name}.gz", folder / f"{name}.gz")
        return folder

    def test_wrong_checksum(self, tmp_path: Path) -> None:
        root = self.copy_test_files(tmp_path)
        path = root / "t10k-labels-idx1-ubyte.gz"
        data = bytearray(path.read_bytes())
        data[-12] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: md5 checksum mismatch"):
            load_mnist("test", root=root)

    def test_truncated(self, tmp_path: Path) -> None:
        root = self.copy_test_files(tmp_path)
        path = root / "t10k-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:100000])
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: md5 checksum mismatch"):
            load_mnist("test", root=root)
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupted or truncated"):
            load_mnist("test", root=root, verify=False)

    def test_lookalike_without_verification(self, synthetic_mnist: Path) -> None:
        with pytest.raises(DataError, match="md5 checksum mismatch"):
            load_mnist("train", root=synthetic_mnist)
        images, labels = load_mnist("train", root=synthetic_mnist, verify=False)
        assert images.shape == (5, 28, 28) and labels.tolist() == [0, 1, 2, 3, 4]
        images, labels = load_mnist("test", root=synthetic_mnist, verify=False)  # raw files
        assert images.shape == (3, 28, 28)

    def test_count_mismatch_and_bad_labels(self, synthetic_mnist: Path) -> None:
        write_idx(synthetic_mnist / "t10k-labels-idx1-ubyte", np.arange(4, dtype=np.uint8))
        with pytest.raises(DataError, match="4 labels for the 3 images"):
            load_mnist("test", root=synthetic_mnist, verify=False)
        write_idx(synthetic_mnist / "t10k-labels-idx1-ubyte", np.array([1, 12, 3], np.uint8))
        with pytest.raises(DataError, match=r"label 12 outside 0\.\.9"):
            load_mnist("test", root=synthetic_mnist, verify=False)

    def test_wrong_image_shape(self, synthetic_mnist: Path) -> None:
        write_idx(synthetic_mnist / "t10k-images-idx3-ubyte", np.zeros((3, 20, 20), np.uint8))
        with pytest.raises(
            DataError, match=r"t10k-images-idx3-ubyte: expected uint8 images of shape \(N, 28, 28\)"
        ):
            load_mnist("test", root=synthetic_mnist, verify=False)

    def test_changed_file_is_reread(self, synthetic_mnist: Path) -> None:
        first = load_mnist("test", root=synthetic_mnist, verify=False)[1]
        path = synthetic_mnist / "t10k-labels-idx1-ubyte"
        write_idx(path, np.array([9, 9, 9], np.uint8))
        os.utime(path, ns=(1, 1))
        assert first.tolist() == [0, 1, 2]
        assert load_mnist("test", root=synthetic_mnist, verify=False)[1].tolist() == [9, 9, 9]
