from __future__ import annotations

import pytest
import torch

from torchstn.colocalization import crop_boxes
from torchstn.errors import InvalidInputError
from torchstn.models import create_model
from torchstn.models.encoder import AttentionEncoder, SoftArgmaxLocalization


def test_shapes_and_start_window():
    model = create_model("st_attention_encoder", (1, 84, 84), 16)
    assert isinstance(model, AttentionEncoder)
    x = torch.rand(3, 1, 84, 84)
    assert model(x).shape == (3, 16)
    crops, params = model.crop(x)
    assert crops.shape == (3, 1, 28, 28)
    # flat score map: the centred window, whatever the image, a tenth of the scale range inside
    # the upper bound (0.36 - 0.1 * 0.06: a bounded scale starts where it has a gradient)
    torch.testing.assert_close(params[:, 1:], torch.zeros(3, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(params[:, 0], torch.full((3,), 0.354), atol=1e-4, rtol=0)
    box = crop_boxes(params[:1], 84)
    torch.testing.assert_close(box, torch.tensor([[27.1, 27.1, 56.9, 56.9]]), atol=0.05, rtol=0)


def test_translation_follows_the_soft_argmax():
    model = create_model("st_attention_encoder", (1, 84, 84), 8)
    loc = model.transformer.localization
    assert isinstance(loc, SoftArgmaxLocalization)
    with torch.no_grad():  # score = first-layer response, sharpened: a blob detector
        loc.score.weight.fill_(1.0)
        loc.log_gain.fill_(3.0)
    x = torch.zeros(1, 1, 84, 84)
    x[..., 60:70, 10:20] = 1.0  # a blob left of centre, low
    params = model.localize(x)
    assert params[0, 1] < -0.3 and params[0, 2] > 0.3


def test_bounded_translation_keeps_unit_gain():
    model = create_model("st_attention_encoder", (1, 84, 84), 8, max_translation=0.5)
    assert model.transformer.head.weight[1, 0].item() == pytest.approx(2.0)


def test_gradients_reach_every_part():
    model = create_model("st_attention_encoder", (1, 84, 84), 8)
    model(torch.rand(2, 1, 84, 84)).pow(2).sum().backward()
    assert model.transformer.localization.score.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_other_sizes():
    model = create_model("st_attention_encoder", (2, 28, 28), 4, out_size=(12, 12))
    assert model(torch.rand(2, 2, 28, 28)).shape == (2, 4)


def test_bad_options():
    with pytest.raises(InvalidInputError, match="scale_range"):
        create_model("st_attention_encoder", (1, 84, 84), 8, scale_range=(0.5, 0.2))
    with pytest.raises(InvalidInputError, match="channels"):
        create_model("st_attention_encoder", (1, 84, 84), 8, loc_channels=(4, 4))
