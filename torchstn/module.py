"""The spatial transformer layer: localisation net, grid generator and sampler in one module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import torch
from torch import nn

from ._checks import check_positive, check_spatial_size
from .errors import InvalidInputError
from .functional.sample import Fill
from .localization import default_localization
from .transforms import Transform, get
from .transforms import names as transform_names
from .transforms.warping import autocast_enabled, check_input_dims, check_sampler, warp_with

__all__ = [
    "RecordedParams",
    "SpatialTransformer",
    "TransformerOutput",
    "identity_penalty",
    "recording_params",
]


class TransformerOutput(NamedTuple):
    """What ``SpatialTransformer.forward(x, return_params=True)`` returns; unpacks as
    ``y, params = st(x, return_params=True)``.

    Attributes:
        output: ``(B, C, Ho, Wo)`` the warped images (``(B, C, Do, Ho, Wo)`` volumes).
        params: ``(B, P)`` the transform params they were warped with (bounds applied), part of
            the autograd graph of the localisation net.
    """

    output: torch.Tensor
    params: torch.Tensor


class RecordedParams(NamedTuple):
    """One transformer call seen by :func:`recording_params`.

    Attributes:
        name: the transformer's qualified name in the recorded model (``named_modules``;
            ``DistributedDataParallel``, ``DataParallel`` and ``torch.compile`` wrappers are
            looked through, so the names are those of the wrapped model, ``""`` for the model
            itself).
        transformer: the :class:`SpatialTransformer` (its ``transform``, ``penalty``...).
        params: ``(B, P)`` the params it computed, with their autograd graph.
    """

    name: str
    transformer: SpatialTransformer
    params: torch.Tensor


class _ParamSink:
    """Where one transformer reports to one :func:`recording_params` context (an object rather
    than a tuple: ``torch.compile`` traces appends through its attribute in one graph)."""

    def __init__(self, name: str, records: list[RecordedParams]) -> None:
        self.name = name
        self.records = records


def identity_penalty(params: torch.Tensor, transform: Transform) -> torch.Tensor:
    """Mean squared distance of ``(B, P)`` params from the identity: a regulariser that pulls a
    drifting localisation net back towards "do nothing".

    Example:
        >>> from torchstn.transforms import get
        >>> identity_penalty(torch.tensor([[1.0, 0, 0.5, 0, 1, 0]]), get("affine"))
        tensor(0.2500)
    """
    if getattr(transform, "dense", False):  # a field (B, N, *s): its mean squared length
        return (params**2).sum(1).mean()
    ident = transform.identity_params(params.dtype, params.device)
    return ((params - ident) ** 2).sum(-1).mean()


class SpatialTransformer(nn.Module):
    """A spatial transformer (Jaderberg et al., 2015).

    ``forward(x)`` predicts transform params from ``x`` with the localisation net, builds the
    sampling grid for ``out_size`` and samples ``x`` there. The whole is differentiable with
    respect to ``x`` and the localisation net.

    Images ``(B, C, H, W)`` take a 2-D family (``affine``...), volumes ``(B, C, D, H, W)`` a
    3-D one (``affine3d``, ``rigid3d``...: ``torchstn.transforms.names(ndim=3)``); ``in_shape``
    says which, ``(C, H, W)`` or ``(C, D, H, W)``.

    Convention:
        The transform maps normalised output coordinates to normalised input coordinates
        (:mod:`torchstn.transforms.base`); ``align_corners`` is that of ``grid_sample``.

    The transform is a submodule (``.transform``) without parameters: ``state_dict`` holds the
    localisation net and the head only. Each forward checks the params for NaN and Inf once
    (:class:`torchstn.set_finite_checks` switches that off). Under autocast the localisation net
    runs in reduced precision, grid and sampler in float32; a model converted with ``.half()``
    or ``.to(torch.bfloat16)`` runs in that dtype throughout, with finite grids (see
    :meth:`transform_input`).

    Args:
        in_shape: ``(C, H, W)`` of the inputs, or ``(C, D, H, W)`` for volumes.
        transform: a registered name (``torchstn.transforms.names()``), class or instance.
        out_size: ``(Ho, Wo)`` of the output (``(Do, Ho, Wo)`` for volumes), or ``None`` for
            the input size.
        localization: any module mapping ``(B, *in_shape)`` to ``(B, F)``; ``None`` builds the
            default (:func:`torchstn.localization.default_localization`). A final linear layer to
            the transform's parameter count is appended, with zero weights and the identity as bias.
            A dense family (``displacement``, ``velocity``, ``displacement3d``, ``velocity3d``:
            :mod:`torchstn.transforms.dense`) takes a net mapping to feature maps
            ``(B, F, *s)`` (``s`` the input size or a fraction of it, e.g. a U-Net,
            ``torchstn.models.unet``; there is no default) and appends a 3x3(x3) convolution
            to ``N`` channels, the field; ``out_size`` is then the input's size.
        mode: ``"bilinear"`` (trilinear for volumes), ``"nearest"``, ``"bicubic"`` (tricubic
            for volumes, through the kernel sampler, zeros padding only) or ``"gaussian"`` (the
            kernel sampler of eq. 3 with standard deviation ``sigma`` pixels).
        padding_mode: ``"zeros"``, ``"border"``, ``"reflection"`` or ``"fill"`` (the constant
            ``fill``); ``"gaussian"``: zeros only. Inputs normalised by ``mean`` and ``std`` read
            the mean intensity outside with ``"zeros"``, a grey border around a black background
            (the PyTorch spatial transformer tutorial has this bug): pad them with the
            normalised value of black, ``padding_mode="fill", fill=[-m / s for m, s in
            zip(mean, std)]``.
        align_corners: see :mod:`torchstn.functional.coords`.
        transform_options: keyword options for the transform, e.g. ``{"max_translation": 1.0}``,
            ``{"scale_range": (0.3, 1.0)}`` or ``{"grid_size": 5}`` for TPS.
        sigma: Gaussian kernel width in pixels (``mode="gaussian"`` only).
        penalty_weight: weight of :func:`identity_penalty`; see :meth:`penalty`.
        fill: with ``padding_mode="fill"``, the value outside the input: one number or ``C``
            (one per channel); see :func:`torchstn.functional.sample`.

    Example:
        >>> st = SpatialTransformer((1, 60, 60), "affine", out_size=(30, 30))
        >>> x = torch.rand(4, 1, 60, 60)
        >>> st(x).shape
        torch.Size([4, 1, 30, 30])
        >>> st.localize(x).shape
        torch.Size([4, 6])
        >>> vst = SpatialTransformer((1, 16, 16, 16), "rigid3d", out_size=(8, 8, 8))
        >>> vst(torch.rand(2, 1, 16, 16, 16)).shape
        torch.Size([2, 1, 8, 8, 8])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        transform: str | Transform | type[Transform] = "affine",
        out_size: Sequence[int] | int | None = None,
        localization: nn.Module | None = None,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        align_corners: bool = False,
        *,
        transform_options: Mapping[str, Any] | None = None,
        sigma: float = 1.0,
        penalty_weight: float = 0.0,
        fill: Fill = 0.0,
    ) -> None:
        super().__init__()
        try:
            c, *sides = in_shape
            if isinstance(c, bool) or float(c) != int(c) or len(sides) not in (2, 3):
                raise ValueError
            c = int(c)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"in_shape: expected (C, H, W) or (C, D, H, W) integers, got {in_shape!r}"
            ) from None
        if c < 1:
            raise InvalidInputError(f"in_shape: expected at least one channel, got {in_shape!r}")
        spatial = check_spatial_size(tuple(sides), "in_shape", len(sides))
        self.in_shape: tuple[int, ...] = (c, *spatial)
        self.transform = get(transform, **dict(transform_options or {}))
        if self.transform.ndim != len(spatial):
            kind = "an image (C, H, W)" if len(spatial) == 2 else "a volume (C, D, H, W)"
            raise InvalidInputError(
                f"transform: {self.transform.name!r} is a {self.transform.ndim}-D family but "
                f"in_shape {self.in_shape!r} is {kind}; use one of "
                f"{', '.join(transform_names(ndim=len(spatial)))}"
            )
        self.out_size = spatial if out_size is None else self.transform.check_out_size(out_size)
        #: the params are a field and the head a convolution (``displacement``, ``velocity``...)
        self.dense = bool(getattr(self.transform, "dense", False))
        if self.dense and self.out_size != spatial:
            raise InvalidInputError(
                f"out_size: a dense field warps to the input's own size {spatial}, got "
                f"{self.out_size} (resize the input instead)"
            )
        self.fill = check_sampler(mode, padding_mode, fill, c, len(spatial))
        self.mode, self.padding_mode = mode, padding_mode
        self.align_corners = bool(align_corners)
        self.sigma = check_positive(sigma, "sigma")
        self.penalty_weight = check_positive(penalty_weight, "penalty_weight", allow_zero=True)
        #: sinks of the active :func:`recording_params` contexts (empty: nothing is kept).
        self._param_sinks: dict[object, _ParamSink] = {}

        if localization is None and self.dense:
            raise InvalidInputError(
                f"localization: a dense {self.transform.name!r} transformer needs a net that "
                "outputs feature maps (B, F, *spatial), e.g. "
                "torchstn.models.unet.FieldUNet; there is no default"
            )
        self.localization = (
            default_localization(self.in_shape) if localization is None else localization
        )
        if not isinstance(self.localization, nn.Module):
            raise InvalidInputError(
                f"localization: expected an nn.Module, got {type(self.localization).__name__}"
            )
        features = self._probe_features()
        self.head: nn.Linear | nn.Conv2d | nn.Conv3d
        if self.dense:
            conv = nn.Conv2d if len(spatial) == 2 else nn.Conv3d
            self.head = conv(features, self.transform.num_params, 3, padding=1)
        else:
            self.head = nn.Linear(features, self.transform.num_params)
        self.reset_head()

    def _probe_features(self) -> int:
        """Run the localisation net once on zeros to learn its feature count."""
        was_training = self.localization.training
        self.localization.eval()
        try:
            with torch.no_grad():
                ref = next(self.localization.parameters(), None)
                probe = torch.zeros(
                    2,
                    *self.in_shape,
                    dtype=ref.dtype if ref is not None else None,
                    device=ref.device if ref is not None else None,
                )
                out = self.localization(probe)
        except Exception as err:
            raise InvalidInputError(
                f"localization: failed on an input of shape (2, {', '.join(map(str, self.in_shape))}): {err}"
            ) from None
        finally:
            self.localization.train(was_training)
        if self.dense:
            return self._field_features(out)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidInputError(f"localization: expected (B, features) output, got {got}")
        return int(out.shape[1])

    def _field_features(self, out: object) -> int:
        """The channel count of a dense family's feature maps ``(B, F, *s)``; every side of
        ``s`` must divide the input's (a field at full, half... resolution)."""
        spatial = self.in_shape[1:]
        want = "(B, F, H', W')" if len(spatial) == 2 else "(B, F, D', H', W')"
        if not isinstance(out, torch.Tensor) or out.dim() != len(spatial) + 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InvalidInputError(
                f"localization: a dense {self.transform.name!r} transformer needs feature maps "
                f"{want}, got {got}"
            )
        sides = tuple(int(s) for s in out.shape[2:])
        if any(n % s for n, s in zip(spatial, sides, strict=True)):
            raise InvalidInputError(
                f"localization: feature maps of size {sides} do not divide the input size "
                f"{tuple(spatial)} (a field at the input's resolution or a fraction of it)"
            )
        return int(out.shape[1])

    def reset_head(self) -> None:
        """Re-initialise the final layer to the identity transform (zero weight, identity bias;
        for a dense family weights drawn from ``N(0, 1e-5)`` and a zero bias)."""
        weight, bias = self.head.weight, self.head.bias
        assert bias is not None  # both heads are built with one
        with torch.no_grad():
            if self.dense:  # VoxelMorph's flow layer: tiny random weights, so gradients differ
                weight.normal_(0.0, 1e-5)
                bias.zero_()
                return
            weight.zero_()
            bias.copy_(self.transform.raw_identity(bias.dtype, bias.device))

    def _check_input(self, x: torch.Tensor) -> None:
        check_input_dims(x, self.transform)
        if tuple(x.shape[1:]) != self.in_shape:
            raise InvalidInputError(
                f"x: expected (B, {', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}"
            )
        ref = self.head.weight
        if x.device != ref.device:
            raise InvalidInputError(f"x is on {x.device} but the transformer is on {ref.device}")
        if x.dtype != ref.dtype and not autocast_enabled(x.device.type):
            raise InvalidInputError(
                f"x has dtype {x.dtype} but the transformer's parameters are {ref.dtype} "
                f"(convert one of them with .to(dtype))"
            )

    def localize(self, x: torch.Tensor) -> torch.Tensor:
        """Transform params ``(B, P)`` predicted for ``x`` ``(B, *in_shape)`` (bounds applied).

        Every call (and so every forward) is reported to the active :func:`recording_params`
        contexts; without one nothing is kept.
        """
        self._check_input(x)
        params = self.transform.constrain(self.head(self.localization(x)))
        for sink in self._param_sinks.values():
            sink.records.append(RecordedParams(sink.name, self, params))
        return params

    def transform_input(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Warp ``x`` ``(B, *in_shape)`` with given params ``(B, P)``: ``(B, *out_shape)``.

        The params are checked for NaN and Inf here, once per forward (see
        :class:`torchstn.set_finite_checks`). Grid and sampler run outside autocast, in the dtype
        of ``x``, or, inside autocast, in float32 at least (``x`` and the params are cast; the
        output is then float32): a half-precision grid misplaces samples by about a pixel at
        256 px, so under mixed precision only the localisation net runs in reduced precision.
        A model converted with ``.half()`` or ``.to(torch.bfloat16)`` builds its grid in that
        dtype, finite (see :mod:`torchstn.transforms.base`, "Precision"), and samples in it on
        CUDA; on other devices the sampler runs in float32 and rounds its output once (see
        :func:`torchstn.functional.sample`, "Precision").
        """
        return warp_with(
            x,
            params,
            self.transform,
            self.out_size,
            self.mode,
            self.padding_mode,
            self.align_corners,
            self.fill,
            self.sigma,
        )

    @overload
    def forward(self, x: torch.Tensor, return_params: Literal[False] = False) -> torch.Tensor: ...
    @overload
    def forward(self, x: torch.Tensor, return_params: Literal[True]) -> TransformerOutput: ...
    @overload
    def forward(self, x: torch.Tensor, return_params: bool) -> torch.Tensor | TransformerOutput: ...
    def forward(
        self, x: torch.Tensor, return_params: bool = False
    ) -> torch.Tensor | TransformerOutput:
        """Warp ``x`` ``(B, *in_shape)`` to ``(B, *out_shape)``.

        Returns:
            The ``(B, C, Ho, Wo)`` (or ``(B, C, Do, Ho, Wo)``) output, or with ``return_params=True`` a
            :class:`TransformerOutput` ``(output, params)`` that also holds the ``(B, P)``
            params (``y, params = st(x, return_params=True)``). To collect the params of
            transformers deep inside a model, see :func:`recording_params`.
        """
        params = self.localize(x)
        y = self.transform_input(x, params)
        return TransformerOutput(y, params) if return_params else y

    if TYPE_CHECKING:  # what mypy sees of ``st(x, ...)``: forward's overloads

        @overload
        def __call__(
            self, x: torch.Tensor, return_params: Literal[False] = False
        ) -> torch.Tensor: ...
        @overload
        def __call__(self, x: torch.Tensor, return_params: Literal[True]) -> TransformerOutput: ...
        @overload
        def __call__(
            self, x: torch.Tensor, return_params: bool
        ) -> torch.Tensor | TransformerOutput: ...
        def __call__(
            self, x: torch.Tensor, return_params: bool = False
        ) -> torch.Tensor | TransformerOutput: ...

    def penalty(self, params: torch.Tensor) -> torch.Tensor:
        """``penalty_weight * identity_penalty(params)``; add it to the loss to fight drift."""
        return self.penalty_weight * identity_penalty(params, self.transform)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """``(C, Ho, Wo)`` of the output (``(C, Do, Ho, Wo)`` for volumes)."""
        return (self.in_shape[0], *self.out_size)

    def extra_repr(self) -> str:
        fill = f", fill={self.fill}" if self.padding_mode == "fill" else ""
        return (
            f"in_shape={self.in_shape}, out_size={self.out_size}, "
            f"mode={self.mode!r}, padding_mode={self.padding_mode!r}{fill}, "
            f"align_corners={self.align_corners}"
        )


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel``, ``DataParallel`` and ``torch.compile``
    wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's wrapper
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(inner, nn.Module):
            model = inner
        else:
            return model


@contextmanager
def recording_params(model: nn.Module) -> Iterator[list[RecordedParams]]:
    """Collect the params of every :class:`SpatialTransformer` call inside ``model``.

    Within the ``with`` block, each call of a transformer of ``model`` (its ``forward``, or
    ``localize`` called directly) appends a :class:`RecordedParams` ``(name, transformer,
    params)`` to the yielded list, in call order: one entry per transformer per forward pass of
    a model that calls each once. The params keep their autograd graph, so a penalty on them
    back-propagates into the localisation nets without running them again. On exit the
    transformers keep nothing; outside a ``with`` block they never do. Contexts may nest, each
    sees every call.

    Works for a ``DistributedDataParallel`` (or ``DataParallel``) wrapped model: the recording
    attaches to the transformers it wraps, and names are those of the wrapped model. Under
    ``torch.compile`` the recording is traced into the graph (``fullgraph=True`` holds; starting
    or ending a recording recompiles once). A model without transformers yields an empty list.

    Args:
        model: any module; its :class:`SpatialTransformer` submodules (itself included) are
            recorded.

    Yields:
        The list the calls are appended to, ``params`` ``(B, P)`` each.

    Example:
        >>> model = nn.Sequential(
        ...     SpatialTransformer((1, 8, 8), "affine", penalty_weight=0.1),
        ...     nn.Conv2d(1, 2, 3, padding=1),
        ...     SpatialTransformer((2, 8, 8), "translation", penalty_weight=0.1),
        ... )
        >>> with recording_params(model) as records:
        ...     y = model(torch.rand(4, 1, 8, 8))
        >>> [(r.name, tuple(r.params.shape)) for r in records]
        [('0', (4, 6)), ('2', (4, 2))]
        >>> penalty = sum(r.transformer.penalty(r.params) for r in records)
    """
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"model: expected an nn.Module, got {type(model).__name__}")
    records: list[RecordedParams] = []
    token = object()
    transformers = [
        (name, module)
        for name, module in _unwrap(model).named_modules()
        if isinstance(module, SpatialTransformer)
    ]
    for name, module in transformers:
        module._param_sinks[token] = _ParamSink(name, records)
    try:
        yield records
    finally:
        for _, module in transformers:
            module._param_sinks.pop(token, None)
