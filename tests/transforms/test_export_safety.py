"""Transforms are modules whose constants are buffers: exporting, tracing or compiling a
transformer never changes what a later eager call returns, and ``.to()`` moves the constants."""

from __future__ import annotations

import copy

import pytest
import torch

from torchstn import SpatialTransformer, transforms
from torchstn.functional import base_grid
from torchstn.transforms import TPS, Transform

NAMES = transforms.names(ndim=2)


def _fresh(name: str, **options: object) -> SpatialTransformer:
    """A transformer that has never run (so nothing could have been filled lazily), moved off
    the identity so that its output depends on the params."""
    torch.manual_seed(0)
    st = SpatialTransformer((1, 10, 10), name, out_size=(6, 7), transform_options=options)
    with torch.no_grad():
        st.head.weight.normal_(0, 0.01)
        st.head.bias.add_(0.1 * torch.randn_like(st.head.bias))
    return st.eval()


def _assert_plain_and_equal(y: torch.Tensor, ref: torch.Tensor) -> None:
    assert type(y) is torch.Tensor  # not a FakeTensor or a proxy left over from a trace
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


class TestModules:
    @pytest.mark.parametrize("name", NAMES)
    def test_every_family_is_a_module_whose_forward_is_grid(self, name: str) -> None:
        t = transforms.get(name)
        assert isinstance(t, torch.nn.Module) and isinstance(t, Transform)
        assert list(t.parameters()) == []
        params = t.identity_params()[None].expand(2, -1) + 0.05
        torch.testing.assert_close(t(params, (3, 4)), t.grid(params, (3, 4)))

    @pytest.mark.parametrize("name", NAMES)
    def test_transformer_state_dict_has_no_transform_entries(self, name: str) -> None:
        """Checkpoints written before transforms were modules load unchanged (strict)."""
        st = SpatialTransformer((1, 10, 10), name)
        keys = set(st.state_dict())
        assert keys == {k for k in keys if k.startswith(("localization.", "head."))}
        twin = SpatialTransformer((1, 10, 10), name)
        twin.load_state_dict(st.state_dict(), strict=True)

    def test_state_dict_round_trip_keeps_the_tps_constants(self) -> None:
        a = _fresh("tps", grid_size=3, reg=0.3)
        b = SpatialTransformer(
            (1, 10, 10), "tps", out_size=(6, 7), transform_options={"grid_size": 3, "reg": 0.3}
        )
        b.load_state_dict(a.state_dict())
        x = torch.rand(2, 1, 10, 10)
        torch.testing.assert_close(b(x), a(x))


class TestDeviceAndDtype:
    def test_to_moves_the_tps_buffers(self) -> None:
        st = _fresh("tps")
        t = st.transform
        assert isinstance(t, TPS)
        assert t.centres.dtype == t.system_inv.dtype == torch.float64
        st.float()
        assert t.centres.dtype == t.system_inv.dtype == torch.float32
        st.to(torch.float64)
        assert t.centres.dtype == t.system_inv.dtype == torch.float64
        x = torch.rand(2, 1, 10, 10, dtype=torch.float64)
        assert st(x).dtype == torch.float64
        st.to("meta")
        assert t.centres.device.type == t.system_inv.device.type == "meta"
        assert st(x.to("meta")).device.type == "meta"

    def test_float64_transformer_matches_float32(self) -> None:
        st = _fresh("tps")
        x = torch.rand(2, 1, 10, 10)
        y32 = st(x)
        y64 = copy.deepcopy(st).double()(x.double())
        torch.testing.assert_close(y64.float(), y32, rtol=0, atol=1e-5)

    def test_params_on_another_device_than_the_buffers(self) -> None:
        t = TPS(3)
        params = t.identity_params(device="meta")[None]
        assert t.grid(params, (4, 4)).device.type == "meta"
        torch.testing.assert_close(
            t.grid(t.identity_params()[None], (4, 4)), base_grid((4, 4))[None]
        )


class TestExportTraceCompile:
    @pytest.mark.parametrize("name", NAMES)
    def test_export_then_eager(self, name: str) -> None:
        """The bug: exporting a fresh TPS transformer filled its caches with FakeTensors, and
        every later eager call returned FakeTensors."""
        st = _fresh(name)
        ref = copy.deepcopy(st)
        x = torch.rand(2, 1, 10, 10)
        exported = torch.export.export(st, (x,))
        _assert_plain_and_equal(st(x), ref(x))
        x3 = torch.rand(3, 1, 10, 10)
        _assert_plain_and_equal(st(x3), ref(x3))  # a size never seen before
        torch.testing.assert_close(exported.module()(x), ref(x))

    def test_exported_program_carries_the_tps_constants_as_buffers(self) -> None:
        st = _fresh("tps")
        exported = torch.export.export(st, (torch.rand(2, 1, 10, 10),))
        buffers = {
            spec.target
            for spec in exported.graph_signature.input_specs
            if spec.kind.name == "BUFFER"
        }
        assert {"transform.centres", "transform.system_inv"} <= buffers
        assert set(exported.state_dict) == set(st.state_dict())  # still not persistent

    @pytest.mark.filterwarnings("ignore:`torch.jit.trace.* is deprecated:DeprecationWarning")
    @pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
    @pytest.mark.parametrize("name", ["tps", "projective"])
    def test_jit_trace_then_eager(self, name: str) -> None:
        st = _fresh(name)
        ref = copy.deepcopy(st)
        x = torch.rand(2, 1, 10, 10)
        traced = torch.jit.trace(st, x)
        _assert_plain_and_equal(st(x), ref(x))
        x4 = torch.rand(4, 1, 10, 10)
        torch.testing.assert_close(traced(x4), ref(x4))
        if name == "tps":
            assert {n for n, _ in traced.named_buffers()} == {
                "transform.centres",
                "transform.system_inv",
            }
            with torch.no_grad():  # the trace reads the buffers; it did not bake them in
                traced.transform.system_inv.zero_()
            assert (traced(x) - ref(x)).abs().max() > 1e-3

    def test_compile_then_eager(self) -> None:
        import torch._dynamo

        torch._dynamo.reset()
        st = _fresh("tps")
        ref = copy.deepcopy(st)
        x = torch.rand(2, 1, 10, 10)
        compiled = torch.compile(st, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), ref(x), rtol=1e-6, atol=1e-6)
        _assert_plain_and_equal(st(x), ref(x))
