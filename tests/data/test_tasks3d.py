"""The volume task (rts3d): options, determinism, chunking, geometry, boxes, clutter, Sample."""

from __future__ import annotations

import math
import time

import pytest
import torch

from torchstn import data, warp
from torchstn.data.tasks import source_digits
from torchstn.data.tasks import volumes as volumes_module
from torchstn.data.tasks.volumes import frame_boxes3d, frame_params, ink_boxes3d, place_slabs
from torchstn.errors import InvalidInputError
from torchstn.transforms import Similarity3D


def rodrigues(vector: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of ``(B, 3)`` rotation vectors, written out here (float64):
    ``cos t I + sin t [k]x + (1 - cos t) k k^T`` for the unit axis ``k``."""
    v = vector.double()
    t = v.norm(dim=1).clamp_min(1e-12)
    k = v / t[:, None]
    kx, ky, kz = k.unbind(1)
    zero = torch.zeros_like(kx)
    cross = torch.stack((zero, -kz, ky, kz, zero, -kx, -ky, kx, zero), 1).view(-1, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    outer = k[:, :, None] * k[:, None, :]
    c, s = t.cos()[:, None, None], t.sin()[:, None, None]
    return c * eye + s * cross + (1 - c) * outer


def centroids(volumes: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` intensity-weighted ``(x, y, z)`` centroids of ``(B, D, H, W)`` volumes, in
    voxels (voxel ``i`` centred at ``i + 0.5``)."""
    v = volumes.double()
    mass = v.sum((1, 2, 3))
    out = []
    for keep in (3, 2, 1):  # x along W, y along H, z along D
        dims = tuple(d for d in (1, 2, 3) if d != keep)
        line = v.sum(dims)
        at = torch.arange(line.shape[1], dtype=torch.float64) + 0.5
        out.append((line * at).sum(1) / mass)
    return torch.stack(out, 1)


def tight_boxes(volumes: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """``(B, 6)`` voxel-edge boxes of the voxels above ``threshold``, one volume at a time."""
    boxes = []
    for v in volumes:
        k, j, i = torch.nonzero(v > threshold, as_tuple=True)
        boxes.append(
            [i.min(), j.min(), k.min(), i.max() + 1, j.max() + 1, k.max() + 1]
            if len(i)
            else [0] * 6
        )
    return torch.tensor(boxes, dtype=torch.float32)


def small(**options: object) -> data.Task:
    return data.get_task("rts3d", **{"canvas_size": 12, **options})


class TestOptions:
    def test_defaults(self) -> None:
        task = data.get_task("rts3d")
        assert task.in_shape == (1, 32, 32, 32) and task.num_classes == 10
        assert task.options == {
            "canvas_size": 32,
            "digit_size": 20,
            "thickness": 4,
            "angle": [0.0, 45.0],
            "scale": [0.7, 1.2],
            "translation": [-6.0, 6.0],
            "clutter": 4,
            "clutter_size": 6,
        }

    def test_defaults_follow_the_canvas(self) -> None:
        opts = data.get_task("rts3d", canvas_size=16).options
        assert (opts["digit_size"], opts["thickness"], opts["clutter_size"]) == (10, 2, 3)
        assert opts["translation"] == [-3.0, 3.0]
        assert data.get_task("rts3d", canvas_size=8, digit_size=8).options["translation"] == [
            0.0,
            0.0,
        ]

    def test_one_angle_means_up_to(self) -> None:
        assert small(angle=30).options["angle"] == [0.0, 30.0]
        assert small(angle=[10, 20]).options["angle"] == [10.0, 20.0]

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"canvas_size": 3}, r"option 'canvas_size': expected a square canvas of side >= 4"),
            ({"canvas_size": [8, 9]}, r"option 'canvas_size': expected a square canvas"),
            ({"digit_size": 13}, r"option 'digit_size': expected an int \[2, 12\], got 13"),
            ({"digit_size": 4.5}, r"option 'digit_size': expected an int, got 4.5"),
            ({"thickness": 0}, r"option 'thickness': expected an int \[1, 12\], got 0"),
            ({"angle": [-10, 10]}, r"option 'angle': expected values in \[0.0, 180.0\]"),
            ({"angle": [50, 10]}, r"option 'angle': expected lo <= hi"),
            ({"angle": 200}, r"option 'angle': expected values in \[0.0, 180.0\]"),
            ({"scale": [0, 1]}, r"option 'scale': expected values in"),
            ({"translation": [-7, 7]}, r"option 'translation': expected values in \[-6.0, 6.0\]"),
            ({"clutter": -1}, r"option 'clutter': expected an int >= 0, got -1"),
            ({"clutter": True}, r"option 'clutter': expected an int, got True"),
            ({"clutter_size": 0}, r"option 'clutter_size': expected an int \[1, 12\], got 0"),
            (
                {"canvas_size": 40, "clutter_size": 29},
                r"option 'clutter_size': expected an int \[1, 28\], got 29",
            ),
        ],
    )
    def test_bad_values(self, options: dict, message: str) -> None:
        with pytest.raises(InvalidInputError, match=message):
            small(**options)


class TestGeneration:
    def test_shapes_and_ground_truth(self) -> None:
        s = small(clutter=3).generate("test", num=5, seed=0)
        assert s.x.shape == (5, 1, 12, 12, 12) and s.x.dtype == torch.float32
        assert float(s.x.min()) >= 0 and float(s.x.max()) <= 1
        assert s.boxes.shape == (5, 6)
        shapes = {k: tuple(v.shape) for k, v in s.params.items()}
        assert shapes == {
            "source_index": (5,),
            "rotation": (5, 3),
            "scale": (5,),
            "translation": (5, 3),
            "distractor_boxes": (5, 3, 6),
            "ink_box": (5, 6),
        }
        labels = data.load_mnist("test")[1]
        assert torch.equal(s.y, labels[s.params["source_index"]])

    def test_same_seed_same_bytes_other_seed_or_split_differs(self) -> None:
        task = small()
        s = task.generate("val", num=6, seed=4)
        again = small().generate("val", num=6, seed=4)
        assert s.x.numpy().tobytes() == again.x.numpy().tobytes()
        assert torch.equal(s.boxes, again.boxes)
        assert all(torch.equal(v, again.params[k]) for k, v in s.params.items())
        assert not torch.equal(s.x, task.generate("val", num=6, seed=5).x)
        assert not torch.equal(s.x, task.generate("train", num=6, seed=4).x)

    @pytest.mark.parametrize("chunk_size", [1, 3, 7])
    def test_chunking_does_not_change_the_result(self, chunk_size: int) -> None:
        task = small(clutter=5)
        whole = task.generate("test", num=7, seed=2)
        parts = task.generate("test", num=7, seed=2, chunk_size=chunk_size)
        assert torch.equal(whole.x, parts.x) and torch.equal(whole.boxes, parts.boxes)
        assert all(torch.equal(v, parts.params[k]) for k, v in whole.params.items())

    def test_one_sampler_call_per_chunk(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[int] = []
        original = volumes_module.sample

        def counting(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
            calls.append(input.shape[0])
            return original(input, grid)

        monkeypatch.setattr(volumes_module, "sample", counting)
        small().generate("test", num=10, seed=0, chunk_size=4)
        assert calls == [4, 4, 2]

    def test_draws_lie_in_their_ranges(self) -> None:
        task = small(angle=[20, 40], scale=[0.8, 1.1], translation=[-2, 3], clutter=0)
        s = task.generate("train", num=400, seed=1)
        angle = torch.rad2deg(s.params["rotation"].double().norm(dim=1))
        assert float(angle.min()) >= 20 - 1e-4 and float(angle.max()) <= 40 + 1e-4
        assert float(angle.max() - angle.min()) > 15  # spread over the range
        scale, shift = s.params["scale"], s.params["translation"]
        assert float(scale.min()) >= 0.8 and float(scale.max()) <= 1.1
        assert float(shift.min()) >= -2 and float(shift.max()) <= 3
        # axes in every direction: each component takes both signs, none dominates on average
        axes = s.params["rotation"] / s.params["rotation"].norm(dim=1, keepdim=True)
        assert bool((axes.amin(0) < -0.9).all() and (axes.amax(0) > 0.9).all())
        assert float(axes.mean(0).abs().max()) < 0.15


class TestGeometry:
    def test_a_point_lands_where_the_transform_puts_it(self) -> None:
        # one bright 4 x 4 block far from the digit's centre (columns 19-22, rows 2-5): its
        # image in the volume is centred at c + t + s R p, p its offset scaled to digit_size
        digits = torch.zeros(4, 1, 28, 28)
        digits[:, 0, 2:6, 19:23] = 1.0
        rotation = torch.tensor(
            [[0.0, 0.0, math.pi / 2], [math.pi / 2, 0, 0], [0.0, -math.pi / 2, 0], [0.4, -0.7, 0.9]]
        )
        scale = torch.tensor([1.0, 1.2, 0.8, 1.1])
        translation = torch.tensor([[1.0, -2.0, 0.5], [0, 0, 0], [-1.5, 1.0, 2.0], [2, 1, -1]])
        side, digit, thickness = 40, 28, 2
        v = place_slabs(digits, rotation, scale, translation, side, digit, thickness)
        p = torch.tensor([21.0 - 14.0, 4.0 - 14.0, 0.0], dtype=torch.float64) * digit / 28
        expected = (
            side / 2 + translation.double() + scale.double()[:, None] * (rodrigues(rotation) @ p)
        )
        torch.testing.assert_close(centroids(v[:, 0]), expected, atol=0.25, rtol=0)

    def test_the_digit_mass_moves_as_drawn(self) -> None:
        task = data.get_task(
            "rts3d", canvas_size=16, digit_size=12, thickness=3, clutter=0, angle=[30, 90]
        )
        s = task.generate("test", num=24, seed=5)
        digits = source_digits("test")[0][s.params["source_index"]].double() / 255
        mass = digits.sum((1, 2))
        at = torch.arange(28, dtype=torch.float64) + 0.5
        # the digit's centroid relative to its centre, in volume voxels (z: the slab's middle)
        offset = torch.stack(
            (
                (digits.sum(1) * at).sum(1) / mass - 14,
                (digits.sum(2) * at).sum(1) / mass - 14,
                torch.zeros_like(mass),
            ),
            1,
        ) * (task.options["digit_size"] / 28)
        r = rodrigues(s.params["rotation"])
        expected = (
            8
            + s.params["translation"].double()
            + s.params["scale"].double()[:, None] * (r @ offset[:, :, None])[..., 0]
        )
        got = centroids(s.x[:, 0])
        torch.testing.assert_close(got, expected, atol=0.5, rtol=0)
        # the ink's mass is the slab's: the digit's, times digit_size^2 / 28^2, thickness, s^3
        # (point sampling of thin strokes aliases: a few % per volume, less on average)
        scale = s.params["scale"].double()
        slab = mass * (task.options["digit_size"] / 28) ** 2 * task.options["thickness"]
        error = (s.x.double().sum((1, 2, 3, 4)) / (slab * scale**3) - 1).abs()
        assert float(error.max()) < 0.15 and float(error.mean()) < 0.03

    def test_frame_boxes_bound_a_full_slab(self) -> None:
        # an all-white digit fills its slab frame: its ink box is the frame box, to a voxel
        digits = torch.ones(5, 1, 28, 28)
        gen = torch.Generator().manual_seed(0)
        rotation = torch.randn(5, 3, generator=gen)
        scale = 0.8 + 0.4 * torch.rand(5, generator=gen)
        translation = torch.randn(5, 3, generator=gen)
        args = (rotation, scale, translation, 24, 12, 3)
        v = place_slabs(digits, *args)
        boxes = frame_boxes3d(*args)
        ink = tight_boxes(v[:, 0], threshold=0.5)
        torch.testing.assert_close(ink, boxes, atol=1.0, rtol=0)
        # a quarter turn about x lays the slab flat along y: thin in y, wide in z
        quarter = torch.tensor([[math.pi / 2, 0.0, 0.0]])
        box = frame_boxes3d(quarter, torch.ones(1), torch.zeros(1, 3), 24, 12, 3)[0]
        torch.testing.assert_close(box, torch.tensor([6.0, 10.5, 6.0, 18.0, 13.5, 18.0]))

    def test_frame_params_map_the_digit_cube_to_the_canvas(self) -> None:
        s = small(clutter=0).generate("test", num=6, seed=3)
        side, digit = 12, small().options["digit_size"]
        params = frame_params(
            s.params["rotation"], s.params["scale"], s.params["translation"], side, digit
        )
        corners = torch.tensor(
            [[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)]
        )
        mapped = Similarity3D().map_points(params, corners.expand(6, 8, 3).contiguous())
        voxels = (mapped.double() + 1) * side / 2
        r = rodrigues(s.params["rotation"])
        expected = (
            side / 2
            + s.params["translation"].double()[:, None]
            + s.params["scale"].double()[:, None, None]
            * (corners.double() * digit / 2 @ r.transpose(1, 2))
        )
        torch.testing.assert_close(voxels, expected, atol=1e-4, rtol=0)

    def test_frame_params_undo_the_distortion(self) -> None:
        # warping a volume with its frame params brings back the upright digit
        task = data.get_task("rts3d", canvas_size=24, digit_size=16, thickness=2, clutter=0)
        s = task.generate("test", num=6, seed=7)
        params = frame_params(
            s.params["rotation"], s.params["scale"], s.params["translation"], 24, 16
        )
        upright = warp(s.x, params, "similarity3d", out_size=(16, 16, 16))
        middle = upright[:, 0, 7:9].mean(1)  # the slab: 2 voxels about the cube's middle
        digits = source_digits("test")[0][s.params["source_index"]][:, None].float() / 255
        reference = torch.nn.functional.interpolate(
            digits, size=(16, 16), mode="bilinear", antialias=True
        )[:, 0]
        for got, want in zip(middle, reference):
            corr = torch.corrcoef(torch.stack((got.flatten(), want.flatten())))[0, 1]
            assert float(corr) > 0.8


class TestBoxes:
    def test_boxes_hold_the_ink(self) -> None:
        s = data.get_task("rts3d", canvas_size=16, clutter=0).generate("val", num=16, seed=1)
        ink = tight_boxes(s.x[:, 0])
        assert torch.equal(s.params["ink_box"], ink)
        assert bool((ink[:, 3:] > ink[:, :3]).all())
        assert bool((ink[:, :3] >= s.boxes[:, :3] - 1).all())
        assert bool((ink[:, 3:] <= s.boxes[:, 3:] + 1).all())
        assert bool((s.boxes >= 0).all() and (s.boxes <= 16).all())

    def test_ink_boxes3d(self) -> None:
        v = torch.zeros(3, 5, 6, 7)
        v[0, 1, 2, 3] = 0.5
        v[1, 0:5, 1:2, 6:7] = 1.0
        assert ink_boxes3d(v).tolist() == [
            [3, 2, 1, 4, 3, 2],
            [6, 1, 0, 7, 2, 5],
            [0, 0, 0, 0, 0, 0],
        ]

    def test_boxes_are_clipped_to_the_canvas(self) -> None:
        boxes = frame_boxes3d(
            torch.zeros(1, 3), torch.ones(1), torch.tensor([[-8.0, 0.0, 7.0]]), 16, 12, 2
        )
        assert boxes.tolist() == [[0.0, 2.0, 14.0, 6.0, 14.0, 16.0]]


class TestClutter:
    def test_clutter_only_adds_ink_inside_its_pieces(self) -> None:
        options = {"canvas_size": 16, "clutter_size": 4, "thickness": 2}
        s = data.get_task("rts3d", clutter=6, **options).generate("test", num=8, seed=2)
        clean = data.get_task("rts3d", clutter=0, **options).generate("test", num=8, seed=2)
        assert torch.equal(s.boxes, clean.boxes)
        assert torch.equal(s.params["ink_box"], clean.params["ink_box"])
        assert bool((s.x >= clean.x).all()) and float((s.x - clean.x).sum()) > 0
        boxes = s.params["distractor_boxes"]
        assert boxes.shape == (8, 6, 6)
        assert bool((boxes[..., :3] >= 0).all() and (boxes[..., 3:] <= 16).all())
        sides = (boxes[..., 3:] - boxes[..., :3]).sort(-1).values
        assert bool((sides == torch.tensor([2.0, 4.0, 4.0])).all())
        # every orientation occurs (thin along x, y or z)
        thin = (boxes[..., 3:] - boxes[..., :3]).argmin(-1)
        assert set(thin.flatten().tolist()) == {0, 1, 2}
        mask = torch.zeros(8, 16, 16, 16, dtype=torch.bool)
        for i in range(8):
            for x0, y0, z0, x1, y1, z1 in boxes[i].long().tolist():
                mask[i, z0:z1, y0:y1, x0:x1] = True
        assert torch.equal(s.x[:, 0][~mask], clean.x[:, 0][~mask])

    @pytest.mark.parametrize("orientation", [0, 1, 2])
    def test_a_piece_in_each_plane(self, orientation: int) -> None:
        # a pool digit whose pixels are all distinct; a 3 x 3 crop at (x, y) = (5, 7), two
        # voxels thick, pasted with its corner at voxel (1, 2, 3)
        pool = (torch.arange(28 * 28) % 250 + 1).to(torch.uint8).view(1, 28, 28)
        crop = pool[0, 7:10, 5:8].float() / 255  # (rows v, columns u)
        draws = {
            "_clutter_source": torch.tensor([[0]]),
            "_clutter_crop": torch.tensor([[[5, 7]]]),
            "_clutter_orientation": torch.tensor([[orientation]]),
            "_clutter_corner": torch.tensor([[[1, 2, 3]]]),
        }
        canvas = torch.zeros(1, 9, 9, 9)
        volumes_module._add_clutter3d(canvas, pool, draws, 3, 2)
        expected = torch.zeros(9, 9, 9)  # [z, y, x]
        for w in range(2):
            if orientation == 0:  # in the xy plane: columns along x, rows along y
                expected[3 + w, 2:5, 1:4] = crop
            elif orientation == 1:  # in the xz plane: columns along x, rows along z
                expected[3:6, 2 + w, 1:4] = crop
            else:  # in the yz plane: rows along y, columns along z
                expected[3:6, 2:5, 1 + w] = crop.T
        assert torch.equal(canvas[0], expected)

    def test_pieces_are_cut_from_other_digits(self) -> None:
        # a piece in the xy plane repeats its crop in every one of its z layers
        s = data.get_task(
            "rts3d", canvas_size=16, clutter=1, clutter_size=5, thickness=3, scale=[0.7, 0.7]
        ).generate("test", num=40, seed=0)
        checked = 0
        for i in range(40):
            x0, y0, z0, x1, y1, z1 = s.params["distractor_boxes"][i, 0].long().tolist()
            if z1 - z0 == 3:
                layers = s.x[i, 0, z0:z1, y0:y1, x0:x1]
                if torch.equal(layers[0], layers[1]) and torch.equal(layers[1], layers[2]):
                    checked += 1
        assert checked >= 5  # the digit may overlap a few pieces


class TestSample:
    def test_volumes_take_six_wide_boxes(self) -> None:
        s = data.Sample(torch.zeros(2, 1, 3, 4, 5), torch.tensor([0, 1]), torch.zeros(2, 6))
        assert s[1:].boxes.shape == (1, 6) and s.to("cpu").x.dim() == 5

    @pytest.mark.parametrize(
        ("x", "boxes", "message"),
        [
            (torch.zeros(2, 1, 3, 4, 5), torch.zeros(2, 4), r"boxes: expected last dimension 6"),
            (torch.zeros(2, 1, 4, 5), torch.zeros(2, 6), r"boxes: expected last dimension 4"),
            (torch.zeros(2, 1, 1, 3, 4, 5), torch.zeros(2, 6), r"x: expected 4 dims .* or 5 dims"),
        ],
    )
    def test_mismatched_boxes(self, x: torch.Tensor, boxes: torch.Tensor, message: str) -> None:
        with pytest.raises(InvalidInputError, match=message):
            data.Sample(x, torch.tensor([0, 1]), boxes)


@pytest.mark.slow  # a wall-clock bound on a loaded machine; see the report for the rate
def test_ten_thousand_volumes_in_seconds() -> None:
    task = data.get_task("rts3d")
    task.generate("train", num=16, seed=0)  # load MNIST
    start = time.perf_counter()
    s = task.generate("train", num=10_000, seed=0)
    seconds = time.perf_counter() - start
    assert s.x.shape == (10_000, 1, 32, 32, 32)
    # about 3.6 s on two idle cores; the bound leaves room for a loaded machine
    assert seconds < 60, f"{seconds:.1f} s for 10,000 volumes"
