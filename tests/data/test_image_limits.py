"""Image files larger than they look: a header declaring a huge size is refused unread, in one
line, with memory bounded; large valid files are shrunk while decoded, to the values a full-size
decode gives."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchstn import images
from torchstn.data import load_image_folder
from torchstn.data.files import ImageEntry, ImageFiles
from torchstn.errors import ConfigError, DataError
from torchstn.images import PIXELS_ENV, probe_image, read_image, read_image_uint8


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(path: Path, width: int, height: int, colour: int = 0) -> Path:
    """A valid black PNG (8-bit grey, ``colour=0``, or RGB, ``colour=2``), its zero rows deflated
    as they are made: a 13000 x 13000 file takes about 170 KB, and little memory to write."""
    row = bytes(1 + width * (3 if colour == 2 else 1))  # filter byte 0, then black pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(png)
    return path


def declaring(path: Path, width: int, height: int) -> Path:
    """A 2 x 2 PNG whose header (IHDR, its CRC fixed) declares ``width x height``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def one_line(err: pytest.ExceptionInfo[DataError], *parts: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text


class TestDeclaredSize:
    @pytest.mark.parametrize("read", ["uint8", "float", "probe", "predict", "folder"])
    def test_refused_from_the_header(self, tmp_path: Path, read: str) -> None:
        path = declaring(tmp_path / "c" / "huge.png", 13000, 13000)
        declaring(tmp_path / "d" / "small.png", 2, 2)  # a second class
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no Pillow DecompressionBombWarning either
            with pytest.raises(DataError) as err:
                if read == "uint8":
                    read_image_uint8(path, 1, (28, 28))
                elif read == "float":
                    read_image(path, (3, 28, 28))
                elif read == "probe":
                    probe_image(path)
                elif read == "predict":
                    images._read_source(path, 1, "pad", (28, 28), fast=False)
                else:
                    load_image_folder(tmp_path, size=28)
        one_line(err, str(path), "13000x13000", "169.0 megapixels", "limit of 90000000", PIXELS_ENV)

    def test_beyond_pillows_own_error_still_one_line(self, tmp_path: Path) -> None:
        from PIL import Image as PILImage

        before = PILImage.MAX_IMAGE_PIXELS
        path = declaring(tmp_path / "wide.png", 60000, 60000)  # Pillow: DecompressionBombError
        with pytest.raises(DataError) as err:
            read_image_uint8(path, 1, (28, 28))
        one_line(err, str(path), "3600000000 pixels exceed the limit of 90000000")
        assert PILImage.MAX_IMAGE_PIXELS == before  # restored

    def test_the_limit_moves_with_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = zero_png(tmp_path / "z.png", 60, 50)
        monkeypatch.setenv(PIXELS_ENV, "2_999")
        with pytest.raises(DataError) as err:
            read_image_uint8(path, 1, (28, 28))
        one_line(err, "60x50", "limit of 2999")
        # Pillow's own bomb error (above twice the limit) reads the same
        with pytest.raises(DataError, match=r"exceed the limit of 1000 pixels"):
            read_image_uint8(path, 1, (28, 28), max_pixels=1000)
        files = ImageFiles([ImageEntry(path, 0)], 1, (28, 28))
        assert files.max_pixels == 2999 and files[0][4] is not None  # unreadable, not raised
        monkeypatch.setenv(PIXELS_ENV, "3000")
        assert read_image_uint8(path, 1, (28, 28))[1].source_size == (50, 60)
        monkeypatch.setenv(PIXELS_ENV, "lots")
        with pytest.raises(ConfigError, match=f"{PIXELS_ENV}='lots'"):
            ImageFiles([ImageEntry(path, 0)], 1, (28, 28))


BOUNDED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from torchstn import images
from torchstn.errors import DataError
try:
    x, fit = images.read_image_uint8(sys.argv[1], 3, (28, 28))
    source, _ = images._read_source(sys.argv[1], 3, "pad", (28, 28), fast=False)  # predict's
except DataError as err:
    print("DataError:", err)
else:
    print("read", tuple(x.shape), fit.source_size, tuple(source.shape))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS as Linux counts it")
class TestBoundedMemory:
    """Decoded in a process allowed 1.5 GB of address space (torch takes about 0.7 of it): the
    13000 x 13000 file took 6.85 GB, an 8000 x 8000 one 2.25 GB."""

    def run(self, path: Path) -> str:
        code = textwrap.dedent(BOUNDED.format(limit=1536 << 20))
        done = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0 and not done.stderr, done.stderr[-2000:]
        return done.stdout.strip()

    def test_a_valid_huge_png_is_refused_unread(self, tmp_path: Path) -> None:
        path = zero_png(tmp_path / "huge.png", 13000, 13000)
        assert path.stat().st_size < 1 << 20
        out = self.run(path)
        assert out.startswith("DataError:") and "13000x13000" in out and "limit" in out, out

    def test_a_large_png_is_read_in_bounded_memory(self, tmp_path: Path) -> None:
        out = self.run(zero_png(tmp_path / "large.png", 8000, 8000, colour=2))
        assert out == "read (3, 28, 28) (8000, 8000) (3, 512, 512)", out


def full_size(path: Path, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """The reference: decoded whole, converted to float, then resized (pad) and rounded."""
    source, info = images._read_source(path, channels, "pad")
    x, _ = images._resize_pad(source, info, size)
    return images._quantise(x)


class TestShrinkWhileDecoding:
    @pytest.fixture
    def photo(self) -> np.ndarray:
        """A 1500 x 2300 RGB image of smooth gradients and blocks (shrinks much, aliases little)."""
        yy, xx = np.mgrid[0:1500, 0:2300].astype(np.float32)
        rgb = np.stack([xx / 2300 * 255, yy / 1500 * 255, ((xx // 200 + yy // 200) % 2) * 255], -1)
        return rgb.round().astype(np.uint8)

    @pytest.mark.parametrize("name", ["rgb.png", "rgba.png", "palette.png", "rotated.jpg"])
    def test_values_match_a_full_size_decode(
        self, tmp_path: Path, photo: np.ndarray, name: str
    ) -> None:
        path = tmp_path / name
        img = Image.fromarray(photo)
        if name == "rgba.png":
            alpha = np.zeros(photo.shape[:2], np.uint8)
            alpha[:, 1000:] = 255
            img.putalpha(Image.fromarray(alpha))
        elif name == "palette.png":
            img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        if name.endswith(".jpg"):
            exif = Image.Exif()
            exif[0x0112] = 6  # rotated: the file's 1500 x 2300 is seen as 2300 x 1500
            img.save(path, quality=95, exif=exif)
        else:
            img.save(path)
        for channels, size in ((1, (28, 28)), (3, (40, 60))):
            x, fit = read_image_uint8(path, channels, size)
            want = full_size(path, channels, size)
            assert fit.source_size == ((2300, 1500) if name == "rotated.jpg" else (1500, 2300))
            assert x.shape == want.shape
            diff = (x.int() - want.int()).abs().float()
            if name.endswith(".jpg"):  # decoded at 1/4 scale: JPEG's scaled IDCT and chroma
                assert diff.max() <= 12 and diff.mean() <= 1  # differ at the sharp blue edges
            else:  # area averages of area averages: within a few levels
                assert diff.max() <= 3

    def test_shrunk_only_when_much_larger_keeping_proportions(self) -> None:
        assert images._shrunk_size(2047, 2047, (28, 28)) is None  # 512 px kept: 4 times
        assert images._shrunk_size(2048, 1024, (28, 14)) == (512, 256)
        assert images._shrunk_size(3000, 4000, (300, 400)) == (600, 800)  # twice the model's
        assert images._shrunk_size(10, 90000, (28, 28)) is None  # stretched: rows too few
        assert images._shrunk_size(1000, 90000, (28, 28)) == (56, 2048)  # a strip, cut down

    def test_predict_reads_the_training_values_and_maps_points_onto_the_shrunk_source(
        self, tmp_path: Path, photo: np.ndarray
    ) -> None:
        path = tmp_path / "p.png"
        Image.fromarray(photo).save(path)
        x8, fit8 = read_image_uint8(path, 3, (28, 28))
        source, info = images._read_source(path, 3, "pad", (28, 28), fast=False)
        x, fit = images._fit(source, info, (28, 28))
        assert torch.equal(x, x8.float() / 255) and fit == fit8
        assert tuple(source.shape) == (3, 334, 512) and fit.source_size == (1500, 2300)
        pixels = images._in_source_pixels(source, fit)
        corners = torch.tensor([[-0.5, fit.padding[1] - 0.5], [27.5, 28 - fit.padding[3] - 0.5]])
        lo, hi = pixels.to_source(corners.double())  # the image's corners in the model input
        assert torch.allclose(lo, torch.tensor([-0.5, -0.5], dtype=torch.double), atol=1e-6)
        assert torch.allclose(hi, torch.tensor([511.5, 333.5], dtype=torch.double), atol=1e-6)

    def test_the_image_folder_reader_shrinks_too(self, tmp_path: Path, photo: np.ndarray) -> None:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            Image.fromarray(photo).save(tmp_path / name / "p.png")
        sample, _ = load_image_folder(tmp_path, size=(28, 28), grayscale=False)
        want = Image.fromarray(photo).resize((28, 28), Image.Resampling.BILINEAR)
        got = (sample.x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert np.abs(got.astype(int) - np.asarray(want).astype(int)).max() <= 3
