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

    monkeypatch.setattr(viz.report, "pyplot", missing)
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'torchstn[plot]'") and "\n" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_learned_geometry_reads_rotation_scale_translation():
    from torchstn import SpatialTransformer, transforms
    from torchstn.viz.report import learned_geometry

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
    from torchstn.train.config import DataConfig
    from torchstn.train.datamodule import DataModule
    from torchstn.viz.report import _truth

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


# ----------------------------------------------------------------------------- cosmetics


def _tiny_run(root: Path, name: str = "run", **changes: dict) -> Path:
    """Train the tiny config (RTS digits) with sections of ``changes`` merged in."""
    from .conftest import TINY

    values = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    values["data"] = {**values["data"], "task": "rts", "test_size": 64}
    for section, update in changes.items():
        values[section] = {**values.get(section, {}), **update}
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump(values))
    out = root / name
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    return out


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def test_one_epoch_curves_show_their_points_on_integer_ticks():
    from torchstn.viz import curves_figure
    from torchstn.viz import pyplot as _plt

    row = {"epoch": 1, "train_loss": 2.302, "val_loss": 2.313, "train_error": 90.6}
    fig = curves_figure([{**row, "val_error": 93.75}])
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            lines = [line for line in ax.get_lines() if line.get_label() in ("train", "val")]
            assert lines and all(line.get_marker() == "o" for line in lines)  # a visible point
            assert list(ax.get_xticks()) == [1]
            assert [t.get_text() for t in ax.get_xticklabels()] == ["1"]
            assert ax.xaxis.get_offset_text().get_text() == ""
            assert ax.yaxis.get_offset_text().get_text() == ""
    finally:
        _plt().close(fig)


def _overlapping(labels: list) -> bool:
    boxes = [t.get_window_extent() for t in labels if t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_a_narrow_histogram_has_readable_ticks():
    """Learned values spanning 0.003 (an untrained transformer) and no generated ones: the
    histogram's tick labels neither overlap nor hide behind an offset."""
    from torchstn.viz import pyplot as _plt
    from torchstn.viz.report import _geometry_figure

    gen = torch.Generator().manual_seed(0)
    learned = {
        "rotation": 0.0335 + 0.003 * torch.rand(500, generator=gen, dtype=torch.float64),
        "scale": 1.0017 + 0.003 * torch.rand(500, generator=gen, dtype=torch.float64),
        "tx": 0.0235 + 0.003 * torch.rand(500, generator=gen, dtype=torch.float64),
        "ty": 0.2995 + 0.003 * torch.rand(500, generator=gen, dtype=torch.float64),
    }
    fig, _ = _geometry_figure(learned, {}, "narrow")
    try:
        fig.canvas.draw()
        for ax in fig.axes:
            assert not _overlapping(ax.get_xticklabels()), ax.get_title()
            assert ax.xaxis.get_offset_text().get_text() == ""
            assert len([t for t in ax.get_xticklabels() if t.get_text()]) <= 6
    finally:
        _plt().close(fig)


def test_partial_epoch_numbers_and_hardware_read_plainly(tmp_path, monkeypatch):
    """A run whose time budget ended inside epoch 3, its best weights that partial epoch's: the
    page says so; numbers are rounded and counts singular where they are one."""
    import json

    from torchstn.train import Trainer
    from torchstn.viz.report import write_report

    steps_per_epoch = 6  # 192 images, batch 32

    def spent(self: Trainer, start: float) -> float:  # one second per step
        return float(self.epoch * steps_per_epoch + self.step + 1)

    errors = iter([50.0, 40.0, 30.0])
    original = Trainer._evaluate

    def evaluate(self: Trainer, model, split):
        scores = original(self, model, split)
        return {**scores, "error": next(errors)} if split == "val" else scores

    monkeypatch.setattr(Trainer, "_spent", spent)
    monkeypatch.setattr(Trainer, "_evaluate", evaluate)
    run = _tiny_run(
        tmp_path, run={"epochs": 1000, "minutes": 15 / 60}, optim={"schedule": "cosine"}
    )
    monkeypatch.undo()
    result = json.loads((run / "result.json").read_text())
    assert (result["epochs"], result["best_epoch"], result["steps_in_partial_epoch"]) == (2, 3, 3)
    result.update(test_error=80.66666666666667, hardware="x86_64, 2 cores, 1 threads")
    (run / "result.json").write_text(json.dumps(result))
    text = _text(write_report(run).read_text())
    assert "after 2 epochs and 3 steps of epoch 3, cut short by the time budget" in text
    assert "best weights on validation: epoch 3, the partial one" in text
    assert "80.67%" in text and "80.666" not in text
    assert "2 cores, 1 thread " in text and "1 threads" not in text


def test_untrained_transformer_is_named_in_report_and_visualize(tmp_path, capsys):
    from torchstn.viz.report import write_report

    still = _tiny_run(tmp_path, "still", optim={"lr": 1e-9}, run={"epochs": 1})
    capsys.readouterr()
    page = write_report(still).read_text()
    warning = "never moved away from the identity"
    assert warning in _text(page) and "class='warn'" in page
    assert main(["visualize", str(still), "--out", str(tmp_path / "v.png"), "--num", "4"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchstn visualize: warning:")
    assert warning in lines[0]


def test_untrained_warnings_only_for_a_still_grid():
    from torchstn import SpatialTransformer
    from torchstn.viz import untrained_warnings

    st = SpatialTransformer((1, 40, 40), "affine")
    still = st.transform.identity_params()[None].repeat(4, 1)
    moved = still.clone()
    moved[2, 2] = 0.05  # one image's grid shifted by a twentieth of the half width: 1 px
    assert len(untrained_warnings([st], [still])) == 1
    assert untrained_warnings([st], [moved]) == []
    two = untrained_warnings([st, st], [moved, still])
    assert len(two) == 1 and "transformer 2 of 2" in two[0]


def test_a_folder_run_is_named_after_its_data_set(tmp_path):
    """Class folders in mydigits/train: the report says 'on mydigits/train', not 'on train'."""
    import numpy as np
    from PIL import Image

    from torchstn.viz.report import write_report

    rng = np.random.default_rng(0)
    for i in range(48):
        label = i % 3
        img = rng.integers(0, 40, (16, 16), dtype=np.uint8)
        img[2 + 4 * label : 5 + 4 * label, 2:-2] = 230
        folder = tmp_path / "mydigits" / "train" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
    data = {"task": None, "path": str(tmp_path / "mydigits" / "train"), "num_workers": 0}
    run = _tiny_run(tmp_path, data=data, optim={"batch_size": 16}, run={"epochs": 1})
    page = write_report(run).read_text()
    assert "<h1>st_cnn_affine on mydigits/train</h1>" in page
