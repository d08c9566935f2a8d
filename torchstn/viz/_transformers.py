"""Which transformers of a model read its input, and what they make of it: shared by the figures
of images (:mod:`torchstn.viz.transformer`) and of volumes (:mod:`torchstn.viz.volumes`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import TorchSTNError
from ..module import SpatialTransformer, TransformerOutput
from ..preprocess import Normalize, input_normalizer

__all__ = ["input_transformers", "transformer_outputs"]


def input_transformers(model: nn.Module, in_shape: Sequence[int]) -> list[SpatialTransformer]:
    """The :class:`SpatialTransformer` modules of ``model`` that take ``(C, H, W)`` (or
    ``(C, D, H, W)``) ``in_shape`` inputs (those that can read the model's input directly), in
    module order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, SpatialTransformer) and m.in_shape == tuple(in_shape)
    ]


@torch.no_grad()
def transformer_outputs(
    model: nn.Module, x: torch.Tensor
) -> tuple[list[SpatialTransformer], list[TransformerOutput]]:
    """The transformers of ``model`` that read ``x`` (images or volumes) directly, and each one's
    ``(output, params)`` on it, in eval mode. A model with normalisation (``torchstn.load`` of a
    run with ``data.normalize``) normalises before its transformers: they see, and output,
    normalised inputs, returned here back in ``[0, 1]`` for drawing.

    Raises:
        TorchSTNError: no transformer of ``model`` reads ``x``.
    """
    sts = input_transformers(model, x.shape[1:])
    if not sts:
        raise TorchSTNError("the model has no spatial transformer that reads its input")
    was = model.training
    model.eval()
    try:
        norm = input_normalizer(model)
        outs = [st(norm(x), return_params=True) for st in sts]
    finally:
        model.train(was)
    if isinstance(norm, Normalize):
        outs = [o._replace(output=o.output * norm.std + norm.mean) for o in outs]
    return sts, outs
