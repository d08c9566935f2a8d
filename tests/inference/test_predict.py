"""torchstn.predict and ``torchstn predict``: images of any format, size and mode, from a
checkpoint or its ONNX export, with the unreadable ones reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchstn.cli import main
from torchstn.predict import Failure, Fit, find_images, open_predictor, predict, read_image

rng = np.random.default_rng(0)


def _noise(*shape: int) -> np.ndarray:
    return (rng.random(shape) * 255).astype(np.uint8)


def _write_images(folder: Path) -> dict[str, Path]:
    """One file per format and mode, of other sizes than the model's 28 x 28."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "a_rgba.png": lambda p: Image.fromarray(_noise(50, 80, 4), "RGBA").save(p),
        "b_rgb.jpg": lambda p: Image.fromarray(_noise(30, 45, 3)).save(p, quality=90),
        "c_gray16.png": lambda p: Image.fromarray(
            (rng.random((40, 20)) * 65535).astype(np.uint16)
        ).save(p),
        "d_palette.gif": lambda p: Image.fromarray(_noise(33, 33, 3)).convert("P").save(p),
        "e_cmyk.tiff": lambda p: Image.fromarray(_noise(60, 60, 3)).convert("CMYK").save(p),
        "f_la.webp": lambda p: Image.fromarray(_noise(20, 20, 2), "LA").save(p, lossless=True),
        "g_gray.bmp": lambda p: Image.fromarray(_noise(100, 28)).save(p),
    }
    paths = {}
    for name, write in files.items():
        write(folder / name)
        paths[name] = folder / name
    (folder / "h_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # corrupt
    (folder / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    (folder / ".hidden.png").write_bytes(b"")  # ignored: hidden
    return paths


def _run(capsys, *argv: str) -> tuple[int, list[dict], list[str]]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err.strip().splitlines()


class TestCli:
    def test_folder_of_mixed_images_with_a_corrupt_one(self, checkpoint_and_onnx, tmp_path, capsys):
        ckpt, _ = checkpoint_and_onnx
        good = _write_images(tmp_path / "imgs")
        out = tmp_path / "out"
        code, records, err = _run(
            capsys, "predict", str(ckpt), str(tmp_path / "imgs"), "--out", str(out), "--top-k", "2"
        )
        assert code == 1
        assert len(err) == 1 and "h_bad.png" in err[0] and err[0].startswith("torchstn predict:")
        assert [Path(r["path"]).name for r in records] == sorted(good)
        for r in records:
            assert r["class_name"] == ("zero", "one", "two")[r["class"]]
            assert r["top_k"][0]["class"] == r["class"] and len(r["top_k"]) == 2
            assert r["top_k"][0]["confidence"] == r["confidence"] >= r["top_k"][1]["confidence"]
            assert r["transform"] == "affine" and len(r["params"]) == 6
            rectified = Image.open(r["outputs"]["rectified"])
            assert (rectified.size, rectified.mode) == ((28, 28), "L")
            grid = Image.open(r["outputs"]["grid"])
            assert grid.mode == "RGB" and max(grid.size) >= 256
        fits = {Path(r["path"]).name: r["fit"] for r in records}
        assert fits["a_rgba.png"] == {
            "method": "pad",
            "source_size": [50, 80],
            "source_mode": "RGBA",
            "conversion": "RGBA -> L, alpha over black",
            "resized": [18, 28],
            "padding": [0, 5, 0, 5],
        }
        assert fits["c_gray16.png"]["conversion"] == "I;16 -> L, divided by 65535"
        assert fits["e_cmyk.tiff"]["conversion"] == "CMYK -> L"
        assert fits["g_gray.bmp"]["resized"] == [28, 8] and fits["g_gray.bmp"]["padding"][0] == 10

    def test_onnx_gives_the_checkpoints_predictions(self, checkpoint_and_onnx, tmp_path, capsys):
        ckpt, onnx = checkpoint_and_onnx
        _write_images(tmp_path / "imgs")
        (tmp_path / "imgs" / "h_bad.png").unlink()
        runs = {}
        for model in (ckpt, onnx):
            out = tmp_path / f"out-{model.suffix}"
            code, records, err = _run(
                capsys, "predict", str(model), str(tmp_path / "imgs"), "--out", str(out)
            )
            assert code == 0 and err == []
            runs[model.suffix] = records
        assert len(runs[".pt"]) == 7
        for a, b in zip(runs[".pt"], runs[".onnx"]):
            assert a["path"] == b["path"] and a["fit"] == b["fit"]
            assert [t["class"] for t in a["top_k"]] == [t["class"] for t in b["top_k"]]
            for ta, tb in zip(a["top_k"], b["top_k"]):
                assert ta["confidence"] == pytest.approx(tb["confidence"], abs=1e-4)
            np.testing.assert_allclose(a["params"], b["params"], atol=1e-4)
            for kind in ("rectified", "grid"):
                assert Path(b["outputs"][kind]).is_file()

    def test_stretch_and_single_files(self, checkpoint_and_onnx, tmp_path, capsys):
        ckpt, _ = checkpoint_and_onnx
        path = tmp_path / "wide.png"
        Image.fromarray(_noise(10, 40)).save(path)
        code, records, _ = _run(capsys, "predict", str(ckpt), str(path), "--fit", "stretch")
        assert code == 0 and records[0]["fit"]["resized"] == [28, 28]
        assert records[0]["fit"]["padding"] == [0, 0, 0, 0] and "outputs" not in records[0]

    def test_bad_arguments_exit_2_with_one_line(self, checkpoint_and_onnx, tmp_path, capsys):
        ckpt, _ = checkpoint_and_onnx
        img = tmp_path / "x.png"
        Image.fromarray(_noise(28, 28)).save(img)
        (tmp_path / "empty").mkdir()
        garbage = tmp_path / "garbage.onnx"
        garbage.write_bytes(b"not onnx")
        cases = [
            (["predict", str(tmp_path / "nope.pt"), str(img)], "not found"),
            (["predict", str(ckpt), str(img), "--top-k", "0"], "--top-k"),
            (["predict", str(ckpt)], "no inputs"),
            (["predict", str(ckpt), str(tmp_path / "empty")], "no image files"),
            (["predict", str(ckpt), str(img), "--fit", "crop"], "unknown fit"),
            (["predict", str(garbage), str(img)], "garbage.onnx"),
        ]
        for argv, text in cases:
            code, records, err = _run(capsys, *argv)
            assert code == 2 and records == [], argv
            assert len(err) == 1 and err[0].startswith("torchstn predict: error:"), err
            assert text in err[0], err[0]

    def test_onnx_of_the_transformer_part_is_refused(self, checkpoint_and_onnx, tmp_path, capsys):
        import onnx

        _, model_onnx = checkpoint_and_onnx
        proto = onnx.load(str(model_onnx))
        for prop in proto.metadata_props:
            if prop.key == "torchstn.part":
                prop.value = json.dumps("transformer")
        st_onnx = tmp_path / "st.onnx"
        onnx.save(proto, str(st_onnx))
        img = tmp_path / "x.png"
        Image.fromarray(_noise(28, 28)).save(img)
        code, _, err = _run(capsys, "predict", str(st_onnx), str(img))
        assert code == 2 and "--part model" in err[0]


class TestPredictApi:
    def test_order_batches_and_failures(self, checkpoint_and_onnx, tmp_path):
        ckpt, _ = checkpoint_and_onnx
        paths = [*_write_images(tmp_path / "imgs").values(), tmp_path / "imgs" / "h_bad.png"]
        paths.insert(2, tmp_path / "missing.png")
        records = list(predict(open_predictor(ckpt), paths, batch_size=3, top_k=10))
        assert [r.path for r in records] == paths
        failures = [r for r in records if isinstance(r, Failure)]
        assert [f.path.name for f in failures] == ["missing.png", "h_bad.png"]
        assert all(len(r.top_k) == 3 for r in records if not isinstance(r, Failure))  # <= K

    def test_same_stems_get_distinct_outputs(self, checkpoint_and_onnx, tmp_path):
        ckpt, _ = checkpoint_and_onnx
        for sub in ("a", "b"):
            (tmp_path / sub).mkdir()
            Image.fromarray(_noise(28, 28)).save(tmp_path / sub / "digit.png")
        paths = find_images([tmp_path / "a", tmp_path / "b"])
        records = list(predict(open_predictor(ckpt), paths, out_dir=tmp_path / "out"))
        names = [Path(r.outputs["rectified"]).name for r in records]
        assert names == ["digit_rectified.png", "digit-2_rectified.png"]

    def test_model_without_transformer(self, make_checkpoint, tmp_path):
        path = tmp_path / "x.png"
        Image.fromarray(_noise(28, 28)).save(path)
        predictor = open_predictor(make_checkpoint("cnn"))
        (record,) = predict(predictor, [path], out_dir=tmp_path / "out")
        d = record.to_dict()
        assert d["params"] is None and d["transform"] is None and d["outputs"] == {}
        assert d["class_name"] is None and len(d["top_k"]) == 5

    def test_rgb_model(self, make_checkpoint, tmp_path):
        path = tmp_path / "gray.png"
        Image.fromarray(_noise(12, 12)).save(path)
        predictor = open_predictor(make_checkpoint("st_fcn_tps", (3, 24, 32), 4))
        (record,) = predict(predictor, [path], out_dir=tmp_path / "out")
        assert record.fit.conversion == "L -> RGB" and record.fit.resized == (24, 24)
        assert record.transform == "tps" and len(record.params) == 32
        assert Image.open(record.outputs["rectified"]).mode == "RGB"


class TestReadImage:
    def test_pad_keeps_the_aspect_ratio_and_centres_on_black(self, tmp_path):
        path = tmp_path / "wide.png"
        Image.fromarray(np.full((10, 40), 255, np.uint8)).save(path)
        x, fit = read_image(path, (1, 28, 28))
        assert fit.resized == (7, 28) and fit.padding == (0, 10, 0, 11)
        assert torch.allclose(x[:, 10:17], torch.ones(1, 7, 28))
        assert x[:, :10].sum() == 0 and x[:, 17:].sum() == 0

    def test_stretch(self, tmp_path):
        path = tmp_path / "wide.png"
        Image.fromarray(np.full((10, 40), 255, np.uint8)).save(path)
        x, fit = read_image(path, (1, 28, 28), fit="stretch")
        assert fit.resized == (28, 28) and torch.allclose(x, torch.ones(1, 28, 28))

    def test_transparency_is_black(self, tmp_path):
        rgba = np.zeros((8, 8, 4), np.uint8)
        rgba[..., :3] = 255
        rgba[:, 4:, 3] = 255  # right half opaque white, left half transparent white
        Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
        x, fit = read_image(tmp_path / "a.png", (1, 8, 8))
        assert fit.conversion == "RGBA -> L, alpha over black"
        assert torch.all(x[..., :4] == 0) and torch.allclose(x[..., 4:], torch.ones(1, 8, 4))

    def test_palette_with_transparency(self, tmp_path):
        img = Image.new("P", (6, 6), 1)
        img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        img.info["transparency"] = 1
        img.save(tmp_path / "p.png", transparency=1)
        x, fit = read_image(tmp_path / "p.png", (3, 6, 6))
        assert fit.conversion == "P -> RGB, alpha over black" and x.sum() == 0

    def test_sixteen_bit_and_luma(self, tmp_path):
        Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w.png")
        x, _ = read_image(tmp_path / "w.png", (1, 4, 4))
        assert torch.allclose(x, torch.ones(1, 4, 4))
        red = np.zeros((4, 4, 3), np.uint8)
        red[..., 0] = 255
        Image.fromarray(red).save(tmp_path / "r.png")
        x, _ = read_image(tmp_path / "r.png", (1, 4, 4))
        assert torch.equal(x, torch.full((1, 4, 4), 76 / 255))  # 0.299 * 255 = 76.2: 8 bits
        x, fit = read_image(tmp_path / "r.png", (3, 4, 4))
        assert fit.conversion == "RGB" and torch.equal(x[0], torch.ones(4, 4))

    def test_first_frame_of_an_animation(self, tmp_path):
        frames = [Image.new("L", (5, 5), v) for v in (255, 0)]
        frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
        x, fit = read_image(tmp_path / "anim.gif", (1, 5, 5))
        assert fit.frames == 2 and fit.to_dict()["frames"] == 2 and torch.all(x > 0.99)

    def test_fit_maps_model_pixels_back_to_the_file(self):
        # a 56 x 28 (H x W) file padded into 28 x 28: 28 x 14 resized, 7 columns of black left
        fit = Fit("pad", (56, 28), "L", "L", (28, 14), (7, 0, 7, 0))
        corners = torch.tensor([[-0.5, -0.5], [27.5, 27.5], [7.0, 0.0]], dtype=torch.float64)
        src = fit.to_source(corners)
        expected = [[-14.5, -0.5], [41.5, 55.5], [0.5, 0.5]]
        torch.testing.assert_close(src, torch.tensor(expected, dtype=torch.float64))

    def test_identity_outline_is_the_frame_border(self):
        from torchstn import SpatialTransformer
        from torchstn.predict import _outline

        st = SpatialTransformer((1, 28, 28), "affine")
        poly = _outline(st, st.transform.identity_params(torch.float64)[None])
        assert poly[:, 0].min() == pytest.approx(-0.5) and poly[:, 0].max() == pytest.approx(27.5)
        assert poly[:, 1].min() == pytest.approx(-0.5) and poly[:, 1].max() == pytest.approx(27.5)
        torch.testing.assert_close(poly[0], poly[-1])  # closed

    def test_zoomed_outline_through_a_stretch(self):
        """Half-size window shifted right by a quarter, in a 56 x 56 file stretched to 28 x 28."""
        from torchstn import SpatialTransformer
        from torchstn.predict import _outline

        st = SpatialTransformer((1, 28, 28), "affine")
        params = torch.tensor([[0.5, 0, 0.25, 0, 0.5, 0]], dtype=torch.float64)
        fit = Fit("stretch", (56, 56), "L", "L", (28, 28), (0, 0, 0, 0))
        poly = fit.to_source(_outline(st, params))
        # normalised x in [-0.25, 0.75], y in [-0.5, 0.5]: file pixels (edges) 21..49 and 14..42
        assert poly[:, 0].min() == pytest.approx(20.5) and poly[:, 0].max() == pytest.approx(48.5)
        assert poly[:, 1].min() == pytest.approx(13.5) and poly[:, 1].max() == pytest.approx(41.5)

    def test_unreadable(self, tmp_path):
        (tmp_path / "t.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
        from torchstn import DataError

        with pytest.raises(DataError, match=r"t\.jpg") as err:
            read_image(tmp_path / "t.jpg", (1, 28, 28))
        assert "\n" not in str(err.value)
