"""``torchstn data``: export, preview and list from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from torchstn.cli import main
from torchstn.data import load_npz
from torchstn.data import npz as npz_module
from torchstn.data.npz import read_manifest


def export(tmp_path: Path, name: str, *extra: str) -> tuple[int, Path]:
    out = tmp_path / name
    status = main(
        [
            "data",
            "export",
            "rts",
            "--split",
            "val",
            "--num",
            "12",
            "--seed",
            "5",
            "--out",
            str(out),
            *extra,
        ]
    )
    return status, out


class TestExport:
    def test_writes_arrays_and_manifest(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        status, out = export(tmp_path, "rts.npz")
        assert status == 0 and "wrote" in capsys.readouterr().out
        with np.load(out) as f:
            assert f["x"].shape == (12, 1, 42, 42) and f["x"].dtype == np.float32
            assert 0.0 <= f["x"].min() and f["x"].max() <= 1.0
            assert f["y"].shape == (12,) and f["y"].dtype == np.int64
            assert f["boxes"].shape == (12, 4) and f["boxes"].dtype == np.float32
            for key in ("angle", "scale", "tx", "ty", "source_index", "ink_box"):
                assert f[f"param_{key}"].shape[0] == 12
        manifest = read_manifest(out)
        assert manifest is not None
        assert manifest["task"] == "rts" and manifest["split"] == "val" and manifest["seed"] == 5
        assert manifest["num"] == 12 and manifest["generator_version"] == 1
        assert manifest["options"]["angle"] == [-45.0, 45.0]
        assert manifest["arrays"]["x"] == {"shape": [12, 1, 42, 42], "dtype": "float32"}
        assert json.loads(out.with_suffix(".json").read_text()) == manifest
        assert load_npz(out).params["angle"].shape == (12,)

    def test_same_seed_same_bytes(self, tmp_path: Path) -> None:
        a = export(tmp_path, "a.npz")[1].read_bytes()
        b = export(tmp_path, "b.npz")[1].read_bytes()
        other = tmp_path / "c.npz"
        main(
            [
                "data",
                "export",
                "rts",
                "--split",
                "val",
                "--num",
                "12",
                "--seed",
                "6",
                "--out",
                str(other),
            ]
        )
        assert a == b and a != other.read_bytes()

    def test_options(self, tmp_path: Path) -> None:
        out = tmp_path / "tc.npz"
        argv = ["data", "export", "cluttered", "--num", "3", "--out", str(out)]
        assert main([*argv, "--option", "canvas_size=100", "--option", "num_distractors=2"]) == 0
        with np.load(out) as f:
            assert f["x"].shape == (3, 1, 100, 100) and f["param_distractor_boxes"].shape == (
                3,
                2,
                4,
            )
        assert read_manifest(out)["options"]["canvas_size"] == 100  # type: ignore[index]

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["mnist"], "unknown task 'mnist'; valid choices: addition, cluttered, colocalization"),
            (["rts", "--option", "colour=red"], "unknown option 'colour'; valid options: angle"),
            (["rts", "--option", "angle"], "--option: expected KEY=VALUE"),
            (["rts", "--num", "0"], "num: expected a positive int"),
        ],
    )
    def test_errors_are_one_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
    ) -> None:
        out = tmp_path / "x.npz"
        assert main(["data", "export", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("torchstn data: error: ") and message in err and err.count("\n") == 1
        assert list(tmp_path.iterdir()) == []

    def test_not_npz(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["data", "export", "rts", "--out", str(tmp_path / "x.pt")]) == 2
        assert "expected a .npz file name" in capsys.readouterr().err

    def test_failure_leaves_nothing_half_written(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def explode(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError("disk full")

        monkeypatch.setattr(npz_module.np.lib.format, "write_array", explode)
        with pytest.raises(OSError, match="disk full"):
            export(tmp_path, "rts.npz")
        assert list(tmp_path.iterdir()) == []


class TestPreviewAndList:
    def test_preview(self, tmp_path: Path) -> None:
        out = tmp_path / "p.png"
        argv = [
            "data",
            "preview",
            "colocalization",
            "--num",
            "6",
            "--ncols",
            "3",
            "--out",
            str(out),
        ]
        assert main([*argv, "--option", "clutter=true"]) == 0
        assert out.read_bytes().startswith(b"\x89PNG")

    def test_list(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["data", "list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in lines] == [
            "addition",
            "cluttered",
            "colocalization",
            "elastic",
            "projective",
            "rotated",
            "rts",
            "rts3d",
        ]
        assert "2x42x42" in lines[0] and "19 classes" in lines[0]
        assert "1x32x32x32" in lines[-1] and "10 classes" in lines[-1]

    def test_bare_command_prints_help(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["data"]) == 2
        assert "export" in capsys.readouterr().out
