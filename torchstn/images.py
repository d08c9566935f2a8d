"""Reading image files as model inputs: any format and mode, the model's channels, fitted to its size.

Accepted files: whatever Pillow opens (PNG, JPEG, BMP, GIF, WebP, TIFF...), in any mode:

* the EXIF orientation is applied and, for animations and multi-page files, the first frame used;
* colours: a 1-channel model sees the luma ``0.299 R + 0.587 G + 0.114 B`` (as Pillow's ``"L"``),
  a 3-channel model RGB (grey images repeated); CMYK, YCbCr, palettes and the like are converted
  to RGB by Pillow; 16-bit images are divided by 65535 and float images clipped to ``[0, 1]``;
* transparency is composited over **black**: the models learn bright strokes on a black
  background (MNIST), so a transparent area reads as background;
* size (``fit``): ``"pad"`` (default) resizes preserving the aspect ratio until the image fits the
  model's ``(H, W)`` and centres it on black; ``"stretch"`` resizes each side to the model's,
  distorting the aspect ratio. Resizing is bilinear with antialiasing (area-weighted when
  shrinking, like Pillow's);
* precision: the fitted input is quantised to **8 bits** (``round(255 x)``, halves to even), so
  that a model sees the same values whether it trains on files (read as uint8 by
  :func:`read_image_uint8`) or predicts from them (:func:`read_image` gives those values / 255).
  16-bit and float files therefore lose precision beyond 8 bits. An 8-bit ``"L"`` or ``"RGB"``
  file without transparency, already of the model's size and needing no colour conversion other
  than grey to RGB, is read straight into uint8 (the same values, without a float round trip).

Size limits: a file whose header declares more than :func:`max_image_pixels` pixels
(:data:`MAX_IMAGE_PIXELS`, 90 megapixels, enough for ordinary photos; the environment variable
``TORCHSTN_MAX_IMAGE_PIXELS`` raises or lowers it for every command, DataLoader workers included)
is refused from its header, before any pixel is decoded, with one :class:`DataError` line. This
check replaces Pillow's own decompression-bomb warning and error while torchstn reads (Pillow's
``Image.MAX_IMAGE_PIXELS`` is set to the same limit for the duration of a read). A larger image
is brought toward the model's size while it is decoded: JPEG files decode at 1/2, 1/4 or 1/8
scale (``Image.draft``), and every file is shrunk by area averaging (``BOX``), keeping its
proportions, to twice the size it takes in the model input (its longer side at least 512
pixels) before any conversion to float, so that memory follows the model's size, not the
file's (the peak is the decoded file: 4 bytes a pixel for RGB, as Pillow holds it). Only a
file at least four times that size is shrunk: smaller files read as before.

Every read returns a :class:`Fit` that records what was done (its :meth:`Fit.to_dict` is the
``"fit"`` entry of ``torchstn predict``'s JSON lines) and maps model-input pixels back to the
file's (:meth:`Fit.to_source`). :func:`find_images` expands folders into their image files;
:func:`probe_image` reads a file's mode and size from its header.

Example:
    >>> from PIL import Image
    >>> import numpy as np, tempfile
    >>> path = tempfile.mkdtemp() + "/wide.png"
    >>> Image.fromarray(np.full((10, 40, 3), 255, np.uint8)).save(path)
    >>> x, fit = read_image(path, (1, 28, 28))
    >>> x.shape, fit.resized, fit.padding  # 10x40 -> 7x28, 10 rows of black above, 11 below
    (torch.Size([1, 28, 28]), (7, 28), (0, 10, 0, 11))
    >>> fit.conversion
    'RGB -> L'
    >>> x8, _ = read_image_uint8(path, 1, (28, 28))
    >>> x8.dtype, x8[0, 9:11, 0].tolist(), torch.equal(x8.float() / 255, x)
    (torch.uint8, [0, 255], True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ._checks import check_choice, check_size, env_limit
from .errors import DataError, InvalidInputError, TorchSTNError

__all__ = [
    "FITS",
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "PIXELS_ENV",
    "Fit",
    "channels_of_mode",
    "find_images",
    "max_image_pixels",
    "probe_image",
    "read_image",
    "read_image_uint8",
]

#: what ``find_images`` collects from folders (files named explicitly are always tried).
IMAGE_SUFFIXES = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".pgm",
    ".png",
    ".ppm",
    ".tif",
    ".tiff",
    ".webp",
)
#: the ways to fit an image to the model's size (see the module docstring).
FITS = ("pad", "stretch")
#: files declaring more pixels (width x height) are refused unread (see the module docstring).
MAX_IMAGE_PIXELS = 90_000_000
#: the environment variable that overrides :data:`MAX_IMAGE_PIXELS` (a positive whole number).
PIXELS_ENV = "TORCHSTN_MAX_IMAGE_PIXELS"
#: sides are kept at least twice ``max(H, W, _DETAIL)`` when a large file is shrunk while read
_DETAIL = 256
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's "L"
_ORIENTATION = 0x0112  # EXIF tag; values 5 to 8 swap the width and height
#: EXIF orientation -> the ``Image.Transpose`` that undoes it (as ``ImageOps.exif_transpose``)
_TRANSPOSE = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


@dataclass(frozen=True)
class Fit:
    """How an image file became a model input.

    Attributes:
        method: ``"pad"`` or ``"stretch"``.
        source_size: ``(H, W)`` of the file.
        source_mode: its Pillow mode (``"RGBA"``, ``"I;16"``, ``"P"``...).
        conversion: what was done to the colours, e.g. ``"RGBA -> L, alpha over black"``.
        resized: ``(H', W')`` of the image inside the model input.
        padding: black pixels added ``(left, top, right, bottom)``.
        frames: frames in the file (the first is used).
    """

    method: str
    source_size: tuple[int, int]
    source_mode: str
    conversion: str
    resized: tuple[int, int]
    padding: tuple[int, int, int, int]
    frames: int = 1

    def to_source(self, points: torch.Tensor) -> torch.Tensor:
        """Map ``(..., 2)`` pixel-centre ``(x, y)`` points of the model input to the file's."""
        sx = self.resized[1] / self.source_size[1]
        sy = self.resized[0] / self.source_size[0]
        shift = torch.tensor([self.padding[0], self.padding[1]], dtype=points.dtype)
        scale = torch.tensor([sx, sy], dtype=points.dtype)
        return (points + 0.5 - shift) / scale - 0.5

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``frames`` only when the file has several)."""
        out: dict[str, Any] = {
            "method": self.method,
            "source_size": list(self.source_size),
            "source_mode": self.source_mode,
            "conversion": self.conversion,
            "resized": list(self.resized),
            "padding": list(self.padding),
        }
        if self.frames > 1:
            out["frames"] = self.frames
        return out


def channels_of_mode(mode: str) -> int:
    """The channels an image of Pillow ``mode`` naturally has: 1 for grey modes, else 3.

    Example:
        >>> channels_of_mode("I;16"), channels_of_mode("LA"), channels_of_mode("P")
        (1, 1, 3)
    """
    return 1 if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16") else 3


def _conversion(mode: str, channels: int, alpha: bool) -> str:
    """The :attr:`Fit.conversion` text of a ``mode`` file read with ``channels``."""
    target = "L" if channels == 1 else "RGB"
    conversion = target if mode == target else f"{mode} -> {target}"
    if mode.startswith("I;16") or mode == "I":
        conversion += ", divided by 65535"
    elif mode == "F":
        conversion += ", clipped to [0, 1]"
    if alpha:
        conversion += ", alpha over black"
    return conversion


def max_image_pixels() -> int:
    """The most pixels (width x height) a file may declare: ``TORCHSTN_MAX_IMAGE_PIXELS`` if set,
    else :data:`MAX_IMAGE_PIXELS`.

    Raises:
        ConfigError: the variable is set to anything but a positive whole number.
    """
    return env_limit(PIXELS_ENV, MAX_IMAGE_PIXELS, "pixels")


def _to_array(img: Any, channels: int, source_mode: str | None = None) -> tuple[np.ndarray, str]:
    """``(h, w, channels)`` float32 in ``[0, 1]`` and a description of the conversion (of a file
    of ``source_mode``, by default ``img``'s: :func:`_shrink` may have converted it)."""
    mode = img.mode
    alpha = None
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)[..., None]
        arr = np.clip(arr if mode == "F" else arr / 65535.0, 0.0, 1.0)
    elif mode in ("1", "L", "LA", "La"):
        la = np.asarray(img.convert("LA"), dtype=np.float32) / 255.0
        arr, alpha = la[..., :1], (la[..., 1:] if mode in ("LA", "La") else None)
    else:  # RGB, RGBA, P, PA, CMYK, YCbCr, HSV, LAB...
        has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
        rgb = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
        arr, alpha = rgb[..., :3], (rgb[..., 3:] if has_alpha else None)
    if alpha is not None:
        arr = arr * alpha  # over black
    if arr.shape[-1] == 3 and channels == 1:
        arr = (arr @ _LUMA)[..., None]
    elif arr.shape[-1] == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=-1)
    conversion = _conversion(source_mode or mode, channels, alpha is not None)
    return np.ascontiguousarray(arr, dtype=np.float32), conversion


def read_image(
    path: str | Path, in_shape: Sequence[int], fit: str = "pad", *, max_pixels: int | None = None
) -> tuple[torch.Tensor, Fit]:
    """Read an image file as a model input (see the module docstring).

    Args:
        path: the image file.
        in_shape: the model's ``(C, H, W)``; ``C`` must be 1 or 3.
        fit: ``"pad"`` or ``"stretch"``.
        max_pixels: the most pixels the file may declare (default: :func:`max_image_pixels`).

    Returns:
        The input ``(C, H, W)`` float32 in ``[0, 1]``: exactly :func:`read_image_uint8`'s values
        divided by 255 (multiples of ``1 / 255``); and the :class:`Fit` that made it.

    Raises:
        DataError: missing, unreadable, corrupt or too large file (one line naming it).
        InvalidInputError: unknown ``fit``, or ``C`` neither 1 nor 3.
    """
    size = (int(in_shape[1]), int(in_shape[2]))
    x, info = read_image_uint8(path, int(in_shape[0]), size, fit, max_pixels=max_pixels)
    return x.float() / 255, info


def read_image_uint8(
    path: str | Path,
    channels: int,
    size: tuple[int, int],
    fit: str = "pad",
    *,
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, Fit]:
    """Read an image file as a uint8 model input (see the module docstring).

    The file is decoded, converted and fitted in float32 as :func:`read_image` describes, then
    quantised: ``round(255 x)`` with halves rounded to even (``torch.round``). An 8-bit ``"L"`` or
    ``"RGB"`` file without transparency or EXIF rotation, already ``size`` and read as ``L``, as
    ``RGB`` or grey to ``RGB``, takes a fast path to the same values (``np.asarray`` of the
    decoded pixels). RGB files read as 1 channel always take the float path: Pillow's integer luma
    differs from the float luma by one level for some colours.

    Args:
        path: the image file.
        channels: 1 (luma) or 3 (RGB).
        size: the model's ``(H, W)``.
        fit: ``"pad"`` or ``"stretch"``.
        max_pixels: the most pixels the file may declare (default: :func:`max_image_pixels`).

    Returns:
        The input ``(channels, H, W)`` uint8, and the :class:`Fit` that made it.

    Raises:
        DataError: missing, unreadable, corrupt or too large file (one line naming it).
        InvalidInputError: unknown ``fit``, ``channels`` neither 1 nor 3, or a bad ``size``.
    """
    target = check_size(size, "size")
    source, info = _read_source(path, channels, fit, target, max_pixels=max_pixels)
    if source.dtype == torch.uint8:  # the fast path: already fitted
        return source, info
    x, info = _resize_pad(source, info, target)
    return _quantise(x), info


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn Pillow's errors while reading ``path`` into one-line :class:`DataError` naming it."""
    try:
        yield
    except TorchSTNError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file Pillow can read") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode the image") from None
    except Exception as err:  # truncated or corrupt data: OSError, ValueError, SyntaxError...
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot read the image ({text})") from None


@contextlib.contextmanager
def _open_image(path: Path, max_pixels: int | None = None) -> Iterator[Any]:
    """The file opened lazily by Pillow (its header read, no pixel), refused in one line when it
    declares more than ``max_pixels`` (default :func:`max_image_pixels`); errors while the
    caller reads it become one-line :class:`DataError` too.

    Pillow's own decompression-bomb check is set to the same limit meanwhile (its warning
    silenced: this check replaces it), then restored.
    """
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    saved = Image.MAX_IMAGE_PIXELS
    with _reading(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = limit
        try:
            with Image.open(path) as img:
                w, h = img.size
                if w * h > limit:
                    raise DataError(
                        f"{path}: {w}x{h} pixels ({w * h / 1e6:.1f} megapixels) exceed the limit "
                        f"of {limit} pixels; set {PIXELS_ENV} to raise it"
                    )
                yield img
        except Image.DecompressionBombError as err:  # a frame or tile beyond twice the limit
            found = re.search(r"\((\d+) pixels\)", str(err))
            raise DataError(
                f"{path}: {found.group(1) if found else 'more'} pixels exceed the limit of "
                f"{limit} pixels; set {PIXELS_ENV} to raise it"
            ) from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def probe_image(path: str | Path, *, max_pixels: int | None = None) -> tuple[str, tuple[int, int]]:
    """The Pillow mode and ``(H, W)`` of an image file, from its header (no pixel is decoded).

    ``(H, W)`` is the size :func:`read_image` sees, after an EXIF rotation when the header holds
    it (JPEG, WebP, TIFF; PNG when its EXIF chunk precedes the pixels); the mode is the first
    frame's.

    Raises:
        DataError: missing or unreadable file, or one declaring more than ``max_pixels``
            (default :func:`max_image_pixels`) pixels (one line naming it).
    """
    path = Path(path)
    with _open_image(path, max_pixels) as img:
        mode, (w, h) = img.mode, img.size
        # Image.getexif, not PNG's override, which decodes the pixels to find a late EXIF chunk
        orientation = Image.Image.getexif(img).get(_ORIENTATION, 1)
    return mode, ((w, h) if orientation in (5, 6, 7, 8) else (h, w))


def _resized(h: int, w: int, size: Sequence[int], method: str) -> tuple[int, int]:
    """The ``(H', W')`` an upright ``h x w`` image takes inside a model input of ``size``."""
    oh, ow = int(size[0]), int(size[1])
    if method == "stretch":
        return oh, ow
    s = min(oh / h, ow / w)
    return max(1, min(oh, round(h * s))), max(1, min(ow, round(w * s)))


def _shrunk_size(h: int, w: int, resized: tuple[int, int]) -> tuple[int, int] | None:
    """The ``(h', w')`` a ``h x w`` file is shrunk to while read, when its image takes
    ``resized`` ``(H', W')`` in the model input (in the file's orientation), or ``None`` when it
    is read whole.

    One scale for both sides (a picture of the shrunk source keeps the file's proportions): the
    smallest that keeps each side at least twice its resized side, and the longer side at least
    ``2 x 256`` pixels; applied only when it shrinks the file four times or more. A side still
    longer than ``8 max(H', W', 256)`` (a stretched strip) is cut down to that on its own.
    """
    rh, rw = resized
    s = max(2 * rh / h, 2 * rw / w, 2 * _DETAIL / max(h, w))
    if s > 0.25:
        return None
    cap = 8 * max(rh, rw, _DETAIL)
    return min(cap, max(1, round(h * s))), min(cap, max(1, round(w * s)))


def _shrink(img: Any, size: tuple[int, int]) -> Any:
    """The loaded ``img`` shrunk to ``size`` ``(h, w)`` by area averaging, in a mode whose
    averages :func:`_to_array` reads as the file's: bilevel as ``L``; palettes, CMYK and other
    colour spaces as ``RGB``, or ``RGBA`` with transparency (Pillow averages ``LA`` and ``RGBA``
    premultiplied, so that transparency still composites over black)."""
    mode = img.mode
    if mode == "1":
        img = img.convert("L")
    elif mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif not (
        mode in ("L", "LA", "La", "RGB", "RGBA", "RGBa", "I", "F") or mode.startswith("I;16")
    ):
        has_alpha = "A" in mode or "a" in mode or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    return img.resize((size[1], size[0]), Image.Resampling.BOX)


def _oriented(img: Any, orientation: int) -> Any:
    """``img`` turned upright as its EXIF ``orientation`` says (itself when already upright)."""
    method = _TRANSPOSE.get(orientation)
    return img if method is None else img.transpose(Image.Transpose[method])


def _read_source(
    path: str | Path,
    channels: int,
    fit: str,
    size: tuple[int, int] | None = None,
    *,
    fast: bool = True,
    max_pixels: int | None = None,
) -> tuple[torch.Tensor, Fit]:
    """The file's pixels ``(C, h, w)`` float32 after the colour conversion, and a :class:`Fit`
    whose resize :func:`_fit` fills in.

    With ``size`` (the model's), a large file is shrunk while read (see :func:`_shrunk_size`):
    the pixels are then fewer than the file's, while the :class:`Fit` keeps the file's size
    (:func:`_resize_pad` fits either; :func:`_in_source_pixels` maps points onto the pixels
    returned). With ``size`` and ``fast``, a file that the fast path of
    :func:`read_image_uint8` takes comes back already fitted, as uint8 ``(C, H, W)``.
    """
    check_choice(fit, "fit", FITS)
    if channels not in (1, 3):
        raise InvalidInputError(f"channels: images need 1 or 3 channels, got {channels}")
    path = Path(path)
    with _open_image(path, max_pixels) as img:
        frames = int(getattr(img, "n_frames", 1))
        img.seek(0)
        mode, (w, h) = img.mode, img.size
        shrunk = None
        if size is not None:
            # the header's orientation (Image.getexif: PNG's override would decode the pixels)
            turned = Image.Image.getexif(img).get(_ORIENTATION, 1) in (5, 6, 7, 8)
            rh, rw = _resized(*((w, h) if turned else (h, w)), size, fit)
            shrunk = _shrunk_size(h, w, (rw, rh) if turned else (rh, rw))
        if shrunk is not None:
            img.draft(None, (shrunk[1], shrunk[0]))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
        img.load()
        if size is not None and fast and shrunk is None and _fast(img, channels, size):
            oh, ow = size
            arr = np.array(img, dtype=np.uint8).reshape(oh, ow, -1)  # (H, W, 1 or 3), writable
            if arr.shape[-1] != channels:  # L -> RGB
                arr = np.repeat(arr, channels, axis=-1)
            conversion = _conversion(mode, channels, False)
            info = Fit(fit, size, mode, conversion, size, (0, 0, 0, 0), frames)
            return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), info
        orientation = img.getexif().get(_ORIENTATION, 1)
        if shrunk is not None and img.size != (shrunk[1], shrunk[0]):
            img = _shrink(img, shrunk)
        arr, conversion = _to_array(_oriented(img, orientation), channels, mode)
    hw = (w, h) if orientation in (5, 6, 7, 8) else (h, w)
    info = Fit(fit, hw, mode, conversion, hw, (0, 0, 0, 0), frames)
    return torch.from_numpy(arr).permute(2, 0, 1), info


def _in_source_pixels(source: torch.Tensor, info: Fit) -> Fit:
    """``info`` with the size of ``source`` (what :func:`_read_source` returned, perhaps shrunk):
    its :meth:`Fit.to_source` then maps model-input points onto ``source``'s pixels."""
    return dataclasses.replace(info, source_size=(int(source.shape[-2]), int(source.shape[-1])))


def _fast(img: Any, channels: int, size: tuple[int, int]) -> bool:
    """Whether the loaded ``img`` is already its uint8 model input but for a transpose."""
    return (
        (img.mode == "L" or (img.mode == "RGB" and channels == 3))
        and (img.height, img.width) == size
        and "transparency" not in img.info
        and img.getexif().get(_ORIENTATION, 1) not in range(2, 9)
    )


def _resize_pad(source: torch.Tensor, info: Fit, size: tuple[int, int]) -> tuple[torch.Tensor, Fit]:
    """Resize (and pad) ``source`` ``(C, h, w)`` to ``size``: float ``(C, H, W)`` in ``[0, 1]``
    (not quantised) and the full fit."""
    (h, w), (oh, ow) = info.source_size, size
    rh, rw = _resized(h, w, size, info.method)
    x = source[None]
    if (rh, rw) != tuple(x.shape[-2:]):  # the source may have been shrunk while read
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    left, top = (ow - rw) // 2, (oh - rh) // 2
    pad = (left, top, ow - rw - left, oh - rh - top)
    x = F.pad(x, (pad[0], pad[2], pad[1], pad[3]))  # zeros: black
    return x[0].clamp_(0.0, 1.0), dataclasses.replace(info, resized=(rh, rw), padding=pad)


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """``x`` in ``[0, 1]`` as uint8: ``round(255 x)``, halves to even."""
    return x.mul(255.0).round_().to(torch.uint8)


def _fit(source: torch.Tensor, info: Fit, size: tuple[int, int]) -> tuple[torch.Tensor, Fit]:
    """Resize (and pad) ``source`` ``(C, h, w)`` to ``size``: float32 ``(C, H, W)`` quantised to
    8 bits, exactly :func:`read_image`'s values, and the full fit."""
    x, info = _resize_pad(source, info, size)
    return _quantise(x).float() / 255, info


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files named in ``inputs``, with folders replaced by their image files (recursively, sorted,
    hidden files skipped). A named file is kept whatever its suffix (and even if missing, so that
    reading it reports the error)."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        else:
            found.append(p)
    return found
