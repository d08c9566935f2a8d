"""The Sample container: validation, indexing, batches."""

from __future__ import annotations

import pytest
import torch

from torchstn.data import Sample
from torchstn.data.sample import full_boxes
from torchstn.errors import InvalidInputError


def make(n: int = 5) -> Sample:
    return Sample(
        torch.rand(n, 1, 4, 4),
        torch.arange(n),
        full_boxes(n, 4, 4),
        {"angle": torch.arange(n, dtype=torch.float32), "pair": torch.zeros(n, 2, 4)},
    )


class TestSample:
    def test_indexing_keeps_everything_aligned(self) -> None:
        s = make()
        part = s[torch.tensor([3, 1])]
        assert part.y.tolist() == [3, 1] and part.params["angle"].tolist() == [3.0, 1.0]
        assert len(s[2]) == 1 and s[-1].y.tolist() == [4] and len(s[1:4]) == 3

    def test_batches(self) -> None:
        s = make(7)
        assert torch.equal(torch.cat([b.y for b in s.batches(3)]), s.y)
        shuffled = [b.y for b in s.batches(3, shuffle=True, seed=1)]
        assert sorted(torch.cat(shuffled).tolist()) == list(range(7))
        assert [
            torch.equal(a, b)
            for a, b in zip(shuffled, [b.y for b in s.batches(3, shuffle=True, seed=1)])
        ] == [True] * 3
        assert [len(b) for b in s.batches(3, drop_last=True)] == [3, 3]
        with pytest.raises(InvalidInputError, match="batch_size"):
            next(s.batches(0))

    def test_to(self) -> None:
        s = make().to("cpu")
        assert s.x.device.type == "cpu"

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("x", torch.rand(5, 4, 4), "x: expected 4 dims"),
            ("x", torch.rand(5, 1, 4, 4).double(), "x: expected float32"),
            ("y", torch.arange(5).int(), "y: expected int64"),
            ("y", torch.arange(4), r"y: expected leading dimension 5"),
            ("boxes", torch.zeros(5, 3), "boxes: expected last dimension 4"),
            ("params", {"angle": torch.zeros(4)}, "angle: expected leading dimension 5"),
        ],
    )
    def test_validation(self, field: str, value: object, message: str) -> None:
        fields = {
            "x": torch.rand(5, 1, 4, 4),
            "y": torch.arange(5),
            "boxes": full_boxes(5, 4, 4),
            "params": {},
        }
        fields[field] = value
        with pytest.raises(InvalidInputError, match=message):
            Sample(**fields)  # type: ignore[arg-type]
