"""Pictures of dense fields: the deformed grid (read back from the drawn lines), the Jacobian map
(its fold overlay against a direct numpy determinant), the registration figure for images and
volumes, the convention picture (its output against direct indexing), atomic files, and the
registration hook with a stand-in model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from torchstn.errors import InvalidInputError

pytest.importorskip("matplotlib")

from torchstn.fields import warp
from torchstn.viz import pyplot
from torchstn.viz.fields import (
    draw_deformed_grid,
    draw_jacobian,
    field_convention_figure,
    field_slice,
    registration_figure,
    save_registration_figure,
)
from torchstn.viz.registration import registration_curves_figure, registration_pictures

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ax():
    plt = pyplot()
    fig, axes = plt.subplots()
    yield axes
    plt.close(fig)


def _image_labelled(ax, label):
    return next(im for im in ax.get_images() if im.get_label() == label)


def _numpy_det(u: np.ndarray) -> np.ndarray:
    """det(I + grad u) of a (2, H, W) field, u[0] along x (columns), by np.gradient."""
    dux_dy, dux_dx = np.gradient(u[0])
    duy_dy, duy_dx = np.gradient(u[1])
    return (1 + dux_dx) * (1 + duy_dy) - dux_dy * duy_dx


class TestDeformedGrid:
    @pytest.mark.parametrize("shift", [(3.0, 0.0), (-1.5, 2.25)])
    def test_a_constant_shift_moves_every_line_by_it(self, ax, shift) -> None:
        h, w, step = 9, 13, 4
        u = torch.zeros(1, 2, h, w)
        u[:, 0], u[:, 1] = shift
        lines = draw_deformed_grid(ax, u, step=step)
        rows, cols = [0, 4, 8], [0, 4, 8, 12]  # every 4th, and the last
        assert len(lines) == len(rows) + len(cols)
        for line, i in zip(lines[: len(rows)], rows):  # horizontal: row i, every column
            np.testing.assert_allclose(line.get_xdata(), np.arange(w) + shift[0])
            np.testing.assert_allclose(line.get_ydata(), np.full(w, i + shift[1]))
        for line, j in zip(lines[len(rows) :], cols):  # vertical: column j, every row
            np.testing.assert_allclose(line.get_xdata(), np.full(h, j + shift[0]))
            np.testing.assert_allclose(line.get_ydata(), np.arange(h) + shift[1])
        assert ax.get_ylim()[0] > ax.get_ylim()[1]  # y down, as images

    def test_each_point_is_p_plus_u_of_p(self, ax) -> None:
        u = torch.randn(2, 6, 7, generator=torch.Generator().manual_seed(0))
        lines = draw_deformed_grid(ax, u, step=1)
        for i in range(6):
            x, y = lines[i].get_xdata(), lines[i].get_ydata()
            np.testing.assert_allclose(x, np.arange(7) + u[0, i].numpy(), rtol=0, atol=1e-6)
            np.testing.assert_allclose(y, i + u[1, i].numpy(), rtol=0, atol=1e-6)

    def test_a_volume_slice_draws_its_in_plane_components(self, ax) -> None:
        u = torch.zeros(3, 4, 5, 6)
        u[0], u[1], u[2] = 1.0, 2.0, 3.0  # x, y, z
        lines = draw_deformed_grid(ax, u, step=10, view="yz")  # rows z, columns y
        first = lines[0]  # the top row (z = 0) across every y
        np.testing.assert_allclose(first.get_xdata(), np.arange(5) + 2.0)  # y component
        np.testing.assert_allclose(first.get_ydata(), np.full(5, 0 + 3.0))  # z component

    def test_bad_arguments_in_one_line(self, ax) -> None:
        with pytest.raises(InvalidInputError, match=r"step: expected a positive"):
            draw_deformed_grid(ax, torch.zeros(2, 4, 4), step=0)
        with pytest.raises(InvalidInputError, match=r"u: expected one field"):
            draw_deformed_grid(ax, torch.zeros(2, 2, 4, 4))
        with pytest.raises(InvalidInputError, match=r"view"):
            draw_deformed_grid(ax, torch.zeros(3, 4, 4, 4), view="zz")


class TestFieldSlice:
    def test_the_middle_slices_against_indexing(self) -> None:
        u = torch.randn(3, 4, 5, 6, dtype=torch.float64)
        f, _ = field_slice(u, "xy")
        assert torch.equal(f, u[[0, 1], 2])
        f, _ = field_slice(u, "xz")
        assert torch.equal(f, u[[0, 2], :, 2, :])
        f, _ = field_slice(u, "yz")
        assert torch.equal(f, u[[1, 2], :, :, 3])


class TestJacobian:
    def test_the_folds_are_marked_where_the_determinant_is_not_positive(self, ax) -> None:
        # a smooth field with one strong local squeeze along x: folds in a band
        h, w = 12, 16
        xs = torch.arange(w, dtype=torch.float64)
        u = torch.zeros(2, h, w, dtype=torch.float64)
        u[0] = (4.0 * torch.exp(-(((xs - 8) / 1.5) ** 2)))[None, :] * torch.linspace(0, 1, h)[
            :, None
        ]
        det = _numpy_det(u.numpy())
        expected = det <= 0
        assert 0 < expected.sum() < expected.size  # folded and unfolded pixels both
        draw_jacobian(ax, u)
        overlay = _image_labelled(ax, "folds").get_array()
        np.testing.assert_array_equal(~np.ma.getmaskarray(overlay), expected)
        shown = _image_labelled(ax, "det").get_array()
        np.testing.assert_allclose(np.asarray(shown), det, atol=1e-9)
        share = 100 * expected.mean()
        assert ax.get_title() == f"det J: {share:.2f}% folded"
        assert len(ax.figure.axes) == 2  # the colour bar

    def test_the_map_is_centred_at_one(self, ax) -> None:
        u = torch.zeros(2, 5, 5)
        u[0] = 0.2 * torch.arange(5.0)  # det 1.2 everywhere
        image = draw_jacobian(ax, u, colorbar=False)
        assert image.norm.vcenter == 1.0 and image.norm.vmin < 1 < image.norm.vmax
        assert np.ma.getmaskarray(_image_labelled(ax, "folds").get_array()).all()  # no folds
        assert ax.get_title() == "det J: 0.00% folded"

    def test_a_volume_slice_shows_the_3d_determinant(self, ax) -> None:
        u = torch.zeros(3, 5, 6, 7)
        u[2] = -1.5 * torch.arange(5.0)[:, None, None]  # d uz / dz = -1.5: det -0.5, folded
        draw_jacobian(ax, u, view="xy", colorbar=False)
        assert not np.ma.getmaskarray(_image_labelled(ax, "folds").get_array()).any()
        assert "100.00% folded" in ax.get_title() and "volume: 100.00%" in ax.get_title()


class TestRegistrationFigure:
    def test_images(self) -> None:
        g = torch.Generator().manual_seed(0)
        moving, fixed = torch.rand(3, 1, 10, 12, generator=g), torch.rand(3, 1, 10, 12, generator=g)
        u = torch.randn(3, 2, 10, 12, generator=g)
        warped = warp(moving, u)
        fig = registration_figure(fixed, moving, warped, u, labels=["a", "b", "c"], max_examples=2)
        try:
            assert len(fig.axes) == 2 * 7 + 2  # two rows of seven panels, two colour bars
            first = fig.axes[0]
            np.testing.assert_allclose(first.get_images()[0].get_array(), fixed[0, 0].numpy())
            before = np.asarray(fig.axes[3].get_images()[0].get_array())
            after = np.asarray(fig.axes[4].get_images()[0].get_array())
            np.testing.assert_allclose(
                before, (moving[0, 0] - fixed[0, 0]).abs().numpy(), atol=1e-6
            )
            np.testing.assert_allclose(after, (warped[0, 0] - fixed[0, 0]).abs().numpy(), atol=1e-6)
            assert first.get_ylabel() == "a"
        finally:
            pyplot().close(fig)

    @pytest.mark.parametrize(("view", "rows"), [(None, 3), ("xz", 1)])
    def test_volumes(self, view, rows) -> None:
        moving, fixed = torch.rand(2, 1, 6, 7, 8), torch.rand(2, 1, 6, 7, 8)
        u = torch.randn(2, 3, 6, 7, 8)
        fig = registration_figure(fixed, moving, warp(moving, u), u, view=view)
        try:
            panels = [a for a in fig.axes if a.get_images() and a.get_label() != "<colorbar>"]
            assert len(panels) == 2 * rows * 7
            if view == "xz":  # rows z, columns x: (D, W)
                np.testing.assert_allclose(
                    panels[0].get_images()[0].get_array(), fixed[0, 0, :, 3, :].numpy()
                )
        finally:
            pyplot().close(fig)

    def test_mismatched_shapes_in_one_line(self) -> None:
        u = torch.zeros(1, 2, 8, 8)
        with pytest.raises(InvalidInputError, match=r"moving: expected \(B, C, 8, 8\)"):
            registration_figure(
                torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9), torch.rand(1, 1, 8, 8), u
            )

    def test_written_atomically(self, tmp_path, monkeypatch) -> None:
        moving = torch.rand(1, 1, 8, 8)
        u = torch.zeros(1, 2, 8, 8)
        out = save_registration_figure(tmp_path / "reg.png", moving, moving, moving, u)
        first = out.read_bytes()
        assert first[:8] == PNG and [p.name for p in tmp_path.iterdir()] == ["reg.png"]
        from matplotlib.figure import Figure

        def broken(self, fname, **kwargs):  # writes half a file, then fails
            with open(fname, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

        monkeypatch.setattr(Figure, "savefig", broken)
        with pytest.raises(OSError):
            save_registration_figure(tmp_path / "reg.png", moving, moving, moving, u)
        assert out.read_bytes() == first  # the old file stands, nothing half-written beside it
        assert [p.name for p in tmp_path.iterdir()] == ["reg.png"]


class TestConventionFigure:
    def test_the_output_reads_the_input_at_p_plus_u(self) -> None:
        fig = field_convention_figure(size=12)
        try:
            grid = np.array(fig.axes).reshape(2, 3)
            image = np.asarray(grid[0, 0].get_images()[0].get_array())
            out = np.asarray(grid[0, 2].get_images()[0].get_array())
            expected = np.zeros_like(image)  # u = (2, 1): output[i, j] = input[i + 1, j + 2]
            expected[:-1, :-2] = image[1:, 2:]
            np.testing.assert_allclose(out, expected, atol=1e-6)
            arrows = grid[0, 1].collections[0]  # the quiver: (2, 1) pixels at every arrow
            np.testing.assert_allclose(arrows.U, 2.0)
            np.testing.assert_allclose(arrows.V, 1.0)
            assert grid[0, 0].get_ylim()[0] > grid[0, 0].get_ylim()[1]  # y down
        finally:
            pyplot().close(fig)


class _Shift(nn.Module):
    """A stand-in registration model: the field is a constant shift of (1, 0) pixels."""

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor):
        u = torch.zeros(moving.shape[0], moving.dim() - 2, *moving.shape[2:])
        u[:, 0] = 1.0
        return warp(moving, u), u, u


class TestHook:
    def test_the_model_is_run_and_the_dice_captioned(self) -> None:
        labels = torch.zeros(2, 1, 8, 8, dtype=torch.long)
        labels[:, :, 2:6, 3:6] = 1
        fixed_labels = torch.zeros_like(labels)
        fixed_labels[:, :, 2:6, 2:5] = 1  # one column to the left: the shift registers it
        moving = labels.float()
        model = _Shift().train()
        fig = registration_pictures(
            model,
            moving,
            fixed_labels.float(),
            moving_labels=labels,
            fixed_labels=fixed_labels,
            num_labels=2,
            captions=["digit 1", "digit 2"],
        )
        try:
            assert model.training  # its mode is given back
            # before: 8 of 12 pixels overlap (Dice 2 * 8 / 24); after: all of them
            assert fig.axes[0].get_ylabel() == "digit 1\nDice 0.667 -> 1.000"
            warped = np.asarray(fig.axes[2].get_images()[0].get_array())
            np.testing.assert_allclose(warped, fixed_labels[0, 0].numpy())
        finally:
            pyplot().close(fig)

    def test_a_volume_model(self) -> None:
        fig = registration_pictures(_Shift(), torch.rand(1, 1, 4, 6, 6), torch.rand(1, 1, 4, 6, 6))
        try:
            assert len([a for a in fig.axes if a.get_label() != "<colorbar>"]) == 3 * 7
        finally:
            pyplot().close(fig)

    def test_a_model_that_returns_no_field(self) -> None:
        with pytest.raises(InvalidInputError, match=r"model: expected forward\(moving, fixed\)"):
            registration_pictures(nn.Identity(), torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4))

    def test_curves(self) -> None:
        rows = [
            {"epoch": 1, "train_loss": 0.3, "train_folded": 0.1, "val_dice": 0.6,
             "val_dice_before": 0.5, "val_folded": 0.0},
            {"epoch": 2, "train_loss": 0.2, "train_folded": 0.0, "val_dice": 0.7,
             "val_dice_before": 0.5, "val_folded": 0.0},
        ]  # fmt: skip
        fig = registration_curves_figure(rows)
        try:
            after = fig.axes[1].get_lines()[0]
            assert list(after.get_ydata()) == [0.6, 0.7]
        finally:
            pyplot().close(fig)


@pytest.fixture(scope="module")
def registration_run(tmp_path_factory: pytest.TempPathFactory):
    """A 2-D registration run of one epoch of 8 MNIST pairs (about a second)."""
    import yaml

    from torchstn.cli import main

    folder = tmp_path_factory.mktemp("regrun")
    config = {
        "seed": 0,
        "device": "cpu",
        "objective": {"name": "registration", "options": {"similarity": "mse"}},
        "data": {
            "task": "mnist_pairs",
            "options": {"digits": [1, 7]},
            "train_size": 8,
            "val_size": 4,
            "test_size": 4,
        },
        "model": {"name": "reg_unet", "options": {"enc": [4, 4], "dec": [4, 4, 4]}},
        "optim": {"name": "adam", "lr": 0.003, "batch_size": 8},
        "run": {"epochs": 1, "eval_batch_size": 8, "num_threads": 1},
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    run = folder / "run"
    argv = ["train", "--config", str(folder / "tiny.yaml"), "--out", str(run), "--no-progress"]
    assert main(argv) == 0
    return run


class TestRuns:
    def test_visualize_draws_the_pairs_and_the_curves(self, registration_run, tmp_path, capsys):
        from torchstn.cli import main

        out = tmp_path / "reg.png"
        assert main(["visualize", str(registration_run), "--out", str(out), "--num", "2"]) == 0
        assert out.read_bytes()[:8] == PNG
        assert (tmp_path / "reg_curves.png").read_bytes()[:8] == PNG
        assert sorted(p.name for p in tmp_path.iterdir()) == ["reg.png", "reg_curves.png"]
        assert f"wrote {out}" in capsys.readouterr().out

    def test_report_is_one_page_with_the_pictures(self, registration_run, tmp_path):
        import json

        from torchstn.viz import write_report

        out = write_report(registration_run, tmp_path / "r.html", num_images=2)
        page = out.read_text()
        result = json.loads((registration_run / "result.json").read_text())
        assert "What the registration does" in page and "Training curves" in page
        assert f"test Dice <b>{result['test_dice']:.3f}</b>" in page
        assert page.count("data:image/png;base64,") == 2 and "<script" not in page


class TestGuideSection:
    def test_the_example_prints_what_the_convention_says(self) -> None:
        from torchstn.explain.fields import fields_example

        lines = dict(line.split(": ", 1) for line in fields_example().output.splitlines())
        # u = (1, 0): output(p) = x(p + (1, 0)): the pixel at column 4 shows at column 3
        assert lines["bright pixel now at (row, col)"] == "[[2, 3]]"
        dy = eval(lines["integrated at the centre"])  # a 2-pixel flow down, to 1e-3
        assert dy[0] == 0.0 and abs(dy[1] - 2.0) < 1e-3
        assert eval(lines["composed at the centre"]) == [1.0, 2.0]  # (1, 0) then (0, 2)
        assert eval(lines["MONAI's DDF (index order)"]) == [0.0, 1.0]  # (y, x)

    def test_the_section_shows_the_picture_the_code_and_its_output(self, tmp_path) -> None:
        from torchstn.explain.fields import fields_example, plot_fields
        from torchstn.explain.guide import FIGURES, _section_fields

        class _G:
            fields = fields_example()

        text = "\n".join(_section_fields(_G()))  # type: ignore[arg-type]
        assert text.startswith("## 8. Dense fields and registration")
        assert f"]({FIGURES['fields']})" in text
        assert _G.fields.code.strip() in text and _G.fields.output.strip() in text
        assert "torchstn.fields.convert" in text and "output(p) = input(p + u(p))" in text
        out = plot_fields(tmp_path / FIGURES["fields"])
        assert out.read_bytes()[:8] == PNG and len(list(tmp_path.iterdir())) == 1
