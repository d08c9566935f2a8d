"""A U-Net field predictor: the localisation net of a dense spatial transformer.

:class:`FieldUNet` maps ``(B, C, H, W)`` images (or ``(B, C, D, H, W)`` volumes) to feature
maps of the same spatial size (or half of it, ``half_res=True``); a dense
:class:`torchstn.SpatialTransformer` (family ``displacement``, ``velocity``, ``displacement3d``
or ``velocity3d``) adds the 3x3(x3) convolution to the field's ``N`` channels itself.

The layout is VoxelMorph's (Balakrishnan et al., 2019, the ``vm2`` network, its default):
one convolution per level, 3x3(x3) kernels with ``padding=1``, each followed by a LeakyReLU of
slope 0.2; the encoder convolves then max-pools by 2; the decoder convolves, up-samples by 2
(nearest neighbour) and concatenates the encoder's output of that resolution (the skip); the
decoder widths beyond the encoder's depth are extra convolutions at the final resolution. With
the default widths, encoder ``(16, 32, 32, 32)`` and decoder ``(32, 32, 32, 32, 32, 16, 16)``
(``sK``: the encoder's output at ``1/K`` of the resolution, kept as a skip)::

    encoder:  conv 16 (s1), pool, conv 32 (s2), pool, conv 32 (s4), pool, conv 32 (s8), pool
    decoder:  conv 32, up, cat s8, conv 32, up, cat s4, conv 32, up, cat s2, conv 32, up, cat s1
    extra:    conv 32, conv 16, conv 16                  (at full resolution: F = 16 channels)

``half_res=True`` (VoxelMorph's ``unet_half_res``) skips the last up-sampling and its skip, so
the extra convolutions and the field run at half resolution: the field of a ``velocity`` family
is then integrated on the half grid and resized to the image's (VoxelMorph's
``int_downsize=2``), for about a quarter (an eighth in 3-D) of the decoder's work.

Sizes:
    Any spatial size works, not only multiples of ``2**len(enc)``: the max-pooling rounds up
    (``ceil_mode=True``, a last odd row pooled alone) and each up-sampled map is cropped to
    its skip's size. Cropping the doubled map is nearest-neighbour interpolation to the skip's
    size (``floor(i / 2)`` is ``floor(i * ceil(n / 2) / n)`` for every ``i < n``), and it keeps
    pixel ``i`` of a level on top of the pixels ``2i`` and ``2i + 1`` it was pooled from. With
    ``half_res=True`` the output is ``ceil(n / 2)`` on a side of ``n``.

Example:
    >>> net = FieldUNet(2, ndim=2)
    >>> net(torch.zeros(1, 2, 28, 30)).shape
    torch.Size([1, 16, 28, 30])
    >>> FieldUNet(2, ndim=3, half_res=True)(torch.zeros(1, 2, 9, 16, 16)).shape
    torch.Size([1, 16, 5, 8, 8])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

__all__ = ["DEFAULT_DEC", "DEFAULT_ENC", "FieldUNet"]

#: VoxelMorph's default widths (its ``vm2`` network).
DEFAULT_ENC: tuple[int, ...] = (16, 32, 32, 32)
DEFAULT_DEC: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16)


def _widths(values: Sequence[int], name: str) -> tuple[int, ...]:
    """``values`` checked as a non-empty sequence of positive integers."""
    try:
        out = tuple(int(v) for v in values)
        ok = all(not isinstance(v, bool) and int(v) == v for v in values)
    except (TypeError, ValueError):
        ok, out = False, ()
    if not ok or not out or min(out) < 1:
        raise InvalidInputError(f"{name}: expected positive channel counts, got {values!r}")
    return out


class _ConvAct(nn.Sequential):
    """``ConvNd(k=3, padding=1) -> LeakyReLU``."""

    def __init__(self, ndim: int, cin: int, cout: int, slope: float) -> None:
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        super().__init__(conv(cin, cout, 3, padding=1), nn.LeakyReLU(slope))


class FieldUNet(nn.Module):
    """VoxelMorph-style U-Net: ``(B, in_channels, *spatial)`` to ``(B, out_channels, *spatial)``.

    See the module's notes for the layout and for sizes that are not multiples of
    ``2**len(enc)``.

    Args:
        in_channels: channels of the input (``2C`` for a moving and a fixed image of ``C``
            channels, concatenated).
        ndim: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        enc: widths of the encoder's convolutions, one per level (``len(enc)`` poolings).
        dec: widths of the decoder's convolutions: the first ``len(enc)`` one per level, the
            rest extra convolutions at the output resolution. At least ``len(enc)`` entries.
        half_res: skip the last up-sampling (and its skip connection): the output is at half
            the input's resolution, ``ceil(n / 2)`` on a side of ``n``.
        negative_slope: of the LeakyReLU after every convolution.

    Attributes:
        out_channels: ``F``, the channels of the output (``dec[-1]``, or with no extra
            convolutions the last decoder width plus the last skip's).

    Example:
        >>> net = FieldUNet(2, ndim=2, enc=(8, 16), dec=(16, 16, 8))
        >>> net(torch.zeros(3, 2, 17, 20)).shape, net.out_channels
        (torch.Size([3, 8, 17, 20]), 8)
    """

    def __init__(
        self,
        in_channels: int,
        ndim: int = 2,
        enc: Sequence[int] = DEFAULT_ENC,
        dec: Sequence[int] = DEFAULT_DEC,
        *,
        half_res: bool = False,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if isinstance(ndim, bool) or ndim not in (2, 3):
            raise InvalidInputError(f"ndim: expected 2 (images) or 3 (volumes), got {ndim!r}")
        if isinstance(in_channels, bool) or int(in_channels) != in_channels or in_channels < 1:
            raise InvalidInputError(
                f"in_channels: expected a positive integer, got {in_channels!r}"
            )
        self.in_channels, self.ndim = int(in_channels), int(ndim)
        self.enc, self.dec = _widths(enc, "enc"), _widths(dec, "dec")
        if len(self.dec) < len(self.enc):
            raise InvalidInputError(
                f"dec: expected at least len(enc) = {len(self.enc)} widths (one per level), "
                f"got {len(self.dec)}: {self.dec!r}"
            )
        self.half_res = bool(half_res)
        slope = float(negative_slope)
        levels = len(self.enc)

        self.encoder = nn.ModuleList()
        width, skips = self.in_channels, []
        for nf in self.enc:
            self.encoder.append(_ConvAct(self.ndim, width, nf, slope))
            width = nf
            skips.append(nf)
        self.decoder = nn.ModuleList()
        for level, nf in enumerate(self.dec[:levels]):
            self.decoder.append(_ConvAct(self.ndim, width, nf, slope))
            width = nf
            if self._joins(level):
                width += skips[levels - 1 - level]
        self.extra = nn.ModuleList()
        for nf in self.dec[levels:]:
            self.extra.append(_ConvAct(self.ndim, width, nf, slope))
            width = nf
        self.out_channels = width

    def _joins(self, level: int) -> bool:
        """Whether decoder ``level`` up-samples and takes its skip (all but, with
        ``half_res``, the last)."""
        return not self.half_res or level < len(self.enc) - 1

    def out_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the output for an input of spatial size ``size``."""
        return tuple(-(-int(n) // 2) if self.half_res else int(n) for n in size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` to ``(B, out_channels, *out_size(spatial))``."""
        if x.dim() != self.ndim + 2 or x.shape[1] != self.in_channels:
            layout = "(B, C, H, W)" if self.ndim == 2 else "(B, C, D, H, W)"
            raise InvalidInputError(
                f"x: expected {layout} with C = {self.in_channels}, got {tuple(x.shape)}"
            )
        pool = F.max_pool3d if self.ndim == 3 else F.max_pool2d
        skips: list[torch.Tensor] = []
        for conv in self.encoder:
            x = conv(x)
            skips.append(x)
            x = pool(x, 2, ceil_mode=True)
        for level, conv in enumerate(self.decoder):
            x = conv(x)
            skip = skips.pop()
            if self._joins(level):
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
                x = _crop(x, skip.shape[2:])
                x = torch.cat((x, skip), 1)
        for conv in self.extra:
            x = conv(x)
        return x

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, ndim={self.ndim}, enc={self.enc}, "
            f"dec={self.dec}, half_res={self.half_res}"
        )


def _crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The first ``size`` entries of each spatial axis of ``x`` (at least ``size`` already)."""
    if len(size) == 3:
        return x[:, :, : size[0], : size[1], : size[2]]
    return x[:, :, : size[0], : size[1]]
