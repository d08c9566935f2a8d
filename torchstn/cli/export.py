"""``torchstn export``: a checkpoint's model (or its transformer) as ONNX, TorchScript or a
``torch.export`` program, with a dynamic batch size. The model of a ``registration`` run exports
whole: inputs ``moving`` and ``fixed``, outputs ``warped``, ``field`` and ``params``.

Examples::

    torchstn export runs/tc/checkpoint.pt --format onnx --out tc.onnx
    torchstn export runs/tc --format torchscript --out tc_st.pt --part transformer
    torchstn export runs/tc --format exported-program --out tc.pt2 --weights last
    torchstn export runs/vol --out vol.onnx --sampler gather --opset 17   # no 5-D GridSample
    torchstn export runs/reg3d --out reg3d.onnx         # (moving, fixed) -> (warped, field, params)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    from ..export import DEFAULT_OPSET, FORMATS, MIN_OPSET, PARTS, SAMPLERS, VOLUME_OPSET

    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, TorchScript or a torch.export program",
        description="Export the model of a checkpoint (input (B, C, H, W) floats in [0, 1], "
        "or (B, C, D, H, W) volumes; dynamic batch) with its metadata, check the written file "
        "against the model at two batch sizes, and print a JSON line describing it. The model "
        "part outputs the logits and the params of its first spatial transformer (if it has "
        "one); the transformer part outputs the rectified image (or volume) and the params. "
        "The model of a registration run takes two inputs, moving and fixed (one shared batch "
        "size), and outputs the warped image, the field (displacement in pixels) and the params.",
    )
    p.add_argument("checkpoint", help="checkpoint.pt or its run folder")
    p.add_argument(
        "--format",
        help=f"{' | '.join(FORMATS)} (default: from the suffix of --out: .onnx, .pt, .pt2)",
    )
    p.add_argument("--out", required=True, help="the file to write (atomically)")
    p.add_argument(
        "--opset",
        type=int,
        help=f"ONNX opset (default {DEFAULT_OPSET}, at least {MIN_OPSET} for GridSample; "
        f"volumes: default and least {VOLUME_OPSET} for a 5-D GridSample, with --sampler "
        "gather: 16 and up)",
    )
    p.add_argument(
        "--sampler",
        help=f"{' | '.join(SAMPLERS)}: how ONNX samples volumes (default grid_sample, ONNX's "
        "GridSample; gather: plain operators, for runtimes without a 5-D GridSample)",
    )
    p.add_argument("--part", default="model", help=f"{' | '.join(PARTS)} (default: model)")
    p.add_argument("--weights", default="best", help="best (default) | last")
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not run the written file against the model",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._checks import check_choice
    from ..errors import InvalidInputError
    from ..export import FORMATS, PARTS, SAMPLERS, export_checkpoint, format_of

    fmt = check_choice(args.format, "format", FORMATS) if args.format else format_of(args.out)
    check_choice(args.part, "part", PARTS)
    for flag in ("opset", "sampler"):
        if getattr(args, flag) is not None and fmt != "onnx":
            raise InvalidInputError(f"--{flag}: applies to --format onnx only, not {fmt}")
    sampler = "grid_sample" if args.sampler is None else args.sampler
    check_choice(sampler, "sampler", SAMPLERS)
    result = export_checkpoint(
        args.checkpoint,
        args.out,
        fmt,
        part=args.part,
        weights=args.weights,
        opset=args.opset,
        sampler=sampler,
        verify=args.verify,
    )
    print(json.dumps({"checkpoint": str(args.checkpoint), **result.to_dict()}))
    return 0
