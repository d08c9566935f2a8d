"""User data: a folder of images with one sub-folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchstn.data import load_image_folder
from torchstn.errors import DataError


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def gray_folder(tmp_path: Path) -> Path:
    save(tmp_path / "zebra" / "b.png", np.full((6, 8), 255, np.uint8))
    save(tmp_path / "zebra" / "a.png", np.zeros((6, 8), np.uint8))
    save(tmp_path / "ant" / "x.bmp", np.full((6, 8), 51, np.uint8))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / ".hidden.png").write_bytes(b"")
    (tmp_path / ".git").mkdir()
    return tmp_path


class TestImageFolder:
    def test_gray(self, gray_folder: Path) -> None:
        sample, classes = load_image_folder(gray_folder)
        assert classes == ["ant", "zebra"]
        assert sample.x.shape == (3, 1, 6, 8) and sample.x.dtype == torch.float32
        assert sample.y.tolist() == [0, 1, 1]
        assert sample.x[:, 0, 0, 0].tolist() == pytest.approx([0.2, 0.0, 1.0])
        assert sample.boxes.tolist() == [[0, 0, 8, 6]] * 3

    def test_colour_and_forced_modes(self, gray_folder: Path) -> None:
        rgb = np.zeros((6, 8, 3), np.uint8)
        rgb[..., 0] = 255
        save(gray_folder / "zebra" / "c.png", rgb)
        sample, _ = load_image_folder(gray_folder)
        assert sample.x.shape == (4, 3, 6, 8)
        assert sample.x[3, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
        assert sample.x[0, :, 0, 0].tolist() == pytest.approx([0.2, 0.2, 0.2])
        gray, _ = load_image_folder(gray_folder, grayscale=True)
        assert gray.x.shape == (4, 1, 6, 8)

    def test_sizes(self, gray_folder: Path) -> None:
        save(gray_folder / "zebra" / "big.png", np.zeros((10, 10), np.uint8))
        with pytest.raises(
            DataError, match=r"big\.png: size 10x10 differs from .*pass size=\(H, W\)"
        ):
            load_image_folder(gray_folder)
        sample, _ = load_image_folder(gray_folder, size=(4, 5))
        assert sample.x.shape == (4, 1, 4, 5)
        assert load_image_folder(gray_folder, size=7)[0].x.shape == (4, 1, 7, 7)

    def test_errors(self, tmp_path: Path) -> None:
        with pytest.raises(DataError, match="folder not found"):
            load_image_folder(tmp_path / "missing")
        (tmp_path / "empty_class").mkdir()
        with pytest.raises(DataError, match="no images found"):
            load_image_folder(tmp_path)
        (tmp_path / "empty_class" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
        with pytest.raises(DataError, match=r"broken\.png: not an image file Pillow can read"):
            load_image_folder(tmp_path)
