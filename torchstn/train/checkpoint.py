"""Checkpoints: written atomically, read with ``weights_only=True``, errors in one line.

Reading also tells what a model file is from its content (:func:`identify`): a checkpoint, an
export of ``torchstn export`` (TorchScript, ``torch.export`` program, ONNX), or something else,
which is then named in one line (a text file, a pickled model, an image...). PyTorch's three zip
formats store a CRC-32 of every member; :func:`verify_archive` checks them all before anything is
unpickled, so a file with flipped bytes is refused instead of loaded.
"""

from __future__ import annotations

import io
import mmap
import pickletools
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write_bytes
from ..errors import DataError, first_line

__all__ = [
    "CHECKPOINT",
    "FORMAT",
    "MODEL_KINDS",
    "identify",
    "load_checkpoint",
    "save_checkpoint",
    "verify_archive",
]

FORMAT = "torchstn-checkpoint-v1"

#: what :func:`identify` calls a file written by :func:`save_checkpoint` (or any ``torch.save``).
CHECKPOINT = "checkpoint"
#: the kinds of model file :func:`identify` recognises (anything else raises).
MODEL_KINDS = (CHECKPOINT, "torchscript", "exported-program", "onnx")
#: what the loaders of a checkpoint accept, for messages.
CHECKPOINT_WANTED = "expected a torchstn checkpoint (checkpoint.pt of a run, or its run folder)"
#: the most that the compressed members of a zip archive (TorchScript's code) may inflate to.
_MAX_INFLATED = 256 << 20
_DESCRIPTIONS = {
    "torchscript": "a TorchScript file (torchstn export --format torchscript)",
    "exported-program": "a torch.export program (torchstn export --format exported-program)",
    "onnx": "an ONNX file",
}
#: leading bytes of files people mistake for models, and what they are.
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x89HDF", "an HDF5 file (Keras?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x1f\x8b", "a gzip file"),
)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) atomically.

    The file is serialised in memory first: PyTorch's zip writer, writing to a file that fails
    (a full disk), raises an error about positions or aborts the process; from memory the write
    is ours, and a full disk is one line (:class:`DataError`), nothing left behind. Every member
    gets its CRC-32, whatever ``torch.serialization.set_crc32_options`` says, so that
    :func:`load_checkpoint` can verify it.
    """
    buffer = io.BytesIO()
    get_crc = getattr(torch.serialization, "get_crc32_options", None)
    set_crc = getattr(torch.serialization, "set_crc32_options", None)
    crc = get_crc() if get_crc is not None else True
    try:
        if set_crc is not None:
            set_crc(True)
        torch.save({"format": FORMAT, **state}, buffer)
    finally:
        if set_crc is not None:
            set_crc(crc)
    atomic_write_bytes(path, buffer.getbuffer())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, on the CPU),
    after checking the CRC-32 of every member of its archive.

    Raises:
        DataError: missing, truncated, corrupted or foreign file (named in one line: an export, a
            pickled model, a text file...).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    kind, description = identify(path)
    if kind != CHECKPOINT:
        raise DataError(f"{path}: {description}; {CHECKPOINT_WANTED}")
    verify_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        needs = _pickled_globals(path)
        if needs:
            what = (
                "a whole model pickled with torch.save(model)"
                if any(g.startswith(("torchstn.", "torch.nn.")) for g in needs)
                else "a pickled Python object"
            )
            raise DataError(
                f"{path}: {what}, which only loads by running code ({needs[0]}); "
                f"{CHECKPOINT_WANTED}"
            ) from None
        raise DataError(f"{path}: not a readable checkpoint ({first_line(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        bare = (
            isinstance(state, dict)
            and state
            and all(isinstance(v, torch.Tensor) for v in state.values())
        )
        what = "a bare state_dict" if bare else f"a torch.save file of a {type(state).__name__}"
        raise DataError(
            f"{path}: not a torchstn checkpoint ({what}; torchstn.inference.save_trained "
            "writes one)"
        )
    return state


# ----------------------------------------------------------------------- what a file is
def identify(path: str | Path) -> tuple[str, str]:
    """What a model file is, from its content (not its name).

    Returns:
        ``(kind, description)``: ``kind`` is one of :data:`MODEL_KINDS` or ``"other"``;
        ``description`` says in a few words what the file is ("a TorchScript file", "a text
        file", "a pickle in torch.save's legacy format", ...), for messages.

    Raises:
        DataError: the file cannot be read.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "notes.pt"
        >>> _ = p.write_text("weights are elsewhere")
        >>> identify(p)
        ('other', 'a text file')
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    if not head:
        return "other", "an empty file"
    if head.startswith(b"PK"):
        return _identify_zip(path)
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "other", "a pickle (torch.save's legacy format or pickle.dump), not a zip archive"
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return "other", what
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "other", "a WebP image"
    if head.startswith(b"BM") and len(head) > 14 and head[6:10] == b"\x00\x00\x00\x00":
        return "other", "a BMP image"
    if _looks_like_onnx(path):
        return "onnx", _DESCRIPTIONS["onnx"]
    if len(head) > 8 and head[8:9] == b"{" and b'"dtype"' in head:
        return "other", "a safetensors file"
    if _is_text(head):
        return "other", "a text file"
    return "other", "not a model file (unrecognised content)"


def _identify_zip(path: Path) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any(n.endswith("/archive_format") or n == "archive_format" for n in names):
                return "exported-program", _DESCRIPTIONS["exported-program"]
            if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
                return "torchscript", _DESCRIPTIONS["torchscript"]
            if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                return CHECKPOINT, "a torch.save file"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "other", "a truncated or damaged zip archive (not a readable checkpoint)"
    return "other", "a zip archive that no PyTorch writer made"


def verify_archive(path: str | Path) -> None:
    """Check the CRC-32 of every member of a PyTorch zip archive (checkpoint, TorchScript,
    exported program) against its bytes.

    Reading the file once more costs about what reading it costs (CRC-32 runs at memory speed);
    a content hash stored inside the file would cost a pass over every tensor at each save and
    load and catch no more accidental damage. Compressed members (TorchScript's code) may inflate
    to at most 256 MiB in all, so a crafted archive cannot make the check run long.

    Raises:
        DataError: truncated or damaged archive, a member whose bytes fail their CRC-32, or a
            file written without CRCs.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            inflated = sum(i.file_size for i in infos if i.compress_type != zipfile.ZIP_STORED)
            if inflated > _MAX_INFLATED:
                raise DataError(
                    f"{path}: its compressed members would inflate to {inflated} bytes "
                    f"(at most {_MAX_INFLATED}); not a file PyTorch wrote"
                )
            bad = zf.testzip()
    except DataError:
        raise
    except Exception as err:  # BadZipFile, OSError, EOFError, zlib.error, NotImplementedError
        raise DataError(f"{path}: truncated or damaged archive ({first_line(err)})") from None
    if bad is None:
        return
    if all(i.CRC == 0 for i in infos if i.file_size):
        raise DataError(
            f"{path}: written without CRC-32 checksums (torch.serialization.set_crc32_options"
            "(False)), so its integrity cannot be checked; save it again with them"
        )
    raise DataError(
        f"{path}: corrupted: member {bad} fails its CRC-32 check (changed since it was written)"
    )


def _looks_like_onnx(path: Path) -> bool:
    """Whether the file parses as an ONNX ``ModelProto`` at its top level: known field numbers
    with their wire types, an ``ir_version`` and a graph, and nothing left over. Only the field
    headers are read, through a memory map (nothing the fields declare is allocated)."""
    # field number -> wire type (0: varint, 2: length-delimited) of ModelProto
    fields = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
    seen = set()
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            pos, end = 0, len(data)
            while pos < end:
                key, pos = _varint(data, pos)
                number, wire = key >> 3, key & 7
                if fields.get(number) != wire:
                    return False
                value, pos = _varint(data, pos)
                if wire == 2:
                    pos += value
                    if pos > end:
                        return False
                seen.add(number)
    except (OSError, ValueError, IndexError):
        return False
    return pos == end and {1, 7} <= seen


def _varint(data: bytes | mmap.mmap, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut by the 4 KiB window
            return False
        text = head[: err.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
    return printable >= 0.95 * max(1, len(text))


def _pickled_globals(path: Path) -> list[str]:
    """The classes and functions the pickle of a ``torch.save`` archive refers to, other than the
    ones a weights-only load allows (read with :mod:`pickletools`, which runs nothing)."""
    allowed = ("torch._utils.", "torch.storage.", "collections.", "__builtin__.", "builtins.")
    found: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            member = next(n for n in zf.namelist() if n.endswith("data.pkl"))
            data = zf.read(member)
        strings: list[str] = []
        for op, arg, _ in _ops(data):
            if isinstance(arg, str):
                strings.append(arg)
            if op == "GLOBAL" and isinstance(arg, str):
                name = arg.replace(" ", ".")
            elif op == "STACK_GLOBAL" and len(strings) >= 2:
                name = f"{strings[-2]}.{strings[-1]}"
            else:
                continue
            if not name.startswith(allowed) and not name.endswith("Storage") and name not in found:
                found.append(name)
    except Exception:
        pass  # a pickle too damaged to walk: the caller reports the load error instead
    return found


def _ops(data: bytes) -> Iterator[tuple[str, Any, Any]]:
    for op, arg, pos in pickletools.genops(data):
        yield op.name, arg, pos
