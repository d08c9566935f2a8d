"""The one exception family: every deliberate error is a ``TorchSTNError``; errors about a value
the caller passed are also ``ValueError``, with a message naming the argument."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

import torchstn
from torchstn import (
    ConfigError,
    DataError,
    InvalidInputError,
    NonFiniteError,
    SpatialTransformer,
    TorchSTNError,
    UnknownNameError,
    functional,
    native,
    transforms,
)


class TestHierarchy:
    def test_classes(self) -> None:
        for cls in (InvalidInputError, UnknownNameError, ConfigError, NonFiniteError):
            assert issubclass(cls, TorchSTNError) and issubclass(cls, ValueError)
        assert issubclass(UnknownNameError, InvalidInputError)
        assert issubclass(NonFiniteError, InvalidInputError)
        assert issubclass(DataError, TorchSTNError) and not issubclass(DataError, ValueError)

    def test_exported(self) -> None:
        for name in (
            "TorchSTNError",
            "InvalidInputError",
            "UnknownNameError",
            "ConfigError",
            "DataError",
        ):
            assert name in torchstn.__all__ and getattr(torchstn, name) is getattr(
                torchstn.errors, name
            )


_img = torch.rand(2, 1, 6, 6)
_grid = torch.rand(2, 3, 3, 2) * 2 - 1
_affine = transforms.get("affine")
_ident = _affine.identity_params().expand(2, -1)
_nan = _ident.clone()
_nan[0, 2] = float("nan")
_inf = _ident.clone()
_inf[1, 0] = float("inf")

# (id, call, words the message must contain)
BAD_CALLS: list[tuple[str, Callable[[], object], list[str]]] = [
    # wrong ranks and shapes
    ("sample-rank", lambda: functional.sample(_img[0], _grid), ["input", "4 dims", "3-dim"]),
    (
        "grid-last-dim",
        lambda: functional.sample(_img, _grid[..., :1]),
        ["grid", "last dimension 2"],
    ),
    ("kernel-rank", lambda: functional.kernel_sample(_img, _grid[0]), ["grid", "4 dims"]),
    (
        "params-width",
        lambda: _affine.grid(torch.zeros(2, 5), (3, 3)),
        ["params", "6 params", "(2, 5)"],
    ),
    ("params-rank", lambda: _affine.grid(torch.zeros(6), (3, 3)), ["params", "2 dims"]),
    (
        "points-shape",
        lambda: _affine.map_points(_ident, torch.zeros(2, 3, 3)),
        ["points", "last dimension 2"],
    ),
    (
        "matrix-shape",
        lambda: functional.pixel_matrix_to_normalized(torch.zeros(1, 3, 2), (4, 4)),
        ["matrix", "(B, 2, 3)"],
    ),
    ("coords-shape", lambda: functional.pixel_to_normalized(torch.zeros(4, 3), (4, 4)), ["points"]),
    # batch-size mismatches
    ("sample-batch", lambda: functional.sample(_img, _grid[:1]), ["batch size mismatch", "2", "1"]),
    ("kernel-batch", lambda: functional.kernel_sample(_img[:1], _grid), ["batch size mismatch"]),
    (
        "points-batch",
        lambda: _affine.map_points(_ident, torch.zeros(3, 4, 2)),
        ["batch size mismatch"],
    ),
    (
        "compose-batch",
        lambda: _affine.compose(_ident, _affine.identity_params().expand(3, -1)),
        ["batch size mismatch"],
    ),
    (
        "module-batch",
        lambda: SpatialTransformer((1, 6, 6)).transform_input(
            _img, _affine.identity_params().expand(3, -1)
        ),
        ["batch size mismatch"],
    ),
    # integer tensors
    (
        "int-input",
        lambda: functional.sample(_img.long(), _grid),
        ["input", "floating-point", "int64"],
    ),
    ("int-grid", lambda: functional.kernel_sample(_img, _grid.int()), ["grid", "floating-point"]),
    ("int-params", lambda: _affine.grid(_ident.long(), (3, 3)), ["params", "floating-point"]),
    (
        "int-module-input",
        lambda: SpatialTransformer((1, 6, 6))(_img.long()),
        ["x", "floating-point"],
    ),
    (
        "dtype-mismatch",
        lambda: functional.sample(_img, _grid.double()),
        ["dtype", "float32", "float64"],
    ),
    # mismatched devices ("meta" stands in for a second device)
    (
        "device-sample",
        lambda: functional.sample(_img, _grid.to("meta")),
        ["same device", "meta", "cpu"],
    ),
    ("device-kernel", lambda: functional.kernel_sample(_img.to("meta"), _grid), ["same device"]),
    (
        "device-points",
        lambda: _affine.map_points(_ident, torch.zeros(2, 4, 2, device="meta")),
        ["points", "meta"],
    ),
    ("device-compose", lambda: _affine.compose(_ident, _ident.to("meta")), ["device", "meta"]),
    (
        "device-module",
        lambda: SpatialTransformer((1, 6, 6))(_img.to("meta")),
        ["x is on meta", "cpu"],
    ),
    # unknown names (the message lists the valid ones)
    (
        "unknown-transform",
        lambda: transforms.get("homography"),
        ["'homography'", *transforms.names()],
    ),
    (
        "unknown-mode",
        lambda: functional.sample(_img, _grid, mode="cubic"),
        ["mode", "bicubic", "bilinear", "nearest"],
    ),
    (
        "unknown-padding",
        lambda: functional.sample(_img, _grid, padding_mode="edge"),
        ["padding_mode", "border", "reflection", "zeros"],
    ),
    (
        "unknown-kernel",
        lambda: functional.kernel_sample(_img, _grid, kernel="box"),
        ["kernel", "bilinear", "gaussian", "nearest"],
    ),
    (
        "unknown-module-transform",
        lambda: SpatialTransformer((1, 6, 6), "shear"),
        ["transform", "affine", "tps"],
    ),
    (
        "unknown-module-mode",
        lambda: SpatialTransformer((1, 6, 6), mode="area"),
        ["mode", "gaussian"],
    ),
    # NaN / Inf params
    ("nan-params", lambda: _affine.grid(_nan, (3, 3)), ["params", "NaN or Inf"]),
    (
        "inf-params",
        lambda: _affine.map_points(_inf, torch.zeros(2, 1, 2)),
        ["params", "NaN or Inf"],
    ),
    (
        "nan-module-params",
        lambda: SpatialTransformer((1, 6, 6)).transform_input(_img, _nan),
        ["NaN or Inf"],
    ),
    ("nan-compose", lambda: _affine.compose(_ident, _nan), ["second", "NaN or Inf"]),
    ("nan-inverse", lambda: _affine.inverse_params(_inf), ["params", "NaN or Inf"]),
    # bad out_size / in_shape / settings
    ("out-size-zero", lambda: _affine.grid(_ident, (0, 3)), ["out_size", "(0, 3)"]),
    ("out-size-float", lambda: _affine.grid(_ident, (2.5, 3)), ["out_size"]),
    ("out-size-type", lambda: _affine.grid(_ident, "3x3"), ["out_size", "'3x3'"]),
    ("module-out-size", lambda: SpatialTransformer((1, 6, 6), out_size=(3, 0)), ["out_size"]),
    ("in-shape-short", lambda: SpatialTransformer((6, 6)), ["in_shape", "(C, H, W)"]),
    ("in-shape-channels", lambda: SpatialTransformer((0, 6, 6)), ["in_shape", "channel"]),
    ("in-shape-size", lambda: SpatialTransformer((1, 6, -6)), ["in_shape"]),
    ("in-shape-float", lambda: SpatialTransformer((1, 6.5, 6)), ["in_shape"]),
    ("size-coords", lambda: functional.base_grid((3, 0)), ["size"]),
    (
        "sigma",
        lambda: functional.kernel_sample(_img, _grid, "gaussian", sigma=-1.0),
        ["sigma", "-1.0"],
    ),
    (
        "max-translation",
        lambda: transforms.get("affine", max_translation=float("inf")),
        ["max_translation", "inf"],
    ),
    (
        "scale-range",
        lambda: transforms.get("attention", scale_range=(2.0, 1.0)),
        ["scale_range", "(2.0, 1.0)"],
    ),
    ("tps-grid-size", lambda: transforms.get("tps", grid_size=1), ["grid_size"]),
    ("unexpected-option", lambda: transforms.get("rotation", reg=0.1), ["rotation", "reg"]),
    # wrong input shape to the module
    (
        "module-input-shape",
        lambda: SpatialTransformer((1, 6, 6))(torch.rand(2, 1, 6, 7)),
        ["x", "(B, 1, 6, 6)", "(2, 1, 6, 7)"],
    ),
    ("module-input-rank", lambda: SpatialTransformer((1, 6, 6))(torch.rand(6, 6)), ["x", "4 dims"]),
    (
        "module-input-type",
        lambda: SpatialTransformer((1, 6, 6))(_img.numpy()),
        ["x", "torch.Tensor", "ndarray"],
    ),
]


@pytest.mark.parametrize(
    ("call", "words"), [(c, w) for _, c, w in BAD_CALLS], ids=[i for i, _, _ in BAD_CALLS]
)
def test_bad_input_gives_a_clear_error_of_the_family(
    call: Callable[[], object], words: list[str]
) -> None:
    with pytest.raises(InvalidInputError) as err:
        call()
    assert isinstance(err.value, TorchSTNError) and isinstance(err.value, ValueError)
    message = str(err.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_public_errors_hide_the_internal_traceback() -> None:
    """``raise ... from None``: the user sees the library's message, not a chained TypeError."""
    with pytest.raises(InvalidInputError) as err:
        transforms.get("rotation", reg=0.1)
    assert err.value.__suppress_context__
    with pytest.raises(InvalidInputError) as err:
        SpatialTransformer("abc")  # type: ignore[arg-type]
    assert err.value.__suppress_context__


class TestFiniteChecks:
    """NaN/Inf params raise ``NonFiniteError``, checked once per forward, with a switch to skip."""

    @staticmethod
    def _count_isfinite(monkeypatch: pytest.MonkeyPatch) -> list[int]:
        calls: list[int] = []
        real = torch.isfinite

        def counting(x: torch.Tensor) -> torch.Tensor:
            calls.append(x.numel())
            return real(x)

        monkeypatch.setattr(torch, "isfinite", counting)
        return calls

    def test_exported_and_on_by_default(self) -> None:
        assert torchstn.set_finite_checks is torchstn._checks.set_finite_checks
        assert torchstn._checks.finite_checks_enabled()

    @pytest.mark.parametrize("name", transforms.names(ndim=2))
    def test_one_check_per_forward(self, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
        st = SpatialTransformer((1, 6, 6), name, out_size=(4, 5))
        x = torch.rand(3, 1, 6, 6)
        calls = self._count_isfinite(monkeypatch)
        with native.use_fused(False):
            st(x)
        assert calls == [3 * st.transform.num_params]  # the (B, P) params, once
        calls.clear()
        native.path_counts(reset=True)
        st(x)
        if native.path_counts(reset=True) == {"fused": 1}:
            assert calls == []  # the fused kernel checks the matrix where it reads it
        calls.clear()
        with torchstn.set_finite_checks(False):
            st(x)
        assert calls == []

    def test_scoped_switch_restores_the_previous_state(self) -> None:
        with torchstn.set_finite_checks(False):
            assert bool(_affine.grid(_nan, (3, 3)).isnan().any())
            assert bool(_affine.map_points(_inf, torch.zeros(2, 1, 2)).isnan().any())
            with torchstn.set_finite_checks(True):
                with pytest.raises(NonFiniteError):
                    _affine.grid(_nan, (3, 3))
            assert not torchstn._checks.finite_checks_enabled()
        with pytest.raises(NonFiniteError, match="params: contains 1 NaN or Inf"):
            _affine.grid(_nan, (3, 3))

    def test_restored_when_the_block_raises(self) -> None:
        with pytest.raises(RuntimeError), torchstn.set_finite_checks(False):
            raise RuntimeError
        assert torchstn._checks.finite_checks_enabled()

    def test_call_switches_until_switched_back(self) -> None:
        try:
            torchstn.set_finite_checks(False)
            out = SpatialTransformer((1, 6, 6)).transform_input(_img, _nan)
            assert bool(out[0].isnan().all()) and bool(out[1].isfinite().all())
        finally:
            torchstn.set_finite_checks(True)
        with pytest.raises(NonFiniteError):
            SpatialTransformer((1, 6, 6)).transform_input(_img, _nan)

    def test_setting_must_be_a_bool(self) -> None:
        for bad in (0, 1, "off", None):
            with pytest.raises(InvalidInputError, match="enabled: expected True or False"):
                torchstn.set_finite_checks(bad)  # type: ignore[arg-type]
        assert torchstn._checks.finite_checks_enabled()
