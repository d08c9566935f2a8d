"""Several models as one: ``torch.func.stack_module_state`` + ``vmap(grad(...))`` over the
registry's models gives each model's own gradient (the library's autograd Functions and data
checks give way to standard operators under torch.func transforms)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

from torchstn.models import create_model


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("cnn", {}),
        ("st_cnn_affine", {"pool": 2}),
        ("st_fcn_projective", {}),
        ("st_fcn_tps", {}),
    ],
)
def test_vmap_over_stacked_models_gives_each_models_gradient(name, options):
    torch.manual_seed(0)
    models = [create_model(name, (1, 16, 16), 10, **options) for _ in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    x = torch.rand(3, 8, 1, 16, 16, requires_grad=False)
    y = torch.randint(0, 10, (3, 8))
    grads = vmap(grad(loss))(params, buffers, x, y)
    for i, model in enumerate(models):
        model.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        for key, p in model.named_parameters():
            torch.testing.assert_close(grads[key][i], p.grad, atol=1e-5, rtol=1e-4)


def test_the_stacked_step_trains_each_model_as_sgd_would():
    from torchstn.bench.seeds import stacked_step
    from torchstn.bench.training import make_step

    torch.manual_seed(0)
    models = [create_model("st_cnn_affine", (1, 16, 16), 10, pool=2) for _ in range(2)]
    twins = [copy.deepcopy(m) for m in models]
    x = torch.rand(2, 8, 1, 16, 16)
    y = torch.randint(0, 10, (2, 8))
    step, params = stacked_step(models, x, y)
    alone = [make_step(m, x[i], y[i]) for i, m in enumerate(twins)]
    for _ in range(3):  # the first step and two with momentum
        step()
        for s in alone:
            s()
    for i, twin in enumerate(twins):
        for key, p in twin.named_parameters():
            torch.testing.assert_close(params[key][i], p.detach(), atol=1e-5, rtol=1e-4)
    # and the models did move
    assert not torch.allclose(
        params["classifier.0.weight"][0], models[0].state_dict()["classifier.0.weight"]
    )
