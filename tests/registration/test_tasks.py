"""The generated registration tasks: MNIST pairs (2-D) and the MNI152 template deformed (3-D)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from torchstn.data.tasks.base import source_digits
from torchstn.data.volumes import read_nifti
from torchstn.errors import DataError
from torchstn.registration import (
    MNI152_FILES,
    Mni152Options,
    MnistPairsOptions,
    labels_of_probabilities,
    mni152_folder,
    mni152_pairs,
    mni152_template,
    mnist_atlases,
    mnist_pairs,
)
from torchstn.registration import tasks as tasks_module


class TestMnistPairs:
    def test_seeded_shapes_and_labels(self):
        o = MnistPairsOptions(size=30, digits=[2, 5])
        a = mnist_pairs("val", 12, seed=3, options=o)
        b = mnist_pairs("val", 12, seed=3, options=o)
        c = mnist_pairs("val", 12, seed=4, options=o)
        assert torch.equal(a.moving, b.moving) and not torch.equal(a.moving, c.moving)
        assert tuple(a.moving.shape) == (12, 1, 30, 30) and a.moving.dtype == torch.float32
        assert set(a.y.tolist()) <= {2, 5} and a.num_labels == 2
        assert torch.equal(a.moving_labels, (a.moving > 0.5).to(torch.uint8))
        assert float(a.moving.min()) >= 0 and float(a.moving.max()) <= 1
        # the digits are the split's own, centred: rows 1..28 and columns 1..28 hold them
        images, _labels, _ = source_digits("val")
        assert torch.equal(a.moving[0, 0, 1:29, 1:29], images[_index(images, a.moving[0])] / 255)

    def test_atlas_is_the_class_mean_of_training_digits(self):
        o = MnistPairsOptions(digits=[4])
        atlases = mnist_atlases(o)
        images, labels, _ = source_digits("train")
        mean = images[labels == 4].double().div(255).mean(0)
        torch.testing.assert_close(atlases[4, 0, 2:30, 2:30].double(), mean, atol=1e-6, rtol=0)
        first = mnist_atlases(MnistPairsOptions(atlas="first"))[4, 0, 2:30, 2:30]
        assert torch.equal(first, images[labels == 4][0].float() / 255)
        p = mnist_pairs("test", 5, seed=0, options=o)
        assert torch.equal(p.fixed_index, p.y) and torch.equal(p.fixed, atlases)
        assert torch.equal(p.fixed_labels, (atlases > 0.5).to(torch.uint8))

    def test_pairwise_partners_are_other_digits_of_the_class(self):
        o = MnistPairsOptions(digits=[0, 3, 8])
        p = mnist_pairs("train", 200, seed=1, options=o, mode="pairwise")
        images, labels, _ = source_digits("train")
        for i in range(0, 200, 50):
            j = _index(images, p.fixed[i])
            assert labels[j] == p.y[i]
            assert j != _index(images, p.moving[i])
        # the moving digits are those of atlas mode (one draw of digits, partners after it)
        assert torch.equal(p.moving, mnist_pairs("train", 200, seed=1, options=o).moving)


def _index(images: torch.Tensor, padded: torch.Tensor) -> int:
    """The index of the digit whose padded image is ``padded`` (1, S, S)."""
    s = padded.shape[-1]
    lo = (s - 28) // 2
    digit = padded[0, lo : lo + 28, lo : lo + 28].mul(255).round().to(torch.uint8)
    hits = (images == digit).flatten(1).all(1).nonzero()[:, 0]
    assert hits.numel() >= 1
    return int(hits[0])


class TestMni152:
    def test_the_installed_files_are_read(self):
        folder = mni152_folder()
        t1 = read_nifti(folder / MNI152_FILES["t1"])
        assert t1.dim() == 4 and t1.shape[0] == 1 and float(t1.max()) > 0
        t = mni152_template(16)
        assert tuple(t.t1.shape) == (1, 1, 16, 16, 16) and tuple(t.prob.shape) == (1, 2, 16, 16, 16)
        assert 0 <= float(t.t1.min()) and float(t.t1.max()) <= 1
        # the head fills the cube: its bounding box touches the cube's faces along its long axis
        head = t.t1[0, 0] > 0
        assert head.any(dim=(1, 2))[[0, -1]].any() or head.any(dim=(0, 2))[[0, -1]].any()
        # grey and white matter inside the head, probabilities that sum to at most 1
        assert float(t.prob.sum(1).max()) <= 1 + 1e-5
        assert bool(((t.prob.sum(1) > 0.5) <= (t.t1 > 0)[:, 0]).all())

    def test_labels_of_probabilities_direct(self):
        prob = torch.rand(2, 2, 5, 4, 3)
        lab = labels_of_probabilities(prob, 0.4)
        for idx in [(0, 0, 0, 0), (1, 4, 3, 2), (0, 2, 1, 1)]:
            b, d, h, w = idx
            g, m = float(prob[b, 0, d, h, w]), float(prob[b, 1, d, h, w])
            want = 0 if max(g, m) <= 0.4 else (1 if g >= m else 2)
            assert int(lab[b, 0, d, h, w]) == want

    def test_deterministic_per_index_whatever_the_chunk(self):
        a = mni152_pairs("train", 3, seed=5, options=Mni152Options(size=12, chunk=1))
        b = mni152_pairs("train", 2, seed=5, options=Mni152Options(size=12, chunk=2))
        assert torch.equal(a.moving[:2], b.moving) and torch.equal(
            a.moving_labels[:2], b.moving_labels
        )
        c = mni152_pairs("val", 2, seed=5, options=Mni152Options(size=12))
        assert not torch.equal(c.moving, b.moving)
        assert a.moving.dtype == torch.uint8 and tuple(a.fixed.shape) == (1, 1, 12, 12, 12)
        assert set(torch.unique(a.moving_labels).tolist()) <= {0, 1, 2} and a.num_labels == 3

    def test_no_deformation_no_change_gives_the_template(self):
        o = Mni152Options(size=12, max_displacement=0.0, gamma=0.0, bias=0.0, noise=0.0)
        p = mni152_pairs("test", 2, seed=0, options=o)
        t = mni152_template(12)
        assert torch.equal(p.moving[0], t.t1[0].mul(255).round().to(torch.uint8))
        assert torch.equal(p.moving_labels[1], p.fixed_labels[0])

    def test_deformations_move_the_labels_and_pairwise_deforms_both(self):
        o = Mni152Options(size=16, max_displacement=4.0)
        p = mni152_pairs("val", 2, seed=0, options=o, mode="pairwise")
        assert tuple(p.fixed.shape) == (2, 1, 16, 16, 16) and p.fixed_index.tolist() == [0, 1]
        atlas = mni152_pairs("val", 2, seed=0, options=o)
        assert torch.equal(atlas.moving, p.moving)
        moved = (p.moving_labels != atlas.fixed_labels).float().mean()
        assert 0.01 < float(moved) < 0.5

    def test_without_nilearn_one_line_says_what_to_install(self, monkeypatch):
        tasks_module._template.cache_clear()
        tasks_module._cube.cache_clear()
        real = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: None if name == "nilearn" else real(name, *a),
        )
        with pytest.raises(DataError, match=r"pip install 'torchstn\[atlas\]'") as info:
            mni152_template(8)
        assert "\n" not in str(info.value)
        monkeypatch.undo()
        tasks_module._template.cache_clear()
        tasks_module._cube.cache_clear()


def test_downsampling_averages_areas():
    # area averaging keeps the mean intensity of the cube at every size (up to the bins' overlap)
    means = [float(mni152_template(s).t1.mean()) for s in (8, 16, 24)]
    assert max(means) - min(means) < 0.01 * max(means)
