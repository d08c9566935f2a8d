"""Several spatial transformers: ``ParallelTransformers`` and ``SequentialTransformers``."""

from __future__ import annotations

import pytest
import torch

from torchstn import (
    InvalidInputError,
    ParallelOutput,
    ParallelTransformers,
    SequentialOutput,
    SequentialTransformers,
    SpatialTransformer,
    recording_params,
)


def _st(
    in_shape: tuple[int, int, int] = (2, 12, 12),
    out_size: tuple[int, int] | None = None,
    name: str = "affine",
) -> SpatialTransformer:
    return SpatialTransformer(in_shape, name, out_size=out_size)


def _perturb(st: SpatialTransformer) -> SpatialTransformer:
    """Move the head off the identity so that the params depend on the input."""
    with torch.no_grad():
        st.head.weight.normal_(0, 0.01)
        st.head.bias.add_(0.1 * torch.randn_like(st.head.bias))
    return st


class TestParallelTransformers:
    def test_concat_shape_and_identity(self) -> None:
        par = ParallelTransformers(
            [
                _st(out_size=(6, 6)),
                _st(out_size=(6, 6), name="attention"),
                _st(out_size=(6, 6), name="tps"),
            ]
        )
        x = torch.rand(4, 2, 12, 12)
        y = par(x)
        assert y.shape == (4, 3 * 2, 6, 6)
        # each head starts at the identity, so each slice is the same resampled input
        for i in range(3):
            torch.testing.assert_close(y[:, 2 * i : 2 * i + 2], par.heads[0](x))

    def test_list_allows_different_out_sizes(self) -> None:
        par = ParallelTransformers([_st(out_size=(6, 6)), _st(out_size=(4, 8))], combine="list")
        ys = par(torch.rand(3, 2, 12, 12))
        assert isinstance(ys, list) and [y.shape for y in ys] == [(3, 2, 6, 6), (3, 2, 4, 8)]

    def test_heads_are_independent(self) -> None:
        par = ParallelTransformers.replicate(2, (1, 8, 8), "affine")
        assert par.heads[0].head.weight is not par.heads[1].head.weight
        with torch.no_grad():
            par.heads[1].head.bias.add_(0.3)
        x = torch.rand(2, 1, 8, 8)
        y = par(x)
        torch.testing.assert_close(y[:, :1], x)
        assert (y[:, 1:] - x).abs().max() > 1e-2

    def test_replicate(self) -> None:
        par = ParallelTransformers.replicate(
            3, (1, 8, 8), "attention", out_size=(4, 4), combine="list"
        )
        assert len(par.heads) == 3 and par.combine == "list"
        assert all(h.out_size == (4, 4) and h.transform.name == "attention" for h in par.heads)
        assert "n=3" in repr(par) and "'list'" in repr(par)

    def test_gradients_reach_every_head(self) -> None:
        par = ParallelTransformers.replicate(2, (1, 8, 8))
        (par(torch.rand(2, 1, 8, 8)) * torch.randn(2, 2, 8, 8)).sum().backward()
        for head in par.heads:
            assert head.head.weight.grad is not None and head.head.weight.grad.abs().sum() > 0

    @pytest.mark.parametrize("combine", ["concat", "list"])
    def test_return_params(self, combine: str) -> None:
        par = ParallelTransformers([_st(), _st(name="attention")], combine=combine)
        with torch.no_grad():
            par.heads[1].head.bias.add_(0.2)
        x = torch.rand(3, 2, 12, 12)
        out = par(x, return_params=True)
        assert isinstance(out, ParallelOutput)
        y, params = out
        ref = par(x)
        if combine == "concat":
            assert isinstance(y, torch.Tensor) and isinstance(ref, torch.Tensor)
            torch.testing.assert_close(y, ref)
        else:
            assert isinstance(y, list) and isinstance(ref, list)
            for a, b in zip(y, ref):
                torch.testing.assert_close(a, b)
        assert [p.shape for p in params] == [(3, 6), (3, 3)]
        for head, p in zip(par.heads, params):
            torch.testing.assert_close(p, head.localize(x))
        with recording_params(par) as records:
            par(x)
        assert [r.name for r in records] == ["heads.0", "heads.1"]

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="non-empty sequence of SpatialTransformer"):
            ParallelTransformers([])
        with pytest.raises(InvalidInputError, match="non-empty sequence of SpatialTransformer"):
            ParallelTransformers([_st(), torch.nn.Identity()])  # type: ignore[list-item]
        with pytest.raises(InvalidInputError, match=r"combine.*concat, list.*'stack'"):
            ParallelTransformers([_st()], combine="stack")
        with pytest.raises(InvalidInputError, match="same in_shape"):
            ParallelTransformers([_st((2, 12, 12)), _st((1, 12, 12))])
        with pytest.raises(InvalidInputError, match="one out_size"):
            ParallelTransformers([_st(out_size=(6, 6)), _st(out_size=(4, 4))])
        for n in (0, -1, 1.5, "2"):
            with pytest.raises(InvalidInputError, match="n: expected a positive int"):
                ParallelTransformers.replicate(n, (1, 8, 8))  # type: ignore[arg-type]

    def test_bad_input_is_reported_by_the_heads(self) -> None:
        par = ParallelTransformers.replicate(2, (1, 8, 8))
        with pytest.raises(InvalidInputError, match=r"x: expected \(B, 1, 8, 8\)"):
            par(torch.rand(2, 1, 9, 9))


class TestSequentialTransformers:
    def test_shape_chain(self) -> None:
        a = SpatialTransformer((1, 30, 30), "attention", out_size=(20, 20))
        b = SpatialTransformer((1, 20, 20), "affine", out_size=(12, 10))
        c = SpatialTransformer((1, 12, 10), "tps")
        seq = SequentialTransformers(a, b, c)
        assert seq(torch.rand(2, 1, 30, 30)).shape == (2, 1, 12, 10)

    def test_identity_chain_is_the_identity(self) -> None:
        seq = SequentialTransformers(_st(), _st(name="projective"), _st(name="tps"))
        x = torch.rand(2, 2, 12, 12)
        torch.testing.assert_close(seq(x), x, rtol=0, atol=1e-5)

    def test_each_stage_sees_the_previous_output(self) -> None:
        a, b = _st(name="translation"), _st(name="translation")
        with torch.no_grad():
            a.head.bias.copy_(torch.tensor([2 / 12, 0.0]))  # read one pixel to the right
            b.head.bias.copy_(torch.tensor([2 / 12, 0.0]))
        x = torch.rand(1, 2, 12, 12)
        y = SequentialTransformers(a, b)(x)
        torch.testing.assert_close(y[..., :-2], x[..., 2:])

    def test_return_params(self) -> None:
        a = _perturb(SpatialTransformer((1, 16, 16), "attention", out_size=(10, 10)))
        b = _perturb(SpatialTransformer((1, 10, 10), "affine", out_size=(6, 6)))
        seq = SequentialTransformers(a, b)
        x = torch.rand(2, 1, 16, 16)
        out = seq(x, return_params=True)
        assert isinstance(out, SequentialOutput)
        y, params = out
        torch.testing.assert_close(y, seq(x))
        assert [p.shape for p in params] == [(2, 3), (2, 6)]
        torch.testing.assert_close(params[0], a.localize(x))
        torch.testing.assert_close(params[1], b.localize(a(x)))
        with recording_params(seq) as records:
            seq(x)
        assert [(r.name, r.transformer) for r in records] == [("0", a), ("1", b)]

    def test_exceptions(self) -> None:
        with pytest.raises(InvalidInputError, match="one or more SpatialTransformer"):
            SequentialTransformers()
        with pytest.raises(InvalidInputError, match="one or more SpatialTransformer"):
            SequentialTransformers(_st(), torch.nn.Identity())  # type: ignore[arg-type]
        a = SpatialTransformer((1, 30, 30), "attention", out_size=(20, 20))
        b = SpatialTransformer((1, 20, 20), "affine", out_size=(12, 12))
        with pytest.raises(
            InvalidInputError,
            match=r"transformer 1 takes \(1, 30, 30\) but transformer 0 gives \(1, 20, 20\)",
        ):
            SequentialTransformers(a, a)
        with pytest.raises(
            InvalidInputError,
            match=r"transformer 2 takes \(1, 20, 20\) but transformer 1 gives \(1, 12, 12\)",
        ):
            SequentialTransformers(a, b, b)
        with pytest.raises(
            InvalidInputError, match=r"takes \(2, 20, 20\) but transformer 0 gives \(1, 20, 20\)"
        ):
            SequentialTransformers(a, SpatialTransformer((2, 20, 20)))
