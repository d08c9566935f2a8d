"""End to end through the real command line: train, eval, visualize, resume, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from torchstn import native
from torchstn.cli import main
from torchstn.train import Trainer, TrainingInterrupted, config_from_dict, load_checkpoint


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _train_one_epoch(capsys, config: Path, run: Path) -> int:
    return _run(
        capsys,
        "train",
        "--config",
        str(config),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--no-progress",
    )[0]


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


class TestTrainEvalVisualize:
    def test_end_to_end(self, tmp_path, tiny_config, capsys):
        run = tmp_path / "run"
        code, out, err = _run(
            capsys, "train", "--config", str(tiny_config), "--out", str(run), "--no-progress"
        )
        assert code == 0, err
        result = _last_json(out)
        for key in ("test_error", "val_error", "epochs", "train_seconds", "params"):
            assert key in result
        assert result["epochs"] == 2 and 0 <= result["test_error"] <= 100
        # which sampling path the run's transformer took (the fused CPU kernel where it built)
        path = result["sampling_path"]
        assert path["fused_cpu"] == (native.kernels() is not None)
        taken = "fused" if path["fused_cpu"] else "unfused"
        assert path["warps"].get(taken, 0) > 0, path
        assert json.loads((run / "result.json").read_text()) == result
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        assert rows[1]["lr"] == pytest.approx(0.01)  # step schedule: 0.02 * 0.5
        saved = json.loads((run / "config.json").read_text())
        assert saved["model"]["name"] == "st_cnn_affine" and saved["run"]["epochs"] == 2

        # eval reproduces the test error of result.json from the checkpoint alone
        code, out, err = _run(capsys, "eval", str(run / "checkpoint.pt"))
        assert code == 0, err
        assert _last_json(out)["error"] == pytest.approx(result["test_error"])
        code, out, _ = _run(capsys, "eval", str(run), "--split", "val")
        assert _last_json(out)["error"] == pytest.approx(result["val_error"])

        # visualize writes the figure and the curves as real PNGs
        png = tmp_path / "fig.png"
        code, out, err = _run(
            capsys, "visualize", str(run / "checkpoint.pt"), "--out", str(png), "--num", "3"
        )
        assert code == 0, err
        for p in (png, tmp_path / "fig_curves.png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000

        # --resume with more epochs continues from epoch 2
        code, out, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(run),
            "--resume",
            "--epochs",
            "3",
            "--no-progress",
        )
        assert code == 0, err
        assert _last_json(out)["epochs"] == 3
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2, 3]

    def test_same_seed_same_numbers(self, tmp_path, tiny_config, capsys):
        results = []
        for name in ("a", "b"):
            code, out, err = _run(
                capsys,
                "train",
                "--config",
                str(tiny_config),
                "--out",
                str(tmp_path / name),
                "--epochs",
                "1",
                "--no-progress",
            )
            assert code == 0, err
            results.append(_last_json(out))
        assert results[0]["test_error"] == results[1]["test_error"]
        a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
        b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


class TestResume:
    def test_interrupted_run_ends_with_the_same_weights(self, tmp_path, monkeypatch, tiny_values):
        TINY = tiny_values
        cfg = config_from_dict(TINY)
        ref = Trainer(cfg, tmp_path / "ref", progress=False)
        ref.fit()

        run = tmp_path / "cut"
        trainer = Trainer(config_from_dict(TINY), run, progress=False)
        original = Trainer._step
        calls = {"n": 0}

        def step_then_interrupt(self, *args):
            loss = original(self, *args)
            calls["n"] += 1
            if calls["n"] == 8:  # mid-way through epoch 2 (6 steps per epoch)
                self.interrupted = True
            return loss

        monkeypatch.setattr(Trainer, "_step", step_then_interrupt)
        with pytest.raises(TrainingInterrupted, match="--resume"):
            trainer.fit()
        monkeypatch.setattr(Trainer, "_step", original)
        state = load_checkpoint(run / "checkpoint.pt")
        assert (state["epoch"], state["step"]) == (1, 2)

        resumed = Trainer(config_from_dict(TINY), run, resume=True, progress=False)
        result = resumed.fit()
        for k, v in ref.model.state_dict().items():
            assert torch.equal(v, resumed.model.state_dict()[k]), k
        assert (
            result["test_error"]
            == json.loads((tmp_path / "ref" / "result.json").read_text())["test_error"]
        )

        def strip(rows):
            return [{k: v for k, v in r.items() if k != "elapsed"} for r in rows]

        assert strip(resumed.history) == strip(ref.history)  # epoch 2's metrics span the cut

    def test_minutes_budget_stops_after_the_budget_not_before(self, tmp_path, tiny_values):
        # on the real clock: the run never stops before its budget is spent, and ends long before
        # its 1000 epochs (tests/train/test_partial_epoch.py pins the exact stopping step with a
        # clock that ticks once per step)
        values = tiny_values
        values["run"].update(epochs=1000, minutes=0.01)
        result = Trainer(config_from_dict(values), tmp_path / "r", progress=False).fit()
        assert result["train_seconds"] >= 0.6
        assert result["epochs"] < 1000
        rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
        over = [r for r in rows if r["elapsed"] >= 0.6]
        # the budget is crossed once, by the last record: in the (partial) epoch that ends the
        # run, or in its validation, after which no step of another epoch is taken
        assert over == [rows[-1]]


class TestErrors:
    def _check_one_line(self, code, err, match):
        assert code == 2
        assert "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err
        assert match in err

    def test_unknown_config_key(self, tmp_path, capsys):
        cfg = tmp_path / "c.yaml"
        cfg.write_text("optim: {lrate: 1}\n")
        code, _, err = _run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"))
        self._check_one_line(code, err, "lrate")

    def test_unknown_model_and_task(self, tmp_path, tiny_config, capsys):
        code, _, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(tmp_path / "r"),
            "--model",
            "resnet9000",
        )
        self._check_one_line(code, err, "st_cnn_affine")
        code, _, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(tmp_path / "r2"),
            "--set",
            "data.task=svhn",
        )
        self._check_one_line(code, err, "cluttered")

    def test_missing_and_corrupted_checkpoints(self, tmp_path, capsys):
        code, _, err = _run(capsys, "eval", str(tmp_path / "nope.pt"))
        self._check_one_line(code, err, "not found")
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"\x00garbage" * 10)
        code, _, err = _run(capsys, "eval", str(bad))
        self._check_one_line(code, err, "not a model file")
        code, _, err = _run(capsys, "visualize", str(bad), "--out", str(tmp_path / "x.png"))
        self._check_one_line(code, err, "not a model file")

    def test_truncated_checkpoint(self, tmp_path, tiny_config, capsys):
        run = tmp_path / "r"
        assert _train_one_epoch(capsys, tiny_config, run) == 0
        data = (run / "checkpoint.pt").read_bytes()
        (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
        code, _, err = _run(capsys, "eval", str(run))
        self._check_one_line(code, err, "not a readable checkpoint")

    def test_refuses_to_overwrite_and_resume_needs_checkpoint(self, tmp_path, tiny_config, capsys):
        run = tmp_path / "r"
        code, _, err = _run(
            capsys, "train", "--config", str(tiny_config), "--out", str(run), "--resume"
        )
        self._check_one_line(code, err, "no checkpoint")
        assert _train_one_epoch(capsys, tiny_config, run) == 0
        code, _, err = _run(capsys, "train", "--config", str(tiny_config), "--out", str(run))
        self._check_one_line(code, err, "already holds a run")

    def test_nan_loss_is_one_line(self, tmp_path, tiny_config, capsys):
        code, _, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(tmp_path / "nan"),
            "--set",
            "optim.lr=1e30",
            "--no-progress",
        )
        self._check_one_line(code, err, "loss became")


def test_nan_loss_keeps_last_good_checkpoint(tmp_path, monkeypatch, tiny_values):
    TINY = tiny_values
    from torchstn.train import TrainingDiverged
    from torchstn.train import trainer as trainer_module

    run = tmp_path / "r"
    Trainer(config_from_dict(TINY), run, progress=False).fit()  # 2 good epochs
    before = (run / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(trainer_module, "lr_factor", lambda cfg, epoch, elapsed=0.0: 1e30)
    values = json.loads(json.dumps(TINY))
    values["run"]["epochs"] = 4
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        Trainer(config_from_dict(values), run, resume=True, progress=False).fit()
    assert (run / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(run)["epoch"] == 2


def test_python_dash_m_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "torchstn", "eval", str(tmp_path / "missing.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("torchstn eval: error:") and "Traceback" not in proc.stderr


def test_config_files_in_repo_are_valid():
    root = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 40
    for f in files:  # co-localisation's too: one Config for every objective
        config_from_dict(yaml.safe_load(f.read_text()))


def test_sampling_path_of_a_run_without_warps_says_the_kernels_were_not_needed(monkeypatch):
    from torchstn.train import provenance

    status = {"cpu": False, "cpu_detail": "not built yet", "enabled": True}
    monkeypatch.setattr(provenance.native, "status", lambda: dict(status))
    monkeypatch.setattr(provenance.native, "path_counts", lambda: {})
    assert provenance.sampling_path()["detail"] == "not needed: the run made no warps"
    # warps that went unfused keep the reason the kernels were missing
    monkeypatch.setattr(provenance.native, "path_counts", lambda: {"unfused": 3})
    assert provenance.sampling_path()["detail"] == "not built yet"
