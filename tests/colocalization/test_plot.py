from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchstn.errors import InvalidInputError
from torchstn.viz import save_boxes_png


def test_writes_png_atomically(tmp_path: Path):
    images = torch.rand(3, 1, 20, 20)
    boxes = torch.tensor([[2.0, 2, 10, 10]]).expand(3, 4)
    out = save_boxes_png(
        tmp_path / "sub" / "b.png", images, boxes, boxes + 1, titles=["a", "b", "c"]
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["b.png"]


def test_bad_inputs(tmp_path: Path):
    with pytest.raises(InvalidInputError, match="boxes"):
        save_boxes_png(
            tmp_path / "b.png", torch.rand(3, 1, 8, 8), torch.zeros(1, 4), torch.zeros(3, 4)
        )
    with pytest.raises(InvalidInputError, match="crop_boxes"):
        save_boxes_png(
            tmp_path / "b.png", torch.rand(3, 1, 8, 8), torch.zeros(3, 5), torch.zeros(3, 4)
        )
