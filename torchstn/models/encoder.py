"""The co-localisation model: an attention spatial transformer followed by a CNN encoder.

``st_attention_encoder`` crops a window ``(s, tx, ty)`` out of the image (a
:class:`~torchstn.SpatialTransformer` with the ``"attention"`` transform and a 28 x 28 output) and
embeds the crop with a small CNN; see :mod:`torchstn.colocalization` for how it is trained.

The localisation net is a spatial soft-argmax: a small fully convolutional net scores every
position of a coarse grid, and the features are the ``(x, y)`` expectation of the softmax of the
scores (normalised coordinates, ``align_corners=False``). Finding "where the common object is"
then means learning what it looks like, the same filters serving every position. The transformer's
final layer reads that position as the translation (weight 1, or ``1 / max_translation`` under a
bound), and the score layer starts at zero: a flat score map, whose expectation is the image
centre, so training starts from the centred window at the initial scale of the bound (a tenth of
the range inside ``hi`` when ``hi < 1``: see :meth:`torchstn.transforms.Transform.raw_identity`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_size
from ..errors import InvalidInputError
from ..module import SpatialTransformer
from .registry import register_model

__all__ = ["AttentionEncoder", "ConvEncoder", "SoftArgmaxLocalization"]

#: the default window-size bounds ``(lo, hi)`` (half-size, normalised): about the 28 px digit of an
#: 84 px canvas (``s = 1 / 3``); the transformer starts at 0.354, a tenth of the range below ``hi``.
DEFAULT_SCALE_RANGE = (0.3, 0.36)


class SoftArgmaxLocalization(nn.Module):
    """Fully convolutional score map and its soft-argmax: ``(B, C, H, W)`` -> ``(B, 2)``.

    ``max-pool downsample -> conv 5x5 -> ReLU -> max-pool 2 -> conv 5x5 -> ReLU -> conv 3x3 ->
    ReLU -> conv 1x1`` (one score channel, zero-initialised), times a learned gain ``exp(log_gain)``;
    the output is the expected ``(x, y)`` of the softmax over the score grid, each cell at its
    centre in the normalised frame of the input (``align_corners=False``; exact when the pooling
    factors divide the input size). The receptive field of a score is about 36 px at
    ``downsample=2``: the size of a digit.

    Args:
        in_shape: ``(C, H, W)`` of the input.
        channels: filters of the three conv layers.
        downsample: max-pooling factor applied to the input first.

    Example:
        >>> loc = SoftArgmaxLocalization((1, 84, 84))
        >>> xy = loc(torch.rand(2, 1, 84, 84))  # a flat score map at the start: the centre
        >>> xy.shape, bool(xy.abs().max() < 1e-6)
        (torch.Size([2, 2]), True)
    """

    out_features = 2

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (16, 16, 16),
        downsample: int = 2,
    ) -> None:
        super().__init__()
        c = int(in_shape[0])
        check_size(tuple(in_shape[1:]), "in_shape")
        try:
            c1, c2, c3 = (int(v) for v in channels)
        except (TypeError, ValueError):
            raise InvalidInputError(f"channels: expected three ints, got {channels!r}") from None
        if min(c1, c2, c3) < 1 or int(downsample) < 1:
            raise InvalidInputError(
                f"channels and downsample must be positive, got {channels!r} and {downsample!r}"
            )
        layers: list[nn.Module] = []
        if int(downsample) > 1:
            layers.append(nn.MaxPool2d(int(downsample), ceil_mode=True))
        layers += [
            nn.Conv2d(c, c1, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        self.features = nn.Sequential(*layers)
        self.score = nn.Conv2d(c3, 1, 1, bias=False)
        self.log_gain = nn.Parameter(torch.zeros(()))
        self.reset_score()

    def reset_score(self) -> None:
        """Zero the score layer: a flat score map, whose soft-argmax is the image centre."""
        with torch.no_grad():
            nn.init.zeros_(self.score.weight)

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, h, w)`` of the coarse grid for images ``(B, C, H, W)``."""
        return (self.score(self.features(x)) * self.log_gain.exp())[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.score_map(x)  # (B, h, w)
        b, h, w = scores.shape
        prob = scores.reshape(b, -1).softmax(-1).reshape(b, h, w)
        xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) * 2 + 1) / w - 1
        ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) * 2 + 1) / h - 1
        return torch.stack(((prob.sum(1) * xs).sum(-1), (prob.sum(2) * ys).sum(-1)), dim=-1)


class ConvEncoder(nn.Sequential):
    """Small CNN embedding: ``conv 5x5 -> max-pool 2 -> ReLU -> conv 5x5 -> max-pool 2 -> ReLU ->
    linear -> ReLU -> linear``, ``(B, C, H, W)`` -> ``(B, embedding_dim)``.

    Example:
        >>> ConvEncoder((1, 28, 28), 32)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 32])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        embedding_dim: int,
        channels: Sequence[int] = (16, 32),
        hidden: int = 64,
    ) -> None:
        c = int(in_shape[0])
        h, w = check_size(tuple(in_shape[1:]), "in_shape")
        c1, c2 = (int(v) for v in channels)
        conv: list[nn.Module] = [
            nn.Conv2d(c, c1, 5, padding=2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 5, padding=2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        ]
        with torch.no_grad():
            width = nn.Sequential(*conv)(torch.zeros(1, c, h, w)).shape[1]
        super().__init__(
            *conv,
            nn.Linear(width, int(hidden)),
            nn.ReLU(inplace=True),
            nn.Linear(int(hidden), int(embedding_dim)),
        )


class AttentionEncoder(nn.Module):
    """``encoder(transformer(x))``: embeddings ``(B, D)`` of the crops the transformer picks.

    Args:
        transformer: a :class:`SpatialTransformer` with the ``"attention"`` transform.
        encoder: maps the ``(B, C, Ho, Wo)`` crops to ``(B, D)`` embeddings.

    Example:
        >>> model = build_st_attention_encoder((1, 84, 84), 32)
        >>> x = torch.rand(4, 1, 84, 84)
        >>> model(x).shape, model.crop(x)[0].shape, model.localize(x).shape
        (torch.Size([4, 32]), torch.Size([4, 1, 28, 28]), torch.Size([4, 3]))
    """

    def __init__(self, transformer: SpatialTransformer, encoder: nn.Module) -> None:
        super().__init__()
        if transformer.transform.name != "attention":
            raise InvalidInputError(
                f"transformer: expected the 'attention' transform, got {transformer.transform.name!r}"
            )
        self.transformer = transformer
        self.encoder = encoder

    def localize(self, x: torch.Tensor) -> torch.Tensor:
        """Attention params ``(B, 3)`` = ``(s, tx, ty)`` for images ``(B, C, H, W)``."""
        return self.transformer.localize(x)

    def crop(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The crops ``(B, C, Ho, Wo)`` and their params ``(B, 3)``."""
        params = self.transformer.localize(x)
        return self.transformer.transform_input(x, params), params

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of crops ``(B, C, Ho, Wo)``."""
        return self.encoder(crops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.transformer(x))


@register_model("st_attention_encoder")
def build_st_attention_encoder(
    in_shape: Sequence[int],
    num_classes: int,
    out_size: Sequence[int] | int = (28, 28),
    scale_range: Sequence[float] = DEFAULT_SCALE_RANGE,
    max_translation: float | None = None,
    loc_channels: Sequence[int] = (16, 16, 16),
    loc_downsample: int = 2,
    channels: Sequence[int] = (16, 32),
    hidden: int = 64,
) -> AttentionEncoder:
    """The co-localisation model (see the module docstring).

    Args:
        in_shape: ``(C, H, W)`` of the images.
        num_classes: the *embedding dimension* ``D`` (the model outputs ``(B, D)`` embeddings,
            not class scores; the name is the registry's).
        out_size: ``(Ho, Wo)`` of the crop (the paper: 28 x 28).
        scale_range: ``(lo, hi)`` bounds of the window half-size ``s`` (normalised); the
            transformer starts at the identity scale when it lies well inside, else a tenth of
            the range inside the bound nearer to it (``hi - 0.1 (hi - lo)`` when ``hi < 1``).
        max_translation: optional bound of ``|tx|``, ``|ty|`` (the soft-argmax keeps the window
            centre inside the image anyway).
        loc_channels, loc_downsample: of :class:`SoftArgmaxLocalization`.
        channels, hidden: of :class:`ConvEncoder`.
    """
    options: dict[str, Any] = {"scale_range": tuple(scale_range)}
    if max_translation is not None:
        options["max_translation"] = max_translation
    loc = SoftArgmaxLocalization(in_shape, loc_channels, loc_downsample)
    st = SpatialTransformer(
        in_shape, "attention", out_size=out_size, localization=loc, transform_options=options
    )
    gain = 1.0 if st.transform.max_translation is None else 1.0 / st.transform.max_translation
    with torch.no_grad():  # the head reads the soft-argmax (x, y) as the translation
        for feature, index in enumerate(st.transform.translation_indices):
            st.head.weight[index, feature] = gain
    encoder = ConvEncoder(st.out_shape, num_classes, channels, hidden)
    return AttentionEncoder(st, encoder)
