"""torchstn.data.files and .listing: class folders, CSV manifests, ImageFiles and collate_images."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from torchstn.data.files import (
    ImageBatch,
    ImageEntry,
    ImageFiles,
    collate_images,
    read_csv_manifest,
    scan_class_folder,
)
from torchstn.errors import DataError, InvalidInputError


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def grey(value: int, h: int = 4, w: int = 4) -> np.ndarray:
    return np.full((h, w), value, np.uint8)


def truncated(path: Path) -> Path:
    """A PNG cut in half: its header reads, its pixels do not."""
    save(path, np.arange(4096, dtype=np.uint8).reshape(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def one_line_naming(message: str, *parts: str) -> bool:
    return "\n" not in message and all(p in message for p in parts)


# ---------------------------------------------------------------------------------- class folders
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "train"
    save(root / "zebra" / "b.png", grey(2))
    save(root / "zebra" / "a" / "z.png", grey(1))  # nested: relative path a/z.png < b.png
    save(root / "ant" / "x.PNG", grey(3))  # suffixes in any case
    save(root / "ant" / "y.pgm", grey(4))
    (root / "ant" / "notes.txt").write_text("not an image")
    save(root / "ant" / ".hidden.png", grey(9))
    save(root / "ant" / ".cache" / "c.png", grey(9))
    save(root / ".git" / "d.png", grey(9))
    save(root / "cow" / "e.jpg", grey(5))
    (root / "loose.png").write_bytes(b"")  # files in the root are no class
    return root


class TestScanClassFolder:
    def test_classes_sorted_files_recursive_hidden_skipped(self, folder: Path) -> None:
        entries, classes = scan_class_folder(folder)
        assert classes == ["ant", "cow", "zebra"]
        got = [(e.path.relative_to(folder).as_posix(), e.label, e.box) for e in entries]
        assert got == [
            ("ant/x.PNG", 0, None),
            ("ant/y.pgm", 0, None),
            ("cow/e.jpg", 1, None),
            ("zebra/a/z.png", 2, None),
            ("zebra/b.png", 2, None),
        ]

    def test_given_classes_label_by_their_order_and_may_be_missing(self, folder: Path) -> None:
        entries, classes = scan_class_folder(folder, ["zebra", "yak", "cow", "ant"])
        assert classes == ["zebra", "yak", "cow", "ant"]
        assert [e.label for e in entries] == [3, 3, 2, 0, 0]

    def test_a_class_not_in_the_training_classes(self, folder: Path) -> None:
        with pytest.raises(DataError) as err:
            scan_class_folder(folder, ["ant", "zebra"])
        assert one_line_naming(str(err.value), str(folder / "cow"), "'cow'", "ant, zebra")

    def test_missing_root_and_no_images(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="folder not found") as err:
            scan_class_folder(tmp_path / "nowhere")
        assert str(tmp_path / "nowhere") in str(err.value)
        (tmp_path / "empty" / "cat").mkdir(parents=True)
        (tmp_path / "empty" / "cat" / "a.txt").write_text("")
        with pytest.raises(DataError, match="no images found") as err:
            scan_class_folder(tmp_path / "empty")
        assert one_line_naming(str(err.value), str(tmp_path / "empty"), "CLASS/IMAGE", ".png")


# ---------------------------------------------------------------------------------- manifests
def manifest(tmp_path: Path, text: str, name: str = "manifest.csv") -> Path:
    for f in ("a.png", "b.png", "sub/c.png"):
        if not (tmp_path / f).exists():
            save(tmp_path / f, grey(1, 10, 20))
    (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path / name


class TestManifest:
    def test_relative_paths_from_another_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        m = manifest(tmp_path / "data", "path,label,notes\na.png,1,x\nsub/c.png,0,y\n")
        monkeypatch.chdir(tmp_path)
        entries, names = read_csv_manifest("data/manifest.csv")
        assert names is None and [e.label for e in entries] == [1, 0]
        assert [e.path for e in entries] == [m.parent / "a.png", m.parent / "sub" / "c.png"]
        assert all(e.path.is_absolute() and e.box is None for e in entries)
        other = tmp_path / "elsewhere"
        other.mkdir()
        monkeypatch.chdir(other)
        assert all(os.path.isfile(e.path) for e in entries)

    def test_absolute_paths_bom_spaces_blank_lines_and_column_order(self, tmp_path: Path) -> None:
        save(tmp_path / "far" / "d.png", grey(1))
        text = f"\ufeff label , PATH \n 3 , a.png \n\n2,{tmp_path / 'far' / 'd.png'}\n"
        entries, names = read_csv_manifest(manifest(tmp_path / "m", text))
        assert names is None and [e.label for e in entries] == [3, 2]
        assert entries[1].path == tmp_path / "far" / "d.png"

    def test_name_labels(self, tmp_path: Path) -> None:
        m = manifest(tmp_path, "path,label\na.png,dog\nb.png,cat\nsub/c.png,dog\n")
        entries, names = read_csv_manifest(m)
        assert names == ["cat", "dog"] and [e.label for e in entries] == [1, 0, 1]
        entries, names = read_csv_manifest(m, ["dog", "emu", "cat"])
        assert names == ["dog", "emu", "cat"] and [e.label for e in entries] == [0, 2, 0]

    def test_integer_labels_with_training_classes(self, tmp_path: Path) -> None:
        m = manifest(tmp_path, "path,label\na.png,1\nb.png,0\n")
        entries, names = read_csv_manifest(m, ["cat", "dog"])
        assert names == ["cat", "dog"] and [e.label for e in entries] == [1, 0]

    def test_boxes(self, tmp_path: Path) -> None:
        text = "path,x0,y0,x1,y1,label\na.png,1,2,10.5,8,0\nb.png,,,,,1\n"
        entries, _ = read_csv_manifest(manifest(tmp_path, text))
        assert entries[0].box == (1.0, 2.0, 10.5, 8.0) and entries[1].box is None

    @pytest.mark.parametrize(
        ("text", "line", "expected"),
        [
            ("file,label\na.png,1\n", 1, "no 'path' column"),
            ("path,class\na.png,1\n", 1, "no 'label' column"),
            ("path,label,x0,y0,x1\na.png,1,0,0,1\n", 1, "box columns without y1"),
            ("path,label\na.png,1\n,0\n", 3, "empty path"),
            ("path,label\na.png,1\nb.png,0,extra\n", 3, "3 fields, the header has 2"),
            ("path,label\na.png,1\nb.png\n", 3, "1 fields, the header has 2"),
            ("path,label\na.png,1\nb.png,\n", 3, "empty label"),
            (
                "path,label\na.png,0\nb.png,cat\n",
                2,
                "label '0' is a class index but line 3's 'cat'",
            ),
            ("path,label\na.png,1\nb.png,-1\n", 2, "label '1' is a class index but line 3's '-1'"),
            ("path,label,x0,y0,x1,y1\na.png,1,0,0,a,2\n", 2, "is not four numbers"),
            ("path,label,x0,y0,x1,y1\na.png,1,0,0,,2\n", 2, "is not four numbers"),
            ("path,label,x0,y0,x1,y1\na.png,1,5,0,5,2\n", 2, "needs 0 <= x0 < x1"),
            ("path,label,x0,y0,x1,y1\na.png,1,0,3,2,1\n", 2, "needs 0 <= x0 < x1 and 0 <= y0 < y1"),
            ("path,label,x0,y0,x1,y1\na.png,1,-1,0,2,2\n", 2, "needs 0 <= x0"),
            ("path,label,x0,y0,x1,y1\na.png,1,0,0,inf,2\n", 2, "is not finite"),
            ('path,label\na.png,1\n"b.png,0\n', 3, "1 fields, the header has 2"),  # open quote
            pytest.param(
                "path,label\na.png,1\n" + "x" * 200_000 + ",1\n",
                3,
                "field larger than field limit",
                id="csv-error",
            ),
        ],
    )
    def test_errors_name_the_manifest_and_line(
        self, tmp_path: Path, text: str, line: int, expected: str
    ) -> None:
        with pytest.raises(DataError) as err:
            read_csv_manifest(manifest(tmp_path, text))
        message = str(err.value)
        assert one_line_naming(message, f"{tmp_path / 'manifest.csv'} line {line}: ", expected)

    def test_a_row_pointing_nowhere(self, tmp_path: Path) -> None:
        m = manifest(tmp_path / "d", "path,label\na.png,1\n\nsub/gone.png,1\n")
        with pytest.raises(DataError) as err:
            read_csv_manifest(m)
        looked = tmp_path / "d" / "sub" / "gone.png"
        expected = f"{m} line 4: 'sub/gone.png' not found (looked at {looked})"
        assert str(err.value) == expected

    def test_labels_outside_the_training_classes(self, tmp_path: Path) -> None:
        m = manifest(tmp_path, "path,label\na.png,1\nb.png,2\n")
        with pytest.raises(DataError, match=r"line 3: label 2 is not below the 2 classes"):
            read_csv_manifest(m, ["cat", "dog"])
        m = manifest(tmp_path, "path,label\na.png,cat\nb.png,yak\n")
        with pytest.raises(DataError, match=r"line 3: unknown class 'yak' \(classes: cat, dog\)"):
            read_csv_manifest(m, ["cat", "dog"])

    def test_file_errors(self, tmp_path: Path) -> None:
        for text, expected in (("", "empty file"), ("path,label\n\n", "no rows after the header")):
            with pytest.raises(DataError, match=expected):
                read_csv_manifest(manifest(tmp_path, text))
        with pytest.raises(DataError, match="no such file"):
            read_csv_manifest(tmp_path / "none.csv")
        (tmp_path / "latin.csv").write_bytes("path,label\na.png,caf\xe9\n".encode("latin-1"))
        with pytest.raises(DataError, match=r"latin\.csv: not UTF-8 text"):
            read_csv_manifest(tmp_path / "latin.csv")


# ---------------------------------------------------------------------------------- ImageFiles
class TestImageFiles:
    def test_same_size_grey_and_rgb_exact_values(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(0)
        g = rng.integers(0, 256, (5, 7), dtype=np.uint8)
        rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        entries = [
            ImageEntry(save(tmp_path / "g.png", g), 3),
            ImageEntry(save(tmp_path / "c.png", rgb), 1),
        ]
        x, label, index, box, error = ImageFiles(entries, 1, (5, 7))[0]
        assert x is not None and x.dtype == torch.uint8 and x.shape == (1, 5, 7)
        assert np.array_equal(x[0].numpy(), g) and (label, index, error) == (3, 0, None)
        assert box.dtype == torch.float32 and box.tolist() == [0, 0, 7, 5]
        x, label, index, _, _ = ImageFiles(entries, 3, (5, 7))[1]
        assert x is not None and np.array_equal(x.permute(1, 2, 0).numpy(), rgb)
        assert (label, index) == (1, 1)

    def test_rgb_into_one_channel_is_the_rounded_luma(self, tmp_path: Path) -> None:
        rgb = np.random.default_rng(1).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        files = ImageFiles([ImageEntry(save(tmp_path / "c.png", rgb), 0)], 1, (6, 6))
        x = files[0][0]
        luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
        assert x is not None and x.shape == (1, 6, 6)
        assert np.abs(x[0].numpy() - luma).max() <= 0.5 + 1e-4

    def test_a_wide_image_padded_maps_its_box(self, tmp_path: Path) -> None:
        path = save(tmp_path / "wide.png", np.full((10, 40), 255, np.uint8))  # 10 x 40 -> 7 x 28
        entries = [ImageEntry(path, 0), ImageEntry(path, 1, (4.0, 0.0, 20.0, 10.0))]
        files = ImageFiles(entries, 1, (28, 28), "pad")
        x, _, _, box, _ = files[0]
        assert x is not None and x[0, 10:17].min() == 255 and x[0, :10].max() == 0
        assert box.tolist() == [0.0, 10.0, 28.0, 17.0]  # the image inside the padding
        box = files[1][3]
        torch.testing.assert_close(box, torch.tensor([2.8, 10.0, 14.0, 17.0]))
        stretched = ImageFiles(entries, 1, (28, 28), "stretch")
        torch.testing.assert_close(stretched[1][3], torch.tensor([2.8, 0.0, 14.0, 28.0]))
        assert stretched[0][3].tolist() == [0.0, 0.0, 28.0, 28.0]

    def test_an_unreadable_image_is_returned_not_raised(self, tmp_path: Path) -> None:
        bad = truncated(tmp_path / "cut.png")
        files = ImageFiles([ImageEntry(bad, 4), ImageEntry(tmp_path / "gone.png", 2)], 1, (8, 8))
        x, label, index, box, error = files[0]
        assert x is None and (label, index) == (4, 0) and box.tolist() == [0, 0, 0, 0]
        assert error is not None and one_line_naming(error, f"{bad}: cannot read the image")
        assert files[1][4] == f"{tmp_path / 'gone.png'}: no such file"

    def test_settings_and_indexing(self, tmp_path: Path) -> None:
        entries = [ImageEntry(save(tmp_path / "a.png", grey(1)), 0)]
        with pytest.raises(InvalidInputError, match="channels"):
            ImageFiles(entries, 4, (4, 4))
        with pytest.raises(InvalidInputError, match="fit"):
            ImageFiles(entries, 1, (4, 4), "crop")
        files = ImageFiles(entries, 1, (4, 4))
        assert len(files) == 1 and files[-1][2] == 0 and "1 images" in repr(files)
        with pytest.raises(IndexError):
            files[1]

    def test_pickles_small_and_rebuilds_its_entries(self, tmp_path: Path) -> None:
        entries = [
            ImageEntry(tmp_path / f"{i}.png", i % 3, (0, 1, 2, 3.5) if i % 2 else None)
            for i in range(50)
        ]
        files = ImageFiles(entries, 3, (9, 9), "stretch")
        assert files.entries == tuple(entries)
        copy = pickle.loads(pickle.dumps(files))
        assert copy.entries == tuple(entries)
        assert (copy.channels, copy.size, copy.fit) == (3, (9, 9), "stretch")
        assert "ImageEntry" not in str(pickle.dumps(files))


# ---------------------------------------------------------------------------------- batches
class TestCollate:
    def test_drops_unreadable_items_into_bad(self, tmp_path: Path) -> None:
        good = save(tmp_path / "g.png", grey(7))
        files = ImageFiles(
            [ImageEntry(good, 1), ImageEntry(truncated(tmp_path / "t.png"), 2)], 1, (4, 4)
        )
        batch = collate_images([files[1], files[0], files[0]])
        assert isinstance(batch, ImageBatch)
        assert batch.x.shape == (2, 1, 4, 4) and batch.x.dtype == torch.uint8
        assert batch.y.tolist() == [1, 1] and batch.index.tolist() == [0, 0]
        assert batch.y.dtype == batch.index.dtype == torch.int64
        assert batch.boxes.shape == (2, 4) and batch.boxes.dtype == torch.float32
        assert len(batch.bad) == 1 and "t.png" in batch.bad[0] and type(batch.bad[0]) is str

    def test_an_all_bad_batch_is_empty_with_the_input_shape(self, tmp_path: Path) -> None:
        files = ImageFiles([ImageEntry(tmp_path / "gone.png", 0)], 3, (5, 6))
        batch = collate_images([files[0], files[0]])
        assert batch.x.shape == (0, 3, 5, 6) and batch.x.dtype == torch.uint8
        assert batch.y.shape == batch.index.shape == (0,) and batch.boxes.shape == (0, 4)
        assert len(batch.bad) == 2
        assert torch.cat([batch.x, torch.zeros(1, 3, 5, 6, dtype=torch.uint8)]).shape[0] == 1

    def test_data_loader_with_workers(self, tmp_path: Path) -> None:
        entries = [ImageEntry(save(tmp_path / f"{i}.png", grey(10 * i)), i % 2) for i in range(6)]
        entries[4] = ImageEntry(truncated(tmp_path / "cut.png"), 0)
        entries.append(ImageEntry(tmp_path / "gone.png", 1))  # index 6
        files = ImageFiles(entries, 1, (8, 8))
        index_lists = [[5, 0, 4], [1, 2], [6], [3]]
        loader = DataLoader(
            files, batch_sampler=index_lists, num_workers=2, collate_fn=collate_images
        )
        batches = list(loader)
        assert [b.index.tolist() for b in batches] == [[5, 0], [1, 2], [], [3]]
        assert [b.y.tolist() for b in batches] == [[1, 0], [1, 0], [], [1]]
        bad = f"{tmp_path / 'cut.png'}: cannot read the image"
        assert len(batches[0].bad) == 1 and batches[0].bad[0].startswith(bad)
        assert batches[2].x.shape == (0, 1, 8, 8) and batches[2].bad == [
            f"{tmp_path / 'gone.png'}: no such file"
        ]
        assert batches[1].x[:, 0, 2, 4].tolist() == [10, 20] and batches[1].bad == []

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs CUDA")
    def test_pin_memory(self, tmp_path: Path) -> None:
        files = ImageFiles([ImageEntry(save(tmp_path / "a.png", grey(1)), 0)], 1, (4, 4))
        (batch,) = DataLoader(files, batch_size=2, collate_fn=collate_images, pin_memory=True)
        assert isinstance(batch, ImageBatch) and batch.x.is_pinned() and batch.boxes.is_pinned()
