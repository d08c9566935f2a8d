"""``SpatialTransformer``: construction, identity at initialisation, gradients, the identity
penalty, errors, TorchScript tracing and ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchstn import (
    InvalidInputError,
    RecordedParams,
    SpatialTransformer,
    TransformerOutput,
    UnknownNameError,
    identity_penalty,
    recording_params,
    transforms,
)
from torchstn.functional import kernel_sample
from torchstn.localization import ConvLocalization, FCLocalization

NAMES = transforms.names(ndim=2)
BOUNDED = [
    ("attention", {"scale_range": (0.2, 2.0)}),
    ("attention", {"scale_range": (0.2, 2.0), "max_translation": 0.5}),
    ("similarity", {"scale_range": (0.5, 1.5), "max_translation": 1.0}),
    ("affine", {"max_translation": 0.3}),
    ("projective", {"max_translation": 0.3}),
    ("tps", {"max_translation": 0.2}),
    ("tps", {"grid_size": 3, "reg": 0.1}),
    ("tps", {"grid_size": (2, 5)}),
]


def _perturb(st: SpatialTransformer, scale: float = 0.1) -> SpatialTransformer:
    """Move the head off the identity so that outputs depend on the input and the params."""
    with torch.no_grad():
        st.head.weight.normal_(0, 0.01)
        st.head.bias.add_(scale * torch.randn_like(st.head.bias))
    return st


class TestConstruction:
    def test_smoke_shapes(self) -> None:
        st = SpatialTransformer((3, 12, 10), "affine", out_size=(6, 5))
        x = torch.rand(4, 3, 12, 10)
        y, params = st(x, return_params=True)
        assert y.shape == (4, 3, 6, 5) and params.shape == (4, 6)
        assert st.localize(x).shape == (4, 6)
        assert st.out_shape == (3, 6, 5)
        assert SpatialTransformer((1, 8, 8)).out_size == (8, 8)
        assert SpatialTransformer((1, 8, 8), out_size=4).out_size == (4, 4)

    def test_default_localization_depends_on_size(self) -> None:
        assert isinstance(SpatialTransformer((1, 12, 12)).localization, FCLocalization)
        assert isinstance(SpatialTransformer((1, 28, 28)).localization, ConvLocalization)

    @pytest.mark.parametrize("name", NAMES)
    def test_head_starts_at_the_identity(self, name: str) -> None:
        st = SpatialTransformer((1, 8, 8), name)
        assert bool((st.head.weight == 0).all())
        torch.testing.assert_close(st.head.bias.detach(), st.transform.raw_identity())
        assert st.head.out_features == st.transform.num_params

    def test_custom_localization(self) -> None:
        loc = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 7), nn.Tanh())
        st = SpatialTransformer((2, 6, 6), "attention", localization=loc)
        assert st.localization is loc and st.head.in_features == 7
        assert st(torch.rand(3, 2, 6, 6)).shape == (3, 2, 6, 6)

    def test_probe_keeps_the_training_mode(self) -> None:
        loc = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Dropout(0.5))
        assert SpatialTransformer((1, 4, 4), localization=loc).localization.training
        loc.eval()
        assert not SpatialTransformer((1, 4, 4), localization=loc).localization.training

    def test_transform_instance_and_options(self) -> None:
        t = transforms.get("tps", grid_size=3)
        assert SpatialTransformer((1, 8, 8), t).transform is t
        st = SpatialTransformer((1, 8, 8), "tps", transform_options={"grid_size": 5})
        assert st.transform.num_params == 50

    def test_extra_repr(self) -> None:
        text = repr(
            SpatialTransformer(
                (1, 8, 8), "attention", out_size=(4, 4), mode="bicubic", align_corners=True
            )
        )
        for part in (
            "in_shape=(1, 8, 8)",
            "Attention",
            "out_size=(4, 4)",
            "'bicubic'",
            "align_corners=True",
        ):
            assert part in text


class TestIdentityAtInitialisation:
    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.parametrize("shape", [(1, 9, 7), (3, 28, 28)])
    def test_every_family(
        self, name: str, shape: tuple[int, int, int], align_corners: bool
    ) -> None:
        st = SpatialTransformer(shape, name, align_corners=align_corners)
        x = torch.rand(2, *shape)
        torch.testing.assert_close(st(x), x, rtol=0, atol=1e-5)
        torch.testing.assert_close(st.localize(x), st.transform.identity_params().expand(2, -1))

    @pytest.mark.parametrize(("name", "options"), BOUNDED, ids=[f"{n}-{o}" for n, o in BOUNDED])
    def test_bounded_params(self, name: str, options: dict, align_corners: bool) -> None:
        st = SpatialTransformer(
            (2, 10, 10), name, align_corners=align_corners, transform_options=options
        )
        x = torch.rand(3, 2, 10, 10)
        torch.testing.assert_close(st(x), x, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            st.localize(x), st.transform.identity_params().expand(3, -1), rtol=0, atol=1e-6
        )

    @pytest.mark.parametrize("mode", ["nearest", "bicubic"])
    def test_other_samplers(self, mode: str, align_corners: bool) -> None:
        st = SpatialTransformer((1, 9, 7), "affine", mode=mode, align_corners=align_corners)
        x = torch.rand(2, 1, 9, 7)
        torch.testing.assert_close(st(x), x, rtol=0, atol=1e-4)

    def test_reset_head_restores_the_identity(self) -> None:
        st = _perturb(SpatialTransformer((1, 8, 8), "projective"), 0.3)
        x = torch.rand(2, 1, 8, 8)
        assert (st(x) - x).abs().max() > 1e-2
        st.reset_head()
        torch.testing.assert_close(st(x), x)


class TestForward:
    def test_gradients_reach_the_input_and_the_head(self) -> None:
        st = SpatialTransformer((1, 10, 10), "affine")
        x = torch.rand(2, 1, 10, 10, requires_grad=True)
        (st(x) * torch.randn(2, 1, 10, 10)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert st.head.weight.grad is not None and st.head.weight.grad.abs().sum() > 0
        assert st.head.bias.grad is not None and st.head.bias.grad.abs().sum() > 0

    def test_gradients_reach_the_localization_once_off_identity(self) -> None:
        st = _perturb(SpatialTransformer((1, 10, 10), "affine"))
        x = torch.rand(2, 1, 10, 10)
        (st(x) * torch.randn(2, 1, 10, 10)).sum().backward()
        first = next(st.localization.parameters())
        assert first.grad is not None and first.grad.abs().sum() > 0

    def test_transform_input_uses_the_given_params(self, align_corners: bool) -> None:
        st = SpatialTransformer((1, 8, 8), "translation", align_corners=align_corners)
        x = torch.rand(1, 1, 8, 8)
        step = 2 / 7 if align_corners else 2 / 8  # one pixel in normalised units
        out = st.transform_input(x, torch.tensor([[step, 0.0]]))
        torch.testing.assert_close(out[..., :-1], x[..., 1:])  # reads one pixel to the right
        torch.testing.assert_close(out[..., -1], torch.zeros(1, 1, 8), rtol=0, atol=1e-5)

    def test_gaussian_mode_is_the_kernel_sampler(self) -> None:
        st = _perturb(
            SpatialTransformer((1, 8, 8), "affine", mode="gaussian", sigma=0.7, out_size=(5, 6))
        )
        x = torch.rand(2, 1, 8, 8)
        y, params = st(x, return_params=True)
        grid = st.transform.grid(params, (5, 6))
        torch.testing.assert_close(y, kernel_sample(x, grid, "gaussian", 0.7))

    @pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
    def test_padding_mode_is_used(self, padding_mode: str, align_corners: bool) -> None:
        """Zooming out reads outside the image: each mode must give grid_sample's own answer
        for that mode, and the three answers differ (so a swapped mode cannot pass)."""
        x = torch.arange(64.0).view(1, 1, 8, 8)  # every pixel distinct: the modes disagree
        zoom_out = torch.tensor([[2.0, 0.0, 0.0]])
        outs = {}
        for mode in ("zeros", "border", "reflection"):
            st = SpatialTransformer(
                (1, 8, 8), "attention", padding_mode=mode, align_corners=align_corners
            )
            outs[mode] = st.transform_input(x, zoom_out)
        grid = transforms.get("attention").grid(zoom_out, (8, 8), align_corners)
        ref = F.grid_sample(x, grid, padding_mode=padding_mode, align_corners=align_corners)
        torch.testing.assert_close(outs[padding_mode], ref, rtol=0, atol=1e-5)
        others = [m for m in outs if m != padding_mode]
        assert all(not torch.allclose(outs[padding_mode], outs[m]) for m in others)

    def test_fill_padding_reads_the_fill(self) -> None:
        """Normalised MNIST-like inputs: "zeros" pads with the mean (grey), fill=-mean/std with
        black."""
        mean, std = (0.1307, 0.5), (0.3081, 0.25)
        black = torch.zeros(1, 2, 8, 8)
        x = (black - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
        zoom_out = torch.tensor([[2.0, 0.0, 0.0]])
        grey = SpatialTransformer((2, 8, 8), "attention").transform_input(x, zoom_out)
        assert bool((grey[..., 0, 0] == 0).all())  # 0 is the mean, not black
        fill = [-m / s for m, s in zip(mean, std)]
        st = SpatialTransformer((2, 8, 8), "attention", padding_mode="fill", fill=fill)
        torch.testing.assert_close(st.transform_input(x, zoom_out), x)  # black everywhere
        assert "padding_mode='fill', fill=(" in repr(st)
        y = SpatialTransformer((2, 8, 8), padding_mode="fill", fill=-1.5).transform_input(
            torch.rand(1, 2, 8, 8), torch.tensor([[1.0, 0, 5.0, 0, 1, 0]])
        )
        torch.testing.assert_close(y, torch.full_like(y, -1.5))

    def test_autocast_keeps_full_precision_grids(self) -> None:
        st = _perturb(SpatialTransformer((1, 28, 28), "affine"))
        x = torch.rand(2, 1, 28, 28)
        ref = st(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = st(x)
        assert y.dtype == x.dtype
        # the head runs in bfloat16 (about 3 significant digits), the grid and sampler do not
        torch.testing.assert_close(y, ref, rtol=0, atol=0.05)


class TestReturnParams:
    def test_named_tuple_that_unpacks(self) -> None:
        st = _perturb(SpatialTransformer((1, 8, 8), "affine", out_size=(5, 6)))
        x = torch.rand(3, 1, 8, 8)
        out = st(x, return_params=True)
        assert isinstance(out, TransformerOutput) and isinstance(out, tuple)
        y, params = out
        assert y is out.output and params is out.params
        torch.testing.assert_close(out.output, st(x))
        torch.testing.assert_close(out.params, st.localize(x))
        assert isinstance(st(x), torch.Tensor) and isinstance(st(x, False), torch.Tensor)


class _TwoStages(nn.Module):
    """A transformer on the input, a conv, a second transformer on the features."""

    def __init__(self) -> None:
        super().__init__()
        self.first = _perturb(SpatialTransformer((1, 10, 10), "affine", penalty_weight=1.0))
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.second = _perturb(
            SpatialTransformer((3, 10, 10), "attention", (6, 6), penalty_weight=0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.conv(self.first(x))))


class TestRecordingParams:
    def test_records_every_transformer_once_with_its_graph(self) -> None:
        model = _TwoStages()
        x = torch.rand(4, 1, 10, 10)
        with recording_params(model) as records:
            y = model(x)
        assert y.shape == (4, 3, 6, 6)
        assert [(r.name, r.transformer) for r in records] == [
            ("first", model.first),
            ("second", model.second),
        ]
        assert all(isinstance(r, RecordedParams) for r in records)
        torch.testing.assert_close(records[0].params, model.first.localize(x))
        torch.testing.assert_close(
            records[1].params, model.second.localize(torch.relu(model.conv(model.first(x))))
        )
        penalty = sum(r.transformer.penalty(r.params) for r in records)
        assert isinstance(penalty, torch.Tensor) and penalty.item() > 0
        penalty.backward()
        for st in (model.first, model.second):
            first = next(st.localization.parameters())
            assert first.grad is not None and first.grad.abs().sum() > 0
            assert st.head.bias.grad is not None and st.head.bias.grad.abs().sum() > 0
        # the second transformer's params depend on what it reads: the conv's output
        assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0

    def test_keeps_nothing_outside_the_block(self) -> None:
        model = _TwoStages()
        x = torch.rand(2, 1, 10, 10)
        with recording_params(model) as records:
            model(x)
        model(x)
        assert len(records) == 2
        assert model.first._param_sinks == {} and model.second._param_sinks == {}
        with pytest.raises(RuntimeError, match="boom"), recording_params(model):
            raise RuntimeError("boom")
        assert model.first._param_sinks == {}

    def test_nested_blocks_direct_localize_calls_and_no_transformers(self) -> None:
        model = _TwoStages()
        x = torch.rand(2, 1, 10, 10)
        with recording_params(model) as outer:
            model.first.localize(x)  # e.g. AttentionEncoder.crop calls localize directly
            with recording_params(model.second) as inner:
                model(x)
        assert [r.name for r in outer] == ["first", "first", "second"]
        assert [r.name for r in inner] == [""]
        with recording_params(nn.Linear(2, 2)) as none:
            pass
        assert none == []
        with pytest.raises(InvalidInputError, match=r"model: expected an nn\.Module"):
            with recording_params(lambda x: x):  # type: ignore[arg-type]
                pass

    def test_distributed_data_parallel(self, tmp_path) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            pytest.skip("a process group is already initialised")
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
        )
        try:
            model = _TwoStages()
            ddp = nn.parallel.DistributedDataParallel(model)
            with recording_params(ddp) as records:
                y = ddp(torch.rand(2, 1, 10, 10))
            assert [r.name for r in records] == ["first", "second"]
            (y.mean() + sum(r.transformer.penalty(r.params) for r in records)).backward()
            for st in (model.first, model.second):
                assert st.head.weight.grad is not None and st.head.weight.grad.abs().sum() > 0
        finally:
            dist.destroy_process_group()


class TestPenalty:
    @pytest.mark.parametrize("name", NAMES)
    def test_zero_at_identity_positive_elsewhere(self, name: str) -> None:
        t = transforms.get(name)
        ident = t.identity_params().expand(3, -1)
        assert identity_penalty(ident, t).item() == 0
        moved = ident.clone()
        moved[1, 0] += 0.1
        assert identity_penalty(moved, t).item() > 0

    def test_value_is_the_mean_squared_distance(self) -> None:
        t = transforms.get("translation")
        params = torch.tensor([[0.3, 0.4], [0.0, 0.0]])
        torch.testing.assert_close(identity_penalty(params, t), torch.tensor((0.09 + 0.16) / 2))

    def test_module_penalty_is_weighted(self) -> None:
        st = SpatialTransformer((1, 8, 8), "affine", penalty_weight=2.5)
        _, params = st(torch.rand(2, 1, 8, 8), return_params=True)
        assert st.penalty(params).item() == 0
        moved = (params + 0.1).detach().requires_grad_()
        torch.testing.assert_close(st.penalty(moved), 2.5 * identity_penalty(moved, st.transform))
        st.penalty(moved).backward()
        assert moved.grad is not None and moved.grad.abs().sum() > 0


class TestExceptions:
    @pytest.mark.parametrize(
        "bad",
        [
            (1, 8),
            (1, 8, 8, 8),
            (0, 8, 8),
            (1, 0, 8),
            (1, 8, -2),
            (1, 8.5, 8),
            (1.5, 8, 8),
            "abc",
            None,
            8,
        ],
    )
    def test_bad_in_shape(self, bad: object) -> None:
        with pytest.raises(InvalidInputError, match="in_shape"):
            SpatialTransformer(bad)  # type: ignore[arg-type]

    @pytest.mark.parametrize("bad", [0, -3, (0, 4), (4,), (4, 4, 4), (2.5, 4), "4", True])
    def test_bad_out_size(self, bad: object) -> None:
        with pytest.raises(InvalidInputError, match="out_size"):
            SpatialTransformer((1, 8, 8), out_size=bad)  # type: ignore[arg-type]

    def test_unknown_names_list_the_valid_ones(self) -> None:
        with pytest.raises(UnknownNameError, match="affine, attention, projective"):
            SpatialTransformer((1, 8, 8), "perspective")
        with pytest.raises(UnknownNameError, match="bicubic, bilinear, gaussian, nearest"):
            SpatialTransformer((1, 8, 8), mode="area")
        with pytest.raises(UnknownNameError, match="border, fill, reflection, zeros"):
            SpatialTransformer((1, 8, 8), padding_mode="circular")

    def test_bad_settings(self) -> None:
        with pytest.raises(InvalidInputError, match="padding_mode"):
            SpatialTransformer((1, 8, 8), mode="gaussian", padding_mode="border")
        with pytest.raises(InvalidInputError, match="padding_mode"):
            SpatialTransformer((1, 8, 8), mode="gaussian", padding_mode="fill")
        with pytest.raises(InvalidInputError, match="fill: only used with padding_mode='fill'"):
            SpatialTransformer((1, 8, 8), fill=0.5)
        with pytest.raises(InvalidInputError, match=r"fill: expected one value or 3"):
            SpatialTransformer((3, 8, 8), padding_mode="fill", fill=(0.0, 1.0))
        with pytest.raises(InvalidInputError, match="fill: expected a finite number"):
            SpatialTransformer((1, 8, 8), padding_mode="fill", fill=float("nan"))
        for sigma in (0, -1.0, float("nan"), float("inf")):
            with pytest.raises(InvalidInputError, match="sigma"):
                SpatialTransformer((1, 8, 8), mode="gaussian", sigma=sigma)
        for weight in (-0.1, float("nan"), float("inf")):
            with pytest.raises(InvalidInputError, match="penalty_weight"):
                SpatialTransformer((1, 8, 8), penalty_weight=weight)
        with pytest.raises(InvalidInputError, match="scale_range"):
            SpatialTransformer((1, 8, 8), "affine", transform_options={"scale_range": (0.5, 2.0)})
        with pytest.raises(InvalidInputError, match="grid_size"):
            SpatialTransformer((1, 8, 8), "tps", transform_options={"grid_size": 1})

    def test_bad_localization(self) -> None:
        with pytest.raises(InvalidInputError, match=r"localization: expected an nn\.Module"):
            SpatialTransformer((1, 8, 8), localization=lambda x: x.flatten(1))  # type: ignore[arg-type]
        with pytest.raises(
            InvalidInputError, match=r"localization: failed on an input of shape \(2, 1, 8, 8\)"
        ):
            SpatialTransformer((1, 8, 8), localization=nn.Linear(10, 4))
        with pytest.raises(
            InvalidInputError, match=r"localization: expected \(B, features\) output"
        ):
            SpatialTransformer((1, 8, 8), localization=nn.Identity())

    def test_bad_input_to_forward(self) -> None:
        st = SpatialTransformer((1, 8, 8))
        with pytest.raises(
            InvalidInputError, match=r"x: expected \(B, 1, 8, 8\), got \(2, 1, 9, 8\)"
        ):
            st(torch.rand(2, 1, 9, 8))
        with pytest.raises(
            InvalidInputError, match=r"x: expected \(B, 1, 8, 8\), got \(2, 3, 8, 8\)"
        ):
            st(torch.rand(2, 3, 8, 8))
        with pytest.raises(InvalidInputError, match="x: expected 4 dims"):
            st(torch.rand(1, 8, 8))
        with pytest.raises(InvalidInputError, match="x: expected a floating-point"):
            st(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
        with pytest.raises(InvalidInputError, match="x is on meta but the transformer is on cpu"):
            st(torch.rand(2, 1, 8, 8, device="meta"))
        with pytest.raises(InvalidInputError, match="dtype"):
            st(torch.rand(2, 1, 8, 8, dtype=torch.float64))

    def test_bad_params_to_transform_input(self) -> None:
        st = SpatialTransformer((1, 8, 8))
        with pytest.raises(InvalidInputError, match="takes 6 params"):
            st.transform_input(torch.rand(2, 1, 8, 8), torch.zeros(2, 4))
        with pytest.raises(InvalidInputError, match="batch size mismatch"):
            st.transform_input(torch.rand(2, 1, 8, 8), st.transform.identity_params().expand(3, -1))
        with pytest.raises(InvalidInputError, match="NaN or Inf"):
            st.transform_input(
                torch.rand(1, 1, 8, 8), torch.tensor([[1.0, 0.0, float("nan"), 0.0, 1.0, 0.0]])
            )


# torch.jit is deprecated in favour of torch.export/compile, but tracing is still supported
@pytest.mark.filterwarnings("ignore:`torch.jit.trace.* is deprecated:DeprecationWarning")
class TestJitTrace:
    @pytest.mark.parametrize("name", NAMES)
    @pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
    def test_same_output_as_eager(self, name: str) -> None:
        st = _perturb(SpatialTransformer((1, 10, 10), name, out_size=(6, 7))).eval()
        x = torch.rand(2, 1, 10, 10)
        traced = torch.jit.trace(st, x)
        torch.testing.assert_close(traced(x), st(x))
        x3 = torch.rand(3, 1, 10, 10)  # another batch size
        torch.testing.assert_close(traced(x3), st(x3))

    @pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
    def test_bounded_and_conv_localization(self) -> None:
        st = _perturb(
            SpatialTransformer(
                (1, 28, 28), "attention", transform_options={"scale_range": (0.2, 2.0)}
            )
        )
        x = torch.rand(2, 1, 28, 28)
        torch.testing.assert_close(torch.jit.trace(st.eval(), x)(x), st(x))


def _compile_and_compare(
    st: SpatialTransformer, x: torch.Tensor, backend: str = "aot_eager"
) -> None:
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(st, backend=counter, fullgraph=True)
    xr = x.clone().requires_grad_()
    y = compiled(xr)
    assert counter.frame_count >= 1  # really compiled, in one graph
    ref_x = x.clone().requires_grad_()
    ref = st(ref_x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(ref)
    (gy,) = torch.autograd.grad(y, xr, upstream)
    (gref,) = torch.autograd.grad(ref, ref_x, upstream)
    torch.testing.assert_close(gy, gref, rtol=1e-5, atol=1e-5)


class TestCompile:
    @pytest.mark.parametrize(
        ("name", "options"),
        [
            ("affine", {}),
            ("projective", {}),
            ("tps", {}),
            ("attention", {"scale_range": (0.2, 2.0), "max_translation": 0.5}),
        ],
    )
    def test_aot_eager_same_as_eager(self, name: str, options: dict) -> None:
        # a fresh module: nothing has run eagerly before the compiled region
        st = _perturb(
            SpatialTransformer((1, 10, 10), name, out_size=(6, 7), transform_options=options)
        )
        _compile_and_compare(st, torch.rand(2, 1, 10, 10))

    def test_aot_eager_records_params_in_one_graph(self) -> None:
        import torch._dynamo

        torch._dynamo.reset()
        model = _TwoStages()
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        x = torch.rand(2, 1, 10, 10)
        with recording_params(compiled) as records:
            compiled(x)
        assert [r.name for r in records] == ["first", "second"]
        torch.testing.assert_close(records[0].params, model.first.localize(x))
        sum(r.transformer.penalty(r.params) for r in records).backward()
        assert model.second.head.weight.grad is not None

    def test_aot_eager_gaussian_sampler(self) -> None:
        st = _perturb(SpatialTransformer((1, 8, 8), "similarity", mode="gaussian", sigma=0.8))
        _compile_and_compare(st, torch.rand(2, 1, 8, 8))

    @pytest.mark.slow
    @pytest.mark.parametrize("name", ["affine", "tps"])
    def test_inductor_same_as_eager(self, name: str) -> None:
        st = _perturb(SpatialTransformer((1, 10, 10), name, out_size=(6, 7)))
        _compile_and_compare(st, torch.rand(2, 1, 10, 10), backend="inductor")
