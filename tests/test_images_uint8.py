"""torchstn.images: uint8 reads (fast path == float path), read_image == uint8 / 255, probing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from torchstn import images
from torchstn.errors import DataError, InvalidInputError
from torchstn.images import channels_of_mode, probe_image, read_image, read_image_uint8


def general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every read take the float path."""
    monkeypatch.setattr(images, "_fast", lambda *args: False)


def no_float_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the float path fail (a DataError naming the file), to prove a read took the fast path."""

    def fail(*args: object) -> None:
        raise AssertionError("the float path was taken")

    monkeypatch.setattr(images, "_to_array", fail)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """8-bit files of every kind the fast path takes, 16 x 16, covering all 256 grey levels."""
    rng = np.random.default_rng(0)
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = {"grey.png": grey, "rgb.png": rgb, "grey.jpg": grey, "rgb.jpg": rgb, "rgb.bmp": rgb}
    paths = {}
    for name, arr in out.items():
        paths[name] = tmp_path / name
        Image.fromarray(arr).save(paths[name])
    return paths


class TestFastPath:
    @pytest.mark.parametrize("name", ["grey.png", "rgb.png", "grey.jpg", "rgb.jpg", "rgb.bmp"])
    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("fit", ["pad", "stretch"])
    def test_bit_identical_to_the_float_path(
        self,
        files: dict[str, Path],
        monkeypatch: pytest.MonkeyPatch,
        name: str,
        channels: int,
        fit: str,
    ) -> None:
        fast, fast_fit = read_image_uint8(files[name], channels, (16, 16), fit)
        with monkeypatch.context() as m:
            general_path(m)
            slow, slow_fit = read_image_uint8(files[name], channels, (16, 16), fit)
        assert fast.dtype == slow.dtype == torch.uint8 and fast.shape == (channels, 16, 16)
        assert torch.equal(fast, slow) and fast_fit == slow_fit
        assert fast.is_contiguous()

    def test_taken_for_grey_and_rgb_without_a_float_round_trip(
        self, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        no_float_path(monkeypatch)
        x, fit = read_image_uint8(files["grey.png"], 1, (16, 16))
        assert x.flatten().tolist() == list(range(256)) and fit.conversion == "L"
        x, fit = read_image_uint8(files["grey.png"], 3, (16, 16))
        assert torch.equal(x[0], x[2]) and fit.conversion == "L -> RGB"
        x, fit = read_image_uint8(files["rgb.png"], 3, (16, 16))
        assert torch.equal(
            x, torch.from_numpy(np.array(Image.open(files["rgb.png"]))).permute(2, 0, 1)
        )
        assert fit.padding == (0, 0, 0, 0) and fit.resized == (16, 16)

    def test_not_taken_for_rgb_to_luma_where_pillow_rounds_differently(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # 0.299 * 1 + 0.587 * 123 = 72.5: Pillow's integer "L" gives 73, the float path 72
        Image.fromarray(np.array([[[1, 123, 0]]], np.uint8)).save(tmp_path / "half.png")
        assert Image.open(tmp_path / "half.png").convert("L").getpixel((0, 0)) == 73
        x, fit = read_image_uint8(tmp_path / "half.png", 1, (1, 1))
        assert x.item() == 72 and fit.conversion == "RGB -> L"
        no_float_path(monkeypatch)
        with pytest.raises(DataError, match="float path was taken"):
            read_image_uint8(tmp_path / "half.png", 1, (1, 1))

    @pytest.mark.parametrize("name", ["alpha", "transparency", "resize", "orientation"])
    def test_not_taken(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        grey = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
        path, size = tmp_path / f"{name}.png", (6, 6)
        if name == "alpha":
            Image.fromarray(grey).convert("LA").save(path)
        elif name == "transparency":
            Image.fromarray(grey).save(path, transparency=0)
        elif name == "resize":
            Image.fromarray(grey).save(path)
            size = (12, 12)
        else:
            exif = Image.Exif()
            exif[0x0112] = 3  # rotated 180 degrees
            Image.fromarray(grey).save(path, exif=exif)
        x, _ = read_image_uint8(path, 1, size)
        if name == "orientation":
            assert torch.equal(x[0], torch.from_numpy(grey[::-1, ::-1].copy()))
        no_float_path(monkeypatch)
        with pytest.raises(DataError, match="float path was taken"):
            read_image_uint8(path, 1, size)

    def test_first_frame_of_an_animation(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (200, 10)]
        frames[0].save(
            tmp_path / "anim.webp", save_all=True, append_images=frames[1:], lossless=True
        )
        fast, fit = read_image_uint8(tmp_path / "anim.webp", 3, (4, 4))
        general_path(monkeypatch)
        slow, slow_fit = read_image_uint8(tmp_path / "anim.webp", 3, (4, 4))
        assert fit.frames == 2 and fit == slow_fit and torch.equal(fast, slow)
        assert fast.min() >= 190


class TestQuantisation:
    def test_read_image_is_the_uint8_read_over_255(self, tmp_path: Path) -> None:
        rng = np.random.default_rng(1)
        Image.fromarray(rng.integers(0, 256, (10, 40, 3), dtype=np.uint8)).save(tmp_path / "w.png")
        rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
        Image.fromarray(rng.integers(0, 65536, (5, 5), dtype=np.uint16)).save(tmp_path / "d.png")
        for name in ("w.png", "a.png", "d.png"):
            for shape, fit in (((1, 28, 28), "pad"), ((3, 12, 20), "stretch"), ((3, 5, 5), "pad")):
                x, info = read_image(tmp_path / name, shape, fit)
                x8, info8 = read_image_uint8(tmp_path / name, shape[0], shape[1:], fit)
                assert x.dtype == torch.float32 and info == info8
                assert torch.equal(x, x8.float() / 255)

    def test_sixteen_bits_lose_their_low_bits(self, tmp_path: Path) -> None:
        levels = np.array([[0, 257 * 3, 257 * 128 + 100, 65535]], np.uint16)
        Image.fromarray(levels).save(tmp_path / "d.png")
        x, fit = read_image_uint8(tmp_path / "d.png", 1, (1, 4))
        assert x.flatten().tolist() == [0, 3, 128, 255]
        assert fit.conversion.endswith("divided by 65535")

    def test_resized_values_are_rounded_float_values(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """What a shrink gives before quantising, rounded: never off by more than half a level."""
        rng = np.random.default_rng(2)
        Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(tmp_path / "n.png")
        source, info = images._read_source(tmp_path / "n.png", 1, "pad")
        exact, _ = images._resize_pad(source, info, (7, 7))
        x, _ = read_image_uint8(tmp_path / "n.png", 1, (7, 7))
        assert (x.float() - exact * 255).abs().max() <= 0.5


class TestProbe:
    @pytest.mark.parametrize(
        ("array", "mode"),
        [
            (np.zeros((5, 9), np.uint8), "L"),
            (np.zeros((5, 9, 3), np.uint8), "RGB"),
            (np.zeros((5, 9, 4), np.uint8), "RGBA"),
            (np.zeros((5, 9), np.uint16), "I;16"),
        ],
    )
    def test_mode_and_size(self, tmp_path: Path, array: np.ndarray, mode: str) -> None:
        Image.fromarray(array).save(tmp_path / "f.png")
        assert probe_image(tmp_path / "f.png") == (mode, (5, 9))

    def test_reads_no_pixels(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from PIL import ImageFile

        Image.fromarray(np.zeros((5, 9, 3), np.uint8)).save(tmp_path / "f.jpg")

        def fail(self: object) -> None:
            raise AssertionError("pixels decoded")

        monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
        assert probe_image(tmp_path / "f.jpg") == ("RGB", (5, 9))

    def test_exif_rotation_swaps_the_size_as_read_image_sees_it(self, tmp_path: Path) -> None:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees
        Image.fromarray(np.zeros((5, 9), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
        assert probe_image(tmp_path / "r.jpg") == ("L", (9, 5))
        _, fit = read_image_uint8(tmp_path / "r.jpg", 1, (9, 5))
        assert fit.source_size == (9, 5)
        with Image.open(tmp_path / "r.jpg") as img:
            assert ImageOps.exif_transpose(img).size == (5, 9)  # (W, H)

    def test_errors_name_the_file(self, tmp_path: Path) -> None:
        (tmp_path / "notes.png").write_text("not an image")
        for name, text in (("missing.png", "no such file"), ("notes.png", "not an image")):
            with pytest.raises(DataError, match=text) as err:
                probe_image(tmp_path / name)
            assert str(err.value).startswith(str(tmp_path / name)) and "\n" not in str(err.value)

    def test_channels_of_mode(self) -> None:
        grey = ["1", "L", "LA", "La", "I", "I;16", "I;16B", "F"]
        colour = ["RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"]
        assert [channels_of_mode(m) for m in grey] == [1] * len(grey)
        assert [channels_of_mode(m) for m in colour] == [3] * len(colour)


class TestErrors:
    def test_truncated_file(self, tmp_path: Path) -> None:
        Image.fromarray(np.arange(4096, dtype=np.uint8).reshape(64, 64)).save(tmp_path / "t.png")
        data = (tmp_path / "t.png").read_bytes()
        (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError, match="cannot read the image") as err:
            read_image_uint8(tmp_path / "t.png", 1, (64, 64))
        assert str(err.value).startswith(f"{tmp_path / 't.png'}: ") and "\n" not in str(err.value)

    def test_bad_settings(self, files: dict[str, Path]) -> None:
        with pytest.raises(InvalidInputError, match="channels"):
            read_image_uint8(files["grey.png"], 2, (16, 16))
        with pytest.raises(InvalidInputError, match="fit"):
            read_image_uint8(files["grey.png"], 1, (16, 16), "crop")
        with pytest.raises(InvalidInputError, match="size"):
            read_image_uint8(files["grey.png"], 1, (0, 16))
