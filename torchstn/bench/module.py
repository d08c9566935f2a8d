"""The module against a hand-written transformer with the same localisation net.

The hand-written transformer is the PyTorch tutorial's: ``theta = head(loc(x)).view(-1, 2, 3)``,
then ``F.affine_grid`` and ``F.grid_sample``. It shares the localisation net and the head of our
:class:`torchstn.SpatialTransformer` (the same weights), so the ratio is the cost of everything
the module adds: input checks, the finite check of the params, the bounds, the family's grid
generator and the validated sampler.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import set_finite_checks
from ..localization import ConvLocalization, FCLocalization
from ..module import SpatialTransformer
from .timing import Settings, compare

__all__ = ["COLUMNS", "DESCRIPTION", "TITLE", "HandWritten", "run"]

TITLE = "The module against a hand-written transformer"
DESCRIPTION = """
`SpatialTransformer(in_shape, "affine", out_size, localization=loc)` against the PyTorch
tutorial's transformer written by hand around the *same* localisation net and head (shared
weights): `theta = head(loc(x)).view(-1, 2, 3)`, `F.affine_grid`, `F.grid_sample`.
`fwd+bwd` back-propagates a fixed gradient to the input and every weight. The localisation nets
are the ones the paper's models use (convolutional on 60x60, three hidden layers of 32 on 28x28
and 42x42). The last ratio switches off the module's NaN/Inf check of the params
(`torchstn.set_finite_checks(False)`, as `torchstn train` does in its steps): on a GPU that check
waits for the device. Target: ratio at most 1.05.
"""
COLUMNS = (
    ("case", "case", ""),
    ("input", "input", ""),
    ("output", "output", ""),
    ("fwd_ms", "module fwd ms", ".2f"),
    ("base_fwd_ms", "hand-written fwd ms", ".2f"),
    ("fwd_ratio", "fwd ratio", ".3f"),
    ("fwd_bwd_ms", "module fwd+bwd ms", ".2f"),
    ("base_fwd_bwd_ms", "hand-written fwd+bwd ms", ".2f"),
    ("fwd_bwd_ratio", "fwd+bwd ratio", ".3f"),
    ("unchecked_ratio", "fwd+bwd ratio, finite checks off", ".3f"),
    ("max_abs_diff", "max difference", ".1e"),
)

#: (case, B, C, H, W, H_out, W_out, localisation kind)
CASES = (
    ("cluttered ST-CNN", 256, 1, 60, 60, 60, 60, "conv"),
    ("RTS ST-FCN", 256, 1, 42, 42, 42, 42, "fc"),
    ("rotated ST-FCN", 256, 1, 28, 28, 28, 28, "fc"),
)
QUICK_CASES = (("quick", 4, 1, 16, 16, 12, 12, "fc"),)


class HandWritten(nn.Module):
    """The tutorial's transformer around ``st``'s localisation net and head."""

    def __init__(self, st: SpatialTransformer) -> None:
        super().__init__()
        self.localization = st.localization
        self.head = st.head
        self.out_size = st.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.head(self.localization(x)).view(-1, 2, 3)
        size = [x.shape[0], x.shape[1], *self.out_size]
        grid = F.affine_grid(theta, size, align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)


class _Unchecked(nn.Module):
    """``st`` called with the finite checks switched off."""

    def __init__(self, st: nn.Module) -> None:
        super().__init__()
        self.st = st

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with set_finite_checks(False):
            return self.st(x)  # type: ignore[no-any-return]


def _fwd_bwd(model: nn.Module, x: torch.Tensor, upstream: torch.Tensor) -> Any:
    xg = x.detach().requires_grad_(True)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        xg.grad = None
        model(xg).backward(upstream)

    return step


def run(settings: Settings) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    for case, b, c, h, w, ho, wo, kind in QUICK_CASES if settings.quick else CASES:
        torch.manual_seed(0)
        shape = (c, h, w)
        loc = ConvLocalization(shape, (20, 20), 20, 2) if kind == "conv" else FCLocalization(shape)
        st = SpatialTransformer(shape, "affine", (ho, wo), localization=loc)
        with torch.no_grad():  # a transformer that has learned something, not the identity
            st.head.weight.normal_(0.0, 0.01, generator=gen)
        st = st.to(settings.device)
        hand = HandWritten(st)
        x = torch.rand(b, c, h, w, generator=gen).to(settings.device)
        with torch.no_grad():
            ours_out, hand_out = st(x), hand(x)
            t = compare({"ours": partial(st, x), "hand": partial(hand, x)}, settings)
        fwd, base_fwd = t["ours"], t["hand"]
        upstream = torch.randn_like(ours_out)
        unchecked_st = _Unchecked(st)  # what the NaN/Inf check of the params costs
        tb = compare(
            {
                "ours": _fwd_bwd(st, x, upstream),
                "hand": _fwd_bwd(hand, x, upstream),
                "unchecked": _fwd_bwd(unchecked_st, x, upstream),
            },
            settings,
        )
        fwd_bwd, base_fwd_bwd, unchecked = tb["ours"], tb["hand"], tb["unchecked"]
        rows.append(
            {
                "case": case,
                "input": f"{b}x{c}x{h}x{w}",
                "output": f"{ho}x{wo}",
                "fwd_ms": fwd.ms(),
                "base_fwd_ms": base_fwd.ms(),
                "fwd_ratio": fwd.median / base_fwd.median,
                "fwd_bwd_ms": fwd_bwd.ms(),
                "base_fwd_bwd_ms": base_fwd_bwd.ms(),
                "fwd_bwd_ratio": fwd_bwd.median / base_fwd_bwd.median,
                "unchecked_ratio": unchecked.median / base_fwd_bwd.median,
                "max_abs_diff": float((ours_out - hand_out).abs().max()),
            }
        )
    worst = max(max(float(r["fwd_ratio"]), float(r["fwd_bwd_ratio"])) for r in rows)
    return {
        "rows": rows,
        "headline": [f"the module costs at most {worst:.2f}x a hand-written transformer"],
    }
