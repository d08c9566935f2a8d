"""``torchstn train`` (and eval/visualize/report of its run) under hostile conditions: an
unwritable or full run folder, a killed run's leftovers, SIGTERM, two runs into one folder, data
replaced under a run, settings changed on resume, NaN and booleans where numbers belong."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from torchstn._checks import check_size
from torchstn.cli import main
from torchstn.errors import ConfigError, DataError, InvalidInputError
from torchstn.train import (
    Trainer,
    TrainingInterrupted,
    config_from_dict,
    load_checkpoint,
    runfolder,
)
from torchstn.train.datamodule import fingerprint
from torchstn.train.runfolder import RunFolderLock


@pytest.fixture
def small_values(tiny_values: dict) -> dict:
    """The tiny config with fewer samples: 2 steps per epoch, 2 epochs."""
    tiny_values["data"].update(train_size=64, val_size=32, test_size=32)
    return tiny_values


@pytest.fixture
def tiny_config(tmp_path: Path, small_values: dict) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small_values))
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("epoch")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------ 1. unwritable --out
class TestUnwritableOut:
    def test_a_file_in_the_way(self, tmp_path, tiny_config, capsys):
        (tmp_path / "afile").write_text("x")
        code, _, err = _run(
            capsys, "train", "--config", str(tiny_config), "--out", str(tmp_path / "afile" / "r")
        )
        _one_line(code, err, "afile", "not a folder")

    def test_permission_denied(self, tmp_path, tiny_config, capsys, monkeypatch):
        # as root chmod does not stop writes: the refusal of the OS is simulated
        def denied(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

        monkeypatch.setattr(Path, "mkdir", denied)
        out = tmp_path / "locked" / "run"
        code, _, err = _run(capsys, "train", "--config", str(tiny_config), "--out", str(out))
        _one_line(code, err, str(out), "Permission denied")


# ------------------------------------------------------------------ 2. disk full
def _fail_fsync_after(monkeypatch, calls: int) -> None:
    """``os.fsync`` (every atomic write's last step) raises ENOSPC from call ``calls + 1`` on."""
    import torchstn._atomic as atomic

    real = os.fsync
    count = {"n": 0}

    def fsync(fd: int) -> None:
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)


class TestDiskFull:
    def test_simulated_full_disk_is_one_line_keeps_the_checkpoint_and_resumes_exactly(
        self, tmp_path, tiny_config, capsys, monkeypatch
    ):
        ref = tmp_path / "ref"
        assert (
            main(["train", "--config", str(tiny_config), "--out", str(ref), "--no-progress"]) == 0
        )
        run = tmp_path / "run"
        # config.json, metrics.jsonl and epoch 1's checkpoint are written; epoch 2's is not
        _fail_fsync_after(monkeypatch, 3)
        capsys.readouterr()
        code, _, err = _run(
            capsys, "train", "--config", str(tiny_config), "--out", str(run), "--no-progress"
        )
        _one_line(code, err, str(run), "no space left", "checkpoint.pt", "--resume")
        assert _temps(run) == []
        assert load_checkpoint(run)["epoch"] == 1  # the last good one, whole
        monkeypatch.undo()
        code, _, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(run),
            "--resume",
            "--no-progress",
        )
        assert code == 0, err
        assert _weights_equal(load_checkpoint(run)["model"], load_checkpoint(ref)["model"])

    def test_metrics_line_cut_by_a_full_disk_is_taken_back(
        self, tmp_path, small_values, monkeypatch
    ):
        trainer = Trainer(config_from_dict(small_values), tmp_path / "r", progress=False)
        trainer.run_dir.mkdir()
        path = trainer.run_dir / "metrics.jsonl"
        path.write_text('{"epoch": 1}\n')

        class Full:
            def __init__(self, fh):
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

            def tell(self):
                return self.fh.tell()

            def truncate(self, size):
                return self.fh.truncate(size)

            def write(self, data):
                self.fh.write(data[:5])  # part of the line reached the disk
                self.fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")

            def flush(self):
                self.fh.flush()

        real_open = open
        monkeypatch.setattr(
            runfolder,
            "open",
            lambda p, mode="r", *a, **k: Full(real_open(p, mode, *a, **k)),
            raising=False,
        )
        with pytest.raises(DataError, match="no space left") as info:
            trainer._log({"epoch": 2, "val_error": 1.0})
        monkeypatch.undo()
        assert "\n" not in str(info.value) and str(trainer.run_dir) in str(info.value)
        assert path.read_text() == '{"epoch": 1}\n'

    def test_real_full_tmpfs(self, tmp_path, small_values, capsys):
        """A 3 MB tmpfs as the run folder (needs root and a kernel that lets us mount)."""
        mnt = tmp_path / "full"
        mnt.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        try:
            values = small_values
            values["model"]["options"]["channels"] = [32, 64]  # ~1.6 MB: two do not fit
            config = tmp_path / "big.yaml"
            config.write_text(yaml.safe_dump(values))
            run = mnt / "run"
            argv = ["train", "--config", str(config), "--out", str(run), "--no-progress"]
            code, _, err = _run(capsys, *argv)
            _one_line(code, err, str(run), "no space left")
            assert _temps(run) == []
            assert load_checkpoint(run)["epoch"] == 1
        finally:
            subprocess.run(["umount", str(mnt)], check=False)


# ------------------------------------------------------------------ 3. kill -9 and SIGTERM
class TestKilledRuns:
    def test_stale_temp_files_of_the_run_are_deleted_when_it_resumes(
        self, tmp_path, tiny_config, capsys
    ):
        run = tmp_path / "run"
        argv = ["train", "--config", str(tiny_config), "--out", str(run), "--no-progress"]
        assert main([*argv, "--epochs", "1"]) == 0
        # what kill -9 during a checkpoint leaves, and files that are not the run's to delete
        stale = [".checkpoint.pt.a1b2c3d4.tmp", ".metrics.jsonl.zz_9y8x7.tmp"]
        foreign = [".report.html.a1b2c3d4.tmp", ".checkpoint.pt.notes", "checkpoint.pt.x.tmp"]
        for name in stale + foreign:
            (run / name).write_bytes(b"\0" * 1000)
        capsys.readouterr()
        code, _, err = _run(capsys, *argv, "--resume")
        assert code == 0, err
        assert "deleted 2 temporary file(s)" in err
        names = {p.name for p in run.iterdir()}
        assert not names & set(stale) and set(foreign) <= names

    def test_stale_temp_files_are_kept_while_another_process_holds_the_folder(
        self, tmp_path, tiny_config, capsys
    ):
        run = tmp_path / "run"
        run.mkdir()
        (run / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"being written")
        lock = RunFolderLock(run)
        try:
            code, _, err = _run(capsys, "train", "--config", str(tiny_config), "--out", str(run))
        finally:
            lock.release()
        _one_line(code, err, "in use by another process", f"pid {os.getpid()}")
        assert _temps(run) == [".checkpoint.pt.a1b2c3d4.tmp"]

    def test_sigterm_saves_like_ctrl_c(self, tmp_path, small_values, monkeypatch):
        ref = Trainer(config_from_dict(small_values), tmp_path / "ref", progress=False)
        ref.fit()
        run = tmp_path / "cut"
        trainer = Trainer(config_from_dict(small_values), run, progress=False)
        original = Trainer._step
        calls = {"n": 0}

        def step_then_term(self, *args):
            loss = original(self, *args)
            calls["n"] += 1
            if calls["n"] == 3:  # mid-way through epoch 2 (2 steps per epoch)
                os.kill(os.getpid(), signal.SIGTERM)
            return loss

        monkeypatch.setattr(Trainer, "_step", step_then_term)
        before = signal.getsignal(signal.SIGTERM)
        with pytest.raises(TrainingInterrupted, match=r"SIGTERM.*--resume"):
            trainer.fit()
        assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
        monkeypatch.setattr(Trainer, "_step", original)
        state = load_checkpoint(run)
        assert (state["epoch"], state["step"]) == (1, 1)  # the epoch in progress is kept
        resumed = Trainer(config_from_dict(small_values), run, resume=True, progress=False)
        resumed.fit()
        assert _weights_equal(resumed.model.state_dict(), ref.model.state_dict())

    def test_sigterm_to_the_command_saves_a_checkpoint(self, tmp_path, small_values):
        """The real command in its own process: SIGTERM mid-run, a checkpoint, one line."""
        values = small_values
        values["run"]["epochs"] = 1000
        config = tmp_path / "long.yaml"
        config.write_text(yaml.safe_dump(values))
        run = tmp_path / "run"
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "torchstn", "train", "--config", str(config)),
                *("--out", str(run), "--no-progress"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            for line in proc.stderr:  # type: ignore[union-attr]
                if line.startswith("epoch"):  # training has started
                    break
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        _one_line(proc.returncode, err, "SIGTERM", "--resume")
        assert load_checkpoint(run)["epoch"] >= 1 and _temps(run) == []


# ------------------------------------------------------------------ 4. one run per folder
class TestRunFolderLock:
    def test_second_run_into_the_same_folder_is_refused(self, tmp_path, tiny_config, capsys):
        run = tmp_path / "run"
        held = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from torchstn.train.runfolder import RunFolderLock; "
                "lock = RunFolderLock(sys.argv[1]); print('held', flush=True); time.sleep(60)",
                str(run),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert held.stdout.readline().strip() == "held"  # type: ignore[union-attr]
            code, _, err = _run(capsys, "train", "--config", str(tiny_config), "--out", str(run))
            _one_line(code, err, f"run folder {run} is in use by another process (pid {held.pid})")
            assert not (run / "config.json").exists() and not (run / "metrics.jsonl").exists()
        finally:
            held.kill()
            held.wait()
        # a dead owner holds nothing (the OS released its lock): the run goes ahead
        assert (
            main(["train", "--config", str(tiny_config), "--out", str(run), "--no-progress"]) == 0
        )

    def test_a_run_started_before_another_finished_does_not_overwrite_it(
        self, tmp_path, small_values
    ):
        run = tmp_path / "run"
        late = Trainer(config_from_dict(small_values), run, progress=False)  # found no run there
        Trainer(config_from_dict(small_values), run, progress=False).fit()  # another one, done
        before = (run / "checkpoint.pt").read_bytes()
        with pytest.raises(ConfigError, match="another run wrote its checkpoint"):
            late.fit()
        assert (run / "checkpoint.pt").read_bytes() == before

    def test_without_fcntl_the_package_imports_and_runs_unlocked(self, tmp_path):
        code = (
            "import sys; sys.modules['fcntl'] = None\n"
            "import torchstn, torchstn.cli, torchstn.train.runfolder as t\n"
            "lock = t.RunFolderLock(sys.argv[1]); lock.release(); print('ok')\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
        assert "cannot lock the run folder" in proc.stderr


# ------------------------------------------------------------------ 5. the run's data
def _npz(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 60)
    x = rng.integers(0, 40, (60, 12, 12, 1)).astype(np.uint8)
    for i, label in enumerate(y):
        x[i, 2 + 3 * int(label) : 4 + 3 * int(label), 2:-2] = 230
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)


class TestRunData:
    @pytest.fixture
    def user_run(self, tmp_path, capsys, monkeypatch):
        """A run trained from folder ``a`` on ``d.npz`` given by a relative path."""
        _npz(tmp_path / "a" / "d.npz", 0)
        _npz(tmp_path / "b" / "d.npz", 1)  # another file of the same name
        values = {
            "seed": 0,
            "device": "cpu",
            "data": {"task": None, "path": "d.npz"},
            "model": {"name": "fcn", "options": {"hidden": [8]}},
            "optim": {"lr": 0.05, "batch_size": 16},
            "run": {"epochs": 1, "eval_batch_size": 32},
        }
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
        monkeypatch.chdir(tmp_path / "a")
        code, _, err = _run(
            capsys, "train", "--config", "../c.yaml", "--out", "../run", "--no-progress"
        )
        assert code == 0, err
        code, out, err = _run(capsys, "eval", "../run")
        assert code == 0, err
        return tmp_path / "run", json.loads(out.splitlines()[-1])["error"]

    def test_run_records_absolute_path_and_fingerprint(self, user_run, tmp_path):
        run, _ = user_run
        data = json.loads((run / "config.json").read_text())["data"]
        assert data["path"] == str(tmp_path / "a" / "d.npz")
        assert data["fingerprints"] == {"path": fingerprint(tmp_path / "a" / "d.npz")}

    def test_eval_from_elsewhere_reads_the_runs_file(self, user_run, tmp_path, capsys, monkeypatch):
        run, error = user_run
        monkeypatch.chdir(tmp_path / "b")
        code, out, err = _run(capsys, "eval", str(run))
        assert code == 0, err
        assert json.loads(out.splitlines()[-1])["error"] == error

    @pytest.mark.parametrize("command", ["eval", "visualize", "report", "resume"])
    def test_replaced_data_is_refused(self, user_run, tmp_path, capsys, monkeypatch, command):
        pytest.importorskip("matplotlib")
        run, _ = user_run
        (tmp_path / "a" / "d.npz").write_bytes((tmp_path / "b" / "d.npz").read_bytes())
        monkeypatch.chdir(tmp_path)
        argv = {
            "eval": ["eval", str(run)],
            "visualize": ["visualize", str(run), "--out", str(tmp_path / "v.png")],
            "report": ["report", str(run)],
            "resume": ["train", "--out", str(run), "--resume", "--epochs", "2"],
        }[command]
        code, _, err = _run(capsys, *argv)
        _one_line(code, err, "data.path", str(tmp_path / "a" / "d.npz"), "not the data")

    def test_image_folder_fingerprint(self, tmp_path, monkeypatch):
        from PIL import Image

        from torchstn.data.files import scan_class_folder
        from torchstn.train import datamodule

        root = tmp_path / "imgs"
        for label in ("x", "y"):
            (root / label).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((4, 4), 40 * i, np.uint8)).save(root / label / f"{i}.png")

        def fp(method=None):
            return fingerprint(root, scan_class_folder(root)[0], method)

        first = fp()
        assert first.startswith("content:") and fp() == first
        victim = root / "y" / "1.png"
        stat = victim.stat()
        Image.fromarray(np.full((4, 4), 7, np.uint8)).save(victim)  # same size, other pixels
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert victim.stat().st_size == stat.st_size and fp() != first
        # large sets: names, sizes and times
        monkeypatch.setattr(datamodule, "FINGERPRINT_CONTENT_LIMIT", 0)
        by_stat = fp()
        assert by_stat.startswith("stat:") and fp("stat") == by_stat
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert fp() != by_stat
        (root / "y" / "1.png").rename(root / "x" / "9.png")  # an image moved to another class
        assert fp("content") != first


# ------------------------------------------------------------------ 6. settings
class TestSettings:
    def _trained(self, tmp_path, tiny_config, capsys) -> Path:
        run = tmp_path / "run"
        code, _, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--no-progress",
        )
        assert code == 0, err
        return run

    def test_resume_refuses_changed_settings(self, tmp_path, tiny_config, capsys):
        run = self._trained(tmp_path, tiny_config, capsys)
        before = (run / "checkpoint.pt").read_bytes()
        code, _, err = _run(
            capsys,
            "train",
            "--config",
            str(tiny_config),
            "--out",
            str(run),
            "--resume",
            "--set",
            "optim.lr=0.5",
            "--model",
            "cnn",
        )
        line = _one_line(code, err, "--resume", "optim.lr 0.02 (given 0.5)", "model.name")
        assert "run.epochs" in line  # names what may change
        assert (run / "checkpoint.pt").read_bytes() == before

    def test_resume_takes_a_longer_budget_and_keeps_the_rest(self, tmp_path, tiny_config, capsys):
        run = self._trained(tmp_path, tiny_config, capsys)
        # no --config: the run's own settings, with the budget given (and a YAML-string number)
        code, out, err = _run(
            capsys,
            "train",
            "--out",
            str(run),
            "--resume",
            "--epochs",
            "2",
            "--set",
            "optim.lr=2e-2",
            "--no-progress",
        )
        assert code == 0, err
        saved = json.loads((run / "config.json").read_text())
        assert saved["run"]["epochs"] == 2 and saved["model"]["options"]["channels"] == [4, 8]
        assert json.loads(out.splitlines()[-1])["epochs"] == 2

    @pytest.mark.parametrize(
        "flag", [["--minutes", "nan"], ["--minutes", "inf"], ["--set", "optim.momentum=.nan"]]
    )
    def test_non_finite_numbers_are_refused(self, tmp_path, tiny_config, capsys, flag):
        code, _, err = _run(
            capsys, "train", "--config", str(tiny_config), "--out", str(tmp_path / "r"), *flag
        )
        _one_line(code, err, "expected a finite number")
        assert not (tmp_path / "r").exists()

    def test_config_json_is_strict_json(self, tmp_path, tiny_config, capsys):
        run = self._trained(tmp_path, tiny_config, capsys)

        def refuse(name):
            raise AssertionError(f"{name} in JSON")

        for name in ("config.json", "result.json"):
            json.loads((run / name).read_text(), parse_constant=refuse)
        for line in (run / "metrics.jsonl").read_text().splitlines():
            json.loads(line, parse_constant=refuse)

    @pytest.mark.parametrize(
        "key, value",
        [("optim.momentum", True), ("data.train_size", 100.5), ("seed", True), ("run.epochs", 2.0)],
    )
    def test_numbers_of_the_wrong_kind_are_refused(self, small_values, key, value):
        node = small_values
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            config_from_dict(small_values)

    def test_booleans_are_not_sizes(self):
        from torchstn import SpatialTransformer

        for size in [(True, True), (True, 4), True, "12"]:
            with pytest.raises(InvalidInputError, match="out_size"):
                check_size(size, "out_size")
        with pytest.raises(InvalidInputError, match="out_size"):
            SpatialTransformer((1, 8, 8), out_size=(True, True))
        assert check_size((2.0, 3), "s") == (2, 3)
