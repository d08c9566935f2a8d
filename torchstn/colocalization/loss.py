"""The triplet hinge loss of the co-localisation experiment."""

from __future__ import annotations

import torch

from .._checks import check_positive, check_tensor
from ..errors import InvalidInputError

__all__ = ["triplet_hinge_loss"]


def triplet_hinge_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 1.0,
    *,
    reduction: str = "mean",
    positive_anchor: torch.Tensor | None = None,
) -> torch.Tensor:
    """``max(0, ||a - p||^2 - ||a - n||^2 + margin)`` per triplet (squared Euclidean distances).

    In the co-localisation experiment ``a = e(ST(I_n))``, ``p = e(ST(I_m))`` for another image of
    the same class and ``n = e(r_n)`` for a random crop of ``I_n`` of the same size: the loss is
    zero once the two transformer crops embed closer together than the crop and the random crop,
    by at least ``margin``.

    Args:
        anchor: ``(B, D)`` embeddings.
        positive: ``(B, D)`` embeddings.
        negative: ``(B, D)`` embeddings.
        margin: the hinge margin (the paper: 1).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (the ``(B,)`` losses).
        positive_anchor: ``(B, D)``, the anchor to use in ``||a - p||^2`` instead of ``anchor``:
            the same values computed along another autograd path (the co-localisation trainer
            passes the embedding of the *detached* crop, so that the transformer learns from
            the random-crop term only; see :mod:`torchstn.colocalization.trainer`).

    Returns:
        A scalar, or ``(B,)`` with ``reduction="none"``.

    Example:
        >>> a, p = torch.zeros(2, 2), torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> n = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
        >>> triplet_hinge_loss(a, p, n, reduction="none")
        tensor([0., 2.])
    """
    check_tensor(anchor, "anchor", ndim=2)
    pos_anchor = anchor if positive_anchor is None else positive_anchor
    for name, t in (
        ("positive", positive),
        ("negative", negative),
        ("positive_anchor", pos_anchor),
    ):
        check_tensor(t, name, ndim=2)
        if t.shape != anchor.shape:
            raise InvalidInputError(
                f"{name}: expected the shape of anchor {tuple(anchor.shape)}, got {tuple(t.shape)}"
            )
    margin = check_positive(margin, "margin", allow_zero=True)
    d_pos = (pos_anchor - positive).pow(2).sum(-1)
    d_neg = (anchor - negative).pow(2).sum(-1)
    losses = (d_pos - d_neg + margin).clamp_min(0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    raise InvalidInputError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
