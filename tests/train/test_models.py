from __future__ import annotations

import pytest
import torch

from torchstn import SpatialTransformer, UnknownNameError
from torchstn.models import STClassifier, count_params, create_model, model_names

SHAPES = {"st2_fcn": (2, 42, 42), "cnn3d": (1, 12, 12, 12), "st_cnn3d": (2, 12, 12, 12)}


def _shape(name: str) -> tuple[int, ...]:
    return next((s for prefix, s in SHAPES.items() if name.startswith(prefix)), (1, 28, 28))


#: the registration models take (moving, fixed): tests/test_registration_models.py
CLASSIFIERS = [n for n in model_names() if not n.startswith("reg_")]


@pytest.mark.parametrize("name", CLASSIFIERS)
class TestRegistry:
    def test_forward_backward(self, name):
        shape = _shape(name)
        model = create_model(name, shape, 19 if name.startswith("st2") else 10)
        x = torch.rand(3, *shape)
        out = model(x)
        assert out.shape == (3, 19 if name.startswith("st2") else 10)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        assert count_params(model) > 0

    def test_transformers_start_at_identity(self, name):
        shape = _shape(name)
        model = create_model(name, shape, 10)
        if not isinstance(model, STClassifier):
            pytest.skip("no transformer")
        x = torch.rand(2, *shape)
        for st in (m for m in model.modules() if isinstance(m, SpatialTransformer)):
            torch.testing.assert_close(st(x), x, atol=1e-5, rtol=0)


def test_unknown_model_lists_names():
    with pytest.raises(UnknownNameError, match="st_cnn_affine"):
        create_model("resnet", (1, 28, 28), 10)


def test_bad_option_is_value_error():
    with pytest.raises(ValueError, match="st_cnn_affine"):
        create_model("st_cnn_affine", (1, 28, 28), 10, wings=2)


def test_pool_halves_classifier_input():
    model = create_model("st_cnn_affine", (1, 60, 60), 10, pool=2)
    assert model.transformed(torch.rand(2, 1, 60, 60)).shape == (2, 1, 30, 30)


def test_volume_models_pool_to_the_same_resolution():
    cnn = create_model("cnn3d", (1, 16, 16, 16), 10, pool=2)
    st = create_model("st_cnn3d_rigid", (1, 16, 16, 16), 10, pool=2)
    x = torch.rand(2, 1, 16, 16, 16)
    assert st.transformed(x).shape == (2, 1, 8, 8, 8)
    # the plain model pools its input the same way: equal voxels for both classifiers
    assert cnn.classifier.in_features == st.classifier.classifier.in_features


def test_volume_models_refuse_images():
    with pytest.raises(ValueError, match=r"a volume model takes \(C, D, H, W\), got \(1, 28, 28\)"):
        create_model("cnn3d", (1, 28, 28), 10)


def test_volume_st_cnn_samples_at_the_classifiers_resolution():
    cnn = create_model("cnn3d", (1, 16, 16, 16), 10, pool=2)
    st = create_model("st_cnn3d_affine", (1, 16, 16, 16), 10, out_size=8)
    assert st.transformed(torch.rand(2, 1, 16, 16, 16)).shape == (2, 1, 8, 8, 8)
    assert cnn.classifier.in_features == st.classifier.classifier.in_features


def test_cnn_hidden_layer_combines_features_nonlinearly():
    plain = create_model("cnn", (2, 42, 42), 19)
    deep = create_model("cnn", (2, 42, 42), 19, hidden=32)
    linears = [m for m in deep.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 11 * 11, 32), (32, 19)]
    assert [m.out_features for m in plain.modules() if isinstance(m, torch.nn.Linear)] == [19]
    # a ReLU between the two linear layers: the read-out is no longer linear in the features
    assert isinstance(deep[-2], torch.nn.ReLU)
    assert deep(torch.rand(3, 2, 42, 42)).shape == (3, 19)
