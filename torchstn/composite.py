"""Several spatial transformers: in parallel (N heads) or in series."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import InvalidInputError
from .module import SpatialTransformer

__all__ = ["ParallelTransformers", "SequentialTransformers"]

_COMBINE = ("concat", "list")


class ParallelTransformers(nn.Module):
    """``N`` spatial transformers looking at the same input, each with its own localisation net.

    Args:
        heads: the transformers; all take the same ``in_shape``. With ``combine="concat"`` they
            must share ``out_size`` and the outputs are concatenated on channels.
        combine: ``"concat"`` gives ``(B, N C, Ho, Wo)``; ``"list"`` gives a list of ``N`` tensors.

    Example:
        >>> heads = [SpatialTransformer((1, 42, 42), "affine") for _ in range(2)]
        >>> ParallelTransformers(heads)(torch.rand(3, 1, 42, 42)).shape
        torch.Size([3, 2, 42, 42])
    """

    def __init__(self, heads: Sequence[SpatialTransformer], combine: str = "concat") -> None:
        super().__init__()
        heads = list(heads)
        if not heads or not all(isinstance(h, SpatialTransformer) for h in heads):
            raise InvalidInputError("heads: expected a non-empty sequence of SpatialTransformer")
        if combine not in _COMBINE:
            raise InvalidInputError(
                f"combine: expected one of {', '.join(_COMBINE)}, got {combine!r}"
            )
        shapes = {h.in_shape for h in heads}
        if len(shapes) > 1:
            raise InvalidInputError(f"heads: all must take the same in_shape, got {sorted(shapes)}")
        if combine == "concat" and len({h.out_size for h in heads}) > 1:
            raise InvalidInputError("heads: combine='concat' needs one out_size for all heads")
        self.heads = nn.ModuleList(heads)
        self.combine = combine

    @classmethod
    def replicate(
        cls, n: int, *args: Any, combine: str = "concat", **kwargs: Any
    ) -> ParallelTransformers:
        """``n`` independent heads built with ``SpatialTransformer(*args, **kwargs)``."""
        if not (isinstance(n, int) and n >= 1):
            raise InvalidInputError(f"n: expected a positive int, got {n!r}")
        return cls([SpatialTransformer(*args, **kwargs) for _ in range(n)], combine=combine)

    def forward(self, x: torch.Tensor) -> Any:
        outs = [head(x) for head in self.heads]
        return torch.cat(outs, dim=1) if self.combine == "concat" else outs

    def extra_repr(self) -> str:
        return f"n={len(self.heads)}, combine={self.combine!r}"


class SequentialTransformers(nn.Sequential):
    """Spatial transformers applied one after the other, each to the previous one's output.

    Built with a check that each transformer's ``in_shape`` is the previous ``out_shape``.

    Example:
        >>> a = SpatialTransformer((1, 60, 60), "attention", out_size=(40, 40))
        >>> b = SpatialTransformer((1, 40, 40), "affine", out_size=(28, 28))
        >>> SequentialTransformers(a, b)(torch.rand(2, 1, 60, 60)).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, *transformers: SpatialTransformer) -> None:
        if not transformers or not all(isinstance(t, SpatialTransformer) for t in transformers):
            raise InvalidInputError("expected one or more SpatialTransformer modules")
        for i, (prev, nxt) in enumerate(itertools.pairwise(transformers)):
            if prev.out_shape != nxt.in_shape:
                raise InvalidInputError(
                    f"transformer {i + 1} takes {nxt.in_shape} but transformer {i} gives {prev.out_shape}"
                )
        super().__init__(*transformers)
