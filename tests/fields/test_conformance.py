"""Conformance of ``torchstn.fields.convert``: each library's own warp equals torchstn's through
the converter.

For kornia (``warp_affine``, ``warp_perspective``, ``warp_affine3d``, ``warp_perspective3d``),
PyTorch (``affine_grid`` + ``grid_sample``), MONAI (``Warp``, ``DVF2DDF``, ``Affine``), scipy
(``ndimage.affine_transform``, ``ndimage.map_coordinates``, ``order=1``) and voxelmorph (when it
imports; otherwise against a direct transcription of its formula), the same warp is done by the
other library and by torchstn (``fields.warp`` of the converted field, ``fields.from_matrix`` of
the converted matrix, or ``torchstn.warp`` of its normalised params for another output size), on
random non-symmetric images of non-square sizes, odd and even, in 2-D and 3-D.

Borders: both sides pad with zeros and are compared *everywhere*, including the output pixels
that read partly or wholly outside the input (the transforms are drawn large enough that some
do): ``padding_mode="zeros"`` for the torch-based libraries, ``mode="grid-constant", cval=0``
for scipy (its ``"constant"`` mode does not blend with the padding; see
``test_scipy_constant_mode_differs_only_at_the_border``).
"""

from __future__ import annotations

import types
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from torchstn import InvalidInputError, fields, warp
from torchstn.fields import convert
from torchstn.functional import pixel_matrix_to_normalized, pixel_to_normalized

pytestmark = pytest.mark.filterwarnings(
    "ignore:monai.networks.blocks.Warp.*native grid_sample:UserWarning"
)

#: non-square sizes, odd and even sides, per number of axes
SIZES = {2: [(7, 10), (8, 5)], 3: [(5, 6, 7), (4, 7, 6)]}
CASES = [(n, size) for n in (2, 3) for size in SIZES[n]]
IDS = ["x".join(map(str, size)) for _, size in CASES]
ATOL = 1e-5


def _image(b: int, c: int, size: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, *size, generator=g, dtype=torch.float64)


def _affine(b: int, n: int, seed: int = 2, shift: float = 1.5) -> torch.Tensor:
    """``(b, n, n + 1)`` random affine matrices near the identity, shifted by ~``shift`` pixels
    (so that some output pixels read outside the input and the padding is compared too)."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.eye(n, dtype=torch.float64) + 0.15 * torch.randn(b, n, n, generator=g).double()
    t = shift * torch.randn(b, n, 1, generator=g).double()
    return torch.cat((lin, t), dim=2)


def _square(affine: torch.Tensor) -> torch.Tensor:
    b, n = affine.shape[0], affine.shape[1]
    last = torch.zeros(b, 1, n + 1, dtype=affine.dtype)
    last[..., n] = 1
    return torch.cat((affine, last), dim=1)


def _projective(b: int, n: int, seed: int = 3) -> torch.Tensor:
    """``(b, n + 1, n + 1)`` random homographies, a small perspective row."""
    m = _square(_affine(b, n, seed))
    g = torch.Generator().manual_seed(seed + 100)
    m[:, n, :n] = 0.01 * torch.randn(b, n, generator=g).double()
    return m


def _field(b: int, size: tuple[int, ...], amp: float = 2.0, seed: int = 4) -> torch.Tensor:
    """A smooth random displacement ``(b, n, *size)`` of about ``amp`` pixels, different along
    each axis (coarse noise, upsampled)."""
    g = torch.Generator().manual_seed(seed)
    n = len(size)
    coarse = torch.randn(b, n, *([3] * n), generator=g, dtype=torch.float64)
    mode = "bilinear" if n == 2 else "trilinear"
    return amp * F.interpolate(coarse, size=size, mode=mode, align_corners=True)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=0)


def _warp_matrix(x: torch.Tensor, pixel_matrix: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """torchstn's warp of ``x`` by a pixel matrix, output the input's size."""
    u = fields.from_matrix(pixel_matrix, tuple(x.shape[2:]))
    return fields.warp(x, u, **kwargs)  # type: ignore[arg-type]


def _params(
    pixel_matrix: torch.Tensor, in_size: tuple[int, ...], out_size: tuple[int, ...]
) -> tuple[torch.Tensor, str]:
    """The normalised params of torchstn's ``affine``/``affine3d`` or ``projective`` family for
    a pixel matrix (``torchstn.warp`` with another output size)."""
    n = len(in_size)
    square = pixel_matrix if pixel_matrix.shape[1] == n + 1 else _square(pixel_matrix)
    norm = pixel_matrix_to_normalized(square, in_size, out_size)
    if bool((square[:, n, :n] == 0).all()):
        return norm[:, :n].flatten(1), "affine" if n == 2 else "affine3d"
    norm = norm / norm[:, n : n + 1, n : n + 1]
    return norm.flatten(1)[:, :-1], "projective" if n == 2 else "projective3d"


@pytest.fixture
def kornia_tf() -> types.ModuleType:
    return pytest.importorskip("kornia.geometry.transform")


@pytest.fixture
def ndimage() -> types.ModuleType:
    return pytest.importorskip("scipy.ndimage")


# ----------------------------------------------------------------------------- kornia
class TestKornia:
    @pytest.mark.parametrize(("n", "size"), [c for c in CASES if c[0] == 2], ids=IDS[:2])
    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("kind", ["affine", "perspective"])
    def test_2d_warp_equals_torchstn(
        self,
        kornia_tf: types.ModuleType,
        n: int,
        size: tuple[int, int],
        align_corners: bool,
        kind: str,
    ) -> None:
        x = _image(2, 3, size)
        if kind == "affine":
            m = _affine(2, 2)
            ref = kornia_tf.warp_affine(x, m, size, align_corners=align_corners)
        else:
            m = _projective(2, 2)
            ref = kornia_tf.warp_perspective(x, m, size, align_corners=align_corners)
        _close(_warp_matrix(x, convert.from_kornia(m)), ref)

    @pytest.mark.parametrize(("n", "size"), [c for c in CASES if c[0] == 3], ids=IDS[2:])
    @pytest.mark.parametrize("kind", ["affine3d", "perspective3d"])
    def test_3d_warp_equals_torchstn(
        self, kornia_tf: types.ModuleType, n: int, size: tuple[int, int, int], kind: str
    ) -> None:
        x = _image(2, 2, size)
        if kind == "affine3d":
            m = _affine(2, 3)
            ref = kornia_tf.warp_affine3d(x, m, size, align_corners=True)
        else:
            m = _projective(2, 3)
            ref = kornia_tf.warp_perspective3d(x, m, size, align_corners=True)
        _close(_warp_matrix(x, convert.from_kornia(m)), ref)

    def test_other_output_size_through_torchstn_warp(self, kornia_tf: types.ModuleType) -> None:
        """``dsize`` != the input's size: ``torchstn.warp`` with the normalised params of the
        converted matrix (``affine`` and ``projective`` families, and ``affine3d``)."""
        x, out = _image(2, 3, (7, 10)), (5, 9)
        m = _affine(2, 2)
        params, family = _params(convert.from_kornia(m), (7, 10), out)
        _close(warp(x, params, family, out), kornia_tf.warp_affine(x, m, out))
        h = _projective(2, 2)
        params, family = _params(convert.from_kornia(h), (7, 10), out)
        _close(warp(x, params, family, out), kornia_tf.warp_perspective(x, h, out))
        v, out3 = _image(1, 2, (5, 6, 7)), (4, 5, 8)
        a = _affine(1, 3)
        params, family = _params(convert.from_kornia(a), (5, 6, 7), out3)
        _close(warp(v, params, family, out3), kornia_tf.warp_affine3d(v, a, out3))

    @pytest.mark.parametrize("kind", ["affine3d", "perspective3d"])
    def test_3d_align_corners_false_is_another_warp(
        self, kornia_tf: types.ModuleType, kind: str
    ) -> None:
        """What ``from_kornia``'s docstring says about kornia's 3-D functions with
        ``align_corners=False``: they differ from the pixel matrix, by the stretch
        ``q(p) = (2 p + 1) (n - 1) / (2 n)`` of the frames that are normalised corner-aligned
        and sampled with half-pixel edges (the output's too for ``warp_affine3d``, whose grid
        is ``affine_grid``'s)."""
        size = (5, 6, 7)
        x = _image(1, 2, size)
        m = _affine(1, 3) if kind == "affine3d" else _projective(1, 3)
        fn = kornia_tf.warp_affine3d if kind == "affine3d" else kornia_tf.warp_perspective3d
        got = fn(x, m, size, align_corners=False)
        plain = _warp_matrix(x, convert.from_kornia(m))
        assert (got - plain).abs().max() > 0.05
        sides = torch.tensor(size[::-1], dtype=torch.float64)  # (W, H, D)
        q = torch.eye(4, dtype=torch.float64)
        q[:3, :3] = torch.diag((sides - 1) / sides)
        q[:3, 3] = (sides - 1) / (2 * sides)
        inv = convert.from_kornia(_square(m) if kind == "affine3d" else m)
        stretched = torch.linalg.inv(q) @ inv @ (q if kind == "affine3d" else torch.eye(4).double())
        _close(_warp_matrix(x, stretched), got)

    @pytest.mark.parametrize("shape", [(2, 2, 3), (2, 3, 3), (2, 3, 4), (2, 4, 4), (3, 3), (3, 4)])
    def test_round_trip_keeps_the_form(self, shape: tuple[int, ...]) -> None:
        n = 2 if shape[-1] == 3 else 3
        m = _projective(2, n) if shape[-2] == n + 1 else _affine(2, n)
        m = m if len(shape) == 3 else m[0]
        back = convert.to_kornia(convert.from_kornia(m))
        assert back.shape == m.shape
        torch.testing.assert_close(back, m, atol=1e-12, rtol=0)

    def test_affine_inverse_keeps_an_exact_bottom_row(self) -> None:
        m = _square(_affine(3, 2))
        assert torch.equal(convert.from_kornia(m)[:, 2], m[:, 2])


# ----------------------------------------------------------------------------- PyTorch theta
class TestTheta:
    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    def test_affine_grid_equals_torchstn(
        self, n: int, size: tuple[int, ...], align_corners: bool
    ) -> None:
        x = _image(2, 2, size)
        theta = _affine(2, n, shift=0.3)  # normalised: 0.3 is a good part of a pixel or more
        grid = F.affine_grid(theta, list(x.shape), align_corners=align_corners)
        ref = F.grid_sample(x, grid, "bilinear", "zeros", align_corners=align_corners)
        pixel = convert.from_theta(theta, size, align_corners=align_corners)
        assert pixel.shape == theta.shape
        _close(_warp_matrix(x, pixel), ref)

    @pytest.mark.parametrize("n", [2, 3])
    def test_other_output_size_maps_the_same_points(self, n: int, align_corners: bool) -> None:
        """With ``out_size`` != ``in_size``, the converted matrix sends every output pixel
        centre to the input point ``affine_grid`` samples (normalised with the input's size)."""
        in_size, out_size = ((7, 10), (4, 6)) if n == 2 else ((5, 6, 7), (3, 4, 6))
        theta = _affine(2, n, shift=0.3)
        grid = F.affine_grid(theta, [2, 1, *out_size], align_corners=align_corners)
        pixel = convert.from_theta(theta, in_size, out_size, align_corners=align_corners)
        axes = [torch.arange(s, dtype=torch.float64) for s in out_size]
        mesh = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1])  # (x, y[, z]) pixels
        read = fields.from_matrix(pixel, out_size) + mesh  # the input pixel each output reads
        normalised = pixel_to_normalized(read.movedim(1, -1), in_size, align_corners)
        _close(normalised, grid, atol=1e-12)

    @pytest.mark.parametrize("n", [2, 3])
    def test_round_trips(self, n: int, align_corners: bool) -> None:
        in_size, out_size = ((7, 10), (4, 6)) if n == 2 else ((5, 6, 7), (3, 4, 6))
        theta = _affine(3, n, shift=0.3)
        back = convert.to_theta(
            convert.from_theta(theta, in_size, out_size, align_corners=align_corners),
            in_size,
            out_size,
            align_corners=align_corners,
        )
        torch.testing.assert_close(back, theta, atol=1e-12, rtol=0)
        m = _square(_affine(3, n))
        again = convert.from_theta(
            convert.to_theta(m, in_size, out_size, align_corners=align_corners),
            in_size,
            out_size,
            align_corners=align_corners,
        )
        torch.testing.assert_close(_square(again), m, atol=1e-12, rtol=0)
        one = convert.to_theta(m[0], in_size, out_size, align_corners=align_corners)
        assert one.shape == (n, n + 1)

    def test_projective_has_no_theta(self) -> None:
        with pytest.raises(InvalidInputError, match="matrix: PyTorch's theta is affine"):
            convert.to_theta(_projective(1, 2), (4, 5))


# ----------------------------------------------------------------------------- MONAI
class TestMonai:
    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    @pytest.mark.parametrize(
        ("monai_padding", "padding_mode", "align_corners"),
        [
            ("zeros", "zeros", False),
            ("border", "border", False),
            ("reflection", "reflection", True),
        ],
    )
    def test_warp_equals_torchstn(
        self,
        n: int,
        size: tuple[int, ...],
        monai_padding: str,
        padding_mode: str,
        align_corners: bool,
    ) -> None:
        """``Warp`` reflects about the border voxels' centres: torchstn with
        ``align_corners=True``; zeros and border padding agree in either convention."""
        blocks = pytest.importorskip("monai.networks.blocks")
        x, ddf = _image(2, 3, size), _field(2, size, amp=2.5)
        ref = blocks.Warp(mode="bilinear", padding_mode=monai_padding)(x, ddf)
        u = convert.from_monai_ddf(ddf)
        got = fields.warp(x, u, padding_mode=padding_mode, align_corners=align_corners)
        _close(got, ref)

    @pytest.mark.parametrize("n", [2, 3])
    def test_dvf2ddf_equals_integrate(self, n: int) -> None:
        blocks = pytest.importorskip("monai.networks.blocks")
        size = SIZES[n][0]
        dvf = _field(2, size, amp=1.5)
        ref = blocks.DVF2DDF(num_steps=7)(dvf)
        got = fields.integrate(convert.from_monai_ddf(dvf), steps=7)
        _close(got, convert.from_monai_ddf(ref))

    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    def test_affine_equals_torchstn(
        self, n: int, size: tuple[int, ...], align_corners: bool
    ) -> None:
        transforms = pytest.importorskip("monai.transforms")
        x = _image(1, 2, size)
        a = _square(_affine(1, n))[0]
        affine = transforms.Affine(
            affine=a,
            padding_mode="zeros",
            align_corners=align_corners,
            dtype=np.float64,
            image_only=True,
        )
        ref = torch.as_tensor(affine(x[0]))[None]
        pixel = convert.from_monai_affine(a, size, align_corners=align_corners)
        assert pixel.shape == a.shape
        _close(_warp_matrix(x, pixel), ref)

    @pytest.mark.parametrize("n", [2, 3])
    def test_affine_other_output_size(self, n: int, align_corners: bool) -> None:
        transforms = pytest.importorskip("monai.transforms")
        in_size, out_size = ((7, 10), (6, 5)) if n == 2 else ((5, 6, 7), (4, 7, 5))
        x = _image(1, 2, in_size)
        a = _square(_affine(1, n))[0]
        ref = transforms.Affine(
            affine=a,
            spatial_size=out_size,
            padding_mode="zeros",
            align_corners=align_corners,
            dtype=np.float64,
            image_only=True,
        )(x[0])
        pixel = convert.from_monai_affine(a, in_size, out_size, align_corners=align_corners)
        params, family = _params(pixel[None], in_size, out_size)
        _close(warp(x, params, family, out_size), torch.as_tensor(ref)[None])

    @pytest.mark.parametrize("n", [2, 3])
    def test_round_trips(self, n: int, align_corners: bool) -> None:
        size = SIZES[n][1]
        ddf = _field(2, size)
        assert torch.equal(convert.to_monai_ddf(convert.from_monai_ddf(ddf)), ddf)
        in_size, out_size = SIZES[n]
        a = _square(_affine(2, n))
        back = convert.to_monai_affine(
            convert.from_monai_affine(a, in_size, out_size, align_corners=align_corners),
            in_size,
            out_size,
            align_corners=align_corners,
        )
        torch.testing.assert_close(back, a, atol=1e-12, rtol=0)
        one = convert.from_monai_affine(a[0].numpy(), in_size, dtype=torch.float64)
        assert one.shape == (n + 1, n + 1)
        torch.testing.assert_close(one, convert.from_monai_affine(a, in_size)[0])

    def test_affine_on_arrays_defaults_to_torch_dtype(self) -> None:
        assert convert.from_monai_affine(np.eye(3), (4, 5)).dtype == torch.get_default_dtype()


# ----------------------------------------------------------------------------- voxelmorph
def _voxelmorph_formula(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """voxelmorph's ``SpatialTransformer`` as read from its source: flow (index order, voxels)
    plus a grid of indices, each axis normalised by ``2 (g / (n - 1) - 0.5)``, the last axis
    reversed to grid_sample's ``(x, y[, z])``, ``align_corners=True``, zeros padding."""
    shape = flow.shape[2:]
    grid = torch.stack(torch.meshgrid(*[torch.arange(s).double() for s in shape], indexing="ij"))
    locs = grid[None] + flow
    locs = torch.stack([2 * (locs[:, i] / (s - 1) - 0.5) for i, s in enumerate(shape)], dim=-1)
    return F.grid_sample(x, locs.flip(-1), "bilinear", "zeros", align_corners=True)


class TestVoxelmorph:
    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    def test_formula_equals_torchstn(self, n: int, size: tuple[int, ...]) -> None:
        x, flow = _image(2, 3, size), _field(2, size, amp=2.5)
        _close(fields.warp(x, convert.from_voxelmorph(flow)), _voxelmorph_formula(x, flow))

    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    def test_spatial_transformer_equals_torchstn(self, n: int, size: tuple[int, ...]) -> None:
        """Against voxelmorph itself where it imports (it needs neurite and pystrum)."""
        modules = pytest.importorskip("voxelmorph.nn.modules")
        x, flow = _image(2, 3, size), _field(2, size, amp=2.5)
        ref = modules.SpatialTransformer()(x, flow)
        _close(fields.warp(x, convert.from_voxelmorph(flow)), ref)

    @pytest.mark.parametrize("n", [2, 3])
    def test_integrate_equals_torchstn(self, n: int) -> None:
        modules = pytest.importorskip("voxelmorph.nn.modules")
        size = SIZES[n][0]
        vel = _field(2, size, amp=1.5)
        ref = modules.IntegrateVelocityField(steps=7)(vel)
        _close(
            fields.integrate(convert.from_voxelmorph(vel), steps=7), convert.from_voxelmorph(ref)
        )

    @pytest.mark.parametrize("n", [2, 3])
    def test_channels_last(self, n: int) -> None:
        size = SIZES[n][0]
        flow = _field(1, size)
        last = flow.movedim(1, -1)  # TensorFlow voxelmorph's layout
        u = convert.from_voxelmorph(last, channels_last=True)
        assert torch.equal(u, convert.from_voxelmorph(flow))
        assert torch.equal(convert.to_voxelmorph(u, channels_last=True), last)
        assert torch.equal(convert.to_voxelmorph(convert.from_voxelmorph(flow)), flow)


# ----------------------------------------------------------------------------- scipy
def _scipy_each(
    fn: Callable[..., np.ndarray], x: torch.Tensor, *args: object, **kwargs: object
) -> torch.Tensor:
    """Apply a scipy.ndimage function to every (sample, channel) of ``x``."""
    out = [[fn(c.numpy(), *args, **kwargs) for c in sample] for sample in x]
    return torch.as_tensor(np.asarray(out))


class TestScipy:
    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    def test_affine_transform_equals_torchstn(
        self, ndimage: types.ModuleType, n: int, size: tuple[int, ...]
    ) -> None:
        x = _image(1, 3, size)
        m = _affine(1, n)[0].numpy()
        matrix, offset = m[:, :n], m[:, n]
        ref = _scipy_each(
            ndimage.affine_transform, x, matrix, offset, order=1, mode="grid-constant", cval=0.0
        )
        pixel = convert.from_scipy_affine(matrix, offset, dtype=torch.float64)
        _close(_warp_matrix(x, pixel), ref, atol=1e-10)

    @pytest.mark.parametrize("n", [2, 3])
    def test_affine_transform_other_output_size(self, ndimage: types.ModuleType, n: int) -> None:
        in_size, out_size = ((7, 10), (6, 5)) if n == 2 else ((5, 6, 7), (4, 7, 5))
        x = _image(1, 2, in_size)
        m = _square(_affine(1, n))[0].numpy()  # the homogeneous form scipy also takes
        ref = _scipy_each(
            ndimage.affine_transform, x, m, order=1, mode="grid-constant", output_shape=out_size
        )
        pixel = convert.from_scipy_affine(m, ndim=n, dtype=torch.float64)
        params, family = _params(pixel[None], in_size, out_size)
        _close(warp(x, params, family, out_size), ref, atol=1e-10)

    @pytest.mark.parametrize(("n", "size"), CASES, ids=IDS)
    def test_map_coordinates_equals_torchstn(
        self, ndimage: types.ModuleType, n: int, size: tuple[int, ...]
    ) -> None:
        x = _image(1, 2, size)
        coords = convert.to_scipy_coordinates(_field(1, size, amp=2.5))
        ref = _scipy_each(ndimage.map_coordinates, x, coords, order=1, mode="grid-constant")
        u = convert.from_scipy_coordinates(coords, dtype=torch.float64)
        _close(fields.warp(x, u), ref, atol=1e-10)

    def test_scipy_constant_mode_differs_only_at_the_border(
        self, ndimage: types.ModuleType
    ) -> None:
        """scipy's ``mode="constant"`` gives ``cval`` beyond the outer pixel centres without
        blending: it differs from zeros padding there only."""
        x = _image(1, 1, (7, 10))
        m = np.array([[1.0, 0.0, 0.4], [0.0, 1.0, -0.3]])  # subpixel shift, rows and columns
        constant = _scipy_each(ndimage.affine_transform, x, m, order=1, mode="constant")
        got = _warp_matrix(x, convert.from_scipy_affine(m, dtype=torch.float64))
        _close(got[..., :-1, 1:], constant[..., :-1, 1:], atol=1e-10)
        assert (got - constant).abs().max() > 0.05

    def test_diagonal_and_offset_forms(self) -> None:
        want = torch.tensor([[0.5, 0.0, 0.0], [0.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
        torch.testing.assert_close(convert.from_scipy_affine([2.0, 0.5], [3.0, 0.0]), want)
        torch.testing.assert_close(
            convert.from_scipy_affine(np.diag([2.0, 0.5]), 0.0)[1, 2], torch.tensor(0.0)
        )
        three = convert.from_scipy_affine(np.eye(3), 1.0, ndim=3)
        torch.testing.assert_close(three[:3, 3], torch.ones(3))
        two = convert.from_scipy_affine(np.eye(3), 5.0, ndim=2)  # homogeneous: offset ignored
        torch.testing.assert_close(two, torch.eye(3))

    @pytest.mark.parametrize("n", [2, 3])
    def test_round_trips(self, n: int) -> None:
        m = _affine(1, n)[0].numpy()
        matrix, offset = convert.to_scipy_affine(
            convert.from_scipy_affine(m[:, :n], m[:, n], dtype=torch.float64)
        )
        np.testing.assert_allclose(matrix, m[:, :n], atol=1e-12)
        np.testing.assert_allclose(offset, m[:, n], atol=1e-12)
        pixel = _square(_affine(1, n))
        again = convert.from_scipy_affine(*convert.to_scipy_affine(pixel), dtype=torch.float64)
        torch.testing.assert_close(again, pixel[0], atol=1e-12, rtol=0)
        u = _field(1, SIZES[n][0])
        back = convert.from_scipy_coordinates(convert.to_scipy_coordinates(u), dtype=torch.float64)
        torch.testing.assert_close(back, u, atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- the classic mistakes
class TestUnitsAndAxisOrder:
    """Each converter matters: the usual slips give another image (by a lot, not rounding)."""

    @staticmethod
    def _differ(a: torch.Tensor, b: torch.Tensor) -> None:
        assert (a - b).abs().max() > 0.1

    def test_index_order_channels_read_as_xy(self) -> None:
        x, ddf = _image(1, 1, (7, 10)), _field(1, (7, 10), amp=2.5)
        right = fields.warp(x, convert.from_monai_ddf(ddf))
        self._differ(fields.warp(x, ddf), right)  # MONAI/voxelmorph channels taken as (x, y)
        v, flow = _image(1, 1, (5, 6, 7)), _field(1, (5, 6, 7), amp=2.5)
        self._differ(fields.warp(v, flow), fields.warp(v, convert.from_voxelmorph(flow)))

    def test_normalised_units_read_as_pixels(self) -> None:
        x = _image(1, 1, (7, 10))
        theta = _affine(1, 2, shift=0.3)
        grid = F.affine_grid(theta, [1, 1, 7, 10], align_corners=False)
        right = F.grid_sample(x, grid, align_corners=False)
        pixel_field = fields.from_grid(grid)
        _close(fields.warp(x, pixel_field), right)
        identity = F.affine_grid(torch.eye(2, 3).double()[None], [1, 1, 7, 10], False)
        normalised_field = (grid - identity).movedim(-1, 1)
        self._differ(fields.warp(x, normalised_field), right)  # a grid offset is not pixels
        self._differ(_warp_matrix(x, theta), right)  # theta taken as a pixel matrix

    def test_forward_matrix_read_as_backward(self, kornia_tf: types.ModuleType) -> None:
        x, m = _image(1, 1, (7, 10)), _affine(1, 2)
        right = kornia_tf.warp_affine(x, m, (7, 10))
        _close(_warp_matrix(x, convert.from_kornia(m)), right)
        self._differ(_warp_matrix(x, m), right)

    def test_scipy_matrix_without_reversed_axes(self, ndimage: types.ModuleType) -> None:
        x = _image(1, 1, (7, 10))
        m = _affine(1, 2)[0].numpy()
        right = _scipy_each(ndimage.affine_transform, x, m, order=1, mode="grid-constant")
        self._differ(_warp_matrix(x, torch.as_tensor(m)), right)

    def test_monai_align_corners_changes_the_affine(self) -> None:
        a = _square(_affine(1, 2))[0]
        off = convert.from_monai_affine(a, (7, 10))
        on = convert.from_monai_affine(a, (7, 10), align_corners=True)
        assert (off - on).abs().max() > 0.01


# ----------------------------------------------------------------------------- errors, gradients
class TestErrors:
    @pytest.mark.parametrize(
        ("call", "match"),
        [
            (lambda: convert.from_kornia(torch.eye(5)[None]), r"matrix: expected \(B, 2, 3\)"),
            (lambda: convert.from_theta(torch.eye(2, 3)[None], (4, 5, 6)), "in_size"),
            (lambda: convert.from_monai_ddf(torch.zeros(1, 3, 4, 5)), "ddf: a field"),
            (lambda: convert.to_voxelmorph(torch.zeros(1, 2, 4)), "u: expected"),
            (lambda: convert.from_voxelmorph(torch.zeros(1, 4, 5, 3), channels_last=True), "flow"),
            (lambda: convert.from_scipy_affine(np.eye(3)), r"pass ndim=3 or ndim=2"),
            (lambda: convert.from_scipy_affine(np.eye(2), [1.0, 2.0, 3.0]), r"offset: expected"),
            (lambda: convert.from_scipy_affine(np.eye(5)), "matrix: expected a scipy matrix"),
            (lambda: convert.to_scipy_affine(torch.eye(3).expand(2, 3, 3)), "a batch of 2"),
            (lambda: convert.to_scipy_affine(_projective(1, 2)), "projective"),
            (lambda: convert.to_scipy_coordinates(torch.zeros(2, 2, 3, 4)), "a batch of 2"),
            (lambda: convert.from_scipy_coordinates(np.zeros((3, 4, 5))), "coordinates: expected"),
            (lambda: convert.to_monai_affine(_projective(1, 3), (4, 5, 6)), "projective"),
            (
                lambda: convert.to_monai_affine(torch.eye(3), (1, 5), align_corners=True),
                "in_size",
            ),
            (lambda: convert.from_kornia(torch.full((1, 2, 3), float("nan"))), "matrix"),
        ],
    )
    def test_one_line_naming_the_argument(self, call: Callable[[], object], match: str) -> None:
        with pytest.raises(InvalidInputError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("n", [2, 3])
def test_gradcheck(n: int) -> None:
    size = SIZES[n][0]
    m = _projective(1, n).requires_grad_()
    assert gradcheck(convert.from_kornia, (m,))
    a = _square(_affine(1, n)).requires_grad_()
    assert gradcheck(lambda t: convert.from_monai_affine(t, size, align_corners=True), (a,))
    theta = _affine(1, n, shift=0.3).requires_grad_()
    assert gradcheck(lambda t: convert.from_theta(t, size), (theta,))
    u = _field(1, size).requires_grad_()
    assert gradcheck(convert.from_voxelmorph, (u,))
