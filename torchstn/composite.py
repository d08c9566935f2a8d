"""Several spatial transformers: in parallel (N heads) or in series."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import torch
from torch import nn

from .errors import InvalidInputError
from .module import SpatialTransformer

__all__ = ["ParallelOutput", "ParallelTransformers", "SequentialOutput", "SequentialTransformers"]

_COMBINE = ("concat", "list")


class ParallelOutput(NamedTuple):
    """What ``ParallelTransformers.forward(x, return_params=True)`` returns; unpacks as
    ``y, params = par(x, return_params=True)``.

    Attributes:
        output: ``(B, N C, Ho, Wo)`` with ``combine="concat"``, or a list of the ``N`` heads'
            ``(B, C, Ho_i, Wo_i)`` outputs with ``combine="list"``.
        params: the ``N`` heads' ``(B, P_i)`` params, in head order.
    """

    output: torch.Tensor | list[torch.Tensor]
    params: list[torch.Tensor]


class SequentialOutput(NamedTuple):
    """What ``SequentialTransformers.forward(x, return_params=True)`` returns; unpacks as
    ``y, params = seq(x, return_params=True)``.

    Attributes:
        output: ``(B, C, Ho, Wo)`` the last transformer's output.
        params: each stage's ``(B, P_i)`` params, in order.
    """

    output: torch.Tensor
    params: list[torch.Tensor]


class ParallelTransformers(nn.Module):
    """``N`` spatial transformers looking at the same input, each with its own localisation net.

    Args:
        heads: the transformers; all take the same ``in_shape``. With ``combine="concat"`` they
            must share ``out_size`` and the outputs are concatenated on channels.
        combine: ``"concat"`` gives ``(B, N C, Ho, Wo)``; ``"list"`` gives a list of ``N`` tensors.

    Example:
        >>> heads = [SpatialTransformer((1, 42, 42), "affine") for _ in range(2)]
        >>> par = ParallelTransformers(heads)
        >>> par(torch.rand(3, 1, 42, 42)).shape
        torch.Size([3, 2, 42, 42])
        >>> y, params = par(torch.rand(3, 1, 42, 42), return_params=True)
        >>> [tuple(p.shape) for p in params]
        [(3, 6), (3, 6)]
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

    @overload
    def forward(
        self, x: torch.Tensor, return_params: Literal[False] = False
    ) -> torch.Tensor | list[torch.Tensor]: ...
    @overload
    def forward(self, x: torch.Tensor, return_params: Literal[True]) -> ParallelOutput: ...
    @overload
    def forward(
        self, x: torch.Tensor, return_params: bool
    ) -> torch.Tensor | list[torch.Tensor] | ParallelOutput: ...
    def forward(
        self, x: torch.Tensor, return_params: bool = False
    ) -> torch.Tensor | list[torch.Tensor] | ParallelOutput:
        """Run every head on ``x`` ``(B, C, H, W)``.

        Returns:
            ``(B, N C, Ho, Wo)`` (``combine="concat"``) or a list of ``N`` outputs
            (``combine="list"``); with ``return_params=True`` a :class:`ParallelOutput`
            ``(output, params)`` that also holds the heads' params.
        """
        results = [head(x, return_params=True) for head in self.heads]
        outs = [r.output for r in results]
        y = torch.cat(outs, dim=1) if self.combine == "concat" else outs
        return ParallelOutput(y, [r.params for r in results]) if return_params else y

    if TYPE_CHECKING:  # what mypy sees of ``par(x, ...)``: forward's overloads

        @overload
        def __call__(
            self, x: torch.Tensor, return_params: Literal[False] = False
        ) -> torch.Tensor | list[torch.Tensor]: ...
        @overload
        def __call__(self, x: torch.Tensor, return_params: Literal[True]) -> ParallelOutput: ...
        @overload
        def __call__(
            self, x: torch.Tensor, return_params: bool
        ) -> torch.Tensor | list[torch.Tensor] | ParallelOutput: ...
        def __call__(
            self, x: torch.Tensor, return_params: bool = False
        ) -> torch.Tensor | list[torch.Tensor] | ParallelOutput: ...

    def extra_repr(self) -> str:
        return f"n={len(self.heads)}, combine={self.combine!r}"


class SequentialTransformers(nn.Sequential):
    """Spatial transformers applied one after the other, each to the previous one's output.

    Built with a check that each transformer's ``in_shape`` is the previous ``out_shape``.

    Example:
        >>> a = SpatialTransformer((1, 60, 60), "attention", out_size=(40, 40))
        >>> b = SpatialTransformer((1, 40, 40), "affine", out_size=(28, 28))
        >>> seq = SequentialTransformers(a, b)
        >>> seq(torch.rand(2, 1, 60, 60)).shape
        torch.Size([2, 1, 28, 28])
        >>> y, params = seq(torch.rand(2, 1, 60, 60), return_params=True)
        >>> [tuple(p.shape) for p in params]
        [(2, 3), (2, 6)]
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

    @overload
    def forward(self, x: torch.Tensor, return_params: Literal[False] = False) -> torch.Tensor: ...
    @overload
    def forward(self, x: torch.Tensor, return_params: Literal[True]) -> SequentialOutput: ...
    @overload
    def forward(self, x: torch.Tensor, return_params: bool) -> torch.Tensor | SequentialOutput: ...
    def forward(
        self, x: torch.Tensor, return_params: bool = False
    ) -> torch.Tensor | SequentialOutput:
        """Apply the transformers in turn to ``x`` ``(B, C, H, W)``.

        Returns:
            The last ``(B, C, Ho, Wo)`` output; with ``return_params=True`` a
            :class:`SequentialOutput` ``(output, params)`` that also holds each stage's params.
        """
        params = []
        for stage in self:
            x, p = stage(x, return_params=True)
            params.append(p)
        return SequentialOutput(x, params) if return_params else x

    if TYPE_CHECKING:  # what mypy sees of ``seq(x, ...)``: forward's overloads

        @overload
        def __call__(
            self, x: torch.Tensor, return_params: Literal[False] = False
        ) -> torch.Tensor: ...
        @overload
        def __call__(self, x: torch.Tensor, return_params: Literal[True]) -> SequentialOutput: ...
        @overload
        def __call__(
            self, x: torch.Tensor, return_params: bool
        ) -> torch.Tensor | SequentialOutput: ...
        def __call__(
            self, x: torch.Tensor, return_params: bool = False
        ) -> torch.Tensor | SequentialOutput: ...
