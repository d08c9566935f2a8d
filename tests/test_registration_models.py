"""FieldUNet and the registration models (reg_unet, reg_affine): shapes, identity, gradients,
sizes, the registry and a few optimisation steps."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torchstn import InvalidInputError, SpatialTransformer, fields
from torchstn.models import FieldUNet, Registration, RegistrationNet, create_model, model_names
from torchstn.models.unet import DEFAULT_DEC, DEFAULT_ENC

SMALL = {"enc": (4, 8), "dec": (8, 8, 4)}  # a two-level U-Net: fast, same code paths


def _conv_params(ndim: int, cin: int, cout: int) -> int:
    return 3**ndim * cin * cout + cout


# --- FieldUNet ------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
def test_unet_has_voxelmorphs_layout(ndim: int) -> None:
    # VoxelMorph's vm2 widths, written out: encoder 2->16->32->32->32; decoder 32->32, then
    # (32 + 32 skip)->32 twice, (32 + 32)->32, then (32 + 16 skip)->32->16->16.
    widths = [
        (2, 16), (16, 32), (32, 32), (32, 32),
        (32, 32), (64, 32), (64, 32), (64, 32),
        (48, 32), (32, 16), (16, 16),
    ]  # fmt: skip
    net = FieldUNet(2, ndim)
    assert (net.enc, net.dec) == (DEFAULT_ENC, DEFAULT_DEC) and net.out_channels == 16
    assert sum(p.numel() for p in net.parameters()) == sum(
        _conv_params(ndim, a, b) for a, b in widths
    )
    acts = [m for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(acts) == len(widths) and all(a.negative_slope == 0.2 for a in acts)


@pytest.mark.parametrize(
    ("shape", "half"),
    [((2, 2, 16, 16), False), ((1, 2, 13, 7), False), ((1, 2, 13, 7), True),
     ((1, 2, 8, 8, 8), False), ((1, 2, 5, 9, 6), False), ((2, 2, 5, 9, 6), True)],
)  # fmt: skip
def test_unet_output_sizes(shape: tuple[int, ...], half: bool) -> None:
    net = FieldUNet(2, len(shape) - 2, half_res=half, **SMALL)  # type: ignore[arg-type]
    y = net(torch.rand(shape))
    spatial = tuple(math.ceil(n / 2) if half else n for n in shape[2:])
    assert y.shape == (shape[0], 4, *spatial) and net.out_size(shape[2:]) == spatial


def test_unet_without_extra_convs_outputs_the_last_concatenation() -> None:
    net = FieldUNet(3, 2, enc=(4, 6), dec=(5, 7))
    assert net.out_channels == 7 + 4
    assert net(torch.rand(1, 3, 10, 10)).shape == (1, 11, 10, 10)
    assert FieldUNet(3, 2, enc=(4, 6), dec=(5, 7), half_res=True).out_channels == 7


@pytest.mark.parametrize("n", range(1, 24))
def test_doubling_and_cropping_is_nearest_interpolation_to_the_skip(n: int) -> None:
    # the U-Net's up-sampling (double, crop to the skip) against interpolating to the skip's size
    pooled = F.max_pool2d(torch.rand(1, 1, n, n + 1), 2, ceil_mode=True)
    doubled = F.interpolate(pooled, scale_factor=2.0, mode="nearest")[:, :, :n, : n + 1]
    torch.testing.assert_close(doubled, F.interpolate(pooled, size=(n, n + 1), mode="nearest"))


def test_unet_is_translation_equivariant() -> None:
    # convolutions, pooling by 2 and nearest up-sampling: shifting the input by 2**levels
    # pixels shifts the output (no biases: the zero background then reads as zero padding)
    net = FieldUNet(1, 2, **SMALL).double()  # type: ignore[arg-type]
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.bias)
    x = torch.zeros(1, 1, 64, 64, dtype=torch.float64)
    x[..., 28:32, 25:31] = torch.rand(4, 6, dtype=torch.float64)
    y, ys = net(x), net(torch.roll(x, (4, -4), (2, 3)))
    frame = y.clone()
    frame[..., 4:-4, 4:-4] = 0
    assert y.abs().sum() > 0 and frame.abs().max() == 0  # the roll wraps nothing
    torch.testing.assert_close(ys, torch.roll(y, (4, -4), (2, 3)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"in_channels": 2, "ndim": 4}, "ndim"), ({"in_channels": 0}, "in_channels"),
     ({"in_channels": 2, "enc": (8, 8, 8), "dec": (8, 8)}, "dec"),
     ({"in_channels": 2, "enc": ()}, "enc"), ({"in_channels": 2, "dec": (8, 0, 8, 8)}, "dec"),
     ({"in_channels": 2, "enc": (8, 1.5)}, "enc")],
)  # fmt: skip
def test_unet_settings_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        FieldUNet(**kwargs)  # type: ignore[arg-type]


def test_unet_input_is_checked() -> None:
    net = FieldUNet(2, 3, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"x: expected \(B, C, D, H, W\) with C = 2"):
        net(torch.rand(1, 2, 8, 8))
    with pytest.raises(InvalidInputError, match="C = 2"):
        net(torch.rand(1, 1, 8, 8, 8))


# --- registration models --------------------------------------------------------------------

CASES = [
    ("reg_unet", (1, 16, 12), {"field": "displacement", **SMALL}),
    ("reg_unet", (1, 16, 12), {"field": "velocity", **SMALL}),
    ("reg_unet", (2, 16, 12), {"field": "velocity", "downsize": 2, "steps": 4, **SMALL}),
    ("reg_unet", (1, 8, 6, 10), {"field": "displacement", **SMALL}),
    ("reg_unet", (1, 8, 6, 10), {"field": "velocity", "downsize": 2, **SMALL}),
    ("reg_affine", (1, 16, 12), {}),
    ("reg_affine", (2, 8, 6, 10), {"channels": (4, 8), "hidden": 16}),
]
IDS = [f"{n}-{len(s) - 1}d-{o.get('field', 'affine')}-{o.get('downsize', 1)}" for n, s, o in CASES]


def _pair(in_shape: tuple[int, ...], batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(batch, *in_shape), torch.rand(batch, *in_shape)


@pytest.mark.parametrize(("name", "in_shape", "options"), CASES, ids=IDS)
def test_shapes_and_a_fresh_model_is_the_identity(
    name: str, in_shape: tuple[int, ...], options: dict[str, object]
) -> None:
    model = create_model(name, in_shape, 0, **options)
    assert isinstance(model, RegistrationNet) and model.in_shape == in_shape
    moving, fixed = _pair(in_shape)
    out = model(moving, fixed)
    assert isinstance(out, Registration)
    n = len(in_shape) - 1
    assert out.warped.shape == moving.shape and out.field.shape == (2, n, *in_shape[1:])
    if name == "reg_unet":
        factor = int(options.get("downsize", 1))  # type: ignore[call-overload]
        assert out.params.shape == (2, n, *(s // factor for s in in_shape[1:]))
    else:
        assert out.params.shape == (2, 6 if n == 2 else 12)
    torch.testing.assert_close(out.warped, moving, rtol=0, atol=1e-4)
    assert out.field.abs().max() < 1e-3


@pytest.mark.parametrize(("name", "in_shape", "options"), CASES, ids=IDS)
def test_warped_field_and_params_agree(
    name: str, in_shape: tuple[int, ...], options: dict[str, object]
) -> None:
    model = create_model(name, in_shape, 0, **options).double()
    st = model.transformer
    with torch.no_grad():  # a visible deformation: larger head weights / a non-identity bias
        if st.dense:
            st.head.weight.normal_(0.0, 0.5)
        else:
            st.head.bias.add_(0.05 * torch.randn_like(st.head.bias))
    moving, fixed = (t.double() for t in _pair(in_shape))
    out = model(moving, fixed)
    assert out.field.abs().max() > 0.05
    # the warp is the transformer's own, and the field is the one that warps
    torch.testing.assert_close(out.warped, st.transform_input(moving, out.params))
    torch.testing.assert_close(out.warped, fields.warp(moving, out.field))
    torch.testing.assert_close(out.params, st.localize(torch.cat((moving, fixed), 1)))
    if name == "reg_unet" and options["field"] == "velocity":  # integrated, then resized
        steps = int(options.get("steps", 7))  # type: ignore[call-overload]
        u = fields.resize(fields.integrate(out.params, steps), in_shape[1:])
        torch.testing.assert_close(out.field, u)
    elif name == "reg_unet":
        torch.testing.assert_close(out.field, out.params)


@pytest.mark.parametrize(("name", "in_shape", "options"), CASES, ids=IDS)
def test_gradients_reach_every_layer(
    name: str, in_shape: tuple[int, ...], options: dict[str, object]
) -> None:
    model = create_model(name, in_shape, 0, **options)
    moving, fixed = _pair(in_shape)
    first = next(model.transformer.localization.parameters())

    def step() -> None:
        model.zero_grad()
        out = model(moving, fixed)
        ((out.warped - fixed) ** 2).mean().backward()

    step()
    if model.dense:  # VoxelMorph's head (weights ~ N(0, 1e-5)): from the first step
        assert first.grad is not None and first.grad.abs().sum() > 0
    else:  # a matrix head starts at zero weights (the identity): from the second step
        assert first.grad is not None and first.grad.abs().sum() == 0
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        step()
        assert first.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("in_shape", [(1, 13, 11), (1, 7, 9, 5)])
def test_odd_sizes(in_shape: tuple[int, ...]) -> None:
    for name, options in (("reg_unet", {"field": "velocity", **SMALL}), ("reg_affine", {})):
        out = create_model(name, in_shape, 0, **options)(*_pair(in_shape, 1))
        assert out.warped.shape == (1, *in_shape)
        assert out.field.shape == (1, len(in_shape) - 1, *in_shape[1:])


def test_registry_names_and_defaults() -> None:
    assert {"reg_unet", "reg_affine"} <= set(model_names())
    model = create_model("reg_unet", (1, 16, 16), 10)
    unet = model.transformer.localization
    assert isinstance(unet, FieldUNet) and (unet.enc, unet.dec) == (DEFAULT_ENC, DEFAULT_DEC)
    assert unet.in_channels == 2 and not unet.half_res
    assert model.transformer.transform.name == "velocity" and model.transformer.transform.steps == 7
    volume = create_model("reg_unet", (1, 8, 8, 8), 0, field="displacement", **SMALL)
    assert volume.transformer.transform.name == "displacement3d"
    assert create_model("reg_affine", (1, 8, 8, 8), 0).transformer.transform.name == "affine3d"


@pytest.mark.parametrize(
    ("name", "in_shape", "options", "match"),
    [("reg_unet", (1, 16, 16), {"field": "flow"}, "field"),
     ("reg_unet", (1, 16, 16), {"downsize": 4}, "downsize"),
     ("reg_unet", (1, 15, 16), {"downsize": 2}, "even sides"),
     ("reg_unet", (1, 16), {}, "in_shape"), ("reg_affine", (1, 2, 3, 4, 5), {}, "in_shape"),
     ("reg_unet", (1, 16, 16), {"width": 3}, "width")],
)  # fmt: skip
def test_bad_options(
    name: str, in_shape: tuple[int, ...], options: dict[str, object], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        create_model(name, in_shape, 0, **options)


def test_pair_and_transformer_are_checked() -> None:
    model = create_model("reg_unet", (1, 8, 8), 0, **SMALL)
    with pytest.raises(
        InvalidInputError, match=r"fixed: expected \(B, 1, 8, 8\), got \(2, 2, 8, 8\)"
    ):
        model(torch.rand(2, 1, 8, 8), torch.rand(2, 2, 8, 8))
    with pytest.raises(InvalidInputError, match="same batch size"):
        model(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8))
    st = SpatialTransformer((3, 8, 8), "displacement", localization=FieldUNet(3, 2, **SMALL))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="2C channels"):
        RegistrationNet(st)
    with pytest.raises(InvalidInputError, match="out_size"):
        RegistrationNet(SpatialTransformer((2, 8, 8), "affine", out_size=4))


@pytest.mark.parametrize("field", ["displacement", "velocity"])
def test_a_few_steps_register_a_shifted_square(field: str) -> None:
    moving, fixed = torch.zeros(2, 1, 1, 16, 16)
    moving[..., 5:11, 5:11] = 1.0
    fixed[..., 7:13, 5:11] = 1.0  # two pixels down
    model = create_model("reg_unet", (1, 16, 16), 0, field=field, enc=(8, 8), dec=(8, 8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.mse_loss(model(moving, fixed).warped, fixed)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = F.mse_loss(model(moving, fixed).warped, fixed).item()
    assert final < 0.25 * losses[0]
