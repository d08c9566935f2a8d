"""Users' own data through the real command line: every format trains one short epoch, the
preprocessing travels with the checkpoint, and every mistake gets one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import torchstn
from torchstn.cli import main
from torchstn.inference import load_with_info
from torchstn.preprocess import Preprocessed

MODEL = {
    "name": "st_cnn_affine",
    "options": {"channels": [4, 8], "loc_channels": [4, 4], "loc_hidden": 8},
}


def _digits(
    n: int, size: int = 16, channels: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uint8 images ``(n, size, size, channels)`` of 3 learnable classes: a bar in one of
    three places."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 40, (n, size, size, channels)).astype(np.uint8)
    for i, label in enumerate(y):
        lo = 2 + 4 * int(label)
        x[i, lo : lo + 3, 2:-2] = 230
    return x, y


def _config(tmp_path: Path, data: dict, **run: object) -> Path:
    values = {
        "seed": 0,
        "device": "cpu",
        "data": {"task": None, **data},
        "model": MODEL,
        "optim": {"lr": 0.05, "batch_size": 16},
        "run": {"epochs": 1, "eval_batch_size": 32, **run},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _train(capsys, config: Path, run: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["train", "--config", str(config), "--out", str(run), "--no-progress", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _ok(capsys, config: Path, run: Path) -> dict:
    code, _, err = _train(capsys, config, run)
    assert code == 0, err
    result = json.loads((run / "result.json").read_text())
    assert result["epochs"] == 1 and 0 <= result["test_error"] <= 100
    return result


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


class TestNpzFormats:
    def test_named_arrays_channels_last_one_hot_with_val_and_test(self, tmp_path, capsys):
        x, y = _digits(96)
        vx, vy = _digits(32, seed=1)
        tx, ty = _digits(40, seed=2)
        f = tmp_path / "their.npz"
        np.savez(
            f,
            train_images=x,  # (N, 16, 16, 1): channels-last
            train_labels=np.eye(3, dtype=np.float32)[y],  # one-hot
            val_images=vx,
            val_labels=vy,
            test_images=tx,
            test_labels=ty[:, None],  # (N, 1)
        )
        cfg = _config(
            tmp_path,
            {
                "path": str(f),
                "arrays": {"x": "train_images", "y": "train_labels"},
                "val_arrays": {"x": "val_images", "y": "val_labels"},
                "test_arrays": {"x": "test_images", "y": "test_labels"},
            },
        )
        result = _ok(capsys, cfg, tmp_path / "run")
        assert result["test_is_val"] is False
        info = torchstn.inference.load_info(tmp_path / "run")
        assert info.in_shape == (1, 16, 16) and info.num_classes == 3
        # eval reads the same arrays again and reproduces the test error
        assert main(["eval", str(tmp_path / "run")]) == 0
        record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert record["error"] == pytest.approx(result["test_error"])

    def test_flat_float_images(self, tmp_path, capsys):
        x, y = _digits(80)
        f = tmp_path / "flat.npz"
        np.savez(f, x=(x.reshape(80, -1) / 255.0).astype(np.float32), y=y[:, None])
        cfg = _config(tmp_path, {"path": str(f), "image_shape": [1, 16, 16], "val_fraction": 0.25})
        result = _ok(capsys, cfg, tmp_path / "run")
        assert result["test_is_val"] is True
        assert torchstn.inference.load_info(tmp_path / "run").in_shape == (1, 16, 16)


def _class_folder(root: Path, n: int, channels: int = 1, seed: int = 0) -> None:
    x, y = _digits(n, channels=channels, seed=seed)
    for i, (img, label) in enumerate(zip(x, y)):
        _save_png(root / ["left", "middle", "right"][int(label)] / f"{i:03d}.png", img)


class TestImageFiles:
    def test_class_folders_streamed_with_workers(self, tmp_path, capsys):
        _class_folder(tmp_path / "train", 64)
        _class_folder(tmp_path / "test", 24, seed=5)
        cfg = _config(
            tmp_path,
            {
                "path": str(tmp_path / "train"),
                "test_path": str(tmp_path / "test"),
                "cache": False,
                "num_workers": 2,
            },
        )
        _ok(capsys, cfg, tmp_path / "run")
        info = torchstn.inference.load_info(tmp_path / "run")
        assert info.class_names == ("left", "middle", "right") and info.in_shape == (1, 16, 16)

    def test_manifest_rgb_normalised_and_preprocessing_travels(self, tmp_path, capsys):
        x, y = _digits(60, channels=3)
        rows = []
        for i, (img, label) in enumerate(zip(x, y)):
            _save_png(tmp_path / "images" / f"{i}.png", img)
            rows.append([f"images/{i}.png", ["cat", "dog", "owl"][int(label)], 1, 1, 15, 15])
        manifest = tmp_path / "labels.csv"
        with open(manifest, "w", newline="") as fh:
            csv.writer(fh).writerows([["path", "label", "x0", "y0", "x1", "y1"], *rows])
        cfg = _config(tmp_path, {"path": str(manifest), "normalize": True, "fit": "stretch"})
        result = _ok(capsys, cfg, tmp_path / "run")
        model, info = load_with_info(tmp_path / "run")
        assert isinstance(model, Preprocessed)
        pre = info.preprocess
        assert info.class_names == ("cat", "dog", "owl") and pre.channels == 3
        assert pre.fit == "stretch" and pre.mean is not None and pre.std is not None
        # the statistics are those of the training split, in [0, 1] units
        assert 0.05 < pre.mean[0] < 0.5 and 0.05 < pre.std[0] < 0.5
        # the loaded model normalises by itself: equal to the bare network on normalised input
        img = torch.rand(2, 3, 16, 16)
        mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
        std = torch.tensor(pre.std).view(1, 3, 1, 1)
        with torch.no_grad():
            assert torch.allclose(model(img), model.model((img - mean) / std), atol=1e-6)
        # eval of the checkpoint reproduces the run's own test error
        assert main(["eval", str(tmp_path / "run")]) == 0
        record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert record["error"] == pytest.approx(result["test_error"])
        # predict reads a file the way training did and gives the loaded model's answer
        code = main(["predict", str(tmp_path / "run"), str(tmp_path / "images" / "0.png")])
        out = capsys.readouterr().out
        assert code == 0
        pred = json.loads(out.strip().splitlines()[-1])
        x0 = torch.from_numpy(x[0]).permute(2, 0, 1).float()[None] / 255
        with torch.no_grad():
            want = int(model(x0).argmax())
        assert pred["class"] == want and pred["class_name"] == ["cat", "dog", "owl"][want]
        assert pred["fit"]["method"] == "stretch"
        # an export contains the normalisation: it takes [0, 1] images like the loaded model
        from torchstn.export import load_exported

        for part in ("model", "transformer"):
            out = tmp_path / f"{part}.pt"
            argv = ["export", str(tmp_path / "run"), "--format", "torchscript", "--out", str(out)]
            assert main([*argv, "--part", part]) == 0
            exported = load_exported(out)(img)
            with torch.no_grad():
                if part == "model":
                    assert torch.allclose(exported[0], model(img), atol=1e-5)
                else:  # the transformer reads (and outputs) normalised images
                    st = torchstn.inference.first_transformer(model)
                    assert torch.allclose(exported[0], st((img - mean) / std), atol=1e-5)

    def test_corrupt_image_stops_the_run_and_keeps_the_checkpoint(self, tmp_path, capsys):
        _class_folder(tmp_path / "train", 96)
        victim = sorted((tmp_path / "train" / "left").iterdir())[3]
        victim.write_bytes(victim.read_bytes()[:40])  # a truncated PNG
        data = {"path": str(tmp_path / "train"), "cache": False, "num_workers": 0}
        cfg = _config(tmp_path, data, checkpoint_every=1)
        code, _, err = _train(capsys, cfg, tmp_path / "run")
        assert code == 2
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and str(victim) in lines[0] and "skip_bad" in lines[0]
        run = tmp_path / "run"
        if (run / "checkpoint.pt").exists():  # the last good one, whole
            torchstn.inference.load_info(run)
        assert not (run / "result.json").exists()
        assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temp files

        # with skip_bad the run goes on and counts what it skipped
        cfg = _config(tmp_path, {**data, "skip_bad": True})
        code, _, err = _train(capsys, cfg, tmp_path / "run2")
        assert code == 0, err
        rows = [
            json.loads(r)
            for r in (tmp_path / "run2" / "metrics.jsonl").read_text().split("\n")
            if r
        ]
        result = json.loads((tmp_path / "run2" / "result.json").read_text())
        assert rows[0]["skipped"] + rows[0]["val_skipped"] == 1
        assert result["skipped"]["test"] == rows[0]["val_skipped"]  # test is the validation data


class TestOneLineErrors:
    @pytest.fixture
    def npz(self, tmp_path: Path) -> Path:
        x, y = _digits(40)
        f = tmp_path / "d.npz"
        np.savez(f, images=x, labels=y, short=y[:10], big=y + 10, flat=x.reshape(40, -1))
        return f

    @pytest.mark.parametrize(
        "data, expected",
        [
            ({"arrays": {"x": "pictures", "y": "labels"}}, ["d.npz", "pictures", "images"]),
            ({"arrays": {"x": "images", "y": "short"}}, ["d.npz", "images", "short", "40", "10"]),
            (
                {"arrays": {"x": "flat", "y": "labels"}, "image_shape": [1, 16, 17]},
                ["d.npz", "flat", "256", "272"],
            ),
            (
                {
                    "arrays": {"x": "images", "y": "labels"},
                    "test_arrays": {"x": "images", "y": "big"},
                    "num_classes": 3,
                },
                ["d.npz", "out of range", "3 classes"],
            ),
        ],
        ids=["missing-array", "lengths", "image-shape", "label-range"],
    )
    def test_npz(self, tmp_path, capsys, npz, data, expected):
        code, _, err = _train(capsys, _config(tmp_path, {"path": str(npz), **data}), tmp_path / "r")
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        for word in expected:
            assert word in lines[0]
        assert not (tmp_path / "r").exists()  # nothing written before the data was read

    def test_manifest_row_pointing_nowhere(self, tmp_path, capsys):
        _save_png(tmp_path / "a.png", np.zeros((8, 8, 1), np.uint8))
        manifest = tmp_path / "m.csv"
        manifest.write_text("path,label\na.png,0\nmissing.png,1\n")
        code, _, err = _train(capsys, _config(tmp_path, {"path": str(manifest)}), tmp_path / "r")
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "m.csv" in lines[0] and "line 3" in lines[0]
        assert "missing.png" in lines[0]

    def test_user_keys_refused_with_a_task(self, tmp_path, capsys):
        cfg = _config(tmp_path, {"task": "rotated", "arrays": {"x": "a", "y": "b"}})
        code, _, err = _train(capsys, cfg, tmp_path / "r")
        assert code == 2 and "data.arrays" in err and "data.path" in err


class TestStreamedResume:
    def test_resumed_mid_epoch_ends_with_the_weights_of_an_uninterrupted_run(
        self, tmp_path, monkeypatch
    ):
        from torchstn.train import Trainer, TrainingInterrupted, config_from_dict

        _class_folder(tmp_path / "train", 80)
        values = yaml.safe_load(
            _config(
                tmp_path,
                {"path": str(tmp_path / "train"), "cache": False, "num_workers": 1},
                epochs=2,
            ).read_text()
        )
        ref = Trainer(config_from_dict(values), tmp_path / "ref", progress=False)
        ref.fit()

        original = Trainer._step
        calls = {"n": 0}

        def step_then_interrupt(self, *args):
            loss = original(self, *args)
            calls["n"] += 1
            if calls["n"] == 6:  # epoch 2, step 2 (4 steps of 16 per epoch)
                self.interrupted = True
            return loss

        monkeypatch.setattr(Trainer, "_step", step_then_interrupt)
        run = tmp_path / "run"
        with pytest.raises(TrainingInterrupted):
            Trainer(config_from_dict(values), run, progress=False).fit()
        monkeypatch.setattr(Trainer, "_step", original)
        resumed = Trainer(config_from_dict(values), run, resume=True, progress=False)
        resumed.fit()
        for k, v in ref.model.state_dict().items():
            assert torch.equal(v, resumed.model.state_dict()[k]), k
