"""The task generators: shapes, ranges, labels, ground truth, determinism, options, errors."""

from __future__ import annotations

import json

import pytest
import torch

from torchstn import data
from torchstn.data.tasks import VALIDATION_SIZE, cycle_indices, source_digits
from torchstn.data.tasks.canvas import ink_boxes
from torchstn.errors import InvalidInputError, UnknownNameError

NAMES = data.task_names()
MNIST = {split: data.load_mnist(split) for split in ("train", "test")}


def mnist_labels(split: str) -> torch.Tensor:
    return MNIST["test" if split == "test" else "train"][1]


@pytest.fixture(scope="module")
def samples() -> dict[str, data.Sample]:
    """48 test samples of every task with its default options, seed 3."""
    return {name: data.get_task(name).generate("test", num=48, seed=3) for name in NAMES}


def test_names() -> None:
    assert NAMES == (
        "addition",
        "cluttered",
        "colocalization",
        "elastic",
        "projective",
        "rotated",
        "rts",
        "rts3d",
    )


@pytest.mark.parametrize("name", NAMES)
class TestEveryTask:
    def test_shapes_dtypes_ranges(self, name: str, samples: dict[str, data.Sample]) -> None:
        task, s = data.get_task(name), samples[name]
        c, *spatial = task.in_shape  # (H, W) for images, (D, H, W) for volumes
        k = len(spatial)
        assert k in (2, 3)
        assert s.x.shape == (48, c, *spatial) and s.x.dtype == torch.float32
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert s.y.shape == (48,) and s.y.dtype == torch.int64
        assert int(s.y.min()) >= 0 and int(s.y.max()) < task.num_classes
        # boxes (x0, y0, [z0,] x1, y1, [z1]): each low edge >= 0, below its high edge, and the
        # high edge within the canvas side of its axis (x: W, y: H, z: D)
        assert s.boxes.shape == (48, 2 * k) and s.boxes.dtype == torch.float32
        low, high = s.boxes[:, :k], s.boxes[:, k:]
        sides = torch.tensor(spatial[::-1], dtype=torch.float32)  # (W, H[, D])
        assert bool(((0 <= low) & (low < high) & (high <= sides)).all())
        for key, value in s.params.items():
            assert value.shape[0] == 48, key
        # every image shows a digit: ink inside its frame box
        ink = s.params["ink_box"]
        assert ink.shape == (48, 2 * k)
        assert bool((ink[:, k:] > ink[:, :k]).all())
        assert bool((ink[:, :k] >= low - 1).all() and (ink[:, k:] <= high + 1).all())

    def test_labels_match_source_digits(self, name: str, samples: dict[str, data.Sample]) -> None:
        s = samples[name]
        labels = mnist_labels("test")[s.params["source_index"]]
        if name == "addition":
            assert torch.equal(s.params["digits"], labels)
            assert torch.equal(s.y, labels.sum(dim=1))
        else:
            assert torch.equal(s.y, labels)

    def test_same_seed_same_bytes(self, name: str, samples: dict[str, data.Sample]) -> None:
        s = samples[name]
        again = data.get_task(name).generate("test", num=48, seed=3)
        assert s.x.numpy().tobytes() == again.x.numpy().tobytes()
        assert torch.equal(s.y, again.y) and torch.equal(s.boxes, again.boxes)
        assert s.params.keys() == again.params.keys()
        assert all(torch.equal(v, again.params[k]) for k, v in s.params.items())

    def test_other_seed_or_split_differs(self, name: str, samples: dict[str, data.Sample]) -> None:
        task = data.get_task(name)
        s = samples[name]
        assert not torch.equal(s.x, task.generate("test", num=48, seed=4).x)
        assert not torch.equal(s.x, task.generate("val", num=48, seed=3).x)

    def test_chunking_does_not_change_the_result(
        self, name: str, samples: dict[str, data.Sample]
    ) -> None:
        s = data.get_task(name).generate("test", num=48, seed=3, chunk_size=17)
        assert torch.equal(s.x, samples[name].x) and torch.equal(s.boxes, samples[name].boxes)

    def test_options_are_json_and_round_trip(self, name: str) -> None:
        task = data.get_task(name)
        options = json.loads(json.dumps(task.options))
        assert options == task.options
        assert data.get_task(name, **options).options == task.options
        assert set(options) == set(type(task).defaults)

    def test_unknown_option(self, name: str) -> None:
        with pytest.raises(
            InvalidInputError, match=f"task '{name}': unknown option 'colour'; valid options: "
        ):
            data.get_task(name, colour=1)

    def test_ink_box_is_the_tight_box_of_the_digit(
        self, name: str, samples: dict[str, data.Sample]
    ) -> None:
        if name in ("cluttered", "colocalization"):
            pytest.skip("clutter covers the canvas; see TestCluttered")
        if name == "rts3d":
            pytest.skip("volumes with clutter by default; see tests/data/test_tasks3d.py")
        s = samples[name]
        ink = s.x.amax(dim=1)  # both channels of the addition task
        assert torch.equal(s.params["ink_box"], ink_boxes(ink))


class TestSplits:
    @pytest.mark.parametrize(
        ("split", "low", "high"), [("train", 0, 50000), ("val", 50000, 60000), ("test", 0, 10000)]
    )
    def test_source_ranges(self, split: str, low: int, high: int) -> None:
        s = data.get_task("rotated").generate(split, num=300, seed=0)
        index = s.params["source_index"]
        assert int(index.min()) >= low and int(index.max()) < high
        assert torch.equal(s.y, mnist_labels(split)[index])
        assert VALIDATION_SIZE == 10000

    def test_fixed_split_uses_each_digit_once_then_cycles(self) -> None:
        index = cycle_indices(
            VALIDATION_SIZE, VALIDATION_SIZE + 7, torch.Generator().manual_seed(0)
        )
        assert sorted(index[:VALIDATION_SIZE].tolist()) == list(range(VALIDATION_SIZE))
        assert len(set(index[VALIDATION_SIZE:].tolist())) == 7
        # the full test split holds each test digit once: exactly MNIST's label counts
        t = data.get_task("rotated").generate("test", num=10000, seed=1)
        assert sorted(t.params["source_index"].tolist()) == list(range(10000))
        assert torch.equal(torch.bincount(t.y), torch.bincount(mnist_labels("test")))

    def test_epochs_are_fresh(self) -> None:
        task = data.get_task("rts")
        first = task.generate("train", num=32, seed=data.epoch_seed(7, 0))
        second = task.generate("train", num=32, seed=data.epoch_seed(7, 1))
        assert not torch.equal(first.params["source_index"], second.params["source_index"])
        assert not torch.equal(first.params["angle"], second.params["angle"])

    def test_source_digits(self) -> None:
        images, labels, offset = source_digits("val")
        assert images.shape == (10000, 28, 28) and offset == 50000
        assert torch.equal(labels, mnist_labels("train")[50000:])

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"split": "dev"}, "unknown split 'dev'; valid choices: test, train, val"),
            ({"num": 0}, "num: expected a positive int"),
            ({"num": 2.5}, "num"),
            ({"chunk_size": 0}, "chunk_size"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict, message: str) -> None:
        with pytest.raises(InvalidInputError, match=message):
            data.get_task("rotated").generate(**{"split": "test", "num": 2, **kwargs})


class TestRegistry:
    def test_unknown_task_lists_the_names(self) -> None:
        with pytest.raises(
            UnknownNameError,
            match="unknown task 'mnist'; valid choices: addition, cluttered, colocalization, elastic, projective, rotated, rts, rts3d",
        ):
            data.get_task("mnist")

    @pytest.mark.parametrize(
        ("name", "options", "message"),
        [
            ("rotated", {"angle": [30, 10]}, r"option 'angle': expected lo <= hi"),
            ("rotated", {"angle": "wide"}, r"option 'angle': expected a number or a pair"),
            ("rts", {"scale": [0, 1]}, r"option 'scale': expected values in"),
            (
                "rts",
                {"canvas_size": 20},
                r"option 'canvas_size': expected a square canvas of side >= 28",
            ),
            ("rts", {"translation": [-30, 30]}, r"option 'translation'"),
            ("cluttered", {"patch_size": 0}, r"option 'patch_size': expected an int \[1, 28\]"),
            ("cluttered", {"num_distractors": -1}, r"option 'num_distractors'"),
            ("colocalization", {"clutter": "yes"}, r"option 'clutter': expected true or false"),
            ("elastic", {"sigma": -1.0}, r"option 'sigma': expected a number >= 0"),
            ("elastic", {"grid_size": 1}, r"option 'grid_size'"),
            (
                "projective",
                {"corner_sigma": float("nan")},
                r"option 'corner_sigma': expected a finite number",
            ),
        ],
    )
    def test_bad_option_values(self, name: str, options: dict, message: str) -> None:
        with pytest.raises(InvalidInputError, match=message):
            data.get_task(name, **options)

    def test_in_shapes_and_classes(self) -> None:
        shapes = {name: data.get_task(name).in_shape for name in NAMES}
        assert shapes == {
            "addition": (2, 42, 42),
            "cluttered": (1, 60, 60),
            "colocalization": (1, 84, 84),
            "elastic": (1, 28, 28),
            "projective": (1, 28, 28),
            "rotated": (1, 28, 28),
            "rts": (1, 42, 42),
            "rts3d": (1, 32, 32, 32),
        }
        assert data.get_task("addition").num_classes == 19
        assert data.get_task("rts", translation=None).options["translation"] == [-7.0, 7.0]
        assert data.get_task("rts", canvas_size=60).options["translation"] == [-16.0, 16.0]


def digits(split: str, index: torch.Tensor) -> torch.Tensor:
    return MNIST["test" if split == "test" else "train"][0][index].float() / 255


class TestIdentityWarps:
    """With the distortion switched off, every task reproduces the MNIST digit."""

    @pytest.mark.parametrize(
        ("name", "options"),
        [
            ("rotated", {"angle": [0, 0]}),
            ("rts", {"angle": 0, "scale": [1, 1], "translation": 0, "canvas_size": 28}),
            ("elastic", {"sigma": 0.0}),
            ("projective", {"scale": [1, 1], "corner_sigma": 0.0}),
        ],
    )
    def test_identity(self, name: str, options: dict) -> None:
        s = data.get_task(name, **options).generate("test", num=16, seed=0)
        torch.testing.assert_close(
            s.x[:, 0], digits("test", s.params["source_index"]), atol=1e-5, rtol=0
        )

    def test_rotation_direction(self) -> None:
        s = data.get_task("rotated", angle=[90, 90]).generate("test", num=8, seed=0)
        # positive angles turn counter-clockwise on screen: the top row becomes the left column
        expected = digits("test", s.params["source_index"]).rot90(1, dims=(1, 2))
        torch.testing.assert_close(s.x[:, 0], expected, atol=1e-4, rtol=0)

    def test_scale_and_translation(self) -> None:
        s = data.get_task(
            "rts", angle=0, scale=[2, 2], translation=[5, 5], canvas_size=56
        ).generate("test", num=4, seed=0)
        d = digits("test", s.params["source_index"])[:, None]
        # scale 2 about the digit centre, centre moved by (5, 5) pixels: in the normalised frames
        # the canvas point n reads the digit at n - 5 / 28 (worked out by hand, then PyTorch's ops)
        theta = torch.tensor([[1.0, 0.0, -5 / 28], [0.0, 1.0, -5 / 28]]).expand(4, 2, 3)
        grid = torch.nn.functional.affine_grid(theta, [4, 1, 56, 56], align_corners=False)
        expected = torch.nn.functional.grid_sample(d, grid, align_corners=False)
        torch.testing.assert_close(s.x, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(
            s.x.sum(dim=(1, 2, 3)), 4 * d.sum(dim=(1, 2, 3)), rtol=0.02, atol=0
        )
        assert torch.equal(s.boxes, torch.tensor([[5.0, 5.0, 56.0, 56.0]]).expand(4, 4))


class TestCluttered:
    @pytest.mark.parametrize("side", [40, 60, 100])
    def test_digit_inside_and_exact(self, side: int) -> None:
        s = data.get_task("cluttered", canvas_size=side, num_distractors=0).generate(
            "test", num=32, seed=1
        )
        assert s.x.shape == (32, 1, side, side)
        assert bool((s.boxes[:, 2:] - s.boxes[:, :2] == 28).all())
        assert bool((s.boxes >= 0).all() and (s.boxes <= side).all())
        d = digits("test", s.params["source_index"])
        for i in range(4):
            x0, y0, _, _ = (int(v) for v in s.boxes[i])
            assert torch.equal(s.x[i, 0, y0 : y0 + 28, x0 : x0 + 28], d[i])
            assert float(s.x[i].sum()) == pytest.approx(float(d[i].sum()), rel=1e-5)
        torch.testing.assert_close(s.params["tx"], s.boxes[:, 0] + 14 - side / 2)

    def test_distractors(self) -> None:
        task = data.get_task("cluttered", canvas_size=40, num_distractors=9, patch_size=5)
        s = task.generate("test", num=64, seed=2)
        boxes = s.params["distractor_boxes"]
        assert boxes.shape == (64, 9, 4)
        assert bool((boxes[..., 2:] - boxes[..., :2] == 5).all()) and bool(
            (boxes >= 0).all() and (boxes <= 40).all()
        )
        clean = data.get_task("cluttered", canvas_size=40, num_distractors=0).generate(
            "test", num=64, seed=2
        )
        # clutter only adds ink (combined by maximum), and only inside its patches
        assert bool((s.x >= clean.x).all())
        mask = torch.zeros(64, 40, 40, dtype=torch.bool)
        for i, j in torch.cartesian_prod(torch.arange(64), torch.arange(9)).tolist():
            x0, y0, x1, y1 = (int(v) for v in boxes[i, j])
            mask[i, y0:y1, x0:x1] = True
        assert bool((s.x[:, 0][~mask] == clean.x[:, 0][~mask]).all())
        assert float((s.x - clean.x).sum()) > 0
        assert torch.equal(s.params["ink_box"], clean.params["ink_box"])

    def test_colocalization(self) -> None:
        plain = data.get_task("colocalization").generate("test", num=16, seed=0)
        cluttered = data.get_task("colocalization", clutter=True).generate("test", num=16, seed=0)
        assert plain.params["distractor_boxes"].shape == (16, 0, 4)
        assert cluttered.params["distractor_boxes"].shape == (16, 16, 4)
        assert bool((plain.boxes[:, 2:] - plain.boxes[:, :2] == 28).all())
        assert int((plain.x > 0).sum()) < int((cluttered.x > 0).sum())


class TestProjective:
    def test_frames_are_well_shaped_quads(self) -> None:
        from torchstn.data.tasks.projective import MIN_AREA_FRACTION, destination_corners

        # at 5 px about 3% of the draws fold the frame and are redrawn
        s = data.get_task("projective", corner_sigma=5.0).generate("test", num=2000, seed=0)
        quads = destination_corners(s.params["scale"], s.params["corner_offsets"])
        edges = quads.roll(-1, 1) - quads
        following = edges.roll(-1, 1)
        cross = edges[..., 0] * following[..., 1] - edges[..., 1] * following[..., 0]
        side = 28 * s.params["scale"].double()[:, None]
        assert bool((cross >= MIN_AREA_FRACTION * side**2).all())
        boxes = torch.cat((quads.amin(1), quads.amax(1)), -1).clamp(0, 28).float()
        torch.testing.assert_close(s.boxes, boxes)
        assert float(s.x.amax(dim=(1, 2, 3)).min()) > 0.5  # no digit vanishes

    def test_homography_maps_the_frame_to_the_quad(self) -> None:
        from torchstn.data.tasks.projective import destination_corners
        from torchstn.transforms import Projective

        s = data.get_task("projective").generate("test", num=64, seed=1)
        quads = destination_corners(s.params["scale"], s.params["corner_offsets"]).float() / 14 - 1
        frame = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]).expand(64, 4, 2)
        mapped = Projective().map_points(s.params["homography"], quads)
        torch.testing.assert_close(mapped, frame, atol=1e-3, rtol=0)


class TestAddition:
    def test_channels_hold_the_two_digits(self) -> None:
        task = data.get_task("addition", angle=0, scale=[1, 1])
        s = task.generate("test", num=16, seed=5)
        one = data.get_task("rts", angle=0, scale=[1, 1])
        assert s.x.shape == (16, 2, 42, 42)
        for channel in range(2):
            d = digits("test", s.params["source_index"][:, channel])
            # the channel's ink equals the source digit's (translation by whole or partial pixels)
            torch.testing.assert_close(
                s.x[:, channel].sum(dim=(1, 2)), d.sum(dim=(1, 2)), rtol=2e-2, atol=0.5
            )
        assert one.options["translation"] == task.options["translation"]
        union = torch.cat(
            (s.params["digit_boxes"][..., :2].amin(1), s.params["digit_boxes"][..., 2:].amax(1)), -1
        )
        assert torch.equal(s.boxes, union)
        assert int(s.y.max()) <= 18 and s.params["digits"].shape == (16, 2)

    def test_labels_cover_all_sums(self) -> None:
        s = data.get_task("addition").generate("test", num=2000, seed=0)
        assert set(s.y.tolist()) == set(range(19))
