"""``torchstn.warp``: a transform's grid and the sampler in one call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchstn import InvalidInputError, UnknownNameError, native, transforms, warp
from torchstn.functional import MODES, sample
from torchstn.transforms import Transform

NAMES = transforms.names(ndim=2)


def _params(t: Transform, b: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Params near the identity, moved enough that points leave the image (padding matters)."""
    return t.identity_params(dtype) + 0.3 * torch.randn(b, t.num_params, dtype=dtype)


class TestWarp:
    def test_smoke_shape(self) -> None:
        x = torch.rand(2, 3, 10, 12)
        assert warp(x, _params(transforms.get("affine"), 2), "affine").shape == (2, 3, 10, 12)
        assert warp(x, _params(transforms.get("affine"), 2), "affine", 5).shape == (2, 3, 5, 5)

    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection", "fill"])
    def test_equals_grid_then_sample(
        self, name: str, mode: str, padding_mode: str, align_corners: bool
    ) -> None:
        t = transforms.get(name)
        x = torch.rand(3, 2, 9, 11)
        params = _params(t, 3)
        fill = (0.25, -1.0) if padding_mode == "fill" else 0.0
        with native.use_fused(False):
            out = warp(x, params, name, (6, 7), mode, padding_mode, align_corners, fill)
        grid = t.grid(params, (6, 7), align_corners)
        if padding_mode == "fill":
            shift = torch.tensor(fill).view(1, 2, 1, 1)
            ref = F.grid_sample(x - shift, grid, mode, "zeros", align_corners) + shift
        else:
            ref = F.grid_sample(x, grid, mode, padding_mode, align_corners)
        assert torch.equal(out, ref)
        # the fused kernel (where it covers the family) rounds its bilinear weights without
        # grid_sample's fused multiply-adds: equal to an ulp or two, as grid_sample's own
        # kernels are to each other across instruction sets
        fused = warp(x, params, name, (6, 7), mode, padding_mode, align_corners, fill)
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)

    @pytest.mark.parametrize("name", NAMES)
    def test_name_class_and_instance_agree(self, name: str) -> None:
        t = transforms.get(name)
        x, params = torch.rand(2, 1, 8, 8), _params(t, 2)
        ref = warp(x, params, t)
        assert torch.equal(warp(x, params, name), ref)
        assert torch.equal(warp(x, params, type(t)), ref)

    def test_instance_carries_options(self) -> None:
        t = transforms.get("tps", grid_size=3)
        x, params = torch.rand(2, 1, 8, 8), _params(t, 2)
        torch.testing.assert_close(warp(x, params, t), sample(x, t.grid(params, (8, 8))))

    @pytest.mark.parametrize("name", NAMES)
    def test_identity_params_reproduce_the_input(self, name: str, align_corners: bool) -> None:
        t = transforms.get(name)
        x = torch.rand(2, 3, 7, 9)
        params = t.identity_params().expand(2, -1)
        torch.testing.assert_close(
            warp(x, params, t, align_corners=align_corners), x, rtol=0, atol=1e-5
        )

    def test_shift_reads_the_neighbour_and_fills_outside(self) -> None:
        x = torch.rand(1, 2, 4, 6)
        shift = torch.tensor([[2 / 6, 0.0]])  # one pixel to the right
        out = warp(x, shift, "translation", padding_mode="fill", fill=(-1.0, 3.0))
        torch.testing.assert_close(out[..., :-1], x[..., 1:])
        torch.testing.assert_close(out[0, :, :, -1], torch.tensor([[-1.0] * 4, [3.0] * 4]))

    @pytest.mark.parametrize("name", ["affine", "projective", "tps"])
    def test_gradcheck(self, name: str, align_corners: bool) -> None:
        t = transforms.get(name)
        x = torch.rand(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
        params = _params(t, 1, torch.float64).requires_grad_()
        assert gradcheck(
            lambda a, p: warp(a, p, t, (3, 4), "bilinear", "fill", align_corners, 0.5),
            (x, params),
        )

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
    def test_keeps_the_dtype(self, dtype: torch.dtype) -> None:
        x = torch.rand(2, 1, 6, 6, dtype=dtype)
        params = transforms.get("affine").identity_params(dtype).expand(2, -1)
        assert warp(x, params, "affine").dtype == dtype

    def test_exceptions(self) -> None:
        x = torch.rand(2, 1, 6, 6)
        params = transforms.get("affine").identity_params().expand(2, -1)
        with pytest.raises(UnknownNameError, match="affine, attention"):
            warp(x, params, "perspective")
        with pytest.raises(InvalidInputError, match="takes 2 params"):
            warp(x, params, "translation")
        with pytest.raises(InvalidInputError, match="x: expected 4 dims"):
            warp(x[0], params, "affine")
        with pytest.raises(InvalidInputError, match="params: expected 2 dims"):
            warp(x, params[0], "affine")
        with pytest.raises(InvalidInputError, match="batch size mismatch: x has 2 images"):
            warp(x, params[:1], "affine")
        with pytest.raises(InvalidInputError, match=r"params \(torch\.float64, cpu\) must match"):
            warp(x, params.double(), "affine")
        with pytest.raises(InvalidInputError, match="out_size"):
            warp(x, params, "affine", (0, 4))
        with pytest.raises(UnknownNameError, match="bicubic, bilinear, gaussian, nearest"):
            warp(x, params, "affine", mode="lanczos")
        with pytest.raises(InvalidInputError, match="gaussian sampler supports 'zeros' only"):
            warp(x, params, "affine", mode="gaussian", padding_mode="border")
        with pytest.raises(InvalidInputError, match="sigma"):
            warp(x, params, "affine", mode="gaussian", sigma=0.0)
        with pytest.raises(UnknownNameError, match="border, fill, reflection, zeros"):
            warp(x, params, "affine", padding_mode="constant")
        with pytest.raises(InvalidInputError, match="fill: only used with padding_mode='fill'"):
            warp(x, params, "affine", fill=0.5)
        with pytest.raises(InvalidInputError, match="fill: expected one value or 1"):
            warp(x, params, "affine", padding_mode="fill", fill=(0.0, 1.0))

    @pytest.mark.filterwarnings(
        "ignore::torch.jit.TracerWarning",
        "ignore:`torch.jit.trace.* is deprecated:DeprecationWarning",
    )
    def test_jit_trace(self) -> None:
        t = transforms.get("affine")
        x, params = torch.rand(2, 1, 5, 5), _params(t, 2)
        traced = torch.jit.trace(
            lambda a, p: warp(a, p, t, (4, 4), padding_mode="fill"), (x, params)
        )
        x2, p2 = torch.rand(3, 1, 5, 5), _params(t, 3)
        torch.testing.assert_close(traced(x2, p2), warp(x2, p2, t, (4, 4), padding_mode="fill"))
