"""Preview grids: a PNG with the samples, their labels and boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchstn import data
from torchstn.errors import InvalidInputError
from torchstn.viz import sample_titles, save_preview, to_rgb

PNG = b"\x89PNG\r\n\x1a\n"


class TestPreview:
    @pytest.mark.parametrize("name", ["rts", "addition"])
    def test_writes_png(self, tmp_path: Path, name: str) -> None:
        s = data.get_task(name).generate("test", num=10, seed=0)
        path = save_preview(s, tmp_path / "p.png", ncols=4, title=name)
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 5000
        assert [p.name for p in tmp_path.iterdir()] == ["p.png"]

    def test_titles(self) -> None:
        s = data.get_task("addition").generate("test", num=2, seed=0)
        a, b = s.params["digits"][0].tolist()
        assert sample_titles(s)[0] == f"{a}+{b}={a + b}"
        r = data.get_task("rotated", angle=[30, 30]).generate("test", num=1, seed=0)
        assert sample_titles(r, class_names=[f"c{i}" for i in range(10)]) == [
            f"c{int(r.y[0])} +30°"
        ]

    def test_to_rgb(self) -> None:
        x = torch.rand(2, 2, 3, 3)
        rgb = to_rgb(x)
        assert rgb.shape == (2, 3, 3, 3)
        assert torch.equal(rgb[..., 0], x[:, 0]) and torch.equal(rgb[..., 2], x[:, 1])
        assert to_rgb(torch.rand(1, 1, 2, 2)).shape == (1, 2, 2, 3)
        assert to_rgb(torch.rand(1, 5, 2, 2)).shape == (1, 2, 2, 3)

    def test_empty(self, tmp_path: Path) -> None:
        s = data.get_task("rotated").generate("test", num=2, seed=0)
        with pytest.raises(InvalidInputError, match="empty"):
            save_preview(s[torch.tensor([], dtype=torch.long)], tmp_path / "e.png")


def test_cli_preview_without_matplotlib_says_so_before_generating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchstn import viz
    from torchstn.cli import main
    from torchstn.errors import TorchSTNError

    def missing() -> None:
        raise TorchSTNError("previews need matplotlib: pip install 'torchstn[plot]'")

    def generate(*args: object, **kwargs: object) -> None:
        raise AssertionError("generated samples that could not be drawn")

    monkeypatch.setattr(viz, "pyplot", missing)
    monkeypatch.setattr(data.get_task("rts").__class__, "generate", generate)
    assert main(["data", "preview", "rts", "--out", str(tmp_path / "p.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'torchstn[plot]'") and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_volumes_are_drawn_from_above(tmp_path):
    pytest.importorskip("matplotlib")
    from torchstn.data import tasks
    from torchstn.viz import save_preview

    sample = tasks.get("rts3d", canvas_size=12, clutter=1).generate("train", 3, seed=1)
    out = save_preview(sample, tmp_path / "v.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
