"""``torchstn predict``: classify image (or volume) files with a checkpoint or an export of it.

Examples::

    torchstn predict runs/tc/checkpoint.pt digit.png photos/ --top-k 3
    torchstn predict tc.onnx digit.png --out predictions/
    torchstn predict tc.pt2 digit.png          # TorchScript (.pt) and exported programs too
    torchstn predict scans.onnx brain.nii.gz scans/ --out views/   # a model of volumes

The model file's kind is told from its content, not its name. A model of ``(C, D, H, W)``
volumes reads volume files instead of images (NIfTI, ``.npy``, ``.npz``: see
:mod:`torchstn.predict`), one JSON line per volume. Prints one JSON line per image on
stdout; an unreadable image gets one line on stderr and the exit status 1, the others are still
classified. Pictures that cannot be written (``--out`` on a full disk) do not stop the
predictions either: one line on stderr, no more pictures, every image's JSON line still printed
(``"outputs": null`` and ``output_error``), exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image (or volume) files with a checkpoint or an export of it",
        description="Print a JSON line per image: path, class, confidence, the top-k classes, "
        "the params of the first spatial transformer and how the image was fitted to the "
        "model's input. Folders are searched for image files (PNG, JPEG, BMP, GIF, WebP, TIFF). "
        "Images of any size and mode are converted to the model's channels (transparency over "
        "black) and fitted to its size. A model of volumes takes volume files instead (.nii, "
        ".nii.gz, .npy, .npz; a line per volume, FILE[i] for those of a stack). Exit status 1 "
        "if some file could not be read or its pictures could not be written (the other lines "
        "are still printed).",
    )
    p.add_argument(
        "model",
        help="checkpoint.pt, its run folder, or a file of torchstn export (ONNX, TorchScript, "
        "exported program; told apart by content)",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image (or volume) files or folders")
    p.add_argument(
        "--out", help="folder for STEM_rectified.png (the transformer's output) and STEM_grid.png"
    )
    p.add_argument("--top-k", type=int, default=5, help="classes listed per image (default 5)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    p.add_argument(
        "--fit",
        default=None,
        help="pad: keep the aspect ratio, pad with black (volumes: only shrunk, never "
        "enlarged); stretch: resize each side (default: as the model's training data was "
        "fitted, pad for generated tasks)",
    )
    p.add_argument("--weights", default="best", help="best (default) | last (checkpoints)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._checks import check_choice
    from ..errors import InvalidInputError
    from ..predict import FITS, Failure, find_images, find_volumes, open_predictor, predict

    if args.top_k < 1:
        raise InvalidInputError(f"--top-k: expected a positive number, got {args.top_k}")
    if args.fit is not None:
        check_choice(args.fit, "fit", FITS)
    if not args.inputs:
        raise InvalidInputError("no inputs: give image files or folders")
    predictor = open_predictor(args.model, weights=args.weights, device=args.device)
    volumes = len(predictor.in_shape) == 4  # (C, D, H, W): the model reads volume files
    paths = find_volumes(args.inputs) if volumes else find_images(args.inputs)
    if not paths:
        kind = "volume" if volumes else "image"
        raise InvalidInputError(f"no {kind} files in {', '.join(args.inputs)}")
    failed = 0
    reported = None
    for record in predict(predictor, paths, top_k=args.top_k, fit=args.fit, out_dir=args.out):
        if isinstance(record, Failure):
            failed += 1
            print(f"torchstn predict: {record.message}", file=sys.stderr, flush=True)
            continue
        if record.output_error is not None and reported is None:  # once: the first failure
            failed += 1
            reported = record.output_error
            print(f"torchstn predict: {reported}", file=sys.stderr, flush=True)
        print(json.dumps(record.to_dict()), flush=True)
    return 1 if failed else 0
