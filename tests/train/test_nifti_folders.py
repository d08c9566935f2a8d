"""Class folders of NIfTI files as training data: listed link-safely as image folders are, read
whole after their headers are checked (one size, the voxel limit), each volume brought to [0, 1]
by the intensity rule of ``torchstn predict``; one short run through the command line, and every
refusal in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchstn.cli import main
from torchstn.data.files import scan_class_folder
from torchstn.data.volumes import (
    NIFTI_SUFFIXES,
    VOXELS_ENV,
    read_nifti,
    read_nifti_volumes,
    scale_intensity,
)
from torchstn.errors import ConfigError, DataError
from torchstn.inference import load_with_info
from torchstn.models import create_model
from torchstn.predict import Prediction, Predictor, predict
from torchstn.train.config import DataConfig
from torchstn.train.datamodule import DataModule

nib = pytest.importorskip("nibabel")

SIZE = (6, 6, 6)  # the file's (x, y, z); read as (D, H, W) = (z, y, x)
CNN3D = "{name: cnn3d, options: {channels: [2, 4], kernels: [3, 3]}}"


def save(path: Path, xyz: np.ndarray, slope: float | None = None) -> Path:
    """``xyz`` as a NIfTI file at ``path`` (its class folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(xyz, np.eye(4))
    if slope is not None:
        image.header.set_slope_inter(slope, 0)
    nib.save(image, path)
    return path


def slab(label: int, seed: int, dtype: type = np.int16) -> np.ndarray:
    """A ``SIZE`` volume of ``dtype`` whose bright slab along z tells its class."""
    rng = np.random.default_rng(seed)
    xyz = rng.integers(0, 40, SIZE).astype(dtype)
    xyz[:, :, 3 * label : 3 * label + 2] = 200
    return xyz


def folder(root: Path, n: int = 6, seed: int = 0) -> Path:
    """Two classes of ``n`` volumes each: int16 scans beyond 0..255 (min-max), uint8 (/255),
    floats in [0, 1] (as is), ``.nii`` and ``.nii.gz``."""
    for label, name in enumerate(("left", "right")):
        for i in range(n):
            xyz = slab(label, seed + 100 * label + i)
            kind = i % 3
            if kind == 0:  # Hounsfield-like: min-max
                xyz = xyz.astype(np.int16) * 10 - 500
            elif kind == 1:
                xyz = xyz.astype(np.uint8)
            else:
                xyz = (xyz / 255.0).astype(np.float32)
            save(root / name / f"{i:02d}.nii{'.gz' * (i % 2)}", xyz)
    return root


def expected(path: Path) -> tuple[np.ndarray, str]:
    """The (1, D, H, W) model input and the rule for ``path``, computed here from the file's
    stored values (not with torchstn's rule)."""
    image = nib.load(path)
    stored = np.asarray(image.dataobj.get_unscaled()).astype(np.float64)
    slope, inter = float(image.dataobj.slope), float(image.dataobj.inter)
    values = stored * slope + inter
    dhw = values.transpose(2, 1, 0)[None]
    lo, hi = dhw.min(), dhw.max()
    integers = image.get_data_dtype().kind in "iu" and (slope, inter) == (1.0, 0.0)
    if integers and lo >= 0 and hi <= 255:
        return dhw / 255, "divided by 255"
    if not integers and lo >= 0 and hi <= 1:
        return dhw, "as is"
    return (dhw - lo) / (hi - lo), "min-max"


def module(path: Path, **overrides: object) -> DataModule:
    return DataModule(DataConfig(task=None, path=str(path), **overrides), seed=0)  # type: ignore[arg-type]


def train(tmp_path: Path, capsys, data: Path, *sets: str) -> tuple[int, str, str]:
    argv = ["train", "--out", str(tmp_path / "run"), "--no-progress", "--epochs", "1"]
    argv += ["--device", "cpu", "--seed", "0", "--set", "data.task=null"]
    argv += ["--set", f"data.path={data}", "--set", f"model={CNN3D}"]
    argv += ["--set", "optim.batch_size=4", "--set", "optim.lr=0.05"]
    for s in sets:
        argv += ["--set", s]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchstn train: error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _truncated_gzip(root: Path) -> None:
    """left/01.nii.gz of random float64 (gzip barely shrinks it) cut short in its voxels: its
    header reads, its data does not."""
    path = save(root / "left" / "01.nii.gz", np.random.default_rng(0).random(SIZE))
    path.write_bytes(path.read_bytes()[:-100])


class TestCommandLine:
    def test_a_two_class_folder_trains_and_eval_gives_its_numbers(self, tmp_path, capsys):
        data = folder(tmp_path / "scans")
        test = folder(tmp_path / "test", n=3, seed=7)
        code, out, err = train(tmp_path, capsys, data, f"data.test_path={test}")
        assert code == 0, err
        assert "scans (1, 6, 6, 6)" in out
        run = tmp_path / "run"
        result = json.loads((run / "result.json").read_text())
        assert result["epochs"] == 1 and result["test_is_val"] is False
        config = json.loads((run / "config.json").read_text())
        assert set(config["data"]["fingerprints"]) == {"path", "test_path"}
        model, info = load_with_info(run)
        assert info.in_shape == (1, 6, 6, 6) and info.class_names == ("left", "right")
        # eval reads the folders again and gives the run's numbers
        assert main(["eval", str(run)]) == 0
        record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert record["error"] == pytest.approx(result["test_error"])
        # predict gives a file of the folder the input it had in training
        for name in ("00.nii", "01.nii.gz", "02.nii"):
            file = test / "right" / name
            assert main(["predict", str(run), str(file), "--top-k", "2"]) == 0
            pred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            x, rule = expected(file)
            assert pred["fit"]["intensity"] == rule
            with torch.no_grad():
                probs = model(torch.from_numpy(x).float()[None]).double().softmax(-1)[0]
            got = {t["class"]: t["confidence"] for t in pred["top_k"]}
            assert got == pytest.approx({c: float(probs[c]) for c in got}, abs=1e-6)
        # a file changed since training: eval refuses the folder
        save(test / "left" / "00.nii", slab(0, 99))
        assert main(["eval", str(run)]) == 2
        assert "not the data the run was trained on" in capsys.readouterr().err

    def test_the_held_out_split_is_seeded(self, tmp_path):
        data = folder(tmp_path / "scans", n=5)
        a, b = module(data, val_fraction=0.3), module(data, val_fraction=0.3)
        assert len(a.eval_split("val")) == 3 and len(a.train(0)) == 7 and a.test_is_val
        assert torch.equal(a.eval_split("val").x, b.eval_split("val").x)
        both = torch.cat([a.train(0).x, a.eval_split("val").x])
        assert torch.equal(
            both.sort(0).values, module(data, val_path=str(data)).train(0).x.sort(0).values
        )

    @pytest.mark.parametrize(
        ("make", "parts"),
        [
            (
                lambda root: save(root / "right" / "big.nii", np.zeros((6, 6, 5), np.int16)),
                ["volumes of two sizes (D, H, W)", "00.nii (6, 6, 6)", "big.nii (5, 6, 6)"],
            ),
            (
                lambda root: save(root / "right" / "4d.nii", np.zeros((6, 6, 6, 2), np.int16)),
                ["4d.nii: expected a 3-D volume, got a 4-D image of shape (6, 6, 6, 2)"],
            ),
            (
                lambda root: _truncate(root / "left" / "00.nii", 400),
                ["00.nii declares shape (6, 6, 6) of int16", "truncated"],
            ),
            (_truncated_gzip, ["01.nii.gz: corrupted or truncated"]),
            (
                lambda root: _truncate(root / "left" / "01.nii.gz", 100),
                ["01.nii.gz: not a readable NIfTI file"],
            ),
            (lambda root: _truncate(root / "left" / "00.nii", 100), ["not a readable NIfTI"]),
        ],
        ids=["mixed sizes", "4-D", "truncated", "truncated gzip", "gzip header", "no header"],
    )
    def test_a_bad_folder_gets_one_line_and_exit_2(self, tmp_path, capsys, make, parts):
        data = folder(tmp_path / "scans", n=3)
        make(data)
        code, _, err = train(tmp_path, capsys, data)
        assert code == 2
        one_line_error(err, *parts)
        assert not (tmp_path / "run" / "checkpoint.pt").exists()

    @pytest.mark.parametrize("volumes", [None, True])
    def test_no_nifti_files(self, tmp_path, capsys, volumes):
        (tmp_path / "scans" / "a").mkdir(parents=True)
        (tmp_path / "scans" / "a" / "notes.txt").write_text("")
        sets = [] if volumes is None else ["data.volumes=true"]
        code, _, err = train(tmp_path, capsys, tmp_path / "scans", *sets)
        assert code == 2
        one_line_error(err, "no files found", "CLASS/FILE", ".nii, .nii.gz")

    def test_skip_bad_does_not_set_a_bad_volume_aside(self, tmp_path, capsys):
        data = folder(tmp_path / "scans", n=3)
        _truncated_gzip(data)
        code, _, err = train(tmp_path, capsys, data, "data.skip_bad=true")
        assert code == 2
        one_line_error(err, "01.nii.gz: corrupted or truncated")


class TestIntensity:
    def test_each_volume_by_predict_s_rule(self, tmp_path):
        root = tmp_path / "scans"
        files = {
            "a/int16_wide.nii": slab(0, 1).astype(np.int16) * 10 - 500,  # min-max
            "a/int16_byte.nii": slab(0, 2).astype(np.int16),  # integers in 0..255: /255
            "a/uint8.nii.gz": slab(0, 3).astype(np.uint8),  # /255
            "b/float_unit.nii": (slab(1, 4) / 255.0).astype(np.float32),  # as is
            "b/float_wide.nii": slab(1, 5).astype(np.float32) * 4.0,  # min-max
            "b/uint8_slope.nii": slab(1, 6).astype(np.uint8),  # scaled integers: min-max
        }
        for name, xyz in files.items():
            save(root / name, xyz, slope=0.5 if "slope" in name else None)
        dm = module(root, val_path=str(root), test_path=str(root))
        x = dm.train(0).x  # (N, 1, D, H, W), entries class by class, sorted by path
        assert x.shape == (6, 1, 6, 6, 6) and x.dtype == torch.float32
        ordered = sorted(files, key=lambda n: (n[0], n))
        assert dm.train(0).y.tolist() == [0, 0, 0, 1, 1, 1]
        rules = []
        model = create_model("cnn3d", (1, 6, 6, 6), 2, channels=[2, 4], kernels=[3, 3]).eval()

        @torch.no_grad()
        def run(v: torch.Tensor):
            return model(v), None

        predictor = Predictor((1, 6, 6, 6), 2, ("a", "b"), None, "torch", run)
        for i, name in enumerate(ordered):
            want, rule = expected(root / name)
            np.testing.assert_allclose(x[i].double().numpy(), want, rtol=0, atol=1e-6)
            rules.append(rule)
            (record,) = predict(predictor, [root / name], top_k=2)
            assert isinstance(record, Prediction), record
            assert record.fit.intensity == rule
            with torch.no_grad():
                probs = model(x[i : i + 1]).double().softmax(-1)[0]
            # predict gives the model exactly the training tensor: the same confidences
            assert {c: p for c, _, p in record.top_k} == {
                c: pytest.approx(float(probs[c]), abs=1e-7) for c in (0, 1)
            }
        assert rules == [
            "divided by 255",
            "min-max",
            "divided by 255",
            "as is",
            "min-max",
            "min-max",
        ]

    def test_the_rule(self):
        v, rule, span = scale_intensity(np.array([[-100, 0, 300]], np.int16), "x", True)
        assert (v.tolist(), rule, span) == ([[0.0, 0.25, 1.0]], "min-max", (-100.0, 300.0))
        v, rule, _ = scale_intensity(np.array([0, 51, 255], np.uint8), "x", True)
        assert rule == "divided by 255" and v.tolist() == pytest.approx([0, 0.2, 1])
        v, rule, _ = scale_intensity(torch.tensor([0.0, 0.5, 1.0]), "x", False)
        assert rule == "as is" and v.tolist() == [0, 0.5, 1]
        v, rule, _ = scale_intensity(torch.full((2,), 7.0), "x", False)  # constant: zeros
        assert rule == "min-max" and v.tolist() == [0, 0]
        with pytest.raises(DataError, match=r"x holds 1 NaN or infinite voxels"):
            scale_intensity(torch.tensor([0.0, float("nan")]), "x", False)


class TestFolders:
    def test_the_voxel_total_is_checked_before_any_file_is_read(self, tmp_path, monkeypatch):
        data = folder(tmp_path / "scans", n=3)
        monkeypatch.setenv(VOXELS_ENV, str(216 * 5))  # each file fits, six do not

        def unread(path):
            raise AssertionError(f"read {path}")

        monkeypatch.setattr("torchstn.data.volumes.read_nifti", unread)
        with pytest.raises(DataError, match=r"6 volumes of \(6, 6, 6\), 1296 voxels; at most 1080"):
            module(data)
        monkeypatch.setenv(VOXELS_ENV, str(216 * 6))
        with pytest.raises(AssertionError, match="read"):  # within the limit: read
            module(data)

    def test_validation_of_another_size_or_kind(self, tmp_path):
        data = folder(tmp_path / "scans", n=3)
        val = tmp_path / "val"
        for label in ("left", "right"):
            save(val / label / "v.nii", np.zeros((5, 6, 6), np.int16))
        with pytest.raises(DataError, match=r"data.val_path .*val: volumes of size \(6, 6, 5\)"):
            module(data, val_path=str(val))
        np.savez(tmp_path / "v.npz", x=np.zeros((2, 6, 6, 6), np.uint8), y=np.arange(2))
        with pytest.raises(DataError, match=r"data.test_path: .*v.npz is not a folder"):
            module(data, test_path=str(tmp_path / "v.npz"))
        with pytest.raises(ConfigError, match=r"data.image_size: not for NIfTI volumes"):
            module(data, image_size=[6, 6])
        save(tmp_path / "other" / "owl" / "x.nii", slab(0, 0))
        with pytest.raises(DataError, match=r"class 'owl' is not among the training classes"):
            module(data, test_path=str(tmp_path / "other"))

    def test_images_and_volumes_in_one_folder(self, tmp_path):
        data = folder(tmp_path / "scans", n=3)
        picture = data / "left" / "z.png"
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(picture)
        with pytest.raises(DataError, match=r"holds NIfTI volumes .*00.nii\) and image files"):
            module(data)
        dm = module(data, volumes=True)  # the volumes; the picture is not listed
        assert dm.volumes and len(dm.train(0)) + len(dm.eval_split("val")) == 6
        Image.fromarray(np.zeros((6, 6), np.uint8)).save(data / "right" / "z.png")
        images = module(data, volumes=False)  # the pictures, as image folders always were
        assert not images.volumes and images.in_shape == (1, 6, 6)

    def test_links_are_walked_once(self, tmp_path):
        data = folder(tmp_path / "scans", n=3)
        outside = tmp_path / "more"
        save(outside / "m.nii", slab(0, 50))
        os.symlink(outside, data / "left" / "more")
        os.symlink("..", data / "left" / "up")  # a loop back to the root
        os.symlink(".", data / "left" / "self")  # a loop onto itself
        os.symlink(data / "left" / "00.nii", data / "left" / "again.nii")  # a file twice
        entries, classes = scan_class_folder(data, suffixes=NIFTI_SUFFIXES)
        names = [e.path.relative_to(data).as_posix() for e in entries]
        assert classes == ["left", "right"]
        assert names == [
            "left/00.nii",
            "left/01.nii.gz",
            "left/02.nii",
            "left/more/m.nii",
            "right/00.nii",
            "right/01.nii.gz",
            "right/02.nii",
        ]
        dm = module(data, val_path=str(data))
        assert len(dm.train(0)) == 7

    def test_suffixes_keep_image_folders_as_they_were(self, tmp_path):
        for name in ("cat/a.png", "cat/b.nii", "dog/c.JPG", "dog/d.NII.GZ", "dog/e.txt"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).touch()
        images, _ = scan_class_folder(tmp_path)
        assert [e.path.name for e in images] == ["a.png", "c.JPG"]
        volumes, _ = scan_class_folder(tmp_path, suffixes=NIFTI_SUFFIXES)
        assert [(e.path.name, e.label) for e in volumes] == [("b.nii", 0), ("d.NII.GZ", 1)]
        (tmp_path / "empty" / "cat").mkdir(parents=True)
        (tmp_path / "empty" / "cat" / "b.nii").touch()
        with pytest.raises(DataError, match=r"no images found \(expected .*CLASS/IMAGE with one"):
            scan_class_folder(tmp_path / "empty")
        with pytest.raises(DataError, match=r"files of 1 class \(cat\); a classifier needs"):
            scan_class_folder(tmp_path / "empty", suffixes=NIFTI_SUFFIXES)

    def test_read_nifti_volumes_keeps_the_order_and_reads_each_once(self, tmp_path, monkeypatch):
        paths = [save(tmp_path / f"{i}.nii", slab(i % 2, i)) for i in range(3)]
        read: list[Path] = []

        def counted(path):
            read.append(Path(path))
            return read_nifti(path)

        monkeypatch.setattr("torchstn.data.volumes.read_nifti", counted)
        x = read_nifti_volumes(paths, "three")
        assert read == paths and x.shape == (3, 1, 6, 6, 6)
        for i, p in enumerate(paths):
            assert torch.equal(x[i], torch.from_numpy(expected(p)[0]).float())
        with pytest.raises(DataError, match=r"three: no NIfTI files"):
            read_nifti_volumes([], "three")
