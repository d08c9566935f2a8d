"""Reading and writing model files: every format ``torchstn export`` writes is accepted by
``predict`` and ``eval`` (told apart by content), anything else is named in one line; checkpoints
are checked (CRC-32 of every member, declared shapes against the weights before any allocation);
unknown devices and full disks are one line too."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchstn import DataError
from torchstn.cli import main
from torchstn.export import export_checkpoint
from torchstn.inference import load_with_info
from torchstn.train import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.strip().splitlines()


def _one_line(code: int, err: list[str], command: str, *texts: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"torchstn {command}: error:"), err
    for text in texts:
        assert text in err[0], err[0]
    assert "weights_only" not in err[0] and "\x1b" not in err[0], err[0]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory, checkpoint_and_onnx) -> dict[str, Path]:
    """The session checkpoint exported as TorchScript and as an exported program (made once)."""
    ckpt, onnx = checkpoint_and_onnx
    root = tmp_path_factory.mktemp("exports")
    files = {"checkpoint": ckpt, "onnx": onnx}
    for fmt, suffix in (("torchscript", ".pt"), ("exported-program", ".pt2")):
        files[fmt] = root / f"model{suffix}"
        export_checkpoint(ckpt, files[fmt], fmt)
    return files


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((30, 20)) * 255).astype(np.uint8)).save(path)
    return path


class TestPredictTakesEveryExport:
    def test_same_predictions_from_every_format(self, exports, image, tmp_path, capsys):
        results = {}
        for kind, path in exports.items():
            code, out, err = _run(capsys, "predict", str(path), str(image), "--out", str(tmp_path))
            assert code == 0 and err == [], (kind, err)
            results[kind] = json.loads(out[0])
        ref = results.pop("checkpoint")
        for kind, record in results.items():
            assert record["class"] == ref["class"] and record["class_name"] == ref["class_name"]
            assert record["confidence"] == pytest.approx(ref["confidence"], abs=1e-5), kind
            np.testing.assert_allclose(record["params"], ref["params"], atol=1e-5)
            assert Path(record["outputs"]["grid"]).is_file()

    def test_the_content_decides_not_the_name(self, exports, image, tmp_path, capsys):
        from torchstn.train.checkpoint import identify

        for kind in ("torchscript", "exported-program", "onnx"):
            renamed = tmp_path / f"{kind}.bin"
            shutil.copy(exports[kind], renamed)
            assert identify(renamed)[0] == kind
            code, out, err = _run(capsys, "predict", str(renamed), str(image))
            assert code == 0 and len(out) == 1, err
        swapped = tmp_path / "really_torchscript.pt2"  # a misleading suffix
        shutil.copy(exports["torchscript"], swapped)
        code, out, err = _run(capsys, "predict", str(swapped), str(image))
        assert code == 0 and len(out) == 1, err


class TestOtherFilesAreNamed:
    def test_predict(self, exports, image, tmp_path, capsys):
        model = load_with_info(exports["checkpoint"])[0]
        files = {
            "whole.pt": "a whole model pickled with torch.save(model)",
            "state_dict.pt": "a bare state_dict",
            "legacy.pt": "not a zip archive",
            "notes.pt": "a text file",
            "random.pt": "not a model file",
            "empty.pt": "an empty file",
            "picture.pt": "a PNG image",
        }
        torch.save(model, tmp_path / "whole.pt")
        torch.save(model.state_dict(), tmp_path / "state_dict.pt")
        torch.save({"a": 1}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
        (tmp_path / "notes.pt").write_text("weights: see the other folder\n")
        (tmp_path / "random.pt").write_bytes(np.random.default_rng(1).bytes(3000))
        (tmp_path / "empty.pt").write_bytes(b"")
        shutil.copy(image, tmp_path / "picture.pt")
        for name, text in files.items():
            code, out, err = _run(capsys, "predict", str(tmp_path / name), str(image))
            assert out == []
            _one_line(code, err, "predict", name, text)

    def test_export_of_a_pickled_model_and_of_an_export(self, exports, tmp_path, capsys):
        torch.save(load_with_info(exports["checkpoint"])[0], tmp_path / "whole.pt")
        out = str(tmp_path / "m.onnx")
        code, _, err = _run(capsys, "export", str(tmp_path / "whole.pt"), "--out", out)
        _one_line(code, err, "export", "torch.save(model)", "expected a torchstn checkpoint")
        code, _, err = _run(capsys, "export", str(exports["torchscript"]), "--out", out)
        _one_line(code, err, "export", "a TorchScript file")

    def test_weights_of_another_model_name_the_keys(self, make_checkpoint, tiny_model, capsys):
        path = make_checkpoint("st_fcn_affine")
        state = load_checkpoint(path)
        state["model"] = tiny_model("st_cnn_affine").state_dict()
        save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
        code, _, err = _run(capsys, "export", str(path), "--out", str(path.parent / "m.pt"))
        _one_line(code, err, "export", "missing 2 key(s): classifier.1.weight, classifier.1.bias")
        assert "8 unexpected key(s): transformer.localization.4.weight" in err[0]

    def test_a_shape_that_differs_is_named(self, make_checkpoint, capsys):
        path = make_checkpoint("st_fcn_affine")
        state = load_checkpoint(path)
        state["config"]["model"]["options"]["hidden"] = [32]
        save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
        code, _, err = _run(capsys, "export", str(path), "--out", str(path.parent / "m.pt"))
        _one_line(code, err, "export", "classifier.1.weight is [16, 784] in the file, [32, 784]")


def _data_offset(path: Path, member_suffix: str) -> tuple[int, int]:
    """Where the bytes of the zip member ending with ``member_suffix`` start, and their size."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len), info.file_size


class TestIntegrity:
    def test_a_flipped_byte_in_the_weights_is_refused(self, make_checkpoint, image, capsys):
        path = make_checkpoint("st_fcn_affine")
        largest = max(
            (i for i in zipfile.ZipFile(path).infolist() if "/data/" in i.filename),
            key=lambda i: i.file_size,
        )
        start, size = _data_offset(path, largest.filename)
        data = bytearray(path.read_bytes())
        data[start + size // 2] ^= 0x10  # one bit of one weight
        path.write_bytes(bytes(data))
        with pytest.raises(DataError, match="fails its CRC-32 check") as err:
            load_checkpoint(path)
        assert "\n" not in str(err.value) and largest.filename in str(err.value)
        for argv in (["predict", str(path), str(image)], ["export", str(path), "--out", "x.pt"]):
            code, out, err_lines = _run(capsys, *argv)
            _one_line(code, err_lines, argv[0], "CRC-32")
            assert out == []

    def test_a_flipped_byte_in_an_export_is_refused(self, exports, image, tmp_path, capsys):
        for kind in ("torchscript", "exported-program"):
            path = tmp_path / exports[kind].name
            shutil.copy(exports[kind], path)
            start, size = _data_offset(path, "/data/0" if kind == "torchscript" else "weight_0")
            data = bytearray(path.read_bytes())
            data[start + size // 2] ^= 0x01
            path.write_bytes(bytes(data))
            code, _, err = _run(capsys, "predict", str(path), str(image))
            _one_line(code, err, "predict", "CRC-32")

    def test_checkpoints_get_crcs_even_when_torch_is_told_not_to(self, make_checkpoint):
        if not hasattr(torch.serialization, "set_crc32_options"):
            pytest.skip("this PyTorch always writes CRCs")
        path = make_checkpoint("st_fcn_affine")
        state = {k: v for k, v in load_checkpoint(path).items() if k != "format"}
        torch.serialization.set_crc32_options(False)
        try:
            save_checkpoint(path, state)
        finally:
            torch.serialization.set_crc32_options(True)
        assert torch.serialization.get_crc32_options()
        assert zipfile.ZipFile(path).testzip() is None
        load_checkpoint(path)


_BOUNDED = textwrap.dedent(
    """
    import resource, sys
    from torchstn.cli import main
    import torchstn.inference, torchstn.export, torchstn.predict, torchstn.models  # noqa
    vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
    limit = vm * 1024 + (2 << 30)  # what is loaded now, and 2 GiB more
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    codes = [main(argv) for argv in {argvs!r}]
    print("CODES", codes)
    """
)


class TestCraftedMetadata:
    def test_huge_declared_sizes_fail_in_one_line_within_2_gib(self, make_checkpoint, tmp_path):
        """in_shape 1x1e5x1e5 and hidden=[1e6] (before the fix: 320 and 3.1 GB, MemoryError traceback
        under this limit); the shapes are checked against the weights before any allocation."""
        base = make_checkpoint("st_fcn_affine")
        state = {k: v for k, v in load_checkpoint(base).items() if k != "format"}
        wide = tmp_path / "wide.pt"
        state["data_info"]["in_shape"] = [1, 100000, 100000]
        save_checkpoint(wide, state)
        state["data_info"]["in_shape"] = [1, 28, 28]
        deep = tmp_path / "deep.pt"
        state["config"]["model"]["options"]["hidden"] = [10**6]  # 3.1 GB of weights
        save_checkpoint(deep, state)
        out = str(tmp_path / "m.pt")
        argvs = [["export", str(wide), "--out", out], ["export", str(deep), "--out", out]]
        proc = subprocess.run(
            [sys.executable, "-c", _BOUNDED.format(argvs=argvs)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert "CODES [2, 2]" in proc.stdout, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 2, proc.stderr
        assert "wide.pt" in lines[0] and "in_shape 1x100000x100000" in lines[0]
        assert "deep.pt" in lines[1] and "[1000000, 784] in the model" in lines[1]

    def test_class_names_must_match_the_classes(self, make_checkpoint):
        path = make_checkpoint("st_fcn_affine", class_names=[str(i) for i in range(10)])
        state = {k: v for k, v in load_checkpoint(path).items() if k != "format"}
        state["data_info"]["class_names"] = ["a", "b"]
        save_checkpoint(path, state)
        with pytest.raises(DataError, match="class_names: expected 10 names"):
            load_with_info(path)


class TestDevices:
    @pytest.mark.parametrize("device", ["tpu", "cuda:7", "meta", "xla"])
    def test_unknown_or_missing_devices_exit_2(self, exports, image, device, capsys):
        if device == "cuda:7" and torch.cuda.device_count() > 7:
            pytest.skip("this machine has 8 GPUs")
        for argv in (
            ["predict", str(exports["checkpoint"]), str(image), "--device", device],
            ["predict", str(exports["torchscript"]), str(image), "--device", device],
            ["eval", str(exports["checkpoint"]), "--device", device],
        ):
            code, out, err = _run(capsys, *argv)
            _one_line(code, err, argv[0], "device", repr(device))
            assert out == []


class TestFullDisk:
    """A full disk, simulated (always runs), then real (a 3 MB tmpfs, when mount is allowed)."""

    def _enospc(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def test_export_says_so_in_one_line_and_leaves_nothing(
        self, exports, tmp_path, monkeypatch, capsys
    ):
        import torchstn.export as export_module

        real = export_module._write_file

        def half_then_full(tmp: Path, data) -> None:
            real(tmp, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(export_module, "_write_file", half_then_full)
        out = tmp_path / "out"
        for suffix in (".pt", ".pt2"):  # TorchScript, exported program
            argv = ["export", str(exports["checkpoint"]), "--out", str(out / f"m{suffix}")]
            code, _, err = _run(capsys, *argv)
            _one_line(code, err, "export", f"{out}: no space left on the device (writing m")
            assert os.listdir(out) == []

    def test_checkpoint_save(self, make_checkpoint, tmp_path, monkeypatch):
        import torchstn._atomic

        state = {k: v for k, v in load_checkpoint(make_checkpoint()).items() if k != "format"}
        monkeypatch.setattr(torchstn._atomic.os, "fsync", self._enospc)
        with pytest.raises(DataError, match="no space left on the device") as err:
            save_checkpoint(tmp_path / "run" / "checkpoint.pt", state)
        assert "\n" not in str(err.value) and os.listdir(tmp_path / "run") == []

    def test_predict_prints_every_line_and_says_it_once(
        self, exports, tmp_path, monkeypatch, capsys
    ):
        images = []
        for i in range(3):
            images.append(tmp_path / f"d{i}.png")
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(images[-1])
        monkeypatch.setattr(Image.Image, "save", self._enospc)
        out = tmp_path / "out"
        code, lines, err = _run(
            capsys, "predict", str(exports["checkpoint"]), *map(str, images), "--out", str(out)
        )
        assert code == 1
        records = [json.loads(line) for line in lines]
        assert [Path(r["path"]).name for r in records] == ["d0.png", "d1.png", "d2.png"]
        assert all(r["outputs"] is None and r["output_error"] for r in records)
        assert len(err) == 1 and f"{out}: no space left on the device" in err[0], err
        assert os.listdir(out) == []


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):
    """A 3 MB tmpfs, filled but for about 40 KB (root only; skipped where mount is refused)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount refused: {mounted.stderr.decode().strip()}")
    try:
        free = shutil.disk_usage(folder).free
        (folder / "filler").write_bytes(b"\0" * (free - 40_000))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_real_full_disk(tiny_tmpfs, exports, image, tmp_path):
    """Before the fix: TorchScript and exported-program export aborted the process (134) and
    left their temp file; now one line each, exit 2, nothing left."""
    script = textwrap.dedent(
        f"""
        import shutil
        from torchstn.cli import main
        ckpt, out = {str(exports["checkpoint"])!r}, {str(tiny_tmpfs)!r}
        codes = [main(["export", ckpt, "--out", out + name]) for name in ("/m.pt", "/m.pt2")]
        with open(out + "/filler2", "wb") as fh:  # the last bytes too, for the small pictures
            fh.write(bytes(shutil.disk_usage(out).free))
        codes.append(main(["predict", ckpt, {str(image)!r}, "--out", out]))
        print("CODES", codes)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert "CODES [2, 2, 1]" in proc.stdout, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3 and all("no space left on the device" in line for line in lines)
    assert sorted(os.listdir(tiny_tmpfs)) == ["filler", "filler2"]
    record = json.loads(proc.stdout.splitlines()[0])
    assert record["outputs"] is None and record["class"] in (0, 1, 2)
