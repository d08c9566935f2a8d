"""torchstn.load: the trained model of a checkpoint, without data, with its metadata."""

from __future__ import annotations

import pytest
import torch

import torchstn
from torchstn import DataError, UnknownNameError
from torchstn.inference import ModelInfo, load_info, load_with_info, save_trained
from torchstn.train import load_checkpoint, save_checkpoint


def _no_data(*args, **kwargs):
    raise AssertionError("loading a model must not generate or read data")


class TestLoad:
    def test_gives_the_saved_model_in_eval_mode(self, tmp_path, tiny_model):
        ref = tiny_model("st_cnn_affine")
        path = tmp_path / "checkpoint.pt"
        options = {"channels": [4, 8], "kernels": [5, 5], "loc_channels": [4, 4], "loc_hidden": 8}
        save_trained(path, ref, "st_cnn_affine", (1, 28, 28), 10, options=options)
        model = torchstn.load(path)
        assert not model.training
        x = torch.rand(3, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)

    def test_generates_no_data(self, make_checkpoint, monkeypatch):
        path = make_checkpoint("st_fcn_tps")
        import torchstn.data
        import torchstn.train.datamodule

        monkeypatch.setattr(torchstn.train.datamodule.DataModule, "__init__", _no_data)
        monkeypatch.setattr(torchstn.data, "get_task", _no_data)
        assert torchstn.load(path.parent)(torch.rand(2, 1, 28, 28)).shape == (2, 10)

    def test_leaves_the_global_random_state_alone(self, make_checkpoint):
        path = make_checkpoint("st_fcn_affine")
        before = torch.get_rng_state()
        torchstn.load(path)
        assert torch.equal(torch.get_rng_state(), before)

    def test_info(self, make_checkpoint):
        path = make_checkpoint("st_fcn_affine", (3, 20, 24), 4, class_names=["a", "b", "c", "d"])
        info = load_info(path.parent)
        assert isinstance(info, ModelInfo)
        assert info.path == path and info.model_name == "st_fcn_affine"
        assert info.in_shape == (3, 20, 24) and info.num_classes == 4
        assert info.class_names == ("a", "b", "c", "d") and info.class_name(2) == "c"
        assert info.class_name(9) is None
        assert info.config.model.options == {"hidden": [16], "loc_hidden": [8]}
        assert info.weights == "last"  # no validation recorded: "best" falls back
        d = info.to_dict()
        assert d["in_shape"] == [3, 20, 24] and d["config"]["model"]["name"] == "st_fcn_affine"

    def test_best_and_last_weights(self, make_checkpoint, tiny_model):
        path = make_checkpoint("st_fcn_affine")
        state = load_checkpoint(path)
        other = tiny_model("st_fcn_affine")
        with torch.no_grad():
            for p in other.parameters():
                p.add_(1.0)
        state["best"] = {"val_error": 3.5, "epoch": 7, "model": other.state_dict()}
        state["epoch"] = 9
        save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
        x = torch.rand(2, 1, 28, 28)
        best, info = load_with_info(path)
        last, info_last = load_with_info(path, weights="last")
        with torch.no_grad():
            torch.testing.assert_close(best(x), other(x))
            assert not torch.allclose(last(x), other(x))
        assert (info.weights, info.weights_epoch, info.val_error) == ("best", 7, 3.5)
        assert (info_last.weights, info_last.weights_epoch, info_last.epoch) == ("last", 9, 9)


class TestErrors:
    def _one_line(self, err: pytest.ExceptionInfo, text: str) -> None:
        assert text in str(err.value) and "\n" not in str(err.value)

    def test_missing(self, tmp_path):
        with pytest.raises(DataError) as err:
            torchstn.load(tmp_path / "nope.pt")
        self._one_line(err, "not found")

    def test_not_a_checkpoint(self, tmp_path):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"\x00garbage" * 10)
        with pytest.raises(DataError) as err:
            torchstn.load(bad)
        self._one_line(err, "not a model file")

    def test_truncated(self, make_checkpoint):
        path = make_checkpoint("st_fcn_affine")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError) as err:
            torchstn.load(path)
        self._one_line(err, "not a readable checkpoint")

    def test_foreign_torch_file(self, tmp_path):
        path = tmp_path / "weights.pt"
        torch.save({"weight": torch.zeros(3)}, path)
        with pytest.raises(DataError) as err:
            torchstn.load(path)
        self._one_line(err, "not a torchstn checkpoint")

    def test_checkpoint_without_data_info(self, make_checkpoint):
        path = make_checkpoint("st_fcn_affine")
        state = load_checkpoint(path)
        del state["data_info"]
        save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
        with pytest.raises(DataError) as err:
            torchstn.load(path)
        self._one_line(err, "data_info")

    def test_weights_of_another_model(self, make_checkpoint, tiny_model):
        path = make_checkpoint("st_fcn_affine")
        state = load_checkpoint(path)
        state["model"] = tiny_model("st_cnn_affine").state_dict()
        save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
        with pytest.raises(DataError) as err:
            torchstn.load(path)
        self._one_line(err, "do not fit")

    def test_unknown_weights(self, make_checkpoint):
        with pytest.raises(UnknownNameError, match="best, last"):
            torchstn.load(make_checkpoint("st_fcn_affine"), weights="middle")
