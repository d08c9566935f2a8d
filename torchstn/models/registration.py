"""Registration models: a moving and a fixed image in, the warped moving image and its field out.

A :class:`RegistrationNet` wraps a :class:`torchstn.SpatialTransformer` whose localisation net
reads the pair concatenated along the channels, ``cat(moving, fixed)`` (``2C`` channels), and
whose transform warps the moving image alone. ``forward(moving, fixed)`` returns a
:class:`Registration` ``(warped, field, params)``: ``field`` the displacement in pixels at the
image's size (the :mod:`torchstn.fields` convention, ``warped ~ fields.warp(moving, field)``),
``params`` what the transformer predicted (a velocity or displacement field at the field's own
resolution for the dense families, the ``(B, P)`` vector of a matrix family).

Registered models (``in_shape`` is ``(C, H, W)`` or ``(C, D, H, W)`` of ONE image; the
registry's ``num_classes`` is unused):

- ``reg_unet``: VoxelMorph, a :class:`~torchstn.models.unet.FieldUNet` predicting a
  ``displacement`` or ``velocity`` field (``field=``, integrated in ``steps`` squarings), at
  the image's resolution or at half of it (``downsize=2``: every side must then be even).
- ``reg_affine``: an affine-only registration (``affine`` or ``affine3d``) with a small
  convolutional encoder, :class:`PairEncoder`.

Example:
    >>> from torchstn.models import create_model
    >>> model = create_model("reg_unet", (1, 16, 16), 0, field="velocity", enc=(8, 8), dec=(8, 8, 8))
    >>> moving, fixed = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    >>> out = model(moving, fixed)
    >>> out.warped.shape, out.field.shape, out.params.shape
    (torch.Size([2, 1, 16, 16]), torch.Size([2, 2, 16, 16]), torch.Size([2, 2, 16, 16]))
    >>> bool((out.warped - moving).abs().max() < 1e-4)  # a fresh model is the identity
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .._checks import check_choice, check_spatial_size
from ..errors import InvalidInputError
from ..fields import from_transform, warp
from ..module import SpatialTransformer
from ..transforms import DenseTransform
from .registry import register_model
from .unet import DEFAULT_DEC, DEFAULT_ENC, FieldUNet

__all__ = ["PairEncoder", "Registration", "RegistrationNet"]


class Registration(NamedTuple):
    """What a :class:`RegistrationNet` returns."""

    #: ``(B, C, *spatial)``: the moving image warped onto the fixed one.
    warped: torch.Tensor
    #: ``(B, N, *spatial)``: the displacement in pixels, ``warped ~ fields.warp(moving, field)``.
    field: torch.Tensor
    #: what the transformer predicted: ``(B, N, *field_size)`` for a dense family (a velocity
    #: for ``velocity``), ``(B, P)`` for a matrix family.
    params: torch.Tensor


# torch.export.save can write a program that returns a named tuple only when it has a serialised
# name (PyTorch has no public call for that yet; without it, programs of RegistrationNet export
# and run but do not save).
_register_namedtuple = getattr(torch.utils._pytree, "_register_namedtuple", None)
if _register_namedtuple is not None:
    with contextlib.suppress(ValueError):  # (registered already: a reload of this module)
        _register_namedtuple(Registration, serialized_type_name="torchstn.models.Registration")


def _image_shape(in_shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """``in_shape`` checked as ``(C, H, W)`` or ``(C, D, H, W)``: ``(C, spatial)``."""
    shape = tuple(in_shape)
    if len(shape) not in (3, 4):
        raise InvalidInputError(
            f"in_shape: a registration model takes one image's (C, H, W) or (C, D, H, W), "
            f"got {shape!r}"
        )
    c = shape[0]
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise InvalidInputError(f"in_shape: expected a positive channel count, got {shape!r}")
    return int(c), check_spatial_size(shape[1:], "in_shape", len(shape) - 1)


class RegistrationNet(nn.Module):
    """Registration by a spatial transformer: ``forward(moving, fixed) -> Registration``.

    The transformer's localisation net reads ``cat(moving, fixed)`` (its ``in_shape`` is
    ``(2C, *spatial)``) and its transform warps ``moving`` (``C`` channels) with the
    transformer's sampler settings (``mode``, ``padding_mode``, ``align_corners``). A dense
    family's field is computed once (:meth:`torchstn.transforms.DenseTransform.displacement`:
    one integration for a velocity) and warps the image through :func:`torchstn.fields.warp`,
    which is what :meth:`~torchstn.SpatialTransformer.transform_input` does with it; a matrix
    family warps through ``transform_input`` and its field comes from
    :func:`torchstn.fields.from_transform`.

    Args:
        transformer: a :class:`torchstn.SpatialTransformer` of ``in_shape`` ``(2C, *spatial)``
            with the output at the input's size.

    Example:
        >>> from torchstn import SpatialTransformer
        >>> from torchstn.models.unet import FieldUNet
        >>> st = SpatialTransformer((2, 12, 12), "displacement", localization=FieldUNet(2, 2))
        >>> net = RegistrationNet(st)
        >>> net(torch.rand(3, 1, 12, 12), torch.rand(3, 1, 12, 12)).field.shape
        torch.Size([3, 2, 12, 12])
    """

    def __init__(self, transformer: SpatialTransformer) -> None:
        super().__init__()
        if not isinstance(transformer, SpatialTransformer):
            raise InvalidInputError(
                f"transformer: expected a SpatialTransformer, got {type(transformer).__name__}"
            )
        c2, *spatial = transformer.in_shape
        if c2 % 2:
            raise InvalidInputError(
                f"transformer: its in_shape {transformer.in_shape} should have 2C channels "
                "(the moving and the fixed image concatenated), got an odd count"
            )
        if tuple(transformer.out_size) != tuple(spatial):
            raise InvalidInputError(
                f"transformer: expected an output at the input's size {tuple(spatial)}, got "
                f"out_size {tuple(transformer.out_size)}"
            )
        self.transformer = transformer
        #: ``(C, *spatial)`` of one image.
        self.in_shape: tuple[int, ...] = (c2 // 2, *spatial)

    @property
    def dense(self) -> bool:
        """Whether the transform is a field (``displacement``, ``velocity``...)."""
        return isinstance(self.transformer.transform, DenseTransform)

    def _check_pair(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        want = self.in_shape
        for name, t in (("moving", moving), ("fixed", fixed)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape[1:]) != want or t.dim() < 2:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InvalidInputError(
                    f"{name}: expected (B, {', '.join(map(str, want))}), got {got}"
                )
        if moving.shape[0] != fixed.shape[0]:
            raise InvalidInputError(
                f"moving and fixed: expected the same batch size, got {tuple(moving.shape)} "
                f"and {tuple(fixed.shape)}"
            )

    def field(self, params: torch.Tensor) -> torch.Tensor:
        """The displacement ``(B, N, *spatial)`` in pixels of the transformer's ``params``."""
        st = self.transformer
        if isinstance(st.transform, DenseTransform):
            return st.transform.displacement(params, st.out_size, st.align_corners)
        return from_transform(st.transform, params, st.out_size, st.align_corners)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> Registration:
        """Register ``moving`` ``(B, C, *spatial)`` onto ``fixed`` (same shape)."""
        self._check_pair(moving, fixed)
        st = self.transformer
        params = st.localize(torch.cat((moving, fixed), 1))
        u = self.field(params)
        if self.dense:
            warped = warp(moving, u, st.mode, st.padding_mode, st.align_corners, st.fill, st.sigma)
        else:
            warped = st.transform_input(moving, params)
        return Registration(warped, u, params)

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}"


class PairEncoder(nn.Sequential):
    """The localisation net of an affine registration: ``levels`` of ``conv 3x3(x3) ->
    LeakyReLU(0.2) -> max-pool 2``, flattened, then a linear layer of ``hidden`` units with a
    LeakyReLU. Maps ``(B, in_channels, *spatial)`` to ``(B, hidden)``; the transformer adds
    the layer to the affine params (the identity when fresh).

    Args:
        in_shape: ``(2C, H, W)`` or ``(2C, D, H, W)`` of the concatenated pair.
        channels: width of each level's convolution.
        hidden: units of the last layer.

    Example:
        >>> PairEncoder((2, 28, 28))(torch.zeros(4, 2, 28, 28)).shape
        torch.Size([4, 64])
    """

    def __init__(
        self, in_shape: Sequence[int], channels: Sequence[int] = (16, 32, 32, 32), hidden: int = 64
    ) -> None:
        c, spatial = _image_shape(in_shape)
        ndim = len(spatial)
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        pool = nn.MaxPool3d if ndim == 3 else nn.MaxPool2d
        layers: list[nn.Module] = []
        width = c
        for nf in channels:
            layers += [
                conv(width, int(nf), 3, padding=1),
                nn.LeakyReLU(0.2),
                pool(2, ceil_mode=True),
            ]
            width = int(nf)
        layers.append(nn.Flatten())
        with torch.no_grad():
            flat = nn.Sequential(*layers)(torch.zeros(1, c, *spatial)).shape[1]
        layers += [nn.Linear(flat, int(hidden)), nn.LeakyReLU(0.2)]
        super().__init__(*layers)
        self.out_features = int(hidden)


@register_model("reg_unet")
def reg_unet(
    in_shape: Sequence[int],
    num_classes: int = 0,
    field: str = "velocity",
    steps: int = 7,
    downsize: int = 1,
    enc: Sequence[int] = DEFAULT_ENC,
    dec: Sequence[int] = DEFAULT_DEC,
) -> nn.Module:
    """``reg_unet``: VoxelMorph, a :class:`FieldUNet` on ``cat(moving, fixed)`` predicting a
    ``displacement`` or ``velocity`` field (``field``; ``steps`` squarings), at full resolution
    (``downsize=1``) or half (``downsize=2``, VoxelMorph's ``int_downsize=2`` with its
    ``unet_half_res``: every side even)."""
    del num_classes
    c, spatial = _image_shape(in_shape)
    kind = check_choice(field, "field", ("displacement", "velocity"))
    if downsize not in (1, 2) or isinstance(downsize, bool):
        raise InvalidInputError(
            f"downsize: expected 1 (full resolution) or 2 (half), got {downsize!r}"
        )
    if downsize == 2 and any(n % 2 for n in spatial):
        raise InvalidInputError(
            f"downsize: a field at half resolution needs even sides, got in_shape {tuple(in_shape)}"
        )
    ndim = len(spatial)
    family = kind + ("3d" if ndim == 3 else "")
    options = {"steps": int(steps)} if kind == "velocity" else {}
    unet = FieldUNet(2 * c, ndim, enc, dec, half_res=downsize == 2)
    st = SpatialTransformer((2 * c, *spatial), family, localization=unet, transform_options=options)
    return RegistrationNet(st)


@register_model("reg_affine")
def reg_affine(
    in_shape: Sequence[int],
    num_classes: int = 0,
    channels: Sequence[int] = (16, 32, 32, 32),
    hidden: int = 64,
) -> nn.Module:
    """``reg_affine``: an affine-only registration (``affine`` for images, ``affine3d`` for
    volumes), a :class:`PairEncoder` on ``cat(moving, fixed)``."""
    del num_classes
    c, spatial = _image_shape(in_shape)
    pair = (2 * c, *spatial)
    family = "affine3d" if len(spatial) == 3 else "affine"
    st = SpatialTransformer(pair, family, localization=PairEncoder(pair, channels, hidden))
    return RegistrationNet(st)
