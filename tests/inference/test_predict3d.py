"""torchstn.predict and ``torchstn predict`` for volume models: NIfTI, ``.npy`` and ``.npz`` files
of any size and intensity range, their pictures, and hostile files reported one by one."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchstn.cli import main
from torchstn.errors import DataError, TorchSTNError
from torchstn.inference import first_transformer, save_trained
from torchstn.models import create_model
from torchstn.predict import (
    Failure,
    Prediction,
    Predictor,
    VolumeFit,
    find_volumes,
    open_predictor,
    predict,
)

SHAPE = (1, 8, 8, 8)  # (C, D, H, W)
NAMES = ("a", "b", "c")
OPTIONS = {"channels": [4, 4], "kernels": [3, 3], "loc_channels": [4, 4], "loc_hidden": 8}
PNG = b"\x89PNG\r\n\x1a\n"
rng = np.random.default_rng(0)


def _tiny(name: str = "st_cnn3d_affine", in_shape=SHAPE, num_classes: int = 3) -> nn.Module:
    """A small volume model in eval mode, its transformer's head random (params depend on the
    input)."""
    options = OPTIONS if name.startswith("st_") else {"channels": [4, 4], "kernels": [3, 3]}
    torch.manual_seed(0)
    model = create_model(name, in_shape, num_classes, **options).eval()
    st = first_transformer(model)
    if st is not None:
        with torch.no_grad():
            st.head.weight.normal_(0, 0.05)
    return model


def _predictor(model: nn.Module, in_shape=SHAPE, num_classes: int = 3) -> Predictor:
    """The predictor a checkpoint of ``model`` gives (as ``open_predictor`` builds it)."""
    st = first_transformer(model)

    @torch.no_grad()
    def run(x: torch.Tensor):
        return model(x), None if st is None else st.localize(x)

    return Predictor(in_shape, num_classes, NAMES, st, "torch", run)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _tiny()


@pytest.fixture(scope="module")
def predictor(model) -> Predictor:
    return _predictor(model)


@pytest.fixture(scope="module")
def scripted(model, tmp_path_factory) -> Path:
    """The model exported to TorchScript with a checkpoint's metadata (what ``torchstn export``
    writes for a checkpoint), for ``open_predictor`` and the command."""
    from torchstn.export import export

    path = tmp_path_factory.mktemp("export") / "model.pt"
    try:
        export(model, path, "torchscript", in_shape=SHAPE, metadata=_export_metadata())
    except TorchSTNError as err:
        pytest.skip(f"torchstn.export does not export volume models here: {err}")
    return path


def _export_metadata() -> dict:
    """What ``torchstn export`` stores for a checkpoint of the model (its config rebuilds the
    transformer's geometry)."""
    from torchstn.train.config import Config, ModelConfig, config_to_dict

    config = Config(model=ModelConfig(name="st_cnn3d_affine", options=OPTIONS))
    return {
        "model": "st_cnn3d_affine",
        "num_classes": 3,
        "class_names": list(NAMES),
        "config": config_to_dict(config),
    }


def _expected(model: nn.Module, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """The confidences of classes 0, 1, 2 and the params the model gives for ``x`` (C, D, H, W)."""
    with torch.no_grad():
        probs = model(x[None].float()).double().softmax(-1)[0].tolist()
        params = first_transformer(model).localize(x[None].float())[0].tolist()
    return probs, params


def _check(record, model: nn.Module, x: torch.Tensor) -> None:
    """``record`` is what ``model`` says of the model input ``x`` (C, D, H, W)."""
    assert isinstance(record, Prediction), record
    probs, params = _expected(model, x)
    got = {c: p for c, _, p in record.top_k}
    assert got == pytest.approx({c: probs[c] for c in got}, abs=1e-6)
    np.testing.assert_allclose(record.params, params, atol=1e-6)


def _one(predictor: Predictor, path: Path, **options) -> Prediction:
    (record,) = predict(predictor, [path], top_k=3, **options)
    assert isinstance(record, Prediction), record
    return record


def _nifti(path: Path, xyz: np.ndarray, slope: float | None = None) -> Path:
    nib = pytest.importorskip("nibabel")
    image = nib.Nifti1Image(xyz, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, 0)
    nib.save(image, path)
    return path


class TestExactSize:
    def test_float_volume_goes_in_as_it_is(self, predictor, model, tmp_path):
        v = rng.random((8, 8, 8), dtype=np.float32)
        np.save(tmp_path / "v.npy", v)
        record = _one(predictor, tmp_path / "v.npy")
        assert record.path == tmp_path / "v.npy"
        assert record.fit.to_dict() == {
            "method": "pad",
            "source_size": [8, 8, 8],
            "source_dtype": "float32",
            "intensity": "as is",
            "source_range": [float(v.min()), float(v.max())],
            "resized": [8, 8, 8],
            "padding": [0, 0, 0, 0, 0, 0],
        }
        _check(record, model, torch.from_numpy(v)[None])
        assert record.transform == "affine3d" and len(record.params) == 12
        assert record.top_k[0][1] == NAMES[record.top_k[0][0]]

    def test_uint8_is_divided_by_255(self, predictor, model, tmp_path):
        v = rng.integers(0, 256, (1, 8, 8, 8), dtype=np.uint8)  # (C, D, H, W)
        np.save(tmp_path / "v.npy", v)
        record = _one(predictor, tmp_path / "v.npy")
        assert record.fit.intensity == "divided by 255" and record.fit.source_dtype == "uint8"
        _check(record, model, torch.from_numpy(v).float() / 255)

    def test_out_of_range_is_scaled_by_its_own_min_and_max(self, predictor, model, tmp_path):
        v = rng.uniform(-100, 300, (8, 8, 8))
        v[0, 0, 0], v[1, 1, 1] = -100, 300
        np.save(tmp_path / "ct.npy", v)
        record = _one(predictor, tmp_path / "ct.npy")
        assert record.fit.intensity == "min-max" and record.fit.source_range == (-100.0, 300.0)
        _check(record, model, torch.from_numpy((v + 100) / 400)[None])

    @pytest.mark.parametrize(
        ("values", "intensity"),
        [((0, 255), "divided by 255"), ((-3, 255), "min-max"), ((0, 256), "min-max")],
    )
    def test_integers_beyond_0_to_255_are_min_max(self, predictor, values, intensity, tmp_path):
        v = np.zeros((8, 8, 8), np.int16)
        v[0, 0, :2] = values
        np.save(tmp_path / "i.npy", v)
        assert _one(predictor, tmp_path / "i.npy").fit.intensity == intensity

    def test_a_constant_volume_outside_0_1_becomes_zeros(self, predictor, model, tmp_path):
        np.save(tmp_path / "c.npy", np.full((8, 8, 8), 7.0))
        record = _one(predictor, tmp_path / "c.npy")
        assert record.fit.intensity == "min-max" and record.fit.source_range == (7.0, 7.0)
        _check(record, model, torch.zeros(SHAPE))


class TestResized:
    def test_pad_shrinks_a_larger_volume_keeping_its_proportions(self, predictor, model, tmp_path):
        v = rng.random((4, 8, 16), dtype=np.float32)  # (D, H, W): W is twice the model's
        np.save(tmp_path / "wide.npy", v)
        record = _one(predictor, tmp_path / "wide.npy")
        assert record.fit.resized == (2, 4, 8)
        assert record.fit.padding == (0, 2, 3, 0, 2, 3)  # (left, top, front, right, bottom, back)
        small = F.interpolate(torch.from_numpy(v)[None, None], size=(2, 4, 8), mode="trilinear")
        _check(record, model, F.pad(small, (0, 0, 2, 2, 3, 3))[0])

    def test_pad_does_not_enlarge_a_smaller_volume(self, predictor, model, tmp_path):
        v = rng.random((3, 4, 5), dtype=np.float32)
        np.save(tmp_path / "small.npy", v)
        record = _one(predictor, tmp_path / "small.npy")
        assert record.fit.resized == (3, 4, 5) and record.fit.padding == (1, 2, 2, 2, 2, 3)
        _check(record, model, F.pad(torch.from_numpy(v), (1, 2, 2, 2, 2, 3))[None])

    def test_stretch_resamples_each_axis(self, predictor, model, tmp_path):
        v = rng.random((3, 4, 16), dtype=np.float32)
        np.save(tmp_path / "v.npy", v)
        record = _one(predictor, tmp_path / "v.npy", fit="stretch")
        assert record.fit.method == "stretch" and record.fit.resized == (8, 8, 8)
        assert record.fit.padding == (0,) * 6
        x = F.interpolate(torch.from_numpy(v)[None, None], size=(8, 8, 8), mode="trilinear")
        _check(record, model, x[0])

    def test_to_source_maps_the_model_frame_onto_the_file(self):
        fit = VolumeFit(
            "pad", (4, 8, 16), "float32", "as is", (0, 1), (2, 4, 8), (0, 2, 3, 0, 2, 3)
        )
        corners = torch.tensor([[-0.5, -0.5, -0.5], [7.5, 7.5, 7.5]], dtype=torch.float64)
        # x: the whole width (16 voxels); y, z: twice the file's extent, centred on it
        expected = [[-0.5, -4.5, -6.5], [15.5, 11.5, 9.5]]
        torch.testing.assert_close(fit.to_source(corners), torch.tensor(expected).double())
        # stretched: each axis by its own factor (z twice, y once, x half)
        fit = VolumeFit("stretch", (4, 8, 16), "uint8", "as is", (0, 1), (8, 8, 8), (0,) * 6)
        expected = [[-0.5, -0.5, -0.5], [15.5, 7.5, 3.5]]
        torch.testing.assert_close(fit.to_source(corners), torch.tensor(expected).double())


class TestFiles:
    def test_a_stack_in_an_npy_gives_one_record_per_volume(self, predictor, model, tmp_path):
        v = rng.integers(0, 256, (3, 8, 8, 8), dtype=np.uint8)  # (N, D, H, W) for 1 channel
        np.save(tmp_path / "s.npy", v)
        records = list(predict(predictor, [tmp_path / "s.npy"], batch_size=2, top_k=3))
        assert [str(r.path) for r in records] == [f"{tmp_path / 's.npy'}[{i}]" for i in range(3)]
        for record, volume in zip(records, v):
            _check(record, model, torch.from_numpy(volume)[None].float() / 255)

    def test_npz_through_read_volumes(self, predictor, model, tmp_path):
        x = rng.integers(0, 256, (2, 8, 8, 8), dtype=np.uint8)
        np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
        records = list(predict(predictor, [tmp_path / "d.npz"], top_k=3))
        assert [r.path.name for r in records] == ["d.npz[0]", "d.npz[1]"]
        for record, volume in zip(records, x):
            assert record.fit.intensity == "divided by 255"
            _check(record, model, torch.from_numpy(volume)[None].float() / 255)

    def test_npz_of_floats(self, predictor, model, tmp_path):
        x = rng.random((1, 1, 8, 8, 8), dtype=np.float32) * 0.5  # (N, C, D, H, W) in [0, 0.5]
        np.savez(tmp_path / "f.npz", x=x)
        (record,) = predict(predictor, [tmp_path / "f.npz"], top_k=3)
        assert (record.fit.source_dtype, record.fit.intensity) == ("float32", "as is")
        _check(record, model, torch.from_numpy(x[0]))

    def test_nifti(self, predictor, model, tmp_path):
        xyz = rng.uniform(0, 1000, (8, 8, 8)).astype(np.float32)  # the file's (x, y, z)
        path = _nifti(tmp_path / "brain.nii.gz", xyz)
        record = _one(predictor, path)
        lo, hi = float(xyz.min()), float(xyz.max())
        assert record.fit.intensity == "min-max" and record.fit.source_range == (lo, hi)
        dhw = torch.from_numpy(xyz.transpose(2, 1, 0).copy())  # (z, y, x) = (D, H, W)
        _check(record, model, ((dhw - lo) / (hi - lo))[None])

    def test_nifti_of_uint8_and_with_a_slope(self, predictor, model, tmp_path):
        xyz = rng.integers(0, 200, (8, 8, 8), dtype=np.uint8)
        record = _one(predictor, _nifti(tmp_path / "u.nii", xyz))
        assert (record.fit.source_dtype, record.fit.intensity) == ("uint8", "divided by 255")
        _check(record, model, torch.from_numpy(xyz.transpose(2, 1, 0) / 255)[None])
        scaled = _one(predictor, _nifti(tmp_path / "s.nii", xyz, slope=0.5))
        assert scaled.fit.intensity == "min-max"  # stored integers, not the values read
        assert scaled.fit.source_range == (float(xyz.min()) / 2, float(xyz.max()) / 2)

    def test_channels_first_and_last(self, tmp_path):
        model = _tiny("cnn3d", (2, 8, 8, 8))
        two = _predictor(model, (2, 8, 8, 8))
        one = rng.random((2, 8, 8, 8), dtype=np.float32)  # (C, D, H, W): one volume
        last = rng.random((3, 8, 8, 8, 2), dtype=np.float32)  # (N, D, H, W, C)
        np.save(tmp_path / "one.npy", one)
        np.save(tmp_path / "last.npy", last)
        records = list(predict(two, [tmp_path / "one.npy", tmp_path / "last.npy"], top_k=3))
        assert [r.path.name for r in records] == ["one.npy", *(f"last.npy[{i}]" for i in range(3))]
        volumes = [one, *last.transpose(0, 4, 1, 2, 3)]
        for record, volume in zip(records, volumes):
            with torch.no_grad():
                probs = model(torch.from_numpy(volume.copy())[None]).double().softmax(-1)[0]
            got = {c: p for c, _, p in record.top_k}
            assert got == pytest.approx({c: float(probs[c]) for c in got}, abs=1e-6)
            assert record.params is None and record.transform is None

    def test_batches_keep_the_order(self, predictor, tmp_path):
        for i in range(5):
            np.save(tmp_path / f"v{i}.npy", rng.random((8, 8, 8)))
        paths = [tmp_path / f"v{i}.npy" for i in range(5)]
        paths.insert(2, tmp_path / "missing.npy")
        alone = [r for p in paths for r in predict(predictor, [p], batch_size=1)]
        together = list(predict(predictor, paths, batch_size=2))
        assert [r.path for r in together] == paths
        for a, b in zip(together, alone):
            if isinstance(a, Failure):
                assert a == b and a.path.name == "missing.npy" and "file not found" in a.message
                continue
            assert a.top_k[0][0] == b.top_k[0][0]
            np.testing.assert_allclose(a.params, b.params, atol=1e-6)
        assert sum(isinstance(r, Failure) for r in together) == 1


def _forged_npy(path: Path, shape: tuple[int, ...]) -> None:
    """An ``.npy`` header declaring ``shape`` of float32 followed by 16 bytes."""
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        f.write(b"\x00" * 16)


class TestHostileFiles:
    def test_each_bad_file_is_one_failure_and_the_others_predict(self, predictor, tmp_path):
        nib = pytest.importorskip("nibabel")
        good = tmp_path / "good.npy"
        np.save(good, rng.random((8, 8, 8)))
        bad: dict[str, tuple[Path, str]] = {}

        def add(name: str, text: str) -> Path:
            bad[name] = (tmp_path / name, text)
            return tmp_path / name

        nib.save(
            nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)),
            add("four.nii.gz", "expected a 3-D volume"),
        )
        _forged_npy(add("huge.npy", "declares shape (100000, 100000, 100000)"), (10**5,) * 3)
        whole = tmp_path / "whole.nii.gz"
        nib.save(nib.Nifti1Image(rng.random((8, 8, 8)).astype(np.float32), np.eye(4)), whole)
        add("cut.nii.gz", "cut.nii.gz").write_bytes(whole.read_bytes()[:200])
        np.save(add("cut.npy", "the file holds"), rng.random((8, 8, 8)))
        (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:-100])
        np.save(add("flat.npy", "shape (8, 8) is not a volume"), np.zeros((8, 8)))
        np.save(add("five.npy", "shape (2, 3, 8, 8, 8) is not a volume"), np.zeros((2, 3, 8, 8, 8)))
        nan = rng.random((8, 8, 8))
        nan[1, 2, 3] = np.nan
        np.save(
            add("nan.npy", "1 NaN or infinite voxels, the first at (c, z, y, x) = (0, 1, 2, 3)"),
            nan,
        )
        np.save(add("objects.npy", "holds object values"), np.array([None, 1]), allow_pickle=True)
        np.savez(
            add("hot.npz", "floating-point images must be finite"), x=np.full((1, 8, 8, 8), 2.0)
        )
        add("text.npy", "not a volume file").write_text("not numbers")
        inf_nii = np.zeros((8, 8, 8), np.float32)
        inf_nii[0, 0, 0] = np.inf
        nib.save(nib.Nifti1Image(inf_nii, np.eye(4)), add("inf.nii", "NaN or infinite"))
        paths = [good, *(p for p, _ in bad.values()), good]
        records = list(predict(predictor, paths, batch_size=4))
        assert len(records) == len(paths)
        assert isinstance(records[0], Prediction) and isinstance(records[-1], Prediction)
        for record, (path, text) in zip(records[1:-1], bad.values()):
            assert isinstance(record, Failure), (path, record)
            assert record.path == path and text in record.message, record.message
            assert str(path) in record.message and "\n" not in record.message

    def test_one_bad_volume_of_a_stack_fails_alone(self, predictor, tmp_path):
        v = rng.random((3, 8, 8, 8))
        v[1, 0, 0, 0] = np.inf
        np.save(tmp_path / "s.npy", v)
        records = list(predict(predictor, [tmp_path / "s.npy"]))
        assert [type(r).__name__ for r in records] == ["Prediction", "Failure", "Prediction"]
        assert str(records[1].path).endswith("s.npy[1]") and "infinite" in records[1].message

    def test_the_voxel_limit_is_checked_before_reading(self, predictor, tmp_path, monkeypatch):
        monkeypatch.setenv("TORCHSTN_MAX_VOLUME_VOXELS", "511")
        np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
        np.savez(tmp_path / "v.npz", x=np.zeros((1, 8, 8, 8), np.uint8))
        records = list(predict(predictor, [tmp_path / "v.npy", tmp_path / "v.npz"]))
        for record in records:
            assert isinstance(record, Failure) and "at most 511" in record.message

    def test_a_volume_of_other_channels_fails(self, predictor, tmp_path):
        np.savez(tmp_path / "two.npz", x=np.zeros((1, 2, 8, 8, 8), np.uint8))
        (record,) = predict(predictor, [tmp_path / "two.npz"])
        assert isinstance(record, Failure)
        assert "holds volumes of 2 channels; the model takes 1" in record.message


def _is_png(path: str | Path) -> bool:
    return Path(path).read_bytes()[:8] == PNG


class TestPictures:
    def test_rectified_and_grid(self, predictor, tmp_path):
        np.save(tmp_path / "stack.npy", rng.random((2, 6, 8, 12)))
        _nifti(tmp_path / "brain.nii.gz", rng.random((8, 8, 8)).astype(np.float32))
        out = tmp_path / "out"
        records = list(predict(predictor, find_volumes([tmp_path]), out_dir=out))
        names = [sorted(Path(p).name for p in r.outputs.values()) for r in records]
        assert names == [
            ["brain_grid.png", "brain_rectified.png"],
            ["stack_0_grid.png", "stack_0_rectified.png"],
            ["stack_1_grid.png", "stack_1_rectified.png"],
        ]
        for r in records:
            assert all(_is_png(p) for p in r.outputs.values())
        assert sorted(os.listdir(out)) == sorted(n for pair in names for n in pair)  # no temp

    def test_same_stems_get_distinct_names(self, predictor, tmp_path):
        for sub in ("a", "b"):
            (tmp_path / sub).mkdir()
            np.save(tmp_path / sub / "v.npy", rng.random((8, 8, 8)))
        paths = find_volumes([tmp_path / "a", tmp_path / "b"])
        records = list(predict(predictor, paths, out_dir=tmp_path / "out"))
        assert [Path(r.outputs["grid"]).name for r in records] == ["v_grid.png", "v-2_grid.png"]

    def test_a_model_without_transformer_draws_nothing(self, tmp_path):
        np.save(tmp_path / "v.npy", rng.random((8, 8, 8)))
        (record,) = predict(_predictor(_tiny("cnn3d")), [tmp_path / "v.npy"], out_dir=tmp_path)
        d = record.to_dict()
        assert d["outputs"] == {} and d["params"] is None and d["transform"] is None

    def test_a_full_disk_stops_the_pictures_not_the_predictions(
        self, predictor, tmp_path, monkeypatch
    ):
        import torchstn.predict as module

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(module, "save_figure", full)
        np.save(tmp_path / "s.npy", rng.random((2, 8, 8, 8)))
        records = [r.to_dict() for r in predict(predictor, [tmp_path / "s.npy"], out_dir=tmp_path)]
        assert [r["outputs"] for r in records] == [None, None]
        assert "No space left" in records[0]["output_error"]
        assert records[1]["output_error"].startswith("not written (an earlier")
        assert all(isinstance(r["class"], int) for r in records)


class TestFindVolumes:
    def test_recursive_sorted_hidden_skipped_any_case(self, tmp_path):
        for name in ("b.npy", "a.NII.GZ", "sub/c.nii", "sub/d.npz", "notes.txt", "e.png"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(b"")
        (tmp_path / ".hidden").mkdir()
        (tmp_path / ".hidden" / "x.npy").write_bytes(b"")
        (tmp_path / ".h.npy").write_bytes(b"")
        found = find_volumes([tmp_path, tmp_path / "missing.nii"])
        names = [p.relative_to(tmp_path).as_posix() for p in found]
        assert names == ["a.NII.GZ", "b.npy", "sub/c.nii", "sub/d.npz", "missing.nii"]

    def test_links_neither_loop_nor_go_up(self, tmp_path):
        root, outside = tmp_path / "root", tmp_path / "outside"
        (root / "sub").mkdir(parents=True)
        outside.mkdir()
        for p in (root / "a.npy", root / "sub" / "b.npy", outside / "c.npy", tmp_path / "up.npy"):
            p.write_bytes(b"")
        (root / "sub" / "loop").symlink_to(root / "sub")  # itself
        (root / "sub" / "up").symlink_to(root)  # the folder being searched
        (root / "sub" / "top").symlink_to(tmp_path)  # above it
        (root / "more").symlink_to(outside)  # beside it: followed
        (root / "again").symlink_to(root / "sub")  # a folder reached twice: walked once
        names = [p.relative_to(root).as_posix() for p in find_volumes([root])]
        assert sorted(Path(n).name for n in names) == ["a.npy", "b.npy", "c.npy"]
        assert "more/c.npy" in names


class TestExported:
    def test_torchscript_predicts_as_the_model(self, scripted, model, tmp_path):
        v = rng.random((8, 8, 8), dtype=np.float32)
        np.save(tmp_path / "v.npy", v)
        opened = open_predictor(scripted)
        assert opened.in_shape == SHAPE and opened.transformer is not None
        record = _one(opened, tmp_path / "v.npy", out_dir=tmp_path / "out")
        _check(record, model, torch.from_numpy(v)[None])
        assert all(_is_png(p) for p in record.outputs.values())

    @pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
        reason="ONNX needs onnx, onnxscript and onnxruntime: pip install 'torchstn[export]'",
    )
    def test_onnx_predicts_as_the_model(self, model, tmp_path):
        from torchstn.export import export

        path = tmp_path / "m.onnx"
        try:
            export(model, path, "onnx", in_shape=SHAPE, metadata=_export_metadata())
        except TorchSTNError as err:
            pytest.skip(f"torchstn.export does not export volume models to ONNX here: {err}")
        v = rng.random((8, 8, 8), dtype=np.float32)
        np.save(tmp_path / "v.npy", v)
        opened = open_predictor(path)
        assert opened.backend == "onnxruntime" and opened.in_shape == SHAPE
        assert opened.transformer is not None  # rebuilt from the config: the pictures work
        record = _one(opened, tmp_path / "v.npy", out_dir=tmp_path / "out")
        _check(record, model, torch.from_numpy(v)[None])
        assert all(_is_png(p) for p in record.outputs.values())


def test_checkpoint(model, tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_trained(path, model, "st_cnn3d_affine", SHAPE, 3, options=OPTIONS, class_names=NAMES)
    try:
        opened = open_predictor(path)
    except DataError as err:
        if "malformed checkpoint metadata" not in str(err):
            raise
        pytest.skip(f"checkpoints of volume models do not load yet (torchstn.inference): {err}")
    v = rng.random((8, 8, 8), dtype=np.float32)
    np.save(tmp_path / "v.npy", v)
    _check(_one(opened, tmp_path / "v.npy"), model, torch.from_numpy(v)[None])


def _run(capsys, *argv: str) -> tuple[int, list[dict], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err.strip().splitlines()


class TestCli:
    def test_a_folder_of_volumes_with_a_bad_one(self, scripted, tmp_path, capsys):
        data = tmp_path / "data"
        data.mkdir()
        np.save(data / "a.npy", rng.random((8, 8, 8)))
        np.save(data / "b.npy", rng.random((2, 8, 8, 8)))
        np.savez(data / "c.npz", x=rng.integers(0, 256, (2, 8, 8, 8), dtype=np.uint8))
        _nifti(data / "d.nii.gz", rng.random((6, 7, 9)).astype(np.float32))
        np.save(data / "e.npy", np.zeros((4, 4)))
        (data / "notes.txt").write_text("skipped")
        out = tmp_path / "out"
        code, records, err = _run(
            capsys, "predict", str(scripted), str(data), "--out", str(out), "--top-k", "2"
        )
        assert code == 1
        assert len(err) == 1 and err[0].startswith("torchstn predict: ") and "e.npy" in err[0]
        paths = [Path(r["path"]).name for r in records]
        assert paths == ["a.npy", "b.npy[0]", "b.npy[1]", "c.npz[0]", "c.npz[1]", "d.nii.gz"]
        for r in records:
            assert r["class_name"] == NAMES[r["class"]] and len(r["top_k"]) == 2
            assert r["transform"] == "affine3d" and len(r["params"]) == 12
            assert all(_is_png(p) for p in r["outputs"].values())
        assert records[-1]["fit"]["source_size"] == [9, 7, 6]  # the file's (x, y, z) reversed
        assert records[-1]["fit"]["resized"] == [8, 6, 5]

    def test_stretch_and_no_volume_files(self, scripted, tmp_path, capsys):
        np.save(tmp_path / "v.npy", rng.random((4, 8, 16)))
        code, records, _ = _run(capsys, "predict", str(scripted), str(tmp_path), "--fit", "stretch")
        assert code == 0 and records[0]["fit"]["resized"] == [8, 8, 8]
        assert "outputs" not in records[0]
        (tmp_path / "empty").mkdir()
        code, records, err = _run(capsys, "predict", str(scripted), str(tmp_path / "empty"))
        assert code == 2 and records == [] and "no volume files" in err[0]
