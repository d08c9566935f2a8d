from __future__ import annotations

import pytest
import torch

from torchstn.colocalization import triplet_hinge_loss
from torchstn.errors import InvalidInputError


class TestTripletHingeLoss:
    def test_zero_when_margin_met(self):
        a = torch.tensor([[0.0, 0.0]])
        p = torch.tensor([[0.5, 0.0]])  # d_pos = 0.25
        n = torch.tensor([[0.0, 2.0]])  # d_neg = 4 >= 0.25 + 1
        assert triplet_hinge_loss(a, p, n).item() == 0.0

    def test_positive_when_margin_not_met(self):
        a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # d_pos = 1, 0
        n = torch.tensor([[0.0, 1.0], [1.0, 1.5]])  # d_neg = 1, 0.25
        losses = triplet_hinge_loss(a, p, n, reduction="none")
        torch.testing.assert_close(losses, torch.tensor([1.0, 0.75]))
        torch.testing.assert_close(triplet_hinge_loss(a, p, n), torch.tensor(0.875))
        torch.testing.assert_close(triplet_hinge_loss(a, p, n, reduction="sum"), torch.tensor(1.75))

    def test_margin(self):
        a, p, n = torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3)  # d_neg = 3
        assert triplet_hinge_loss(a, p, n, margin=2.0).item() == 0.0
        assert triplet_hinge_loss(a, p, n, margin=4.0).item() == pytest.approx(1.0)

    def test_positive_anchor_routes_gradient(self):
        a = torch.tensor([[0.0, 0.0]], requires_grad=True)
        detached = a.detach().requires_grad_(True)
        p, n = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.5]])
        loss = triplet_hinge_loss(a, p, n, positive_anchor=detached)
        assert loss.item() == pytest.approx(triplet_hinge_loss(a, p, n).item())
        loss.backward()
        # a only sees -||a - n||^2: gradient 2 (a - n); the positive term goes to `detached`
        torch.testing.assert_close(a.grad, torch.tensor([[0.0, 1.0]]))
        torch.testing.assert_close(detached.grad, torch.tensor([[-2.0, 0.0]]))

    def test_bad_inputs(self):
        a = torch.zeros(2, 3)
        with pytest.raises(InvalidInputError, match="negative"):
            triplet_hinge_loss(a, a, torch.zeros(2, 4))
        with pytest.raises(InvalidInputError, match="anchor"):
            triplet_hinge_loss(torch.zeros(3), a, a)
        with pytest.raises(InvalidInputError, match="reduction"):
            triplet_hinge_loss(a, a, a, reduction="max")
        with pytest.raises(InvalidInputError, match="margin"):
            triplet_hinge_loss(a, a, a, margin=-1.0)
