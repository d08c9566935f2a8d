"""``pip install torchstn`` alone (no extras) gives a working command.

A fresh virtual environment (no ``--system-site-packages``) gets PyTorch, then the project with a
plain ``pip install DIR``: pip resolves the core dependencies declared in ``pyproject.toml``, so
the test proves that they suffice. DIR is a copy of ``pyproject.toml``, ``README.md`` and
``torchstn/`` in a temporary folder, so that the build writes nothing into the checkout and
installs what an sdist would hold. PyTorch is pinned to the version running the tests, which pip
takes from its cache (or the configured index/wheel folder); a machine without it skips the test.

Then, from a folder outside the repository, with no ``PYTHONPATH``: a tiny ``torchstn train``,
``eval``, ``export --format torchscript`` and ``predict`` succeed; ``export --format onnx``,
``predict`` with an ONNX file, ``visualize`` and ``data preview`` each print a one-line hint
naming the extra to install and exit with status 2, without a traceback. MNIST comes from the
folder the test process finds it in, through ``TORCHSTN_MNIST`` (an installed package has no
repository ``data/mnist`` folder beside it).

Takes a minute or two (mostly unpacking PyTorch): run with ``pytest -m slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: what an installed ``torchstn`` must not find (the extras), so that the hints are exercised.
OPTIONAL = ("matplotlib", "onnx", "onnxruntime", "onnxscript")
TRAIN = (
    "--config", str(REPO / "configs" / "demo.yaml"), "--epochs", "1",
    "--set", "data.train_size=512", "--set", "data.val_size=128", "--set", "data.test_size=128",
    "--set", "optim.batch_size=64", "--device", "cpu", "--no-progress",
)  # fmt: skip


@dataclass
class Plain:
    """The environment: its ``torchstn`` command, a working folder and the process environment."""

    command: Path
    work: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.command), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def _mnist_folder() -> Path:
    from torchstn.data.mnist import find_mnist

    try:
        return find_mnist("train", download=False)[0].parent
    except Exception as err:
        pytest.skip(f"no local MNIST for the plain environment: {err}")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Plain:
    root = tmp_path_factory.mktemp("plain_install")
    mnist = _mnist_folder()
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    torch_pin = "torch==" + torch.__version__.split("+")[0]
    done = _pip(python, torch_pin)
    if done.returncode != 0:
        pytest.skip(f"cannot install {torch_pin} here: {done.stderr.strip()[-500:]}")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "torchstn", source / "torchstn", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = _pip(python, str(source))
    assert done.returncode == 0, f"pip install of the project failed:\n{done.stderr[-3000:]}"
    work = root / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TORCHSTN_"))}
    env.update(TORCHSTN_MNIST=str(mnist), XDG_CACHE_HOME=str(root / "cache"))
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    plain = Plain(env_dir / "bin" / "torchstn", work, env)
    trained = plain.run("train", *TRAIN, "--out", "run")
    assert trained.returncode == 0, trained.stderr[-3000:]
    return plain


def _hint(done: subprocess.CompletedProcess[str], command: str, extra: str) -> None:
    """Exit 2 with one stderr line that names the command and the extra to install."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[0].startswith(f"torchstn {command}: error:"), lines[0]
    assert f"pip install 'torchstn[{extra}]'" in lines[0], lines[0]


class TestPlainInstall:
    def test_the_installed_package_is_used_and_has_no_extras(self, plain: Plain) -> None:
        python = plain.command.parent / "python"
        probe = (
            "import importlib.util, json, torchstn; "
            f"print(json.dumps([torchstn.__file__, "
            f"[m for m in {OPTIONAL!r} if importlib.util.find_spec(m)]]))"
        )
        done = subprocess.run(
            [str(python), "-c", probe],
            cwd=plain.work,
            env=plain.env,
            capture_output=True,
            text=True,
        )
        where, extras = json.loads(done.stdout)
        assert "site-packages" in where and not where.startswith(str(REPO)), where
        assert extras == []

    def test_train_wrote_the_run(self, plain: Plain) -> None:
        run = plain.work / "run"
        assert (run / "checkpoint.pt").is_file() and (run / "config.json").is_file()

    def test_eval(self, plain: Plain) -> None:
        done = plain.run("eval", "run")
        assert done.returncode == 0, done.stderr[-3000:]
        assert 0 <= json.loads(done.stdout.splitlines()[-1])["error"] <= 100

    def test_export_torchscript(self, plain: Plain) -> None:
        done = plain.run("export", "run", "--format", "torchscript", "--out", "model.pt")
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.splitlines()[-1])["format"] == "torchscript"
        assert (plain.work / "model.pt").is_file()

    def test_predict(self, plain: Plain) -> None:
        stroke = np.zeros((50, 40), np.uint8)
        stroke[10:40, 18:24] = 255
        Image.fromarray(stroke).save(plain.work / "digit.png")
        done = plain.run("predict", "run", "digit.png", "--top-k", "2", "--out", "pred")
        assert done.returncode == 0, done.stderr[-3000:]
        (record,) = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(record["top_k"]) == 2 and record["fit"]["source_size"] == [50, 40]
        assert all(Path(plain.work / p).is_file() for p in record["outputs"].values())

    def test_export_onnx_hints_at_the_extra(self, plain: Plain) -> None:
        _hint(plain.run("export", "run", "--format", "onnx", "--out", "m.onnx"), "export", "export")
        assert not (plain.work / "m.onnx").exists()

    def test_predict_onnx_hints_at_the_extra(self, plain: Plain) -> None:
        # the smallest ModelProto: ir_version 8 and an empty graph (predict tells files by content)
        (plain.work / "fake.onnx").write_bytes(b"\x08\x08\x3a\x00")
        _hint(plain.run("predict", "fake.onnx", "digit.png"), "predict", "export")

    def test_visualize_hints_at_the_extra(self, plain: Plain) -> None:
        _hint(plain.run("visualize", "run", "--out", "vis.png"), "visualize", "plot")

    def test_data_preview_hints_at_the_extra(self, plain: Plain) -> None:
        _hint(plain.run("data", "preview", "cluttered", "--out", "p.png"), "data", "plot")

    def test_a_plugin_objective_is_found_by_its_entry_point(self, plain: Plain) -> None:
        """Co-localisation trains by name from a plain install: training finds it through the
        distribution's ``torchstn.objectives`` entry point, not by importing it."""
        tiny = (
            "--set", "objective.options.num_images=8", "--set", "objective.options.val_images=6",
            "--set", "objective.options.embedding_dim=8", "--set", "data.train_size=8",
            "--set", "optim.batch_size=4", "--set", "model.options.channels=[4,8]",
            "--set", "model.options.hidden=16",
        )  # fmt: skip
        done = plain.run(
            "train", "--config", "colocalization/t", "--epochs", "1", "--device", "cpu",
            "--no-progress", *tiny, "--out", "coloc",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads((plain.work / "coloc" / "result.json").read_text())
        assert result["objective"] == "colocalization" and "test_localised" in result
