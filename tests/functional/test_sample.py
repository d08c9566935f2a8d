"""``torchstn.functional.sample``: a validated front end to ``grid_sample``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchstn import InvalidInputError, TorchSTNError, UnknownNameError
from torchstn.functional import (
    FILL_PADDING_MODES,
    MODES,
    PADDING_MODES,
    base_grid,
    normalized_to_pixel,
    pixel_to_normalized,
    sample,
)


def _grid(
    b: int, ho: int, wo: int, spread: float = 1.3, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Random normalised points, some outside [-1, 1] so that padding matters."""
    return (torch.rand(b, ho, wo, 2, dtype=dtype) * 2 - 1) * spread


class TestSample:
    def test_smoke_shape(self) -> None:
        out = sample(torch.rand(2, 3, 5, 6), _grid(2, 4, 7))
        assert out.shape == (2, 3, 4, 7)
        assert out.dtype == torch.float32

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("padding_mode", PADDING_MODES)
    def test_equals_grid_sample(self, mode: str, padding_mode: str, align_corners: bool) -> None:
        x, grid = torch.rand(2, 3, 5, 6), _grid(2, 4, 7)
        ref = F.grid_sample(
            x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners
        )
        out = sample(x, grid, mode, padding_mode, align_corners)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("size", [(1, 1), (1, 6), (5, 6), (8, 3)])
    def test_identity_grid_reproduces_input(
        self, mode: str, size: tuple[int, int], align_corners: bool
    ) -> None:
        x = torch.rand(2, 3, *size)
        grid = base_grid(size, align_corners).expand(2, *size, 2)
        torch.testing.assert_close(
            sample(x, grid, mode, align_corners=align_corners), x, rtol=0, atol=1e-5
        )

    def test_outside_reads_padding(self) -> None:
        x = torch.rand(1, 1, 4, 4) + 1
        far = torch.full((1, 1, 1, 2), 5.0)
        assert sample(x, far).item() == 0
        torch.testing.assert_close(
            sample(x, far, padding_mode="border")[0, 0, 0, 0], x[0, 0, -1, -1]
        )

    @pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
    def test_gradcheck(self, mode: str, align_corners: bool) -> None:
        x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        grid = _grid(1, 3, 4, spread=0.9, dtype=torch.float64).requires_grad_()
        assert gradcheck(lambda a, g: sample(a, g, mode, "zeros", align_corners), (x, grid))

    @pytest.mark.filterwarnings(
        "ignore::torch.jit.TracerWarning",
        "ignore:`torch.jit.trace.* is deprecated:DeprecationWarning",
    )
    def test_jit_trace(self) -> None:
        x, grid = torch.rand(2, 1, 5, 5), _grid(2, 3, 3)
        traced = torch.jit.trace(lambda a, g: sample(a, g, "bilinear", "border", True), (x, grid))
        x2, grid2 = torch.rand(3, 1, 5, 5), _grid(3, 3, 3)
        torch.testing.assert_close(traced(x2, grid2), sample(x2, grid2, "bilinear", "border", True))

    def test_exception_ranks_and_shapes(self) -> None:
        with pytest.raises(InvalidInputError, match="input: expected 4 dims"):
            sample(torch.rand(3, 5, 5), _grid(1, 2, 2))
        with pytest.raises(InvalidInputError, match="grid: expected 4 dims"):
            sample(torch.rand(1, 3, 5, 5), torch.rand(1, 4, 2))
        with pytest.raises(InvalidInputError, match="grid: expected last dimension 2"):
            sample(torch.rand(1, 3, 5, 5), torch.rand(1, 2, 2, 3))
        with pytest.raises(InvalidInputError, match=r"grid: expected 5 dims \(B, Do, Ho, Wo, 3\)"):
            sample(torch.rand(1, 3, 4, 5, 5), torch.rand(1, 2, 2, 2))
        with pytest.raises(InvalidInputError, match="batch size mismatch"):
            sample(torch.rand(2, 3, 5, 5), _grid(3, 2, 2))

    def test_exception_dtypes_and_devices(self) -> None:
        with pytest.raises(InvalidInputError, match="input: expected a floating-point"):
            sample(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), _grid(1, 2, 2))
        with pytest.raises(InvalidInputError, match="grid: expected a floating-point"):
            sample(torch.rand(1, 1, 4, 4), torch.zeros(1, 2, 2, 2, dtype=torch.long))
        with pytest.raises(InvalidInputError, match="share a dtype"):
            sample(torch.rand(1, 1, 4, 4), _grid(1, 2, 2, dtype=torch.float64))
        with pytest.raises(InvalidInputError, match="same device"):
            sample(torch.rand(1, 1, 4, 4), _grid(1, 2, 2).to("meta"))
        with pytest.raises(InvalidInputError, match=r"torch\.Tensor"):
            sample([[1.0]], _grid(1, 2, 2))  # type: ignore[arg-type]

    def test_exception_unknown_names_list_the_valid_ones(self) -> None:
        x, grid = torch.rand(1, 1, 4, 4), _grid(1, 2, 2)
        with pytest.raises(UnknownNameError, match="bicubic, bilinear, nearest") as err:
            sample(x, grid, mode="trilinear")
        assert isinstance(err.value, (TorchSTNError, ValueError))
        with pytest.raises(UnknownNameError, match="border, fill, reflection, zeros"):
            sample(x, grid, padding_mode="wrap")


def _padded_reference(
    x: torch.Tensor, grid: torch.Tensor, fill: torch.Tensor, mode: str, align_corners: bool
) -> torch.Tensor:
    """Sample an image explicitly surrounded by ``margin`` pixels of ``fill`` (per channel) at
    the same points: the definition of ``padding_mode="fill"``."""
    margin = 8
    b, c, h, w = x.shape
    big = fill.view(1, c, 1, 1).expand(b, c, h + 2 * margin, w + 2 * margin).clone()
    big[..., margin : margin + h, margin : margin + w] = x
    pix = normalized_to_pixel(grid, (h, w), align_corners)
    upper = torch.tensor([w, h], dtype=pix.dtype) + margin - 4
    assert bool((pix > -margin + 3).all()) and bool((pix < upper).all())  # clear of big's border
    big_grid = pixel_to_normalized(pix + margin, (h + 2 * margin, w + 2 * margin), align_corners)
    return F.grid_sample(big, big_grid, mode=mode, align_corners=align_corners)


class TestFillPadding:
    def test_modes(self) -> None:
        assert FILL_PADDING_MODES == (*PADDING_MODES, "fill")

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("size", [(5, 6), (7, 3)])
    def test_equals_sampling_an_explicitly_padded_image(
        self, mode: str, size: tuple[int, int], align_corners: bool
    ) -> None:
        """Points inside, outside and straddling the border (taps partly outside) all read the
        image surrounded by ``fill``: ``sample(x - fill, zeros) + fill`` is exact because the
        weights of every mode sum to 1."""
        x = torch.rand(2, 3, *size, dtype=torch.float64)
        grid = _grid(2, 9, 11, spread=1.5, dtype=torch.float64)
        fill = torch.tensor([-0.4, 2.0, 0.7], dtype=torch.float64)
        out = sample(x, grid, mode, "fill", align_corners, fill=fill.tolist())
        ref = _padded_reference(x, grid, fill, mode, align_corners)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
        # a scalar fill is the same value for every channel
        out = sample(x, grid, mode, "fill", align_corners, fill=-0.4)
        ref = _padded_reference(x, grid, torch.full_like(fill, -0.4), mode, align_corners)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)

    def test_straddling_point_blends_by_the_bilinear_weights(self) -> None:
        """Half a pixel left of the first centre: half the first pixel, half the fill."""
        x = torch.full((1, 1, 4, 4), 3.0)
        grid = pixel_to_normalized(torch.tensor([[[[-0.5, 1.0]]]]), (4, 4))
        out = sample(x, grid, padding_mode="fill", fill=1.0)
        torch.testing.assert_close(out, torch.tensor([[[[2.0]]]]))
        far = torch.full((1, 2, 3, 2), 7.0)
        out = sample(torch.rand(1, 3, 4, 4), far, padding_mode="fill", fill=(1.0, -2.0, 5.0))
        torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, -2.0, 5.0]))

    @pytest.mark.parametrize("mode", MODES)
    def test_zero_fill_is_zeros_padding(self, mode: str, align_corners: bool) -> None:
        x, grid = torch.rand(2, 3, 5, 6), _grid(2, 4, 7)
        assert torch.equal(
            sample(x, grid, mode, "fill", align_corners, fill=0.0),
            sample(x, grid, mode, "zeros", align_corners),
        )

    @pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
    def test_gradcheck(self, mode: str, align_corners: bool) -> None:
        x = torch.rand(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        grid = _grid(1, 3, 4, spread=1.2, dtype=torch.float64).requires_grad_()
        assert gradcheck(
            lambda a, g: sample(a, g, mode, "fill", align_corners, fill=(0.5, -1.5)), (x, grid)
        )

    @pytest.mark.parametrize(
        ("fill", "match"),
        [
            (float("nan"), "fill: expected a finite number"),
            (float("inf"), "fill: expected a finite number"),
            ("0", "fill: expected a finite number"),
            (True, "fill: expected a finite number"),
            ([], "fill: expected a finite number"),
            ([1.0, None], "fill: expected a finite number"),
            ([1.0, 2.0], r"fill: expected one value or 3 \(one per channel\), got 2"),
        ],
    )
    def test_exceptions(self, fill: object, match: str) -> None:
        x, grid = torch.rand(1, 3, 4, 4), _grid(1, 2, 2)
        with pytest.raises(InvalidInputError, match=match):
            sample(x, grid, padding_mode="fill", fill=fill)  # type: ignore[arg-type]

    def test_fill_needs_the_fill_padding_mode(self) -> None:
        x, grid = torch.rand(1, 1, 4, 4), _grid(1, 2, 2)
        with pytest.raises(InvalidInputError, match="fill: only used with padding_mode='fill'"):
            sample(x, grid, padding_mode="border", fill=0.5)
