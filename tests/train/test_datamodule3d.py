"""The training data path for volumes: the rts3d task and users' .npz/.npy volumes in the data
module (splits, uint8 holding, statistics, preprocessing, info), the data.volumes rule and its
refusals, and one short run of each through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from torchstn import data
from torchstn.cli import main
from torchstn.errors import ConfigError, DataError
from torchstn.preprocess import Normalize, Preprocess
from torchstn.train.config import Config, DataConfig
from torchstn.train.datamodule import DataModule

TASK = {"task": "rts3d", "options": {"canvas_size": 8, "clutter": 1}}
SIZES = {"train_size": 20, "val_size": 8, "test_size": 6}


def task_module(**overrides: object) -> DataModule:
    return DataModule(DataConfig(**{**TASK, **SIZES, **overrides}), seed=1)  # type: ignore[arg-type]


def user_module(path: Path, **overrides: object) -> DataModule:
    return DataModule(DataConfig(task=None, path=str(path), **overrides), seed=0)  # type: ignore[arg-type]


def as_uint8(x: torch.Tensor) -> torch.Tensor:
    """What the module should hold for generated volumes: x rounded to 1/255 steps."""
    return torch.from_numpy(np.rint(x.double().numpy() * 255).astype(np.uint8))


def volumes(n: int = 30, shape: tuple[int, ...] = (6, 7, 8), seed: int = 0) -> np.ndarray:
    """``n`` uint8 volumes of ``shape`` with a bright slab whose depth gives the class."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, *shape)).astype(np.uint8)
    for i in range(n):
        x[i, 2 * (i % 3) : 2 * (i % 3) + 2] = 230
    return x


def labels(n: int = 30) -> np.ndarray:
    return np.arange(n) % 3


class TestGeneratedVolumes:
    def test_splits_shapes_and_info(self) -> None:
        dm = task_module()
        assert dm.in_shape == (1, 8, 8, 8) and dm.num_classes == 10
        for split, n in (("train", 20), ("val", 8), ("test", 6)):
            s = dm.eval_split(split)
            assert len(s) == n and s.x.shape == (n, 1, 8, 8, 8)
            assert s.x.dtype == torch.uint8  # 4x smaller than float32
        info = dm.info()
        assert info["in_shape"] == [1, 8, 8, 8] and info["num_classes"] == 10
        assert info["preprocess"]["size"] == [8, 8, 8] and info["preprocess"]["channels"] == 1
        assert json.loads(json.dumps(info)) == info
        assert dm.test_truth is not None and dm.test_truth["boxes"].shape == (6, 6)

    def test_splits_are_the_task_s_samples(self) -> None:
        dm = task_module()
        task = data.get_task("rts3d", **TASK["options"])  # type: ignore[arg-type]
        val = task.generate("val", num=8, seed=dm.cfg.eval_seed)
        assert torch.equal(dm.eval_split("val").x, as_uint8(val.x))
        assert torch.equal(dm.eval_split("val").y, val.y)
        test = task.generate("test", num=6, seed=dm.cfg.eval_seed)
        assert torch.equal(dm.eval_split("test").x, as_uint8(test.x))
        assert torch.equal(dm.test_truth["boxes"], test.boxes)  # type: ignore[index]
        train = task.generate("train", num=20, seed=data.epoch_seed(1, 3))
        assert torch.equal(dm.train(3).x, as_uint8(train.x))
        # rounding only: within half a step of the generated floats
        held = dm.eval_split("val").batches([list(range(8))])
        x = next(held).inputs(torch.device("cpu"))
        assert float((x - val.x).abs().max()) <= 0.5 / 255 + 1e-7

    def test_each_epoch_is_made_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        dm = task_module(normalize=True)
        calls: list[int] = []
        original = type(dm.task).generate

        def counting(self: data.Task, split: str, num: int, seed: int, **kw: object) -> data.Sample:
            calls.append(seed)
            return original(self, split, num, seed, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(type(dm.task), "generate", counting)
        first = dm.train(0)  # made for the statistics: reused
        assert calls == [] and dm.train(0) is first
        second = dm.train(1)
        assert len(calls) == 1 and not torch.equal(second.x, first.x)
        assert dm.train(1) is second and len(calls) == 1
        dm.train(0)  # the last epoch's split only is kept: epoch 0 is made again, the same
        assert len(calls) == 2 and torch.equal(dm.train(0).x, first.x)

    def test_not_fresh_is_one_split(self) -> None:
        dm = task_module(fresh=False)
        assert dm.train(0) is dm.train(5)

    def test_statistics_over_voxels(self) -> None:
        dm = task_module(normalize=True)
        x = dm.train(0).x.double() / 255  # all 20 volumes (fewer than the 10,000 subset)
        pre = dm.preprocess
        assert pre.size == (8, 8, 8) and pre.channels == 1
        assert pre.mean == pytest.approx([float(x.mean())], rel=1e-6)
        assert pre.std == pytest.approx([float(x.std(unbiased=False))], rel=1e-6)

    def test_saved_preprocessing_of_another_shape_is_refused(self) -> None:
        cfg = DataConfig(**{**TASK, **SIZES})  # type: ignore[arg-type]
        for size in ((12, 12, 12), (8, 8)):
            saved = Preprocess(size, 1).to_dict()
            with pytest.raises(DataError, match=r"preprocessing is for \(1, (12, 12, 12|8, 8)\) "):
                DataModule(cfg, seed=1, preprocess=saved)
        same = Preprocess((8, 8, 8), 1, mean=(0.1,), std=(0.2,)).to_dict()
        assert DataModule(cfg, seed=1, preprocess=same).preprocess.mean == (0.1,)

    def test_user_keys_are_refused(self) -> None:
        with pytest.raises(ConfigError, match=r"data.volumes: only user data \(data.path\)"):
            task_module(volumes=True)


class TestPreprocessVolumes:
    def test_round_trip_and_size_check(self) -> None:
        pre = Preprocess((4, 5, 6), 2, mean=(0.1, 0.2), std=(0.3, 0.4))
        assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre
        with pytest.raises(
            ConfigError, match=r"size: expected \(H, W\) or \(D, H, W\), got \(4,\)"
        ):
            Preprocess((4,), 1)

    def test_normalize_takes_volumes_per_channel(self) -> None:
        norm = Normalize((0.5, 0.25), (0.5, 0.25), channels=2)
        x = torch.rand(3, 2, 2, 4, 5)
        expected = torch.stack(((x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25), dim=1)
        torch.testing.assert_close(norm(x), expected)
        images = torch.rand(3, 2, 4, 5)  # unchanged for images
        torch.testing.assert_close(norm(images)[:, 1], (images[:, 1] - 0.25) / 0.25)


class TestUserVolumes:
    def test_npz_of_one_channel_volumes_with_held_out_validation(self, tmp_path: Path) -> None:
        path = tmp_path / "scans.npz"
        x = volumes()
        np.savez(path, x=x, y=labels())
        dm = user_module(path, volumes=True, normalize=True)
        assert dm.volumes and dm.in_shape == (1, 6, 7, 8) and dm.num_classes == 3
        train, val, test = dm.train(0), dm.eval_split("val"), dm.eval_split("test")
        assert (len(train), len(val)) == (27, 3) and test is val and dm.test_is_val
        assert train.x.dtype == torch.uint8 and train.x.shape == (27, 1, 6, 7, 8)
        # the two splits are the file's volumes, each once, labels kept with them
        both = torch.cat((train.x, val.x))[:, 0].numpy()
        order = [int(np.flatnonzero((x == v).all(axis=(1, 2, 3)))[0]) for v in both]
        assert sorted(order) == list(range(30))
        assert torch.equal(torch.cat((train.y, val.y)), torch.from_numpy(labels()[order]))
        held = train.x.double() / 255
        assert dm.preprocess.mean == pytest.approx([float(held.mean())], rel=1e-6)
        assert dm.preprocess.size == (6, 7, 8)
        assert dm.info()["in_shape"] == [1, 6, 7, 8]
        assert dm.fingerprints["path"].startswith("content:")

    def test_five_dims_are_volumes_without_the_setting(self, tmp_path: Path) -> None:
        x = volumes().reshape(30, 6, 7, 4, 2)  # channels last: (N, D, H, W, C)
        path = tmp_path / "two.npz"
        np.savez(path, x=x, y=labels(), vx=x[:6], vy=labels(6))
        dm = user_module(path, val_arrays={"x": "vx", "y": "vy"}, normalize=True)
        assert dm.volumes and dm.in_shape == (2, 6, 7, 4)
        assert len(dm.train(0)) == 30 and len(dm.eval_split("val")) == 6
        expected = torch.from_numpy(x).permute(0, 4, 1, 2, 3)
        assert torch.equal(dm.train(0).x, expected)
        per_channel = expected.double().div(255).transpose(0, 1).reshape(2, -1)
        assert dm.preprocess.mean == pytest.approx(per_channel.mean(1).tolist(), rel=1e-6)
        assert dm.preprocess.std == pytest.approx(
            per_channel.std(1, unbiased=False).tolist(), rel=1e-6
        )

    def test_float_volumes_and_separate_files(self, tmp_path: Path) -> None:
        x = volumes()[:, None].astype(np.float32) / 255  # (N, C, D, H, W) float
        np.savez(tmp_path / "train.npz", x=x, y=labels())
        np.savez(tmp_path / "val.npz", x=x[:9], y=labels(9))
        np.savez(tmp_path / "test.npz", x=x[:4], y=labels(4))
        dm = user_module(
            tmp_path / "train.npz",
            val_path=str(tmp_path / "val.npz"),
            test_path=str(tmp_path / "test.npz"),
        )
        assert dm.train(0).x.dtype == torch.float32
        assert [len(dm.eval_split(s)) for s in ("train", "val", "test")] == [30, 9, 4]
        assert set(dm.fingerprints) == {"path", "val_path", "test_path"}

    def test_four_dims_images_keep_their_rules(self, tmp_path: Path) -> None:
        path = tmp_path / "rgb.npz"
        np.savez(path, x=volumes(shape=(6, 7, 3)), y=labels())  # (N, H, W, 3): images
        dm = user_module(path)
        assert not dm.volumes and dm.in_shape == (3, 6, 7)
        path = tmp_path / "ambiguous.npz"
        np.savez(path, x=volumes(), y=labels())
        dm = user_module(path, volumes=False)  # said to be images: 6 channels
        assert not dm.volumes and dm.in_shape == (6, 7, 8)

    @pytest.mark.parametrize("layout", ["auto", "channels_first"])
    def test_an_ambiguous_array_is_refused(self, tmp_path: Path, layout: str) -> None:
        path = tmp_path / "d.npz"
        np.savez(path, x=volumes(), y=labels())
        with pytest.raises(
            DataError,
            match=r"d.npz: array 'x' of shape \(30, 6, 7, 8\) reads as 6-channel images "
            r"\(N, C, H, W\) or as volumes \(N, D, H, W\); set data.volumes: false \(images\) "
            r"or true \(volumes\)$",
        ):
            user_module(path, layout=layout)

    @pytest.mark.parametrize(
        ("files", "overrides", "error", "message"),
        [
            ({"v.npy": None}, {}, DataError, r"v.npy: an .npy file holds volumes without labels"),
            ({"v.npy": None}, {"volumes": False}, ConfigError, r"data.volumes: false, but .*v.npy"),
            (
                {"d.npz": "4d"},
                {"volumes": True, "image_shape": [1, 6, 7]},
                ConfigError,
                r"data.image_shape: only images stored flat take it",
            ),
            (
                {"d.npz": "4d", "val.npz": "other"},
                {"volumes": True, "val_path": "val.npz"},
                DataError,
                r"val.npz \(x, y\): volumes of shape \(1, 5, 7, 8\), training data has "
                r"\(1, 6, 7, 8\)",
            ),
            (
                {"d.npz": "4d", "val.npy": None},
                {"volumes": True, "val_path": "val.npy"},
                DataError,
                r"val.npy: an .npy file holds volumes without labels",
            ),
            (
                {"d.npz": "images", "val.npy": None},
                {"val_path": "val.npy"},
                DataError,
                r"data.val_path: .*val.npy is an .npy file, which holds volumes; the training "
                r"data are images",
            ),
            (
                {"d.npz": "4d", "folder": None},
                {"volumes": True, "test_path": "folder"},
                DataError,
                r"data.test_path: .*folder holds image files; the training data are volumes",
            ),
            (
                {"d.npz": "4d"},
                {"volumes": True, "val_arrays": {"x": "nope", "y": "y"}},
                DataError,
                r"no array 'nope'",
            ),
            (
                {"d.npz": "3d"},
                {"volumes": True},
                DataError,
                r"d.npz: array 'x': expected volumes",
            ),
        ],
    )
    def test_refusals(
        self,
        tmp_path: Path,
        files: dict[str, str | None],
        overrides: dict,
        error: type[Exception],
        message: str,
    ) -> None:
        made = {
            "4d": volumes(),
            "other": volumes(shape=(5, 7, 8)),
            "images": volumes(shape=(6, 7)),
            "3d": volumes(shape=(6, 7)),
        }
        for name, kind in files.items():
            target = tmp_path / name
            if name.endswith(".npy"):
                np.save(target, volumes())
            elif name == "folder":
                (target / "a").mkdir(parents=True)
            else:
                np.savez(target, x=made[str(kind)], y=labels())
        for key in ("val_path", "test_path"):
            if key in overrides:
                overrides = {**overrides, key: str(tmp_path / overrides[key])}
        with pytest.raises(error, match=message):
            user_module(tmp_path / next(iter(files)), **overrides)

    def test_a_folder_said_to_hold_volumes_is_a_nifti_folder(self, tmp_path: Path) -> None:
        # a folder of volumes is a class folder of NIfTI files (tests/train/test_nifti_folders.py);
        # one with none says what it looked for
        (tmp_path / "a").mkdir()
        with pytest.raises(
            DataError, match=r"no files found \(expected .*/CLASS/FILE with one of .nii, .nii.gz\)"
        ):
            user_module(tmp_path, volumes=True)

    def test_the_setting_is_checked_with_the_config(self) -> None:
        cfg = Config(data=DataConfig(task=None, path="x.npz", volumes="yes"))  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=r"data.volumes: expected true, false or null"):
            cfg.validate()


def _write_config(tmp_path: Path, data_values: dict) -> Path:
    values = {
        "seed": 0,
        "device": "cpu",
        "data": data_values,
        "model": {"name": "cnn3d", "options": {"channels": [2, 4], "kernels": [3, 3]}},
        "optim": {"lr": 0.05, "batch_size": 8},
        "run": {"epochs": 1, "eval_batch_size": 16},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


class TestCommandLine:
    def test_train_on_generated_volumes(
        self, tmp_path: Path, capsys: pytest.CaptureFixture
    ) -> None:
        config = _write_config(tmp_path, {**TASK, "train_size": 16, "val_size": 8, "test_size": 8})
        code = main(
            ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "rts3d (1, 8, 8, 8)" in out
        result = json.loads((tmp_path / "run" / "result.json").read_text())
        assert result["data"] == "rts3d" and 0 <= result["test_error"] <= 100

    def test_train_on_a_volume_file(self, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
        np.savez(tmp_path / "scans.npz", x=volumes(), y=labels())
        config = _write_config(
            tmp_path, {"task": None, "path": str(tmp_path / "scans.npz"), "volumes": True}
        )
        code = main(
            ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "scans.npz (1, 6, 7, 8)" in out
        saved = json.loads((tmp_path / "run" / "config.json").read_text())
        assert saved["data"]["volumes"] is True

    @pytest.mark.parametrize(
        ("setting", "message"),
        [
            (None, "reads as 6-channel images (N, C, H, W) or as volumes (N, D, H, W)"),
            ("maybe", "data.volumes: expected true, false or null (auto), got 'maybe'"),
        ],
    )
    def test_mistakes_get_one_line_and_exit_2(
        self, tmp_path: Path, capsys: pytest.CaptureFixture, setting: object, message: str
    ) -> None:
        np.savez(tmp_path / "d.npz", x=volumes(), y=labels())
        values: dict = {"task": None, "path": str(tmp_path / "d.npz")}
        if setting is not None:
            values["volumes"] = setting
        config = _write_config(tmp_path, values)
        code = main(
            ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
        )
        err = capsys.readouterr().err
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("torchstn train: error: ")
        assert message in lines[0]
        assert not (tmp_path / "run" / "checkpoint.pt").exists()
