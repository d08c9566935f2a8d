"""``torchstn explain``: the guide, its figures, its numbers, its determinism and its errors.

One ``--quick`` run (module-scoped, one thread) feeds most tests; the determinism test computes
the quick guide once more and compares the text.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from torchstn.cli import build_parser, main
from torchstn.explain import FIGURES, QUICK, compute_guide, explain_command, render_markdown
from torchstn.explain.budget import MODELS
from torchstn.explain.trained import strip_columns
from torchstn.explain.worked import worked_example

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def guide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("explain") / "guide"
    threads = torch.get_num_threads()
    rc = main(["explain", "--out", str(out), "--quick", "--seed", "0", "--threads", "1"])
    assert torch.get_num_threads() == threads  # the command gives the threads back
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def guide_text(guide_dir: Path) -> str:
    return (guide_dir / "guide.md").read_text()


def _links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


class TestGuideFiles:
    def test_the_command_is_registered(self) -> None:
        args = build_parser().parse_args(["explain", "--out", "x", "--quick"])
        assert args.command == "explain" and args.quick and args.seed == 0

    def test_every_linked_figure_is_a_png_beside_the_guide(
        self, guide_dir: Path, guide_text: str
    ) -> None:
        links = _links(guide_text)
        assert sorted(links) == sorted(FIGURES.values())  # every figure, each linked once
        for name in links:
            assert "/" not in name  # relative, beside guide.md
            path = guide_dir / name
            data = path.read_bytes()
            assert data.startswith(PNG) and len(data) > 5000, name
            with Image.open(path) as image:
                w, h = image.size
            assert 300 < w < 2500 and 200 < h < 2500, (name, w, h)

    def test_nothing_half_written_is_left(self, guide_dir: Path) -> None:
        names = {p.name for p in guide_dir.iterdir()}
        assert names == {"guide.md", *FIGURES.values()}

    def test_the_guide_names_its_command_and_budget(self, guide_text: str, guide_dir: Path) -> None:
        assert f"torchstn explain --out {guide_dir} --seed 0 --quick --threads 1" in guide_text
        assert (
            f"{len(QUICK.levels) * len(MODELS)} training runs of {QUICK.epochs} epochs, "
            in guide_text
        )
        assert f"{QUICK.total_images:,} training images in all" in guide_text
        assert "torchstn train --out runs/explain-st-cnn" in guide_text
        for title in ("architecture", "worked example", "sampling kernels", "transform families"):
            assert title in guide_text


class TestWorkedExample:
    def test_the_numbers_in_the_guide(self, guide_text: str) -> None:
        section = guide_text.split("## 2.")[1].split("## 3.")[0]
        assert "A = [[1, 0, 1.5], [0, 1, 1.5]]" in section
        assert "homogeneous is (1, 1, 1)" in section
        assert "source point **(2.5, 2.5)**" in section
        assert "reads back as (2.5, 2.5)" in section
        rows = re.findall(r"^\| \((\d), (\d)\) \| (\d+) \| ([\d.]+) \|", section, re.M)
        assert rows == [
            ("2", "2", "10", "0.25"),
            ("3", "2", "11", "0.25"),
            ("2", "3", "14", "0.25"),
            ("3", "3", "15", "0.25"),
        ]
        assert "By hand the output is V = 12.5" in section
        assert "gives 12.5 and the generic kernel formula of the paper" in section
        assert "**4 of the 16 pixels** have a non-zero weight, each 0.25" in section
        assert "**16 of the 16 pixels**" in section

    def test_influence_is_the_sampling_weight(self) -> None:
        w = worked_example()
        torch.testing.assert_close(w.source, torch.tensor([2.5, 2.5], dtype=torch.float64))
        torch.testing.assert_close(w.grid_source, w.source)
        assert w.value == w.kernel_value == w.hand_value == 12.5
        assert int((w.bilinear != 0).sum()) == 4
        assert torch.equal(w.bilinear[2:, 2:], torch.full((2, 2), 0.25, dtype=torch.float64))
        torch.testing.assert_close(w.bilinear, w.hand_weights)
        torch.testing.assert_close(w.bilinear, w.bilinear_table)
        assert int((w.gaussian > 0).sum()) == 16
        assert float(w.gaussian.sum()) < 1  # the lattice-normalised kernel loses what is outside


class TestDeterminism:
    def test_same_seed_same_guide(self, guide_dir: Path, guide_text: str) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the command ran
        try:
            guide = compute_guide(QUICK, seed=0, log=lambda line: None)
        finally:
            torch.set_num_threads(threads)
        command = explain_command(str(guide_dir), 0, quick=True, threads=1)
        assert render_markdown(guide, command) == guide_text
        assert [s.epoch for s in guide.stats] == list(range(QUICK.epochs + 1))

    def test_strip_columns(self) -> None:
        assert strip_columns([0, 1, 2]) == [0, 1, 2]
        assert strip_columns(list(range(11)), 6) == [0, 2, 4, 6, 8, 10]


class TestErrors:
    def _one_line(self, capsys: pytest.CaptureFixture[str]) -> str:
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    def test_without_matplotlib_one_line_says_what_to_install(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
        assert main(["explain", "--out", str(tmp_path / "g"), "--quick"]) == 2
        line = self._one_line(capsys)
        assert line.startswith("torchstn explain: error: ")
        assert "pip install 'torchstn[plot]'" in line
        assert not (tmp_path / "g").exists()  # failed before writing or training anything

    def test_out_is_a_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        f = tmp_path / "guide.md"
        f.write_text("not a folder")
        assert main(["explain", "--out", str(f), "--quick"]) == 2
        assert "--out: expected a folder, got the file" in self._one_line(capsys)
        assert f.read_text() == "not a folder"

    def test_bad_threads(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["explain", "--out", str(tmp_path), "--quick", "--threads", "0"]) == 2
        assert "--threads: expected a positive int" in self._one_line(capsys)


class TestVolumes:
    def test_section_seven_shows_the_computed_volumes(self, guide_text: str) -> None:
        section = guide_text.split("## 7. Volumes")[1]
        assert "![a digit slab warped by two 3-D families](guide_volumes.png)" in section
        assert "| `similarity3d` | 7 |" in section and "| `attention3d` | 4 |" in section
        # quarter turns are permutations: exact with nearest, to rounding with trilinear
        found = re.search(
            r"nearest sampling differs from the permutation by (\S+) and trilinear by (\S+) ",
            section,
        )
        assert found is not None
        assert float(found.group(1)) == 0.0 and float(found.group(2)) < 1e-12

    def test_the_boxes_are_the_warps(self) -> None:
        from torchstn.explain.volumes import volume_example

        v = volume_example()
        zoom = v.boxes[v.families.index("attention3d")]
        lo, hi = zoom.reshape(-1, 3).amin(0), zoom.reshape(-1, 3).amax(0)
        # a window 0.55 times each side at the centre of a 32-voxel cube
        torch.testing.assert_close(lo, torch.full((3,), 15.5 - 0.55 * 16, dtype=lo.dtype))
        torch.testing.assert_close(hi, torch.full((3,), 15.5 + 0.55 * 16, dtype=hi.dtype))
