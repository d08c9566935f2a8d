"""Class folders with symbolic links: no loop, no image twice, no leak from beside the root, and
a training folder of one class refused in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from torchstn.data.files import read_csv_manifest, scan_class_folder
from torchstn.errors import DataError

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")


def save(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """``data/train/{cat,dog}`` with two images each, and ``data/val/cat`` beside ``train``."""
    for name in ("train/cat/a.png", "train/cat/b.png", "train/dog/c.png", "train/dog/d.png"):
        save(tmp_path / name)
    save(tmp_path / "val" / "cat" / "v.png")
    return tmp_path


def listed(root: Path) -> list[tuple[str, int]]:
    entries, _ = scan_class_folder(root)
    return [(e.path.relative_to(root).as_posix(), e.label) for e in entries]


PLAIN = [("cat/a.png", 0), ("cat/b.png", 0), ("dog/c.png", 1), ("dog/d.png", 1)]


class TestLinks:
    def test_a_link_to_the_parent_lists_each_image_once(self, data: Path) -> None:
        root = data / "train"
        os.symlink("..", root / "cat" / "up")  # cat/up -> train: a loop through every class
        assert listed(root) == PLAIN

    def test_two_cross_links_end_at_once(self, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        root = data / "train"
        os.symlink("..", root / "cat" / "l1")
        os.symlink("..", root / "cat" / "l2")
        os.symlink("../cat", root / "dog" / "x")
        os.symlink("../dog", root / "cat" / "y")
        scandir, calls = os.scandir, []

        def counted(path: Any) -> Any:  # 2**40 folders before: stop after a few
            calls.append(path)
            if len(calls) > 50:
                raise AssertionError(f"{len(calls)} folders read: a loop")
            return scandir(path)

        monkeypatch.setattr(os, "scandir", counted)
        assert listed(root) == PLAIN
        assert len(calls) <= 4

    def test_a_link_to_a_folder_holding_the_root_is_not_walked(self, data: Path) -> None:
        # cat/all -> data: would reach val/cat/v.png, a validation image, as a training image
        os.symlink(data, data / "train" / "cat" / "all")
        assert listed(data / "train") == PLAIN

    def test_a_link_outside_the_root_is_followed(self, data: Path, tmp_path: Path) -> None:
        save(tmp_path / "elsewhere" / "more" / "e.png")
        os.symlink(tmp_path / "elsewhere", data / "train" / "dog" / "extra")
        os.symlink(tmp_path / "elsewhere", data / "train" / "dog" / "extra2")  # same folder again
        assert listed(data / "train") == [*PLAIN, ("dog/extra/more/e.png", 1)]

    def test_a_file_linked_twice_in_its_class_is_listed_once(self, data: Path) -> None:
        root = data / "train"
        os.symlink("a.png", root / "cat" / "z.png")
        os.link(root / "dog" / "c.png", root / "dog" / "c2.png")
        assert listed(root) == PLAIN

    def test_the_same_file_in_two_classes_is_refused(self, data: Path) -> None:
        root = data / "train"
        os.symlink("../cat/a.png", root / "dog" / "e.png")
        with pytest.raises(DataError) as err:
            scan_class_folder(root)
        text = str(err.value)
        assert "\n" not in text and str(root / "dog" / "e.png") in text
        assert "'cat'" in text and "'dog'" in text

    def test_a_link_into_another_class_is_not_walked(self, data: Path) -> None:
        save(data / "train" / "dog" / "sub" / "s.png")
        os.symlink("../dog/sub", data / "train" / "cat" / "sub")  # dog's images, not cat's
        assert listed(data / "train") == [*PLAIN[:3], ("dog/d.png", 1), ("dog/sub/s.png", 1)]

    @pytest.mark.parametrize("target", [".", "..", "cat"])
    def test_a_class_folder_standing_for_another_is_refused(self, data: Path, target: str) -> None:
        root = data / "train"
        os.symlink(target, root / "emu")
        with pytest.raises(DataError, match="each class needs a folder of its own") as err:
            scan_class_folder(root)
        assert str(root / "emu") in str(err.value) and "\n" not in str(err.value)


class TestOneClass:
    def test_a_training_folder_of_one_class_is_refused(self, tmp_path: Path) -> None:
        save(tmp_path / "only" / "a.png")
        save(tmp_path / "only" / "b.png")
        (tmp_path / "empty").mkdir()  # a class without images does not count
        with pytest.raises(DataError, match="a classifier needs at least 2") as err:
            scan_class_folder(tmp_path)
        assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)

    def test_validation_folders_may_hold_one_class(self, tmp_path: Path) -> None:
        save(tmp_path / "dog" / "a.png")
        entries, classes = scan_class_folder(tmp_path, ["cat", "dog"])
        assert classes == ["cat", "dog"] and [e.label for e in entries] == [1]

    def test_a_manifest_of_one_class_name_is_refused(self, tmp_path: Path) -> None:
        save(tmp_path / "a.png")
        (tmp_path / "m.csv").write_text("path,label\na.png,cat\na.png,cat\n")
        with pytest.raises(DataError, match="at least 2 classes"):
            read_csv_manifest(tmp_path / "m.csv")
        entries, _ = read_csv_manifest(tmp_path / "m.csv", ["cat", "dog"])
        assert [e.label for e in entries] == [0, 0]

    def test_a_manifest_index_too_large_is_refused(self, tmp_path: Path) -> None:
        save(tmp_path / "a.png")
        (tmp_path / "m.csv").write_text(f"path,label\na.png,0\na.png,{2**40}\n")
        with pytest.raises(DataError, match=r"m\.csv line 3: label 1099511627776 .*below"):
            read_csv_manifest(tmp_path / "m.csv")
