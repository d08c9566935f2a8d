"""`torchstn report`: the self-contained HTML page of a run, and `torchstn train --report`."""

from __future__ import annotations

import base64
import io
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from torchstn.cli import main

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny ST-CNN trained on RTS digits through `torchstn train --report`."""
    from .conftest import TINY

    root = tmp_path_factory.mktemp("report")
    values = {**TINY, "data": {**TINY["data"], "task": "rts", "test_size": 96}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(values))
    out = root / "run"
    argv = ["train", "--config", str(root / "tiny.yaml"), "--out", str(out), "--no-progress"]
    assert main([*argv, "--report"]) == 0
    return out


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_train_report_writes_a_self_contained_page(run_dir):
    page = (run_dir / "report.html").read_text()
    for heading in (
        "Training curves",
        "What the transformer does",
        "Confusion matrix",
        "Learned transformations",
        "Result",
        "Environment",
        "Resolved config",
    ):
        assert f"<h2>{heading}</h2>" in page
    images = _images(page)
    assert len(images) == 4  # curves, grids, confusion, parameters
    from PIL import Image

    for png in images:
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            assert im.width > 100 and im.height > 100
    # nothing to fetch: no scripts, no stylesheets, no remote or relative sources
    assert "<script" not in page and "<link" not in page
    assert re.findall(r'src="(?!data:)', page) == []
    assert "http://" not in page and "https://" not in page
    assert '"task": "rts"' in page  # the resolved config
    assert "rotation: r =" in page or "rotation: correlation" in page


def test_report_cli_out_and_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "r.html"
    out.parent.mkdir()
    assert main(["report", str(run_dir), "--out", str(out), "--num", "3"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    capsys.readouterr()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a run folder" in err
    assert main(["report", str(run_dir), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_without_matplotlib_one_line_and_no_file(run_dir, tmp_path, monkeypatch, capsys):
    from torchstn import viz
    from torchstn.errors import TorchSTNError

    def missing():
        raise TorchSTNError("plotting needs matplotlib: pip install 'torchstn[plot]'")

    monkeypatch.setattr(viz, "_plt", missing)
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'torchstn[plot]'") and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_learned_geometry_reads_rotation_scale_translation():
    from torchstn import SpatialTransformer, transforms
    from torchstn.report import learned_geometry

    st = SpatialTransformer((1, 40, 40), "affine")
    angle, scale, tx, ty = math.radians(30.0), 0.5, 0.25, -0.5
    c, s = math.cos(angle), math.sin(angle)
    params = torch.tensor([[scale * c, -scale * s, tx, scale * s, scale * c, ty]])
    geo = learned_geometry(st, params)
    assert float(geo["rotation"]) == pytest.approx(30.0, abs=1e-6)
    assert float(geo["scale"]) == pytest.approx(0.5, abs=1e-6)
    assert float(geo["tx"]) == pytest.approx(5.0, abs=1e-6)  # 0.25 of the half width, 20 px
    assert float(geo["ty"]) == pytest.approx(-10.0, abs=1e-6)
    tps = SpatialTransformer((1, 40, 40), transforms.get("tps", grid_size=3))
    moved = tps.transform.identity_params().clone()[None]
    moved[0, 0] += 0.1  # the first control point moves 0.1 of the half width: 2 px
    disp = learned_geometry(tps, moved)["displacement"]
    assert disp.shape == (1, 9)
    assert (
        float(disp[0, 0]) == pytest.approx(2.0, abs=1e-5) and float(disp[0, 1:].abs().max()) < 1e-9
    )


def test_generated_distortions_are_read_in_the_same_units():
    from torchstn import data
    from torchstn.report import _truth
    from torchstn.train.config import DataConfig
    from torchstn.train.datamodule import DataModule

    # the data module keeps its test set's ground truth: the report reads it from there
    module = DataModule(DataConfig(task="rts", train_size=64, val_size=32, test_size=64), seed=0)
    s = data.get_task("rts").generate("test", num=64, seed=module.cfg.eval_seed)
    assert module.test_truth is not None
    truth = _truth(module.test_truth, (1, 42, 42))
    assert torch.equal(truth["rotation"], s.params["angle"].double())
    assert torch.equal(truth["scale"], s.params["scale"].double())
    centre = (s.boxes[:, 0] + s.boxes[:, 2]).double() / 2 - 21
    torch.testing.assert_close(truth["tx"], centre)
    still = data.get_task("rotated").generate("test", num=64, seed=0)
    assert "tx" not in _truth(
        {"boxes": still.boxes, "params": still.params}, (1, 28, 28)
    )  # the digit does not move: no translation


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None,
    reason="no headless Chromium (Debian: apt-get install chromium; .ci/run installs it)",
)
def test_the_page_and_every_image_load_in_chromium(run_dir, tmp_path):
    """Headless Chromium opens the page offline; an inline probe, appended to a copy of the
    page, counts the images that decoded."""
    page = (run_dir / "report.html").read_text()
    probe = (
        "<script>window.addEventListener('load', () => { const im = [...document.images]; "
        "document.body.setAttribute('data-loaded', im.filter(i => i.complete && "
        "i.naturalWidth > 0).length + '/' + im.length); });</script>"
    )
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [_chromium(), *flags, "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'data-loaded="(\d+)/(\d+)"', dom.stdout)
    assert found, dom.stderr[-2000:]
    assert found.group(1) == found.group(2) == "4"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [_chromium(), *flags, "--window-size=1200,3000", f"--screenshot={shot}", copy.as_uri()],
        capture_output=True,
        timeout=120,
        cwd=tmp_path,
    )
    from PIL import Image

    with Image.open(shot) as im:
        grey = im.convert("L")
        lo, hi = grey.getextrema()
    assert hi - lo > 100  # something was drawn, not a blank page
