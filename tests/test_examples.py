"""The worked example of the article (examples/worked_example.py), checked by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "worked_example.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worked_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestWorkedExample:
    def test_the_image_and_the_source_point(self, example: ModuleType, align_corners: bool) -> None:
        r = example.worked_example(align_corners)
        torch.testing.assert_close(r["image"], torch.arange(16.0).reshape(4, 4))
        torch.testing.assert_close(r["source"], torch.tensor([2.5, 2.5]))

    def test_value_is_the_mean_of_the_four_surrounding_pixels(
        self, example: ModuleType, align_corners: bool
    ) -> None:
        r = example.worked_example(align_corners)
        # source (x, y) = (2.5, 2.5) lies between the centres of rows 2-3 and columns 2-3:
        # pixels 10, 11, 14 and 15 of arange(16) in a 4x4 image.
        expected = torch.tensor((10.0 + 11.0 + 14.0 + 15.0) / 4)
        torch.testing.assert_close(r["value"], expected)
        torch.testing.assert_close(r["expected"], expected)

    def test_kernel_sampler_agrees(self, example: ModuleType, align_corners: bool) -> None:
        r = example.worked_example(align_corners)
        torch.testing.assert_close(r["value_kernel"], torch.tensor(12.5))
        torch.testing.assert_close(r["value_kernel"], r["value"])

    def test_influence_weights(self, example: ModuleType, align_corners: bool) -> None:
        weights = example.worked_example(align_corners)["weights"]
        expected = torch.zeros(4, 4)
        expected[2:4, 2:4] = 0.25
        assert weights.shape == (4, 4)
        torch.testing.assert_close(weights, expected)
        torch.testing.assert_close(weights.sum(), torch.tensor(1.0))

    def test_main_prints_the_walkthrough(
        self, example: ModuleType, capsys: pytest.CaptureFixture[str]
    ) -> None:
        example.main()
        out = capsys.readouterr().out
        assert "(2.5, 2.5)" in out and "12.5000" in out
