"""run.precision, run.deterministic and run.checkpoint_every, through the API and the CLI."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from torchstn.cli import main
from torchstn.errors import ConfigError
from torchstn.train import Trainer, config_from_dict, load_checkpoint

from .conftest import TINY


def _values(**run):
    values = copy.deepcopy(TINY)
    values["run"].update(run)
    return values


class TestPrecision:
    @pytest.mark.parametrize("precision", ["bf16", "fp16"])
    def test_trains_finite_and_records_the_precision(self, tmp_path, precision):
        trainer = Trainer(config_from_dict(_values(precision=precision)), tmp_path, progress=False)
        assert trainer.scaler.is_enabled() == (precision == "fp16")
        result = trainer.fit()
        assert result["precision"] == precision
        rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(torch.isfinite(torch.tensor(r["train_loss"])) for r in rows)
        for v in trainer.model.state_dict().values():
            assert v.dtype == torch.float32 and torch.isfinite(v).all()
        # the weights moved: autocast did not silently stop the updates
        fresh = Trainer(config_from_dict(_values()), tmp_path / "fresh", progress=False)
        assert any(
            not torch.equal(v, fresh.model.state_dict()[k])
            for k, v in trainer.model.state_dict().items()
        )
        state = load_checkpoint(tmp_path / "checkpoint.pt")
        assert (state["scaler"] is not None) == (precision == "fp16")

    def test_bf16_autocast_runs_the_classifier_in_bfloat16(self, tmp_path):
        trainer = Trainer(config_from_dict(_values(precision="bf16")), tmp_path, progress=False)
        seen = []
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        trainer.fit()
        assert torch.bfloat16 in seen

    def test_fp16_resume_restores_the_scaler(self, tmp_path):
        Trainer(
            config_from_dict(_values(precision="fp16", epochs=1)), tmp_path, progress=False
        ).fit()
        saved = load_checkpoint(tmp_path / "checkpoint.pt")["scaler"]
        resumed = Trainer(
            config_from_dict(_values(precision="fp16", epochs=2)), tmp_path, resume=True
        )
        assert resumed.scaler.get_scale() == saved["scale"]

    def test_cli_flag_and_unknown_value(self, tmp_path, tiny_config, capsys):
        out = tmp_path / "run"
        code = main(
            ["train", "--config", str(tiny_config), "--out", str(out), "--precision", "bf16",
             "--no-progress", "--epochs", "1"]
        )  # fmt: skip
        assert code == 0
        assert json.loads((out / "result.json").read_text())["precision"] == "bf16"
        assert json.loads((out / "config.json").read_text())["run"]["precision"] == "bf16"
        capsys.readouterr()
        assert main(["eval", str(out)]) == 0  # evaluates under the run's precision, as it did
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        result = json.loads((out / "result.json").read_text())
        assert line["precision"] == "bf16" and line["error"] == result["test_error"]
        with pytest.raises(SystemExit) as exc:
            main(["train", "--config", str(tiny_config), "--out", str(out), "--precision", "fp8"])
        assert exc.value.code == 2

    @pytest.mark.parametrize(
        ("key", "value", "message"),
        [
            ("precision", "fp8", "run.precision"),
            ("checkpoint_every", 0, "run.checkpoint_every"),
            ("checkpoint_every", 2.5, "run.checkpoint_every"),
            ("deterministic", "yes", "run.deterministic"),
        ],
    )
    def test_bad_values(self, key, value, message):
        with pytest.raises(ConfigError, match=message):
            config_from_dict(_values(**{key: value}))


class TestCheckpointEvery:
    def test_saves_inside_the_epoch(self, tmp_path, monkeypatch):
        saved = []
        original = Trainer.save

        def record(self):
            original(self)
            state = load_checkpoint(self.ckpt_path)
            saved.append((state["epoch"], state["step"], state["epoch_stats"]["seen"]))

        monkeypatch.setattr(Trainer, "save", record)
        # 192 samples, batch 32: 6 steps an epoch; every 4 steps, and at each epoch's end
        Trainer(config_from_dict(_values(checkpoint_every=4)), tmp_path, progress=False).fit()
        assert saved == [(0, 4, 128), (1, 0, 0), (1, 4, 128), (2, 0, 0)]

    def test_resume_from_a_mid_epoch_checkpoint_gives_the_same_weights(self, tmp_path):
        ref = Trainer(config_from_dict(_values()), tmp_path / "ref", progress=False)
        ref.fit()
        run = tmp_path / "cut"
        cut = Trainer(config_from_dict(_values(checkpoint_every=4)), run, progress=False)
        original = cut._step
        calls = [0]

        def crash(*args):
            calls[0] += 1
            if calls[0] == 11:  # epoch 2, step 4 done and saved; the 5th step "crashes"
                raise RuntimeError("simulated crash")
            return original(*args)

        cut._step = crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="simulated crash"):
            cut.fit()
        state = load_checkpoint(run / "checkpoint.pt")
        assert (state["epoch"], state["step"]) == (1, 4)
        resumed = Trainer(config_from_dict(_values(checkpoint_every=4)), run, resume=True)
        resumed.fit()
        for k, v in ref.model.state_dict().items():
            assert torch.equal(v, resumed.model.state_dict()[k]), k
        # the epoch's training statistics survived the crash (saved with the mid-epoch checkpoint)
        for a, b in zip(resumed.history, ref.history, strict=True):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
            assert (a["train_error"], a["val_error"]) == (b["train_error"], b["val_error"])


class TestDeterministic:
    def test_turns_on_deterministic_algorithms(self, tmp_path):
        before = torch.are_deterministic_algorithms_enabled()
        try:
            Trainer(config_from_dict(_values(deterministic=True)), tmp_path, progress=False)
            assert torch.are_deterministic_algorithms_enabled()
        finally:
            torch.use_deterministic_algorithms(before)


class TestMemoryFormat:
    def test_auto_is_channels_last_for_convolutions_on_the_cpu(self, tmp_path):
        values = _values()
        values["model"] = {"name": "st_cnn_affine", "options": {"pool": 2}}
        trainer = Trainer(config_from_dict(values), tmp_path, progress=False)
        assert trainer.memory_format == torch.channels_last
        conv = trainer.model.classifier[3].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        seen = []
        original = trainer._step

        def spy(x, *args, **kwargs):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return original(x, *args, **kwargs)

        trainer._step = spy
        assert trainer.fit()["memory_format"] == "channels_last"
        assert seen and all(seen)

    def test_auto_leaves_fully_connected_models_alone_and_contiguous_is_kept(self, tmp_path):
        values = _values()
        values["model"] = {"name": "fcn"}
        assert Trainer(config_from_dict(values), tmp_path / "a", progress=False).memory_format == (
            torch.contiguous_format
        )
        values = _values(memory_format="contiguous")
        values["model"] = {"name": "cnn"}
        trainer = Trainer(config_from_dict(values), tmp_path / "b", progress=False)
        assert trainer.memory_format == torch.contiguous_format
        assert trainer.fit()["memory_format"] == "contiguous"

    def test_an_unknown_format_is_refused(self):
        with pytest.raises(ConfigError, match=r"run\.memory_format: expected auto, channels_last"):
            config_from_dict(_values(memory_format="nhwc"))


def _prefetch_values(prefetch, epochs=3):
    values = copy.deepcopy(TINY)
    values["data"]["prefetch"] = prefetch
    values["run"]["epochs"] = epochs
    return values


class TestPrefetch:
    def test_prefetched_data_train_the_same_weights(self, tmp_path, monkeypatch):
        from torchstn.train.datamodule import DataModule

        started = []
        original = DataModule.prefetch

        def spy(self, epoch):
            started.append(epoch)
            return original(self, epoch)

        monkeypatch.setattr(DataModule, "prefetch", spy)
        off = Trainer(config_from_dict(_prefetch_values(False)), tmp_path / "off", progress=False)
        off.fit()
        assert started == []
        on = Trainer(config_from_dict(_prefetch_values(True)), tmp_path / "on", progress=False)
        on.fit()
        assert started == [1, 2]  # each epoch starts the next one's data; none after the last
        for k, v in off.model.state_dict().items():
            assert torch.equal(v, on.model.state_dict()[k]), k
        for a, b in zip(on.history, off.history, strict=True):
            assert a["train_loss"] == b["train_loss"]
        result = json.loads((tmp_path / "on" / "result.json").read_text())
        assert result["data_prefetch"] is True and result["data_wait_seconds"] >= 0
        result = json.loads((tmp_path / "off" / "result.json").read_text())
        assert result["data_prefetch"] is False and result["data_wait_seconds"] > 0

    def test_auto_is_off_on_the_cpu(self, tmp_path):
        run = Trainer(config_from_dict(_prefetch_values(None, 1)), tmp_path, progress=False)
        assert run._prefetch is False

    def test_a_failure_while_prefetching_is_raised_by_the_epoch_that_needs_it(self, tmp_path):
        run = Trainer(config_from_dict(_prefetch_values(True)), tmp_path, progress=False)
        data = run.data
        calls = []

        def broken(split, num, seed):
            calls.append(seed)
            raise OSError("disk gone")

        data._generate = broken  # type: ignore[method-assign]
        assert data.prefetch(5) is True
        with pytest.raises(OSError, match="disk gone"):
            data.train(5)
        assert len(calls) == 1  # made once, in the background; the error reached the caller

    def test_a_prefetch_for_another_epoch_is_not_used(self, tmp_path):
        run = Trainer(config_from_dict(_prefetch_values(True)), tmp_path, progress=False)
        data = run.data
        data.prefetch(7)
        want = data._generate("train", data.cfg.train_size, data._train_seed(4))
        got = data.train(4)
        assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y)
        assert torch.equal(data.train(7).x, data._generate("train", 192, data._train_seed(7)).x)

    def test_fixed_data_are_not_prefetched(self, tmp_path):
        values = _prefetch_values(True)
        values["data"]["fresh"] = False
        run = Trainer(config_from_dict(values), tmp_path, progress=False)
        assert run.data.prefetch(1) is False

    @pytest.mark.parametrize("value", ["yes", 1])
    def test_bad_values_are_refused(self, value):
        with pytest.raises(ConfigError, match=r"data\.prefetch"):
            config_from_dict(_prefetch_values(value))
