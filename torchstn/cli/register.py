"""``torchstn register``: apply a trained registration run to image or volume files.

Examples::

    torchstn register runs/reg_mnist digit.png more_digits/ --fixed atlas.png
    torchstn register runs/brains scans/ --fixed template.nii.gz --out registered/
    torchstn register runs/brains scan.nii.gz            # the run's atlas.nii.gz, if it has one
    torchstn register runs/reg_mnist d.npy --fixed f.npy --field-convention monai

Writes, per moving file, ``STEM_warped`` (PNG, NIfTI or ``.npy``, as the input), ``STEM_field``
(the displacement in pixels), ``STEM_jacobian`` and ``STEM.json`` into ``--out`` (default
``RUN/registered/``), each atomically, and prints the record as one JSON line (see
:mod:`torchstn.registration.apply`). A file that cannot be used gets one line on stderr and the
others are still registered; the exit status is then 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "register",
        help="register image or volume files with a trained registration run",
        description="Warp each moving file onto the fixed one with the run's model and write "
        "the warped image (PNG, NIfTI with the fixed file's affine, or .npy, as the input), the "
        "displacement field in pixels, its Jacobian determinant and a JSON record (folded share, "
        "Jacobian min/max/mean/std, seconds, sizes, fit) per file; print the record as a JSON "
        "line. A model of images takes image files and .npy arrays; a model of volumes NIfTI, "
        ".npy and .npz volumes. Moving and fixed images need one size; a size other than the "
        "model's is fitted as predict fits it and the field resized back (units rescaled). "
        "Exit status 2 if some file could not be registered (the others still are).",
    )
    p.add_argument("run", help="the run folder of a registration run, or its checkpoint.pt")
    p.add_argument("moving", nargs="+", metavar="MOVING", help="moving files or folders")
    p.add_argument(
        "--fixed",
        help="the fixed image (default: the run's atlas.nii.gz, for a run trained on a NIfTI "
        "folder in atlas mode)",
    )
    p.add_argument("--out", help="output folder (default: RUN/registered)")
    p.add_argument(
        "--field-convention",
        default="torchstn",
        help="torchstn (default: channels x, y[, z], x along W), monai (index order) or "
        "voxelmorph (index order, channels last) for .npy fields; NIfTI fields are along the "
        "file's i, j, k axes, which is all three",
    )
    p.add_argument(
        "--fit",
        default=None,
        help="pad or stretch: how a size other than the model's is fitted (default: the run's)",
    )
    p.add_argument("--weights", default="best", help="best (default) | last")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._checks import check_choice
    from ..errors import InvalidInputError
    from ..registration.apply import (
        FIELD_CONVENTIONS,
        Failure,
        find_inputs,
        open_registration,
        register_files,
    )

    check_choice(args.field_convention, "field_convention", FIELD_CONVENTIONS)
    registrar = open_registration(args.run, weights=args.weights, device=args.device)
    paths = find_inputs(args.moving, volumes=len(registrar.in_shape) == 4)
    if not paths:
        raise InvalidInputError(f"no input files in {', '.join(args.moving)}")
    run_dir = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else run_dir / "registered"
    failed = 0
    for record in register_files(
        registrar,
        paths,
        args.fixed,
        out_dir=out,
        fit=args.fit,
        field_convention=args.field_convention,
    ):
        if isinstance(record, Failure):
            failed += 1
            print(f"torchstn register: {record.message}", file=sys.stderr, flush=True)
            continue
        print(json.dumps(record.to_dict()), flush=True)
    return 2 if failed else 0
