"""``torchstn register``: a tiny 2-D run (MNIST pairs) applied to PNG and ``.npy`` files, a tiny 3-D
run (a NIfTI folder in atlas mode) applied to NIfTI volumes; outputs checked against direct
computation from the saved fields, hostile files one line each."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from torchstn.cli import main
from torchstn.fields import folded_share, jacobian_determinant, warp
from torchstn.inference import save_trained
from torchstn.models import create_model
from torchstn.train.checkpoint import load_checkpoint, save_checkpoint

_TRAIN = {
    "seed": 0,
    "device": "cpu",
    "objective": {"name": "registration", "options": {"similarity": "mse"}},
    "model": {"name": "reg_unet", "options": {"enc": [4, 4], "dec": [4, 4, 4]}},
    "optim": {"name": "adam", "lr": 0.01, "batch_size": 4},
    "run": {"epochs": 1, "eval_batch_size": 4, "num_threads": 1},
}
_AFFINE = np.array([[2.0, 0, 0, -5], [0, 1.5, 0, 3], [0, 0, 1, 7], [0, 0, 0, 1]])


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _train(folder: Path, data: dict) -> Path:
    cfg = {**_TRAIN, "data": data}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    run = folder / "run"
    code = main(
        ["train", "--config", str(folder / "tiny.yaml"), "--out", str(run), "--no-progress"]
    )
    assert code == 0
    _bolder(run)
    return run


def _bolder(run: Path) -> None:
    """Make the tiny run's fields large (a drift of a few pixels plus the U-Net's features times
    a large gain), so that the checks below compare fields that move and fold, not ~0."""
    state = load_checkpoint(run)
    for weights in (state["model"], state["best"]["model"]):
        head = weights["transformer.head.weight"]
        weights["transformer.head.weight"] = head / head.abs().max() * 0.4
        weights["transformer.head.bias"] = torch.linspace(1.5, -2.0, len(head))
    save_checkpoint(run / "checkpoint.pt", state)


def _nifti(path: Path, a: np.ndarray, affine: np.ndarray = _AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(a, affine), str(path))
    return path


@pytest.fixture(scope="module")
def run_2d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run2d")
    data = {"task": "mnist_pairs", "options": {"digits": [1]}, "train_size": 8}
    return _train(folder, {**data, "val_size": 4, "test_size": 4})


@pytest.fixture(scope="module")
def run_3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run3d")
    rng = np.random.default_rng(0)
    for name in "abcd":
        _nifti(
            root / "scans" / "moving" / f"{name}.nii.gz", rng.random((8, 7, 6)).astype(np.float32)
        )
        labels = rng.integers(0, 2, (8, 7, 6)).astype(np.uint8)
        _nifti(root / "scans" / "moving_labels" / f"{name}.nii.gz", labels)
    _nifti(root / "scans" / "atlas.nii.gz", rng.random((8, 7, 6)).astype(np.float32))
    _nifti(root / "scans" / "atlas_labels.nii.gz", rng.integers(0, 2, (8, 7, 6)).astype(np.uint8))
    return _train(root, {"task": None, "path": str(root / "scans"), "val_fraction": 0.5})


def _png(path: Path, a: np.ndarray) -> Path:
    Image.fromarray(a).save(path)
    return path


def _no_temps(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def _check_record(record: dict, u: torch.Tensor) -> None:
    """The record's numbers against the field ``u`` ``(1, N, *size)`` saved beside it."""
    det = jacobian_determinant(u).double()
    assert json.loads(Path(record["outputs"]["record"]).read_text()) == record
    assert record["folded_share"] == pytest.approx(float(folded_share(u)[0]))
    jac = record["jacobian"]
    assert jac["min"] == pytest.approx(float(det.min()))
    assert jac["max"] == pytest.approx(float(det.max()))
    assert jac["std"] == pytest.approx(float(det.std()))
    assert record["seconds"] > 0 and list(u.shape[2:]) == record["size"]


def _model_field(run: Path, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    import torchstn

    with torch.no_grad():
        return torchstn.load(run)(moving[None], fixed[None]).field


def test_png_of_another_size_pad_fit(run_2d, tmp_path, capsys):
    rng = np.random.default_rng(1)
    m = _png(tmp_path / "m.png", (rng.random((40, 30)) * 255).astype(np.uint8))
    f = _png(tmp_path / "f.png", (rng.random((40, 30)) * 255).astype(np.uint8))
    code, out, err = _run(capsys, "register", str(run_2d), str(m), "--fixed", str(f))
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    outputs = record["outputs"]
    assert Path(outputs["warped"]).parent == run_2d / "registered"
    assert record["size"] == [40, 30] and record["model_size"] == [32, 32]
    assert record["fit"]["padding"] == [4, 0, 4, 0] and record["fit"]["resized"] == [32, 24]
    u = torch.from_numpy(np.load(outputs["field"]))[None]  # (1, 2, 40, 30)
    assert u.shape == (1, 2, 40, 30)
    moving = torch.from_numpy(np.asarray(Image.open(m), np.float32) / 255)[None, None]
    expected = (warp(moving, u)[0, 0].clamp(0, 1) * 255).round()
    got = torch.from_numpy(np.asarray(Image.open(outputs["warped"]), np.float32))
    assert (got - expected).abs().max() <= 1
    det = np.load(outputs["jacobian"])
    assert np.allclose(det, jacobian_determinant(u)[0].numpy())
    _check_record(record, u)
    # the file's field is the model's, read at each file pixel's place in the model input (the
    # image is 32 x 24 in the 32 x 32 input, 4 columns in; 0.8 model pixel per file pixel)
    x_m = torch.from_numpy(np.asarray(Image.open(m), np.float32) / 255)[None, None]
    x_f = torch.from_numpy(np.asarray(Image.open(f), np.float32) / 255)[None, None]
    pad = lambda t: F.pad(F.interpolate(t, size=(32, 24), mode="bilinear", antialias=True), (4, 4))  # noqa: E731
    um = _model_field(run_2d, (pad(x_m)[0] * 255).round() / 255, (pad(x_f)[0] * 255).round() / 255)
    i, j = torch.meshgrid(torch.arange(40.0), torch.arange(30.0), indexing="ij")
    qx, qy = (j + 0.5) * 0.8 + 4 - 0.5, (i + 0.5) * 0.8 - 0.5
    grid = torch.stack(((qx + 0.5) / 32 * 2 - 1, (qy + 0.5) / 32 * 2 - 1), -1)[None]
    direct = F.grid_sample(um, grid, align_corners=False) / 0.8
    assert torch.allclose(u[..., 1:-1, 1:-1], direct[..., 1:-1, 1:-1], atol=1e-5)
    _no_temps(tmp_path)
    _no_temps(run_2d)


@pytest.mark.parametrize("convention", ["torchstn", "monai", "voxelmorph"])
def test_npy_units_and_field_conventions(run_2d, tmp_path, capsys, convention):
    rng = np.random.default_rng(2)
    a = rng.integers(-100, 300, (32, 32)).astype(np.int16)  # not 0..255: min-max scaled
    np.save(tmp_path / "m.npy", a)
    np.save(tmp_path / "f.npy", rng.random((32, 32)).astype(np.float32))
    out_dir = tmp_path / "out"
    code, out, err = _run(
        capsys, "register", str(run_2d), str(tmp_path / "m.npy"), "--fixed", str(tmp_path / "f.npy"),
        "--out", str(out_dir), "--field-convention", convention,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["field"]["convention"] == convention and record["fit"]["conversion"] == "min-max"
    saved = torch.from_numpy(np.load(record["outputs"]["field"]))
    if convention == "voxelmorph":  # (H, W, 2), index order (dy, dx)
        assert saved.shape == (32, 32, 2)
        u = saved.permute(2, 0, 1).flip(0)[None]
    elif convention == "monai":  # (2, H, W), (dy, dx)
        u = saved.flip(0)[None]
    else:
        u = saved[None]
    lo, hi = float(a.min()), float(a.max())
    scaled = torch.from_numpy((a - lo) / (hi - lo)).float()[None, None]
    expected = warp(scaled, u)[0] * (hi - lo) + lo  # background: the file's minimum
    warped = torch.from_numpy(np.load(record["outputs"]["warped"]))
    assert warped.shape == (1, 32, 32) and torch.allclose(warped, expected, atol=1e-3)
    _check_record(record, u)
    # the field is the model's (the sizes match: nothing resized)
    f = torch.from_numpy(np.load(tmp_path / "f.npy"))[None]
    assert torch.allclose(u, _model_field(run_2d, scaled[0], f), atol=1e-6)
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "m.json", "m_field.npy", "m_jacobian.npy", "m_warped.npy"
    ]  # fmt: skip


def _png_bytes(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` grey pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_hostile_images_one_line_each_others_written(run_2d, tmp_path, capsys):
    rng = np.random.default_rng(3)
    f = _png(tmp_path / "f.png", (rng.random((32, 32)) * 255).astype(np.uint8))
    good = _png(tmp_path / "good.png", (rng.random((32, 32)) * 255).astype(np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_bytes(100_000, 100_000))
    bomb = tmp_path / "bomb.npy"  # a header declaring 10^12 values over 100 bytes
    bomb.write_bytes(
        b"\x93NUMPY\x01\x00v\x00"
        + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }".ljust(117)
        + b"\n"
        + b"\0" * 100
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    _png(folder / "inside.png", (rng.random((32, 32)) * 255).astype(np.uint8))
    os.symlink(folder, folder / "loop")  # a folder holding itself: walked once, no error
    loop = tmp_path / "self.png"
    os.symlink(loop, loop)  # a link to itself, named: one line
    other = _png(tmp_path / "other.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    out_dir = tmp_path / "out"
    paths = [good, cut, huge, bomb, loop, folder, other]
    code, out, err = _run(
        capsys, "register", str(run_2d), *map(str, paths), "--fixed", str(f), "--out", str(out_dir)
    )
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err
    bad = ["cut.png", "huge.png", "bomb.npy", "self.png", "other.png"]
    assert len(lines) == len(bad), err
    for name, line in zip(bad, lines):
        assert line.startswith("torchstn register: ") and name in line, line
    assert "exceed the limit" in lines[1] and "symbolic links" in lines[3]
    assert "size (20, 20)" in lines[4]
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["moving"]).name for r in records] == ["good.png", "inside.png"]
    for r in records:
        assert all(Path(p).is_file() for p in r["outputs"].values())
    _no_temps(tmp_path)


def test_3d_nifti_to_the_runs_atlas_and_another_size(run_3d, tmp_path, capsys):
    rng = np.random.default_rng(4)
    m = _nifti(
        tmp_path / "m.nii.gz", (rng.random((8, 7, 6)) * 50 + 10).astype(np.float32), np.eye(4)
    )
    code, out, err = _run(capsys, "register", str(run_3d), str(m), "--out", str(tmp_path / "out"))
    assert code == 0, err
    record = json.loads(out)
    atlas = run_3d.parent / "scans" / "atlas.nii.gz"
    assert record["fixed"] == str(atlas) and record["size"] == [6, 7, 8]
    outputs = record["outputs"]
    assert all(outputs[k].endswith(".nii.gz") for k in ("warped", "field", "jacobian"))
    field_img = nib.load(outputs["field"])
    assert np.allclose(field_img.affine, _AFFINE)  # the fixed image's (the atlas)
    assert field_img.shape == (8, 7, 6, 3) and field_img.header.get_intent()[0] == "vector"
    # the file's axes (X, Y, Z, i-j-k components) back to torchstn's (1, 3, D, H, W)
    u = torch.from_numpy(np.asarray(field_img.dataobj, np.float32)).permute(3, 2, 1, 0)[None]
    a = np.asarray(nib.load(m).dataobj)
    lo, hi = float(a.min()), float(a.max())
    scaled = torch.from_numpy((a - lo) / (hi - lo)).float().permute(2, 1, 0)[None, None]
    expected = (warp(scaled, u)[0, 0] * (hi - lo) + lo).permute(2, 1, 0)
    warped_img = nib.load(outputs["warped"])
    assert np.allclose(warped_img.affine, _AFFINE) and warped_img.shape == (8, 7, 6)
    assert np.allclose(np.asarray(warped_img.dataobj), expected.numpy(), atol=1e-4)
    det = np.asarray(nib.load(outputs["jacobian"]).dataobj)
    assert np.allclose(det, jacobian_determinant(u)[0].permute(2, 1, 0).numpy(), atol=1e-6)
    _check_record(record, u)
    # a pair of another size, stretched to the model's: outputs at the pair's size
    m2 = _nifti(tmp_path / "m2.nii", rng.random((10, 9, 12)).astype(np.float32))
    f2 = _nifti(tmp_path / "f2.nii", rng.random((10, 9, 12)).astype(np.float32))
    code, out, err = _run(
        capsys, "register", str(run_3d), str(m2), "--fixed", str(f2), "--fit", "stretch",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["size"] == [12, 9, 10] and record["model_size"] == [6, 7, 8]
    assert record["outputs"]["warped"].endswith("m2_warped.nii")
    u = torch.from_numpy(np.asarray(nib.load(record["outputs"]["field"]).dataobj)).permute(
        3, 2, 1, 0
    )[None]
    assert u.shape == (1, 3, 12, 9, 10)
    warped = np.asarray(nib.load(record["outputs"]["warped"]).dataobj)
    v = torch.from_numpy(np.asarray(nib.load(m2).dataobj)).permute(2, 1, 0)[None, None]
    assert np.allclose(warped, warp(v, u)[0, 0].permute(2, 1, 0).numpy(), atol=1e-5)
    _check_record(record, u)
    _no_temps(tmp_path)


def test_hostile_volumes_one_line_each_others_written(run_3d, tmp_path, capsys):
    rng = np.random.default_rng(5)
    good = _nifti(tmp_path / "good.nii", rng.random((8, 7, 6)).astype(np.float32))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(good.read_bytes()[:400])
    huge = tmp_path / "huge.nii"
    raw = bytearray(good.read_bytes())
    raw[42:48] = struct.pack("<hhh", 30000, 30000, 30000)  # dim[1..3]: 27e12 voxels declared
    huge.write_bytes(bytes(raw))
    folder = tmp_path / "folder"
    folder.mkdir()
    np.save(folder / "inside.npy", rng.random((6, 7, 8)).astype(np.float32))
    os.symlink(folder, folder / "loop")
    loop = tmp_path / "self.nii"
    os.symlink(loop, loop)
    out_dir = tmp_path / "out"
    code, out, err = _run(
        capsys, "register", str(run_3d), str(good), str(cut), str(huge), str(loop), str(folder),
        "--out", str(out_dir),
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err and len(lines) == 3, err
    for name, line in zip(["cut.nii", "huge.nii", "self.nii"], lines):
        assert name in line, line
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["moving"]).name for r in records] == ["good.nii", "inside.npy"]
    assert records[1]["outputs"]["warped"].endswith("inside_warped.npy")
    assert np.load(records[1]["outputs"]["field"]).shape == (3, 6, 7, 8)
    _no_temps(tmp_path)


def test_refusals_in_one_line(run_2d, tmp_path, capsys):
    f = _png(tmp_path / "f.png", np.zeros((32, 32), np.uint8))
    code, _, err = _run(capsys, "register", str(run_2d), str(f))  # no --fixed, no atlas
    assert code == 2 and err.strip() == (
        "torchstn register: error: --fixed: required (this run records no atlas to register to)"
    )
    net = create_model("st_fcn_affine", (1, 28, 28), 10, hidden=[8], loc_hidden=[4])
    save_trained(
        tmp_path / "cls.pt",
        net,
        "st_fcn_affine",
        (1, 28, 28),
        10,
        options={"hidden": [8], "loc_hidden": [4]},
    )
    code, _, err = _run(capsys, "register", str(tmp_path / "cls.pt"), str(f), "--fixed", str(f))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "registration run" in err
    code, _, err = _run(
        capsys, "register", str(run_2d), str(f), "--fixed", str(tmp_path / "no.png")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no.png" in err
    code, _, err = _run(
        capsys, "register", str(run_2d), str(f), "--fixed", str(f), "--field-convention", "itk"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "itk" in err


def test_the_fields_move(run_2d, run_3d, tmp_path, capsys):
    """The bolder runs give fields of about two pixels with a spread Jacobian, so the checks
    above compare real displacements."""
    rng = np.random.default_rng(6)
    for run, shape in ((run_2d, (32, 32)), (run_3d, (6, 7, 8))):
        np.save(tmp_path / "m.npy", rng.random(shape).astype(np.float32))
        np.save(tmp_path / "f.npy", rng.random(shape).astype(np.float32))
        code, out, err = _run(
            capsys, "register", str(run), str(tmp_path / "m.npy"), "--fixed", str(tmp_path / "f.npy"),
            "--out", str(tmp_path / "out"),
        )  # fmt: skip
        assert code == 0, err
        record = json.loads(out)
        u = np.load(record["outputs"]["field"])
        assert np.abs(u).mean() > 0.5 and record["jacobian"]["std"] > 0.05
